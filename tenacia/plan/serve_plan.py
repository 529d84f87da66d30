"""What a serving plan says, before anything is priced: the model, chip and precision, the
time-per-output-token target, the step's costs beyond FLOPs and bytes (``StepCosts``),
speculative decoding (``Speculation``) and the demand (``Demand``). ``serving_step.py`` prices a
step from it, ``serving.py`` chooses instances and batches; both build on this module.

Contract: every field is checked finite and in range when the plan is made, with a
``ConfigError`` naming the field and what is allowed (``tenacia.config.check``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..config import check, check_choice, check_finite
from .assumptions import Assumptions
from .models import ModelSpec

WEIGHT_BYTES = {"bf16": 2.0, "fp8": 1.0, "int8": 1.0}

# Fixed cost of every layer of a decode step, µs, by serving stack (``StepCosts.stack``):
# - gpt-fast 71: pytorch-labs/gpt-fast README, BF16 Llama-2 7B and 70B on A100-80GB, torch.compile
#   + CUDA graphs, 1 to 8 GPUs, batch 1: each row's time a token less its weight reads (the table's
#   bytes a token at 0.9 x 2.039 TB/s), over the layers: 71, 66, 59, 59 µs (7B at 1, 2, 4, 8 GPUs),
#   113, 89, 76 µs (70B at 2, 4, 8); the median, 71. Until 2026-12-03 23:20 UTC 137, derived the
#   same way from a DeepSeek-R1 (MLA + MoE) run and charged to every layer of every model.
# - vllm 62.3: GPUStack's "Optimizing Qwen3-8B Latency on NVIDIA H100 GPUs" (gpustack/gpustack
#   docs/performance-lab/qwen3-8b/h100-latency.md): vLLM v0.11.0, Qwen/Qwen3-8B in BF16 on one
#   H100 SXM, ShareGPT (100 prompts: 23,260 input and 22,061 output tokens), concurrency 1: mean
#   TPOT 7.28 ms. The planner's own step without fixed costs for that case (36 layers, width
#   4,096, SwiGLU 12,288, 32 heads of 128 with 8 KV heads, vocabulary 151,936, untied head:
#   8.1907B parameters; 233 in / 221 out) is 5.0375 ms, so (7.28 - 5.0375) ms / 36 = 62.3 µs.
# - sglang 57.0, tensorrt-llm 70.4: the same page's engine comparison at concurrency 4 (same
#   model, chip and data, so the same work a step): mean TPOT vLLM 7.38, SGLang v0.5.3.post3
#   7.19, TensorRT-LLM v1.2.0rc1 7.67 ms; each engine's difference to vLLM over 36 layers moves
#   vLLM's 62.3: 62.3 - 190/36 = 57.0, 62.3 + 290/36 = 70.4. At concurrency 4 the three engines
#   also prefill arriving prompts between decode steps, each its own way: a stack figure, not a
#   kernel-level one.
STACK_LAYER_US = {"gpt-fast": 71.0, "vllm": 62.3, "sglang": 57.0, "tensorrt-llm": 70.4}


@dataclass(kw_only=True, slots=True)
class StepCosts:
    """The costs of a serving step that FLOPs and bytes do not give (module docstring)."""

    # The serving stack whose per-layer fixed cost a step pays (``STACK_LAYER_US``): 'gpt-fast'
    # (the default), 'vllm', 'sglang' or 'tensorrt-llm'. A case sets it when its source names it.
    stack: str = "gpt-fast"
    # Fixed cost of every layer per step, µs, on every deployment: what a decode step pays per
    # layer beyond its weight and cache reads at batch 1 (kernel launches under CUDA graphs, small
    # GEMMs below the HBM roofline, a tensor-parallel instance's in-node all-reduces). None: the
    # stack's figure (``STACK_LAYER_US``, each derived by hand there, not fitted); a number
    # overrides it.
    layer_overhead_us: float | None = None
    # Fixed cost an MoE layer adds, µs, on every deployment (routing, top-k, the gathered expert
    # GEMMs below their roofline at small batches), whatever the attention: gpt-fast's batch-1
    # Mixtral 8x7B in BF16 on 2 / 4 / 8 A100-80GB (pytorch-labs/gpt-fast mixtral-moe/README.md:
    # 96.67 / 155.35 / 227.82 tokens/s; 32 layers, width 4,096, GQA 32/8 heads, 8 experts of 14,336,
    # top 2: 12.749B parameters read a token, 25.50 GB split tp ways) less the same README's Llama-2
    # 7B rows on as many GPUs (32 layers, width 4,096, dense), each token's time less its weight
    # reads at 0.9 x 2.039 TB/s over 32 layers: 106.2 - 65.9, 92.6 - 58.9, 82.9 - 58.6 µs; the
    # median, 33.7. Until 2026-12-04 14:50 UTC 69, the rest of TensorRT-LLM's batch-1 DeepSeek-R1
    # (MLA and MoE together), charged to GQA MoE models too; ``mla_layer_us`` now holds MLA's part.
    moe_layer_kernel_us: float = 33.7
    # Fixed cost of every layer with multi-head latent attention (``ModelSpec.is_mla``), µs, on
    # every deployment (MLA's extra down/up projections, norms and RoPE split): TensorRT-LLM's
    # published min-latency DeepSeek-R1 on one 8x B200 node (tech blog 1, "Pushing Latency
    # Boundaries", MTP table: 111 tokens/s a user without MTP) takes 9.01 ms a token, its weight
    # reads 0.67 ms (4.81 GB a GPU at 0.9 x 8 TB/s); less 61 layers x 71 and 58 MoE layers x 33.7,
    # over its 61 MLA layers: (9.01 - 0.67 - 4.331 - 1.953) ms / 61 = 33.7 µs.
    mla_layer_us: float = 33.7
    # Extra fixed cost of each MoE layer per step on an expert-parallel instance, µs, beyond
    # layer_overhead_us and the all-to-all's published latency floor (ep_latency.py: DeepEP's
    # low-latency kernels over RDMA across nodes, DeepEP-Ascend's inside a CloudMatrix384). 0: until
    # 2026-12-03 23:00 UTC it was 375, fitted on the tuning set's two-node H20 cases and charged only
    # across scale-up domains, which priced an H100 instance's all-to-all and not a 910C supernode's;
    # the published floor replaces it (DeepEP's EP16 row, 313 µs, is that fit's own deployment).
    moe_layer_overhead_us: float = 0.0
    # Host cost per decode step, µs (scheduling, sampling, detokenization) not hidden behind the
    # GPU. 0: SGLang's overlap ("zero-overhead") scheduler (lmsys.org 2024-12-04, v0.4) and
    # TensorRT-LLM's overlap scheduler (its docs, "Overlap Scheduler", on by default) run step n's
    # CPU work while the GPU runs step n + 1. Set it for a stack without one.
    step_overhead_us: float = 0.0
    # Tokens on the most loaded expert rank / the mean: 1 / 0.7, from Ant Group's H20 report
    # (lmsys.org 2025-09-26: its expert load balancer keeps "a >70% load balance ratio").
    expert_imbalance: float = 1.43
    # Share of an MoE instance's all-to-all hidden behind compute by micro-batch overlap
    # (serving_step's docstring). A tensor-parallel all-reduce never hides: the layer waits for it.
    comm_overlap: float = 1.0
    # Decode runs as two micro-batches of half the batch whose expert all-to-all, latency floor
    # included, runs while the other computes (serving_step.decode_parts). A stack states it when
    # its source publishes it: DeepSeek's decoding "leverages two micro-batches for overlapping
    # computation and all-to-all communication ... after RDMA messages are issued, all GPU SMs
    # are freed" (github.com/deepseek-ai/profile-data README). Off by default: the floor is paid
    # unhidden.
    two_batch_overlap: bool = False
    # Share of a chip's compute cores that prefill's all-to-all kernels hold while they run hidden
    # behind compute: DeepEP's normal kernels take Buffer.num_sms = 20 SMs (deep_ep/buffer.py), 20
    # of an H800's 132 (the DeepSeek-V3 report, s3.2.2, gives the same 20 for training). Decode's
    # low-latency kernels hold none (DeepEP's README: its hook-based overlap "does not occupy any SM
    # resource"). Not published for other chip families: the same share is assumed for every chip.
    prefill_comm_core_share: float = 20 / 132
    # Fraction of the datasheet HBM bandwidth a serving step's reads reach, for chips whose
    # catalog entry has no ``hbm_efficiency``: FlashMLA's dense decoding kernel reaches 3,000 of
    # the H800's 3,350 GB/s (github.com/deepseek-ai/FlashMLA).
    hbm_efficiency: float = 0.9

    def __post_init__(self) -> None:
        check_finite(self)
        check_choice("stack", self.stack, tuple(STACK_LAYER_US))
        if self.layer_overhead_us is None:
            self.layer_overhead_us = STACK_LAYER_US[self.stack]
        check(self.layer_overhead_us >= 0, "layer_overhead_us", self.layer_overhead_us, "microseconds >= 0")
        check(self.moe_layer_overhead_us >= 0, "moe_layer_overhead_us", self.moe_layer_overhead_us, "microseconds >= 0")
        check(self.moe_layer_kernel_us >= 0, "moe_layer_kernel_us", self.moe_layer_kernel_us, "microseconds >= 0")
        check(self.mla_layer_us >= 0, "mla_layer_us", self.mla_layer_us, "microseconds >= 0")
        check(self.step_overhead_us >= 0, "step_overhead_us", self.step_overhead_us, "microseconds >= 0")
        check(self.expert_imbalance >= 1, "expert_imbalance", self.expert_imbalance, "a number >= 1")
        check(0 <= self.comm_overlap <= 1, "comm_overlap", self.comm_overlap, "a fraction in [0, 1]")
        check(isinstance(self.two_batch_overlap, bool), "two_batch_overlap", self.two_batch_overlap,
              "true or false")
        check(0 <= self.prefill_comm_core_share < 1, "prefill_comm_core_share", self.prefill_comm_core_share,
              "a fraction in [0, 1)")
        check(0 < self.hbm_efficiency <= 1, "hbm_efficiency", self.hbm_efficiency, "a fraction in (0, 1]")


@dataclass(kw_only=True, slots=True)
class Speculation:
    """Speculative decoding (multi-token prediction) in the decode step (module docstring).
    The defaults are no speculation."""

    # Tokens each sequence's step verifies: its next token and draft_tokens - 1 drafts
    # (SGLang's --speculative-num-draft-tokens).
    draft_tokens: int = 1
    # Tokens a step emits per sequence on average (the accept length; 1 <= accepted <= draft_tokens).
    accepted: float = 1.0

    def __post_init__(self) -> None:
        check_finite(self)
        check(self.draft_tokens >= 1, "draft_tokens", self.draft_tokens, "a whole number >= 1")
        check(1 <= self.accepted <= self.draft_tokens, "accepted", self.accepted,
              f"tokens per step in [1, draft_tokens={self.draft_tokens}]")


@dataclass(kw_only=True, slots=True)
class Demand:
    tokens_per_day: float = 1e11  # input + output tokens served per day
    input_len: int = 2000  # tokens per request prompt
    output_len: int = 500  # tokens generated per request
    cache_hit_rate: float = 0.5  # share of input tokens found in the prefix cache
    peak_factor: float = 2.0  # peak request rate / mean request rate
    peak_requests_per_s: float = 0.0  # when > 0, the peak rate itself (peak_factor is ignored)

    def __post_init__(self) -> None:
        check_finite(self)
        check(self.tokens_per_day > 0, "tokens_per_day", self.tokens_per_day, "a positive number")
        check(self.input_len > 0, "input_len", self.input_len, "a positive integer")
        check(self.output_len > 0, "output_len", self.output_len, "a positive integer")
        check(0 <= self.cache_hit_rate < 1, "cache_hit_rate", self.cache_hit_rate, "a fraction in [0, 1)")
        check(self.peak_factor >= 1, "peak_factor", self.peak_factor, "a number >= 1")
        check(self.peak_requests_per_s >= 0, "peak_requests_per_s", self.peak_requests_per_s, "a number >= 0")

    @property
    def prefill_context(self) -> float:
        """Tokens a computed prompt token attends to on average: the cached prefix, which a hit
        skips computing but not attending to (the prefix cache holds its K and V), then half of
        the computed rest (causal): input_len x (hit + (1 - hit) / 2)."""
        return self.input_len * (self.cache_hit_rate + (1 - self.cache_hit_rate) / 2)

    @property
    def peak_rps(self) -> float:
        mean = self.tokens_per_day / (self.input_len + self.output_len) / 86400
        return self.peak_requests_per_s or mean * self.peak_factor


@dataclass(kw_only=True, slots=True)
class ServePlan:
    model: ModelSpec = field(default_factory=ModelSpec)
    chip: str = "h800"
    precision: str = "fp8"  # weights and matmuls: bf16, fp8 or int8
    kv_bytes: float = 0.0  # bytes per cached element; 0: 2 for bf16, else 1
    # attention kernels' matmul precision: 'bf16' (FlashMLA, FA3), or 'fp8' (FlashMLA-FP8, FA3-FP8)
    attention_precision: str = "bf16"
    tp: int = 0  # chips per decode instance; 0: the power of two with most tokens/s per chip
    # How an MoE decode instance splits attention and the other dense weights: 'data' (every chip
    # holds them whole and decodes its own batch / tp sequences, the routed experts spread over
    # the chips with an all-to-all each MoE layer: DeepSeek's serving, SGLang's
    # --enable-dp-attention, TensorRT-LLM's enable_attention_dp), or 'tensor' (split tp ways as a
    # dense model's, every chip sees every sequence, each touched expert's weights split tp ways
    # too, two all-reduces of the batch a layer and no all-to-all: SGLang's and vLLM's plain --tp N
    # on an MoE model). A prefill instance splits the model the same way (prefill_chips).
    attention_parallel: str = "data"
    tpot_ms: float = 50.0  # time-per-output-token target
    max_batch: int = 65536  # largest decode batch considered (per instance)
    step: StepCosts = field(default_factory=StepCosts)  # what a step costs beyond FLOPs and bytes
    speculation: Speculation = field(default_factory=Speculation)  # MTP drafts verified per step
    # Chips of a prefill instance. An MoE model with data-parallel attention spreads the routed
    # experts over them (0: 32, DeepSeek V3/R1 inference overview: prefill EP32 over 4 nodes); a
    # dense model or attention_parallel='tensor' splits every weight over them tensor-parallel
    # (0: the decode instance's tp, one engine doing both as SGLang's, vLLM's and TensorRT-LLM's
    # --tp N). serving_step.prefill_tps_per_chip prices it.
    prefill_chips: int = 0
    # 'disaggregated': prefill and decode on separate chips (DeepSeek, Mooncake, SGLang's PD mode);
    # 'aggregated': the same chips take both, arriving prompts prefilled in chunks inside the
    # decode steps (chunked prefill, in-flight batching: vLLM, SGLang, TensorRT-LLM and NIM run so
    # by default). ``aggregated.py`` prices it.
    deployment: str = "disaggregated"
    # Tokens one aggregated step may carry (decode rows + the prompt chunk): TensorRT-LLM's
    # max_num_tokens, 8,192 by default (tensorrt_llm/builder.py, BuildConfig, at 008b2b8d).
    chunk_tokens: int = 8192
    demand: Demand = field(default_factory=Demand)
    assumptions: Assumptions = field(default_factory=Assumptions)
    catalog: str = ""

    def __post_init__(self) -> None:
        check_finite(self)
        check_choice("precision", self.precision, tuple(WEIGHT_BYTES))
        check_choice("attention_precision", self.attention_precision, ("bf16", "fp8"))
        check_choice("attention_parallel", self.attention_parallel, ("data", "tensor"))
        check(self.kv_bytes >= 0, "kv_bytes", self.kv_bytes, "bytes >= 0 (0: by precision)")
        check(self.tp >= 0, "tp", self.tp, "chips >= 0 (0: search)")
        check(self.tpot_ms > 0, "tpot_ms", self.tpot_ms, "milliseconds > 0")
        check(self.max_batch > 0, "max_batch", self.max_batch, "a positive integer")
        check(self.prefill_chips >= 0, "prefill_chips", self.prefill_chips, "chips >= 0 (0: by attention_parallel)")
        check_choice("deployment", self.deployment, ("disaggregated", "aggregated"))
        check(self.chunk_tokens >= 1, "chunk_tokens", self.chunk_tokens, "a positive integer")
        self.kv_bytes = self.kv_bytes or (2.0 if self.precision == "bf16" else 1.0)

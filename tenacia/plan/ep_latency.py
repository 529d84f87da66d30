"""The latency floor of a decode step's expert all-to-all: what one MoE layer's dispatch + combine
takes on a fabric whatever the batch, from the published timings of the low-latency kernels that
serving stacks decode with (DeepEP on NVIDIA, DeepEP-Ascend on Ascend).

Both kernel sets are timed by their authors in one setting: 128 tokens a rank, hidden 7168, top-8
experts (DeepSeek-V3/R1), dispatch in one byte (FP8, INT8), combine in BF16. The floor of a layer is
the dispatch + combine time at the published expert-parallel size (EP) nearest at or above the
instance's; beyond the largest published EP, the largest published row (a lower bound: the time
grows with EP in both tables). A decode step pays it once a MoE layer, unhidden; the bandwidth
part of the all-to-all above it may hide behind compute (``serving_step.py``).

- across scale-up domains (RDMA between 8-GPU NVLink nodes, or between supernodes): DeepEP V1's
  low-latency kernels on H800 with one CX7 400 Gb/s NIC a GPU (github.com/deepseek-ai/DeepEP,
  docs/legacy.md, "Low-latency kernels with pure RDMA": dispatch 77/118/155/173/192/194 µs and
  combine 114/195/273/314/369/360 µs at EP 8/16/32/64/128/256). Used for every chip's scale-out
  network: other NICs and chips have no published table.
- inside an Ascend 910C CloudMatrix384 / A3 SuperPOD (HCCS over UB): DeepEP-Ascend's low-latency
  kernels (github.com/sgl-project/sgl-kernel-npu README, "Low-Latency Kernels with Pure HCCS":
  dispatch 132/139/153 µs and combine 126/135/151 µs at EP 8/16/32, INT8 dispatch).
- inside an NVLink node: no published low-latency table; 0 here, as the per-layer fixed cost
  (``StepCosts.layer_overhead_us``, ``moe_layer_kernel_us`` and ``mla_layer_us``, from batch-1 runs
  on 1-8 A100 and on an 8x B200 node) already hold in-node communication.

Contract: ``floor_us`` is >= 0, never decreases with the instance size on one fabric, and is 0 for
a dense model's instance or one chip.
"""

from __future__ import annotations

# (EP, dispatch + combine µs a MoE layer at 128 tokens a rank), EP ascending
RDMA_US = ((8, 77 + 114), (16, 118 + 195), (32, 155 + 273), (64, 173 + 314), (128, 192 + 369), (256, 194 + 360))
SCALE_UP_US = {"ascend-910c": ((8, 132 + 126), (16, 139 + 135), (32, 153 + 151))}


def _at(table: tuple[tuple[int, int], ...], ep: int) -> float:
    """The row at the smallest published EP >= ``ep``; past the table, the largest so far."""
    for size, us in table:
        if size >= ep:
            return float(max(us, *(u for s, u in table if s < size), 0))
    return float(max(u for _, u in table))


def floor_us(chip_key: str, scale_up_domain: int, chips: int, moe: bool) -> float:
    """µs a MoE layer's dispatch + combine takes at least on an instance of ``chips`` (module
    docstring): the RDMA table when it spans several scale-up domains, the chip's own scale-up
    table inside one (0 where none is published)."""
    if not moe or chips <= 1:
        return 0.0
    if chips > scale_up_domain:
        return _at(RDMA_US, chips)
    table = SCALE_UP_US.get(chip_key)
    return _at(table, chips) if table else 0.0


def floor_row(chip_key: str, scale_up_domain: int, chips: int) -> str:
    """Which published row ``floor_us`` takes for an instance of ``chips``, in words."""
    table, fabric = (RDMA_US, "DeepEP over RDMA") if chips > scale_up_domain else (SCALE_UP_US.get(chip_key), chip_key)
    if not table or chips <= 1:
        return "none published"
    row = next((size for size, _ in table if size >= chips), None)
    if row is None:
        return f"{fabric}'s largest published EP{table[-1][0]} row (none beyond it) for EP{chips}"
    return f"{fabric}'s EP{row} row for EP{chips}"

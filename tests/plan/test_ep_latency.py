"""The all-to-all's latency floor: the published low-latency kernels' rows, by fabric and EP."""

from tenacia.plan.ep_latency import RDMA_US, SCALE_UP_US, floor_row, floor_us


def test_the_floor_is_the_published_row_at_or_above_the_instance():
    # DeepEP V1 on H800 + CX7 (docs/legacy.md): EP16 118 + 195, EP32 155 + 273 µs
    assert floor_us("h100", 8, 16, moe=True) == 313
    assert floor_us("h100", 8, 24, moe=True) == 428  # no EP24 row: the EP32 one
    # past the table: the largest row (EP128's 561 > EP256's 554; the time grows with EP)
    assert floor_us("h100", 8, 1024, moe=True) == 561
    # DeepEP-Ascend on an A3 SuperPOD (sgl-kernel-npu README): EP8 132 + 126, EP32 153 + 151 µs
    assert floor_us("ascend-910c", 384, 8, moe=True) == 258
    assert floor_us("ascend-910c", 384, 160, moe=True) == 304
    # a 910C instance beyond its supernode crosses RDMA: DeepEP's table
    assert floor_us("ascend-910c", 384, 512, moe=True) == 561


def test_no_floor_without_a_published_table_or_an_all_to_all():
    assert floor_us("h100", 8, 8, moe=True) == 0  # inside an NVLink node: none published
    assert floor_us("ascend-910c", 384, 1, moe=True) == 0
    assert floor_us("h100", 8, 64, moe=False) == 0  # a dense model has no expert all-to-all


def test_the_floor_never_falls_as_the_instance_grows():
    for key, domain in (("h100", 8), ("ascend-910c", 384), ("b200", 8)):
        floors = [floor_us(key, domain, n, moe=True) for n in range(1, 1100, 7)]
        assert all(a <= b for a, b in zip(floors, floors[1:], strict=False))
    assert [ep for ep, _ in RDMA_US] == sorted(ep for ep, _ in RDMA_US)
    assert all([ep for ep, _ in t] == sorted(ep for ep, _ in t) for t in SCALE_UP_US.values())


def test_the_row_taken_is_named():
    assert floor_row("h800", 8, 24) == "DeepEP over RDMA's EP32 row for EP24"
    assert floor_row("ascend-910c", 384, 160) == "ascend-910c's largest published EP32 row (none beyond it) for EP160"
    assert floor_row("h100", 8, 8) == "none published"

"""The long-link transport as a quorum's group (``replicas/streams_group.py``): three real processes
make the sync strategies' calls on gloo and on the streams transport, over real sockets; a member
lost as an exchange starts makes the survivors' call raise at once, not at the transport's timeout."""

from pathlib import Path

import pytest
import torch

from tenacia.train.transport import rank_order_sum

from .worker_processes import run_workers

WORKER = Path(__file__).with_name("streams_worker.py")
WORLD = 3
LIMIT_S = 120


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    return run_workers(WORKER, WORLD, tmp_path_factory.mktemp("streams"), LIMIT_S)


@pytest.mark.timeout(LIMIT_S + 30)
def test_the_streams_group_reduces_and_gathers_as_gloo_does(results):
    calls, _ = results
    # sum over k = 0, 1, 2 of t d, t with t = k + 1, d = [k + 1, -2 (k + 1), k / 2]: [1 + 4 + 9, -2 (1 + 4 + 9), 0 + 1 + 3, 6]
    hand = torch.tensor([14.0, -28.0, 4.0, 6.0])
    randn = rank_order_sum([torch.randn(1000, generator=torch.Generator().manual_seed(k)) for k in range(WORLD)])
    for got in calls:
        for transport in ("gloo", "streams"):
            assert torch.equal(got[transport]["hand"], hand), (transport, got[transport]["hand"])
            assert [b.tolist() for b in got[transport]["gather"]] == [[k + 1] * 8 for k in range(WORLD)]
        # the streams transport sums in rank order on every member: the same bits as a local sum
        assert torch.equal(got["streams"]["randn"], randn)
        # gloo's ring adds in another order for 3 members: equal within float32 rounding
        torch.testing.assert_close(got["gloo"]["randn"], randn, rtol=1e-6, atol=1e-6)


@pytest.mark.timeout(LIMIT_S + 30)
def test_a_member_lost_as_an_exchange_starts_makes_the_survivors_call_raise_at_once(results):
    _, lost = results
    for seen in lost:
        assert seen["error"].startswith("TransportError"), seen
        # the mesh's timeout is 60 s; a closed stream is seen in milliseconds (5x margin and more)
        assert seen["seconds"] < 12, seen

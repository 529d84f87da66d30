"""Healing's wire format: the packed state round-trips every dtype and shape exactly, and moves with
the GIL released."""

import collections
import socket
import threading

import pytest
import torch

from tenacia.train.replicas.heal import HealFetch, HealServer, pack, unpack

META = {"step": 7, "sampler": {"position": 112, "epoch": 0}, "tokens_seen": 14336, "data_fingerprint": "abc"}


def odd_tensors() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {
        "w": torch.randn(3, 5, generator=g),
        "half": torch.randn(7, generator=g).to(torch.float16),
        "bf16": torch.randn(2, 3, 4, generator=g).to(torch.bfloat16),
        "f64": torch.randn(3, generator=g, dtype=torch.float64),
        "ids": torch.arange(5, dtype=torch.int64),
        "mask": torch.tensor([True, False, True]),
        "step": torch.tensor(12.0),  # AdamW keeps its step as a 0-dim tensor
        "empty": torch.empty(0, 4),
        "strided": torch.randn(4, 6, generator=g).t(),  # not contiguous
    }


def assert_same(got: dict[str, torch.Tensor], want: dict[str, torch.Tensor]) -> None:
    assert list(got) == list(want)
    for k in want:
        assert got[k].dtype == want[k].dtype and got[k].shape == want[k].shape, k
        assert torch.equal(got[k], want[k]), k


def test_pack_unpack_is_exact_for_every_dtype_and_shape():
    a, b = odd_tensors(), {"x.exp_avg": torch.randn(9), "x.step": torch.tensor(3.0)}
    (la, lb), buf = pack(a, b)
    assert buf.dtype == torch.uint8 and buf.dim() == 1
    assert all(off % 64 == 0 for _, _, _, off, _ in la + lb)
    assert_same(unpack(la, buf), a)
    assert_same(unpack(lb, buf), b)


def test_a_layout_that_does_not_fit_the_buffer_is_refused():
    (layout,), buf = pack({"w": torch.randn(10)})
    with pytest.raises(ValueError, match="'w'"):
        unpack(layout, buf[:20])
    with pytest.raises(ValueError, match="'w'"):
        unpack([("w", "Tensor", [10], 0, 40)], buf)


def test_heal_over_loopback_delivers_meta_and_state_exactly():
    server = HealServer("127.0.0.1", "127.0.0.1")
    model, optim = odd_tensors(), {"w.exp_avg": torch.randn(3, 5), "w.step": torch.tensor(4.0)}
    want = {k: v.clone() for k, v in model.items()}
    server.offer(3, META, model, optim)
    model["w"].add_(1.0)  # the offer is a snapshot: later training does not reach the newcomer
    fetch = HealFetch(server.addr, 3)
    assert fetch.done.wait(30) and fetch.error is None, fetch.error
    meta, got_model, got_optim = fetch.result
    assert {k: meta[k] for k in META} == META
    assert_same(got_model, want)
    assert_same(got_optim, optim)
    bases = {t.untyped_storage().data_ptr() for t in got_optim.values()}
    assert len(bases) == len(got_optim)  # the optimizer keeps its own tensors, not views of one buffer


def test_unknown_quorum_is_an_error_not_a_hang():
    server = HealServer("127.0.0.1", "127.0.0.1")
    server.offer(5, META, {"w": torch.zeros(2)}, {})
    server._offers.clear()  # as if the offer had been dropped
    server._cond.wait_for = lambda pred, timeout: False  # skip the 30 s wait for an offer
    fetch = HealFetch(server.addr, 5)
    assert fetch.done.wait(30) and fetch.result is None
    assert "no state offered" in (fetch.error or "")


def _transfer_under_a_gil_hog(side: int) -> tuple[int, int]:
    """Heal a (side x side) x 12 float32 state while another thread keeps the GIL busy in Python;
    returns (bytes moved, Python-level socket calls made by both ends)."""
    model = {f"layer{i}": torch.randn(side, side) for i in range(4)}
    optim = {f"layer{i}.{m}": torch.randn(side, side) for i in range(4) for m in ("exp_avg", "exp_avg_sq")}
    server = HealServer("127.0.0.1", "127.0.0.1")
    stop = threading.Event()

    def busy() -> None:
        while not stop.is_set():
            sum(range(10_000))

    hog = threading.Thread(target=busy, daemon=True)
    before = sum(SOCKET_CALLS.values())
    hog.start()
    try:
        server.offer(1, META, model, optim)
        fetch = HealFetch(server.addr, 1)
        assert fetch.done.wait(60) and fetch.error is None, fetch.error
    finally:
        stop.set()
        hog.join()
    return fetch.nbytes, sum(SOCKET_CALLS.values()) - before


SOCKET_CALLS: collections.Counter = collections.Counter()


def test_a_transfer_takes_the_gil_as_often_for_48_mb_as_for_48_kb(monkeypatch):
    """A training thread that keeps the GIL busy in Python must not slow the transfer to seconds.
    Every time a transfer thread needs the GIL back it may wait a switch interval for it, so the
    transfer must make as many Python-level socket calls for 48 MB as for 48 KB (one sendall, one
    MSG_WAITALL recv_into: the bytes move with the GIL released). Counted, not timed; the time of a
    heal is measured by bench/faults.py."""
    for name in ("recv_into", "recv", "sendall", "send"):
        real = getattr(socket.socket, name)

        def counted(self, *args, _real=real, _name=name, **kwargs):
            SOCKET_CALLS[_name] += 1
            return _real(self, *args, **kwargs)

        monkeypatch.setattr(socket.socket, name, counted)
    small_bytes, small_calls = _transfer_under_a_gil_hog(32)
    big_bytes, big_calls = _transfer_under_a_gil_hog(1024)
    assert (small_bytes, big_bytes) == (48 << 10, 48 << 20)
    # a partial MSG_WAITALL receive (a signal, a timeout) may cost a call or two more
    assert big_calls <= small_calls + 2, (small_calls, big_calls, SOCKET_CALLS)

"""Wrong numbers: each bit class changes what it says, seeded choices, once/every/q patterns, the
slot filter, lr spikes, votes, autograd, and the event log."""

import json
import math
import random
from contextlib import contextmanager

import pytest
import torch

from tenacia import hooks
from tenacia.chaos import sdc
from tenacia.events import EventLog, read_events
from tenacia.faults import ChaosConfig


def words(t: torch.Tensor) -> torch.Tensor:
    return t.detach().clone().view(torch.int32)


def plausible(n: int = 64, seed: int = 0) -> torch.Tensor:
    """Values with magnitudes in [0.01, 1), both signs: what weights and gradients look like."""
    g = torch.Generator().manual_seed(seed)
    mag = 0.01 + 0.99 * torch.rand(n, generator=g)
    return torch.where(torch.rand(n, generator=g) < 0.5, -mag, mag)


@contextmanager
def schedule(faults, slot=0, seed=0):
    """The schedule's tamperers for ``slot`` while the block runs; yields the events they emit."""
    events = []
    stop = sdc.install(ChaosConfig(faults=faults, seed=seed), slot, lambda name, **f: events.append({"event": name, **f}))
    try:
        yield events
    finally:
        stop()
    assert not hooks.tampering()


@pytest.mark.parametrize("bits", ["sign", "exponent", "mantissa_high", "mantissa_low", "multi", "nan", "inf",
                                  "zero"])
def test_each_bit_class_changes_one_element_as_it_says(bits):
    for seed in range(20):
        t = plausible(seed=seed)
        before = t.clone()
        rec = sdc.flip(t, seed, bits, random.Random(seed))
        old, new = before[seed].item(), t[seed].item()
        assert (rec.index, rec.old) == (seed, old) and (rec.new == new or math.isnan(new))
        changed = (words(t) != words(before)).nonzero().flatten().tolist()
        assert changed == [seed]  # exactly one element, and only its own bits
        diff = int(words(t)[seed] ^ words(before)[seed]) & 0xFFFFFFFF
        assert rec.bits == tuple(b for b in range(32) if diff >> b & 1)
        rel = abs(new - old) / abs(old)
        if bits == "sign":
            assert new == -old and rec.bits == (31,)
        elif bits == "exponent":
            assert rec.bits == (30,) and (abs(new) > 1e30 or math.isinf(new))
        elif bits == "mantissa_high":  # bit b of 18..22 moves (1+m)*2^e by 2^(b-23)*2^e
            assert 2**-6 < rel <= 2**-1 and 18 <= rec.bits[0] <= 22
        elif bits == "mantissa_low":
            assert 0 < rel < 2**-18 and rec.bits[0] <= 4
        elif bits == "multi":
            assert len(rec.bits) == 3 and bin(diff).count("1") == 3
        elif bits == "nan":
            assert math.isnan(new)
        elif bits == "inf":
            assert new == math.copysign(math.inf, old)
        else:
            assert new == 0.0


def test_an_element_is_found_by_its_row_major_index_whatever_the_strides():
    t = torch.arange(1.0, 13.0).reshape(3, 4).t()  # (4, 3), not contiguous
    rec = sdc.flip(t, 5, "sign", random.Random(0))
    assert t[1, 2].item() == -rec.old and (t < 0).sum() == 1
    with pytest.raises(TypeError, match="float32"):
        sdc.flip(torch.ones(3, dtype=torch.float64), 0, "sign", random.Random(0))


def test_lists_of_tensors_draw_over_all_elements_in_list_order():
    hit = set()
    for seed in range(60):
        params = [plausible(6, seed).reshape(2, 3), plausible(4, seed + 1), plausible(5, seed + 2)]
        flat = torch.cat([p.flatten() for p in params])
        value, rec = sdc.corrupt(params, "sign", random.Random(seed))
        after = torch.cat([p.flatten() for p in value])
        assert value is params and (after != flat).nonzero().flatten().tolist() == [rec.index]
        assert after[rec.index] == -flat[rec.index]
        hit.add(next(i for i, end in enumerate((6, 10, 15)) if rec.index < end))
    assert hit == {0, 1, 2}


def test_a_float_site_is_corrupted_in_its_float32_representation():
    value, rec = sdc.corrupt(0.75, "sign", random.Random(0))
    assert value == -0.75 and isinstance(value, float) and rec.bits == (31,)
    value, rec = sdc.corrupt(0.1, "exponent", random.Random(0))  # 0.1 has no exact float32: its float32 is flipped
    assert rec.old == float(torch.tensor(0.1)) and value > 1e30


def test_a_vote_gets_exactly_one_numeric_leaf_changed_in_a_copy():
    vote = {"finite": {"loss": True, "grads": True}, "loss": 2.5, "name": "fp",
            "norms": [1.0, 3, {"x": 0.5, "y": [7]}], "fingerprint": 2**63 + 5}

    def leaves(v, path=""):
        if isinstance(v, dict):
            return {k: x for key, val in v.items() for k, x in leaves(val, f"{path}.{key}").items()}
        if isinstance(v, list):
            return {k: x for i, val in enumerate(v) for k, x in leaves(val, f"{path}[{i}]").items()}
        return {path.lstrip("."): v}

    original = json.dumps(vote)
    seen = set()
    for seed in range(40):
        for bits in ("sign", "multi", "nan", "zero", "exponent"):
            new, rec = sdc.corrupt(vote, bits, random.Random(seed))
            changed = [k for k, v in leaves(vote).items() if leaves(new)[k] != v or type(leaves(new)[k]) is not type(v)]
            assert changed == [rec.index] and json.dumps(vote) == original
            assert leaves(new)["finite.loss"] is True and leaves(new)["name"] == "fp"
            seen.add(rec.index)
    assert seen == {"loss", "norms[0]", "norms[1]", "norms[2].x", "norms[2].y[0]", "fingerprint"}
    with pytest.raises(TypeError):
        sdc.corrupt(5, "sign", random.Random(0))  # no site holds a bare int
    assert sdc.flip_int(2**63 + 5, "sign", random.Random(0))[0] == 5  # unsigned 64-bit stays unsigned
    assert sdc.flip_int(3, "sign", random.Random(0))[0] == 3 - 2**63  # a signed one turns negative
    assert sdc.corrupt({"ok": True, "why": None}, "sign", random.Random(0)) == ({"ok": True, "why": None}, None)


def test_a_tensor_in_an_autograd_graph_is_flipped_unseen_and_backward_runs():
    w = plausible(8).requires_grad_()
    loss = (w * w).sum()  # saves w for backward
    rec = sdc.flip(w, 3, "sign", random.Random(0))
    loss.backward()
    assert w.grad[3].item() == 2 * rec.new  # the backward ran on the wrong number


def test_choices_are_seeded_by_the_config_not_by_the_process():
    def draws(seed):
        with schedule(["sdc:0@1:local_grads:multi:every"], seed=seed) as events:
            for step in range(1, 6):
                hooks.tamper("local_grads", step, plausible(1000))
        return [(e["index"], e["flipped"]) for e in events]

    assert len(draws(7)) == 5 and draws(7) == draws(7) != draws(8)
    # SHA-256 of the tuple, not the salted hash(): these numbers hold in every process
    assert sdc.rng_for(7, 0, 3, "loss", 0, "x").random() == sdc.rng_for(7, 0, 3, "loss", 0, "x").random()
    assert sdc.rng_for(0, 0, 0, "loss", 0, "sdc:0@0:loss:sign").randrange(10**6) == 360566


def test_once_and_every_fire_on_their_calls():
    with schedule(["sdc:0@3:activations:sign", "sdc:0@3:local_grads:zero:every"]) as events:
        for step in [1, 2, 3, 4, 4, 5, 6]:  # step 4 runs twice (a re-execution)
            for site in ("activations", "local_grads", "local_grads"):  # two micro-batches' gradients
                hooks.tamper(site, step, torch.full((4,), 0.5))
    once = [(e["step"], e["call"]) for e in events if e["site"] == "activations"]
    every = [(e["step"], e["call"]) for e in events if e["site"] == "local_grads"]
    assert once == [(3, 0)]
    assert every == [(3, 0), (3, 1), (4, 0), (4, 1), (4, 2), (4, 3), (5, 0), (5, 1), (6, 0), (6, 1)]


def test_an_intermittent_fault_fires_with_its_probability_the_same_way_every_time():
    def intermittent(seed):
        with schedule(["sdc:0@2:reduced_grads:mantissa_low:q=0.3"], seed=seed) as events:
            for step in range(402):
                hooks.tamper("reduced_grads", step, torch.full((4,), 0.5))
        return [(e["step"], e["index"]) for e in events]

    fired = intermittent(5)
    assert fired == intermittent(5) != intermittent(6)
    assert 0.3 * 400 * 0.75 < len(fired) < 0.3 * 400 * 1.25 and min(s for s, _ in fired) >= 2


def test_only_the_faults_of_this_slot_are_installed_and_lr_spikes_everywhere():
    faults = ["sdc:1@0:loss:sign:every", "sdc:2@0:loss:zero:every", "lr_spike@3:10"]
    with schedule(faults, slot=1) as events:
        assert hooks.tamper("loss", 0, 2.0) == -2.0
        assert [hooks.tamper("lr", s, 0.001) for s in range(1, 6)] == [0.001, 0.001, 0.001 * 10, 0.001, 0.001]
    assert [(e["kind"], e["slot"]) for e in events] == [("sdc", 1), ("lr_spike", 1)]
    spike = events[1]
    assert (spike["step"], spike["factor"], spike["old"], spike["site"]) == (3, 10.0, 0.001, "lr")
    with schedule(faults, slot=5) as events:
        assert hooks.tamper("loss", 0, 2.0) == 2.0 and hooks.tamper("lr", 3, 1.0) == 10.0
    assert [e["kind"] for e in events] == ["lr_spike"]


def test_every_injection_is_in_the_event_log_in_strict_json(tmp_path):
    log = EventLog(tmp_path / "events.jsonl", "replica")
    stop = sdc.install(ChaosConfig(faults=["sdc:0@1:loss:nan"]), 0, log.emit)
    try:
        assert math.isnan(hooks.tamper("loss", 1, 2.0)) and hooks.tamper("loss", 2, 2.0) == 2.0
    finally:
        stop()
    (e,) = read_events(tmp_path / "events.jsonl")
    assert {k: e[k] for k in ("event", "step", "kind", "site", "bits", "when", "slot", "call", "index", "old",
                              "new")} == {"event": "fault_injected", "step": 1, "kind": "sdc", "site": "loss",
                                          "bits": "nan", "when": "once", "slot": 0, "call": 0, "index": 0,
                                          "old": 2.0, "new": "nan"}
    json.dumps(e, allow_nan=False)

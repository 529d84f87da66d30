"""logit_bias, min_p, repetition_penalty, min_tokens and stop_token_ids: the sampler's functions
on hand-made logits, and the engine in-process on the tiny random model (eos_ids={2})."""

from __future__ import annotations

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from tenacia.serve.engine.llm_engine import check_request
from tenacia.serve.engine.sampling import Sampler, apply_repetition_penalty, truncate
from tenacia.serve.engine.sequence import InvalidRequest, SamplingParams, Sequence

from .test_engine import make_engine, prompts, run
from .tiny import one_thread  # noqa: F401 (a fixture)

pytestmark = pytest.mark.usefixtures("one_thread")

EOS = 2


def greedy(**kw) -> SamplingParams:
    return SamplingParams(**{"max_tokens": 12, "temperature": 0.0, "ignore_eos": True, **kw})


def tokens_of(model, tokenizer, prompt: list[int], params: SamplingParams) -> tuple[list[int], str, str]:
    """(tokens, text, finish_reason) of one request on a fresh engine."""
    tokens, text, _, reason = run(make_engine(model, tokenizer), {"r": (prompt, params)})["r"][0]
    return tokens, text, reason


def seq_with(params: SamplingParams, prompt: list[int], output: list[int]) -> Sequence:
    seq = Sequence(0, "r", 0, prompt, params, torch.Generator().manual_seed(0), frozenset({EOS}))
    seq.output_ids = list(output)
    return seq


# --- logit_bias ---------------------------------------------------------------------------------

def test_a_plus_100_bias_forces_its_token_at_every_position(model, tokenizer):
    p = prompts(tokenizer)[1]
    plain, _, _ = tokens_of(model, tokenizer, p, greedy())
    target = next(t for t in range(3, 512) if t not in plain)
    forced, _, _ = tokens_of(model, tokenizer, p, greedy(logit_bias={target: 100.0}))
    assert forced == [target] * 12
    sampled, _, _ = tokens_of(model, tokenizer, p, greedy(temperature=1.0, seed=3, logit_bias={target: 100.0}))
    assert sampled == [target] * 12


def test_a_minus_100_bias_bans_the_greedy_choice(model, tokenizer):
    p = prompts(tokenizer)[1]
    plain, _, _ = tokens_of(model, tokenizer, p, greedy())
    banned = plain[0]
    got, _, _ = tokens_of(model, tokenizer, p, greedy(logit_bias={banned: -100.0}))
    assert got != plain and banned not in got


# --- min_p --------------------------------------------------------------------------------------

def test_min_p_drops_tokens_less_likely_than_a_share_of_the_best():
    probs = torch.tensor([[0.5, 0.3, 0.15, 0.05], [0.5, 0.3, 0.15, 0.05]])
    kept = truncate(probs.log(), torch.zeros(2, dtype=torch.int64), torch.ones(2), torch.tensor([0.2, 0.0]))
    assert torch.isfinite(kept).tolist() == [[True, True, True, False], [True, True, True, True]]


def test_min_p_one_samples_the_greedy_tokens(model, tokenizer):
    p = prompts(tokenizer)[2]
    plain, _, _ = tokens_of(model, tokenizer, p, greedy(max_tokens=16))
    sampled, _, _ = tokens_of(model, tokenizer, p, greedy(max_tokens=16, temperature=1.5, min_p=1.0, seed=7))
    assert sampled == plain
    loose, _, _ = tokens_of(model, tokenizer, p, greedy(max_tokens=16, temperature=1.5, min_p=0.0, seed=7))
    assert loose != plain  # without min_p the same seed wanders off the greedy path


# --- repetition_penalty -------------------------------------------------------------------------

def test_repetition_penalty_equals_hugging_faces_processor():
    from transformers import RepetitionPenaltyLogitsProcessor

    torch.manual_seed(0)
    logits = torch.randn(3, 50) * 3
    prompt, output = [4, 7, 7, 11, 30], [11, 2, 49, 0]
    seqs = [seq_with(SamplingParams(repetition_penalty=1.7), prompt, output),
            seq_with(SamplingParams(), prompt, output),  # 1.0: untouched
            seq_with(SamplingParams(repetition_penalty=0.6), prompt[:2], [])]
    got = apply_repetition_penalty(logits.clone(), seqs)
    for row, (penalty, ids) in enumerate([(1.7, prompt + output), (None, None), (0.6, prompt[:2])]):
        if penalty is None:
            assert torch.equal(got[row], logits[row])
            continue
        want = RepetitionPenaltyLogitsProcessor(penalty)(torch.tensor([ids]), logits[row:row + 1].clone())
        assert torch.equal(got[row], want[0])


def test_repetition_penalty_mask_grows_with_the_output_as_a_fresh_one_would():
    from transformers import RepetitionPenaltyLogitsProcessor

    torch.manual_seed(1)
    seq = seq_with(SamplingParams(repetition_penalty=1.3), [4, 7], [])
    for new in ([9], [9, 21], [9, 21, 3, 33]):  # the output grows between steps, as in decoding
        seq.output_ids = list(new)
        logits = torch.randn(1, 50) * 3
        got = apply_repetition_penalty(logits.clone(), [seq])
        want = RepetitionPenaltyLogitsProcessor(1.3)(torch.tensor([[4, 7, *new]]), logits.clone())
        assert torch.equal(got, want)
    assert seq.seen_upto == 6  # two prompt tokens and four output tokens, each marked once


def test_repetition_penalty_changes_greedy_text_that_repeats(model, tokenizer):
    p = prompts(tokenizer)[1]
    plain, _, _ = tokens_of(model, tokenizer, p, greedy(max_tokens=24))
    assert any(t in p or t in plain[:j] for j, t in enumerate(plain))  # greedy repeats a token
    penalized, _, _ = tokens_of(model, tokenizer, p, greedy(max_tokens=24, repetition_penalty=1.3))
    assert penalized != plain


# --- min_tokens and stop_token_ids ----------------------------------------------------------------

def test_min_tokens_holds_back_a_forced_eos(model, tokenizer):
    p = prompts(tokenizer)[1]
    eos_first = dict(max_tokens=20, ignore_eos=False, logit_bias={EOS: 100.0})
    assert tokens_of(model, tokenizer, p, greedy(**eos_first))[0] == [EOS]
    tokens, text, reason = tokens_of(model, tokenizer, p, greedy(**eos_first, min_tokens=6))
    assert reason == "stop" and len(tokens) == 7 and tokens[-1] == EOS and EOS not in tokens[:-1]
    assert text == tokenizer.decode(tokens[:-1])  # the EOS's text is not part of the answer


def test_min_tokens_holds_back_stop_token_ids_too(model, tokenizer):
    p = prompts(tokenizer)[1]
    params = greedy(max_tokens=20, logit_bias={7: 100.0}, stop_token_ids=[7], min_tokens=4)
    tokens, _, reason = tokens_of(model, tokenizer, p, params)
    assert reason == "stop" and len(tokens) == 5 and tokens[-1] == 7 and 7 not in tokens[:-1]


def test_a_stop_token_id_ends_the_answer_like_eos(model, tokenizer):
    p = prompts(tokenizer)[1]
    plain, _, _ = tokens_of(model, tokenizer, p, greedy(max_tokens=24))
    at = next(j for j in range(3, 24) if plain[j] not in plain[:j])
    tokens, text, reason = tokens_of(model, tokenizer, p, greedy(max_tokens=24, stop_token_ids=[plain[at], 500]))
    assert reason == "stop" and tokens == plain[:at + 1]
    assert text == tokens_of(model, tokenizer, p, greedy(max_tokens=at))[1]  # without the stop token's text
    kept = tokens_of(model, tokenizer, p, greedy(max_tokens=24, stop_token_ids=[plain[at]], min_tokens=24))
    assert kept[2] == "length" and plain[at] not in kept[0]


# --- batches ------------------------------------------------------------------------------------

def test_seeded_sampling_with_the_new_fields_does_not_depend_on_the_batch(model, tokenizer):
    ps = prompts(tokenizer)
    seeded = SamplingParams(max_tokens=24, temperature=1.0, seed=1234, ignore_eos=True, min_p=0.05,
                            repetition_penalty=1.2, logit_bias={100: 2.0, 101: -5.0}, min_tokens=3)
    alone = run(make_engine(model, tokenizer), {"x": (ps[1], seeded)})["x"][0][0]
    others = {
        "g": (ps[0], greedy(max_tokens=30, logit_bias={5: 3.0}, repetition_penalty=0.8)),
        "s": (ps[2], SamplingParams(max_tokens=20, temperature=0.7, min_p=0.3, stop_token_ids=[9], min_tokens=5)),
        "p": (ps[1], SamplingParams(max_tokens=25, temperature=1.0, ignore_eos=True)),
    }
    crowded = run(make_engine(model, tokenizer, block_size=4), {**others, "x": (ps[1], seeded)})["x"][0][0]
    assert crowded == alone


def test_a_batch_of_plain_greedy_rows_costs_one_max():
    class Ops(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.names: list[str] = []

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            self.names.append(func.__name__)
            return func(*args, **(kwargs or {}))

    seqs = [seq_with(SamplingParams(temperature=0.0), [3, 4], [5]) for _ in range(4)]
    logits = torch.randn(4, 50)
    with Ops() as ops:
        tokens, _ = Sampler()(logits, seqs)
    assert tokens == logits.argmax(dim=1).tolist()
    assert [n for n in ops.names if not n.startswith("_local_scalar")] == ["max.dim"]



def test_greedy_rows_take_the_given_greedy_choice_and_sampled_rows_their_draw():
    """``Sampler(greedy=...)``: the backend's choice answers the greedy rows (the CPU kernels'
    ``argmax_rows``); a sampled row still draws from its own generator."""
    asked = []

    def last_column(logits):
        asked.append(tuple(logits.shape))
        return torch.full((logits.size(0),), logits.size(1) - 1, dtype=torch.int64)

    seqs = [seq_with(SamplingParams(temperature=0.0), [3], [5]),
            seq_with(SamplingParams(temperature=1.0, top_k=1, seed=0), [3], [5])]
    logits = torch.randn(2, 50)
    tokens, _ = Sampler(greedy=last_column)(logits, seqs)
    assert asked == [(2, 50)]
    assert tokens == [49, int(logits[1].argmax())]

# --- validation ---------------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs, param", [
    ({"logit_bias": {5: 101.0}}, "logit_bias"),
    ({"logit_bias": {-1: 1.0}}, "logit_bias"),
    ({"logit_bias": {i: 1.0 for i in range(301)}}, "logit_bias"),
    ({"min_p": 1.5}, "min_p"),
    ({"min_p": -0.1}, "min_p"),
    ({"repetition_penalty": 0.0}, "repetition_penalty"),
    ({"repetition_penalty": float("inf")}, "repetition_penalty"),
    ({"min_tokens": -1}, "min_tokens"),
    ({"min_tokens": 17, "max_tokens": 16}, "min_tokens"),
    ({"stop_token_ids": [-3]}, "stop_token_ids"),
    ({"stop_token_ids": list(range(65))}, "stop_token_ids"),
])
def test_out_of_range_values_name_their_field(kwargs, param):
    with pytest.raises(InvalidRequest) as err:
        SamplingParams(**kwargs)
    assert err.value.param == param and param in str(err.value)


@pytest.mark.parametrize("field", ["logit_bias", "stop_token_ids"])
def test_token_ids_outside_the_vocabulary_are_refused(field):
    params = SamplingParams(**{field: {512: 1.0} if field == "logit_bias" else [512]})
    with pytest.raises(InvalidRequest, match=r"512.*\[0, 512\)") as err:
        check_request([1, 2], params, vocab=512, context=100, capacity=100)
    assert err.value.param == field
    check_request([1, 2], SamplingParams(**{field: {511: 1.0} if field == "logit_bias" else [511]}),
                  vocab=512, context=100, capacity=100)

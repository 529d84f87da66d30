"""Compression of the outer exchange (``replicas/compress.py``): codes, scales, top-k and error
feedback on hand-computed cases, the wire form, and the bytes each format sends."""

import pytest
import torch

from tenacia.train.replicas.compress import Compressor, pack_codes, unpack_codes


def close(a, b):
    torch.testing.assert_close(a, torch.tensor(b, dtype=torch.float32), rtol=0, atol=1e-7)


def test_int8_with_error_feedback_sends_over_two_rounds_what_it_could_not_send_in_one():
    c = Compressor("int8", block=2, topk=0.0, error_feedback=True)
    x = torch.tensor([0.5, -1.0, 0.25, 2.0])
    # block [0.5, -1]: scale 1/127, 0.5 * 127 = 63.5 rounds (half to even) to 64; block [0.25, 2]: scale 2/127
    p, residual = c.encode(x)
    assert p.codes.tolist() == [64, -127, 16, 127]
    close(p.scales, [1 / 127, 2 / 127])
    close(c.decode(p), [64 / 127, -1.0, 32 / 127, 2.0])
    close(residual, [-0.5 / 127, 0.0, -0.25 / 127, 0.0])
    # the next round sends x + residual: 0.5 - 0.5/127 -> 63, and nothing is left over of the first block
    p2, residual2 = c.encode(x, residual)
    assert p2.codes.tolist()[:2] == [63, -127]
    close(c.decode(p2)[:2] + c.decode(p)[:2], [1.0, -2.0])  # two rounds of 0.5 arrived as exactly 1.0
    close(residual2[:2], [0.0, 0.0])


def test_without_error_feedback_nothing_is_carried():
    c = Compressor("int8", block=2, topk=0.0, error_feedback=False)
    p, residual = c.encode(torch.tensor([0.5, -1.0]))
    assert residual is None and p.codes.tolist() == [64, -127]


def test_int4_codes_two_to_a_byte():
    c = Compressor("int4", block=2, topk=0.0, error_feedback=True)
    p, residual = c.encode(torch.tensor([0.625, -1.75, 0.0, 0.0]))
    # scale 1.75/7 = 0.25: 2.5 rounds (half to even) to 2, -1.75 to -7; a block of zeros has scale 0, codes 0
    assert p.codes.dtype == torch.uint8 and p.codes.tolist() == [(2 + 8) | (-7 + 8) << 4, 8 | 8 << 4]
    close(p.scales, [0.25, 0.0])
    close(c.decode(p), [0.5, -1.75, 0.0, 0.0])
    close(residual, [0.125, 0.0, 0.0, 0.0])
    codes = torch.arange(0, 16, dtype=torch.uint8)
    assert torch.equal(unpack_codes(pack_codes(codes, 4), 4, codes.numel()), codes)


def test_int2_codes_four_to_a_byte_on_levels_of_half_the_rms():
    c = Compressor("int2", block=4, topk=0.0, error_feedback=True)
    p, residual = c.encode(torch.tensor([7.0, -1.0, 5.0, -5.0, 0.0, 0.0, 0.0, 0.0, 0.25]))
    # block 1: rms sqrt((49 + 1 + 25 + 25) / 4) = 5, scale 2.5, levels +-2.5, +-7.5, boundaries 0, +-5:
    # 7 -> 3, -1 -> -1, 5 (on a boundary: the level above) -> 3, -5 (on one) -> -1; codes (level + 3) / 2
    # block 2: zeros, scale 0; block 3: 0.25 and three zeros of padding, rms 0.125, scale 0.0625:
    # 0.25 / 0.125 = 2 -> level 3, 0.1875; the padding is cut on decoding
    assert p.codes.dtype == torch.uint8 and p.codes.tolist() == [3 | 1 << 2 | 3 << 4 | 1 << 6, 0b10101010,
                                                                 3 | 2 << 2 | 2 << 4 | 2 << 6]
    close(p.scales, [2.5, 0.0, 0.0625])
    close(c.decode(p), [7.5, -2.5, 7.5, -2.5, 0.0, 0.0, 0.0, 0.0, 0.1875])
    close(residual, [-0.5, 1.5, -2.5, -2.5, 0.0, 0.0, 0.0, 0.0, 0.0625])
    assert c.packed_bytes(9) == 3 + 3 * 4 and c.pack(p).numel() == 15
    codes = torch.tensor([0, 1, 2, 3, 3, 2, 1], dtype=torch.uint8)  # not a whole byte's worth at the end
    assert pack_codes(codes, 2).tolist() == [0 | 1 << 2 | 2 << 4 | 3 << 6, 3 | 2 << 2 | 1 << 4]
    assert torch.equal(unpack_codes(pack_codes(codes, 2), 2, 7), codes)


@pytest.mark.parametrize(("name", "bound"), [("gauss", 0.12), ("laplace", 0.21)])
def test_int2_loses_a_fraction_of_a_dense_block_near_the_four_level_optimum(name, bound):
    """The module docstring's reason for int2's code: on dense blocks its error is a few times
    smaller than ternary codes with an absmax scale (Lloyd-Max's 4 levels on a Gaussian: 0.1175)."""
    g = torch.Generator().manual_seed(0)
    if name == "gauss":
        x = torch.randn(256 * 400, generator=g)
    else:  # Laplace(0, 1) by its inverse CDF, from the seeded generator
        u = torch.rand(256 * 400, generator=g) - 0.5
        x = -u.sign() * torch.log1p(-2 * u.abs())
    c = Compressor("int2", block=256, topk=0.0, error_feedback=False)
    lost = float((c.decode(c.encode(x)[0]) - x).pow(2).sum() / x.pow(2).sum())
    blocks = x.view(-1, 256)
    absmax = blocks.abs().amax(dim=1, keepdim=True)
    ternary = float((torch.round(blocks / absmax) * absmax - blocks).pow(2).sum() / x.pow(2).sum())
    assert lost < bound and ternary > 3 * lost, (lost, ternary)


def test_topk_keeps_the_largest_per_block_and_feeds_the_rest_back():
    c = Compressor("int8", block=4, topk=0.5, error_feedback=True)
    x = torch.tensor([0.1, -0.4, 0.3, 0.05])
    p, residual = c.encode(x)
    # k = 2 of 4: positions 1 and 2; scale 0.4/127; 0.3 * 127 / 0.4 = 95.25 -> 95
    assert p.indices.reshape(-1).tolist() == [1, 2] and p.codes.tolist() == [-127, 95]
    close(c.decode(p), [0.0, -0.4, 95 * 0.4 / 127, 0.0])
    close(residual, [0.1, 0.0, 0.3 - 95 * 0.4 / 127, 0.05])
    # a round with nothing new sends what was dropped: positions 0 and 3 now hold the largest values
    p2, _ = c.encode(torch.zeros(4), residual)
    assert p2.indices.reshape(-1).tolist() == [0, 3]
    sent = c.decode(p2)
    assert sent[0] == 0.1 and sent[1] == sent[2] == 0 and abs(sent[3] - 0.05) <= 0.5 * 0.1 / 127  # half a step


def test_fp32_topk_sends_the_kept_values_as_they_are():
    c = Compressor("fp32", block=4, topk=0.25, error_feedback=False)
    p, _ = c.encode(torch.tensor([0.1, -0.4, 0.3, 0.05, 1.0, 0.0, 0.0, 0.0]))
    assert p.indices.reshape(-1).tolist() == [1, 0] and p.scales.numel() == 0
    close(c.decode(p), [0.0, -0.4, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0])


@pytest.mark.parametrize(("quantize", "topk", "shrink"), [("fp32", 0.0, 1.0), ("int8", 0.0, 3.9),
                                                         ("int4", 0.0, 7.7), ("int2", 0.0, 15.0),
                                                         ("int4", 0.01, 120.0)])
def test_payload_bytes_shrink_by_the_expected_factor_and_round_trip_the_wire(quantize, topk, shrink):
    n, block = 4096, 256
    c = Compressor(quantize, block=block, topk=topk, error_feedback=True)
    x = torch.randn(n, generator=torch.Generator().manual_seed(0))
    p, _ = c.encode(x)
    kept = n if not topk else n // block * max(1, round(topk * block))
    code_bytes = {"fp32": 4 * kept, "int8": kept, "int4": (kept + 1) // 2, "int2": (kept + 3) // 4}[quantize]
    expected = code_bytes + (0 if quantize == "fp32" else 4 * n // block) + (kept if topk else 0)  # uint8 positions
    assert p.nbytes == c.packed_bytes(n) == expected
    assert 4 * n / p.nbytes >= shrink
    wire = c.pack(p)
    assert wire.dtype == torch.uint8 and wire.numel() == expected
    assert torch.equal(c.decode(c.unpack(wire, n)), c.decode(p))


def test_positions_take_the_narrowest_type_that_holds_a_block():
    dtypes = [Compressor("int4", block=b, topk=0.1, error_feedback=True).index_dtype() for b in (256, 257, 2 ** 15, 2 ** 15 + 1)]
    assert dtypes == [torch.uint8, torch.int16, torch.int16, torch.int32]
    c = Compressor("int4", block=256, topk=0.01, error_feedback=True)
    x = torch.zeros(256)
    x[255], x[200], x[3] = 1.0, -0.5, 0.25  # position 255 must survive the byte
    p, _ = c.encode(x)
    assert p.indices.reshape(-1).tolist() == [3, 200, 255] and c.decode(c.unpack(c.pack(p), 256))[255] == 1.0


def test_a_format_it_does_not_have_is_refused_not_replaced():
    with pytest.raises(ValueError, match="quantize must be one of"):
        Compressor("fp8", block=4, topk=0.0, error_feedback=False)

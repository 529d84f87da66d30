"""The chip catalog: every figure has a source and an uncertainty flag; users extend it."""

import pytest

from tenacia.config import ConfigError
from tenacia.plan.catalog import REQUIRED, load_catalog

EXTRA = """
[chips.h800]
name = "H800, my price"
{figures}

[chips.my-chip]
name = "a chip from a datasheet I trust"
{figures}
"""


def _figures(**values):
    base = {k: 1.0 for k in REQUIRED} | {"crash_per_chip_year": 0.1, "host_per_chip_year": 0.0,
                                        "hang_per_chip_year": 0.0, "sdc_per_chip_year": 0.0,
                                        "failure_rate_low": 0.05, "failure_rate_high": 0.5,
                                        "scale_up_domain": 8} | values
    return "\n".join(f'{k} = {{ value = {v}, source = "test", uncertain = true }}' for k, v in base.items())


def _rejected_figure(tmp_path, **figures) -> str:
    """The field a one-chip catalog with ``figures`` over the defaults is rejected for."""
    path = tmp_path / "bad.toml"
    path.write_text("[chips.my-chip]\nname = \"x\"\n" + _figures(**figures))
    with pytest.raises(ConfigError) as e:
        load_catalog(path)
    return e.value.field


def test_builtin_catalog_has_every_chip_of_the_issue_with_sources(chips):
    assert {"h100", "h800", "h20", "a100", "b200", "ascend-910b", "ascend-910c"} <= set(chips)
    for chip in chips.values():
        for name in REQUIRED:
            fig = chip.figures[name]
            assert fig.source and fig.value == pytest.approx(getattr(chip, name))
    h100, h20 = chips["h100"], chips["h20"]
    assert h100.bf16_tflops == 989.4 and h100.peak_flops("fp8") == pytest.approx(1978.9e12)
    assert not h100.figures["bf16_tflops"].uncertain and h20.figures["bf16_tflops"].uncertain
    assert chips["ascend-910c"].fp8_tflops is None and chips["ascend-910c"].scale_up_domain == 384
    # unpublished Ascend failure rates are marked as guesses
    assert "crash_per_chip_year" in chips["ascend-910c"].uncertain_figures()


def test_fp8_on_a_chip_without_fp8_is_a_clear_error(chips):
    with pytest.raises(ConfigError, match="ascend-910c") as e:
        chips["ascend-910c"].peak_flops("fp8")
    assert e.value.field == "precision"


def test_user_catalog_adds_and_replaces_chips(tmp_path):
    f = tmp_path / "mine.toml"
    f.write_text(EXTRA.format(figures=_figures(price_per_hour=3.5)))
    chips = load_catalog(f)
    assert chips["h800"].price_per_hour == 3.5 and chips["h800"].name == "H800, my price"
    assert chips["my-chip"].figures["bf16_tflops"].source == "test"
    assert chips["h100"].price_per_hour == 2.0  # untouched built-in


@pytest.mark.parametrize("figures, field, allowed", [
    (_figures(memory_gb=-1), "chips.h800.memory_gb", "positive"),
    (_figures().replace("power_w = { value = 1.0, source = \"test\", uncertain = true }", ""),
     "chips.h800.power_w", "a figure"),
    (_figures() + "\nwatts = 3", "chips.h800.watts", "a known figure"),
    (_figures().replace('source = "test", uncertain = true }', 'source = "test" }', 1), "chips.h800",
     "inline table"),
])
def test_bad_catalog_names_chip_and_figure(tmp_path, figures, field, allowed):
    f = tmp_path / "bad.toml"
    f.write_text(f'[chips.h800]\nname = "x"\n{figures}\n')
    with pytest.raises(ConfigError) as e:
        load_catalog(f)
    assert field in e.value.field and allowed in e.value.allowed


def test_failure_rate_band_brackets_the_central_rates(chips, tmp_path):
    h100 = chips["h100"]
    # Llama 3 (s3.3.4, Table 5): 419 unexpected interruptions on 16,384 H100 in 54 days, of which
    # hardware 78% (GPU 58.7%): the catalog's kinds add up to that, software (recovery) apart
    per_year = 419 / (16384 * 54 / 365.25)
    assert h100.hardware_per_chip_year == pytest.approx(per_year * (0.78 + 0.017), rel=0.02)
    assert (h100.crash_per_chip_year + h100.sdc_per_chip_year) / per_year == pytest.approx(0.587, rel=0.02)
    # Kokolis et al. 2024 (Meta's A100 clusters): 6.50 failures per 1000 node-days on RSC-1 (8 GPUs
    # a node) is the A100's central rate; the paper's projections follow from it alone:
    assert 24 / (16384 / 8 * 6.50e-3) == pytest.approx(1.8, rel=0.01)  # hours, 16,384 GPUs
    rsc1, rsc2 = 6.50e-3 * 365.25 / 8, 2.34e-3 * 365.25 / 8
    a100 = chips["a100"]
    assert a100.hardware_per_chip_year == pytest.approx(rsc1, rel=0.001)
    # The ends are the lowest and highest published A100 hardware rates: GLM-130B's 9 failures on
    # 768 A100 in 55 days (0.0778 a GPU-year) and OPT-175B's at least 105 restarts on 992 A100 in 60
    # days (0.644); hangs apart, so x 79.7/78 to the total, rounded outward to two figures
    glm, opt = 9 / (768 * 55 / 365.25), 105 / (992 * 60 / 365.25)
    assert (glm, opt) == pytest.approx((0.0778, 0.644), abs=5e-4)
    assert (glm * 79.7 / 78, opt * 79.7 / 78) == pytest.approx((0.0795, 0.658), abs=5e-4)
    assert (a100.failure_rate_low, a100.failure_rate_high) == (0.079, 0.66)
    assert a100.failure_rate_low < glm * 79.7 / 78 < rsc2 < rsc1 < opt * 79.7 / 78 < a100.failure_rate_high
    # Every other family has fewer than two rates of its own: the transfer rule gives it the same
    # ends; Llama 3's H100 rate lies inside, and the band scales every kind alike
    for key, chip in chips.items():
        assert (chip.failure_rate_low, chip.failure_rate_high) == (0.079, 0.66), key
    for band, total in (("low", 0.079), ("high", 0.66)):
        rates = sum(h100.failure_per_s(k, band=band) for k in ("crash", "host", "hang", "sdc"))
        assert rates * 365.25 * 86400 == pytest.approx(total, rel=1e-9)
    assert _rejected_figure(tmp_path, failure_rate_low=0.2).endswith("chips.my-chip.failure_rate_low")


def test_optional_serving_figures_int8_and_hbm_efficiency(chips, tmp_path):
    """INT8 at the catalog's INT8 peak where there is one, else the BF16 one; an HBM efficiency
    above 1 names the figure."""
    assert chips["ascend-910c"].peak_flops("int8") == pytest.approx(2 * chips["ascend-910c"].peak_flops("bf16"))
    assert chips["a100"].int8_tflops is None and chips["a100"].peak_flops("int8") == chips["a100"].peak_flops("bf16")
    assert chips["ascend-910c"].hbm_efficiency == 0.6 and chips["h100"].hbm_efficiency is None
    assert _rejected_figure(tmp_path, hbm_efficiency=1.5).endswith("chips.my-chip.hbm_efficiency")


def test_measured_all_to_all_efficiency_is_optional_and_a_fraction(chips, tmp_path):
    """The 910C carries DeepEP-Ascend's measured 0.25; NVIDIA chips none (the plan's default);
    a value above 1 names the figure."""
    assert chips["ascend-910c"].alltoall_efficiency == 0.25 and chips["h800"].alltoall_efficiency is None
    assert _rejected_figure(tmp_path, alltoall_efficiency=1.2).endswith("chips.my-chip.alltoall_efficiency")

"""The chip catalog: what each accelerator can do, and where each figure comes from.

The catalog is data (``catalog.toml`` in this package); a user file in the same format extends
or overrides it chip by chip. Every figure keeps its source and an ``uncertain`` flag so that a
plan can say which of its inputs nobody has published.

Failure-rate ranges (``failure_rate_low`` / ``failure_rate_high``: crash + host + hang + sdc per
chip-year; the plan's Monte Carlo band runs at each end). Every end is a published site rate;
hardware rates, as the sources count them (Llama 3's "hardware": hangs apart), are raised by
79.7/78 to the catalog's total and rounded outward to two figures. Published rates, per GPU-year:

- A100 (own data, four rates): GLM-130B 0.078 (THUDM/GLM-130B logs/main-log-en.md at 212215c5: 9
  hardware failures, 768 A100, 55 days of 2022); Meta RSC-2 0.107 and RSC-1 0.297 (Kokolis et al.
  2024, arXiv 2410.21680: 2.34 and 6.50 per 1000 node-days); OPT-175B at least 0.644 (arXiv
  2205.01068 s2.5: at least 105 hardware restarts, 992 A100, 2 months). Low 0.079 (GLM-130B), high
  0.66 (OPT-175B). Central RSC-1, a choice: the largest exposure (about 16k GPUs, 11 months) and a
  cluster's steady-state mean, where the ends are single jobs' logs. GPU-only counts inside the
  band: BLOOM 0.14-0.27 GPU failures (1-2 a week on 384 A100; HF blog 2022-07-09).
- Not a hardware rate, so no end: Kokolis et al.'s 7.9 h MTTF of 1,024-GPU jobs (1.08 per
  GPU-year, every cause: software is ``recovery.software_per_chip_year``).
- Transfer rule, for a family with fewer than two published hardware rates of its own: the
  lowest and highest rate of any NVIDIA data-center family (today both A100's). Why: sites of one
  chip differ more than chip families are shown to (A100 8.3x between GLM-130B and OPT-175B;
  Meta's own two A100 clusters 2.8x; Delta, arXiv 2503.11901 abstract: H100 memory errors 3.2x
  more frequent per GPU than the A100's, its critical hardware more resilient, no net factor).
- Hopper (H100; H800, H20: no rate of their own): Llama 3, 0.135 hardware (Llama 3 paper s3.3.4: 78%
  of 419 interruptions, 16,384 H100, 54 days), the central; range by transfer, 0.079-0.66.
- B200: own Kang et al. 2026 (arXiv 2605.09370), 0.132 GPU failures (10 on 504 B200 in 55 days),
  GPU only; central the H100's; range by transfer.
- Ascend 910B, 910C: no published rate (FACTS.md); range by transfer; central a guess (the
  accelerator at 3x the H100's: press reports of instability). A higher rate than any published
  has no source: sweep it with ``recovery.failure_scale``.

Contract: ``load_catalog`` returns chips keyed by a short name (``h100``, ``ascend-910c``); a
missing required figure, a non-positive value or an unknown key raises ``ConfigError`` naming
the chip and the figure.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import tomllib

from ..config import ConfigError, check

REQUIRED = ("bf16_tflops", "matmul_efficiency", "memory_gb", "memory_tbs", "scale_up_gbs", "scale_up_domain",
            "scale_up_latency_us", "scale_out_gbs", "scale_out_latency_us", "power_w",
            "price_per_hour", "crash_per_chip_year", "host_per_chip_year", "hang_per_chip_year",
            "sdc_per_chip_year", "failure_rate_low", "failure_rate_high")
HARDWARE = ("crash", "host", "hang", "sdc")  # failure kinds a chip or its server causes
BANDS = ("low", "central", "high")
OPTIONAL = ("fp8_tflops", "int8_tflops", "hbm_efficiency", "alltoall_efficiency")
HOURS_PER_YEAR = 24 * 365.25


@dataclass(kw_only=True, slots=True, frozen=True)
class Figure:
    """One published (or assumed) number."""

    value: float
    source: str
    uncertain: bool


@dataclass(kw_only=True, slots=True, frozen=True)
class Chip:
    """One accelerator type. Units: TFLOPS dense, GB, TB/s, GB/s per direction, µs, W, $/h,
    events per chip-year."""

    key: str
    name: str
    bf16_tflops: float
    matmul_efficiency: float  # fraction of the dense peak a large GEMM reaches (efficiency.py)
    fp8_tflops: float | None
    int8_tflops: float | None  # dense INT8 TOPS; None: INT8 matmuls run at the BF16 rate
    hbm_efficiency: float | None  # fraction of memory_tbs serving reads reach; None: the plan's default
    # fraction of scale_up_gbs / scale_out_gbs a serving all-to-all (MoE dispatch + combine)
    # reaches, measured for the chip family; None: the plan's assumptions.comm_efficiency
    alltoall_efficiency: float | None
    memory_gb: float
    memory_tbs: float
    scale_up_gbs: float
    scale_up_domain: int
    scale_up_latency_us: float
    scale_out_gbs: float
    scale_out_latency_us: float
    power_w: float
    price_per_hour: float
    crash_per_chip_year: float
    host_per_chip_year: float
    hang_per_chip_year: float
    sdc_per_chip_year: float
    failure_rate_low: float  # total hardware failures per chip-year, low end of the band
    failure_rate_high: float  # and high end
    figures: dict[str, Figure] = field(default_factory=dict, compare=False)

    def peak_flops(self, precision: str) -> float:
        """Dense peak in FLOP/s for ``precision`` ('bf16', 'fp8' or 'int8'; INT8 at the BF16 peak
        when the catalog has no INT8 figure for the chip)."""
        if precision == "int8":
            return (self.int8_tflops or self.bf16_tflops) * 1e12
        if precision == "fp8":
            if self.fp8_tflops is None:
                raise ConfigError("precision", precision,
                                  f"'bf16': the catalog has no FP8 throughput for {self.key} ({self.name})")
            return self.fp8_tflops * 1e12
        return self.bf16_tflops * 1e12

    @property
    def hardware_per_chip_year(self) -> float:
        """Central total of the hardware kinds."""
        return sum(getattr(self, f"{kind}_per_chip_year") for kind in HARDWARE)

    def band_factor(self, band: str) -> float:
        """What the ``band`` end of the catalog's range multiplies every hardware kind by."""
        central = self.hardware_per_chip_year
        if band == "central" or central <= 0:
            return 1.0
        return getattr(self, f"failure_rate_{band}") / central

    def failure_per_s(self, kind: str, scale: float = 1.0, band: str = "central") -> float:
        """Rate of one hardware failure kind (``HARDWARE``) per chip per second, at the ``band``
        end of the catalog's range (every kind scaled alike)."""
        rate = getattr(self, f"{kind}_per_chip_year")
        if band != "central":
            rate *= self.band_factor(band)
        return scale * rate / (HOURS_PER_YEAR * 3600)

    def uncertain_figures(self) -> list[str]:
        return [k for k, f in self.figures.items() if f.uncertain]


def _chip(key: str, table: dict[str, Any], origin: str) -> Chip:
    where = f"catalog {origin}: chips.{key}"
    allowed = {"name", *REQUIRED, *OPTIONAL}
    for name in table:
        check(name in allowed, f"{where}.{name}", table[name], f"a known figure: {', '.join(sorted(allowed))}")
    check(isinstance(table.get("name"), str), f"{where}.name", table.get("name"), "a string")
    figures: dict[str, Figure] = {}
    for name in (*REQUIRED, *OPTIONAL):
        raw = table.get(name)
        if raw is None:
            check(name in OPTIONAL, f"{where}.{name}", None, "a figure: { value = ..., source = \"...\", uncertain = false }")
            continue
        ok = (isinstance(raw, dict) and set(raw) == {"value", "source", "uncertain"}
              and isinstance(raw["value"], (int, float)) and not isinstance(raw["value"], bool)
              and isinstance(raw["source"], str) and isinstance(raw["uncertain"], bool))
        check(ok, f"{where}.{name}", raw, "an inline table { value = <number>, source = \"...\", uncertain = true|false }")
        check(math.isfinite(raw["value"]), f"{where}.{name}", raw["value"], "a finite number")
        zero_ok = name.endswith("_per_chip_year") or name.startswith("failure_rate_")
        check(raw["value"] >= 0 if zero_ok else raw["value"] > 0, f"{where}.{name}", raw["value"],
              "a number >= 0" if zero_ok else "a positive number")
        figures[name] = Figure(value=float(raw["value"]), source=raw["source"], uncertain=raw["uncertain"])
    for name in ("hbm_efficiency", "alltoall_efficiency"):
        check(name not in figures or figures[name].value <= 1, f"{where}.{name}", figures.get(name),
              "a fraction in (0, 1]")
    check(figures["matmul_efficiency"].value <= 1, f"{where}.matmul_efficiency",
          figures["matmul_efficiency"].value, "a fraction of the peak in (0, 1]")
    central = sum(figures[f"{kind}_per_chip_year"].value for kind in HARDWARE)
    low, high = figures["failure_rate_low"].value, figures["failure_rate_high"].value
    check(low <= central <= high, f"{where}.failure_rate_low", [low, central, high],
          "failure_rate_low <= crash + host + hang + sdc per chip-year <= failure_rate_high")
    domain = figures["scale_up_domain"].value
    check(domain == int(domain) and domain >= 1, f"{where}.scale_up_domain", domain, "a whole number of chips >= 1")
    values = {k: f.value for k, f in figures.items()}
    values["scale_up_domain"] = int(domain)
    return Chip(key=key, name=table["name"], fp8_tflops=values.pop("fp8_tflops", None),
                int8_tflops=values.pop("int8_tflops", None), hbm_efficiency=values.pop("hbm_efficiency", None),
                alltoall_efficiency=values.pop("alltoall_efficiency", None),
                figures=figures, **values)


def _read(text: str, origin: str) -> dict[str, Chip]:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError("catalog", origin, f"valid TOML ({e})") from None
    chips = data.get("chips")
    check(isinstance(chips, dict) and set(data) == {"chips"}, f"catalog {origin}", sorted(data),
          "one top-level table [chips.<key>] per chip and nothing else")
    return {key: _chip(key, table, origin) for key, table in chips.items()}


def load_catalog(extra: str | Path | None = None) -> dict[str, Chip]:
    """The built-in catalog, with the chips of ``extra`` (a TOML file) added or replacing."""
    chips = _read(resources.files(__package__).joinpath("catalog.toml").read_text(), "built-in")
    if extra is not None:
        path = Path(extra)
        check(path.is_file(), "catalog", str(path), "a path to an existing TOML file")
        chips.update(_read(path.read_text(), str(path)))
    return chips


def get_chip(chips: dict[str, Chip], key: str, field_name: str = "chip") -> Chip:
    check(key in chips, field_name, key, f"a chip of the catalog: {', '.join(chips)}")
    return chips[key]

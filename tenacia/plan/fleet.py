"""Fleets: how many chips of which types, named presets, and the ``chip:count,...`` shorthand."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..config import ConfigError, check, check_choice, check_finite
from .catalog import Chip, get_chip

PRESETS: dict[str, list[dict]] = {
    # The seed story (press, The Information): R1's cluster of 50,000 Hopper GPUs.
    "seed-cluster": [dict(chip="h20", count=30000), dict(chip="h800", count=10000),
                     dict(chip="h100", count=10000)],
    # DeepSeek-V3 report: pre-training on 2,048 H800.
    "deepseek-v3": [dict(chip="h800", count=2048)],
    # Llama 3 paper: the 405B run on up to 16,384 H100.
    "llama-3": [dict(chip="h100", count=16384)],
    # 21 CloudMatrix384 supernodes (arXiv 2506.12708): the Ascend side of the seed question.
    "ascend-910c-8k": [dict(chip="ascend-910c", count=21 * 384)],
    # The same chip count of H800, and of Ascend 910B (1,008 eight-NPU servers), to compare.
    "h800-8k": [dict(chip="h800", count=21 * 384)],
    "ascend-910b-8k": [dict(chip="ascend-910b", count=21 * 384)],
}


@dataclass(kw_only=True, slots=True)
class FleetGroup:
    """Chips of one type at one site. ``price_per_hour`` 0 takes the catalog's default for the
    chip; groups with the same ``site`` share a site (its links: the catalog's; between sites:
    ``sync.link``)."""

    chip: str
    count: int
    price_per_hour: float = 0.0
    site: str = ""

    def __post_init__(self) -> None:
        check_finite(self)
        check(self.count > 0, "count", self.count, "a positive number of chips")
        check(self.price_per_hour >= 0, "price_per_hour", self.price_per_hour,
              "a number >= 0 (0: the catalog's default)")


@dataclass(kw_only=True, slots=True)
class FleetSpec:
    """A (possibly mixed) fleet: a preset, or explicit groups.

    ``balance`` says how a synchronous step splits work between chip types: 'slowest' gives
    every data-parallel replica the same share, so the slowest type sets the pace (what
    standard data parallelism does); 'proportional' gives each replica a share proportional to
    its speed (needs a framework that supports uneven batches; an upper bound).
    """

    preset: str = "deepseek-v3"  # a key of PRESETS; explicit groups take precedence
    groups: list[FleetGroup] = field(default_factory=list)
    balance: str = "slowest"

    def __post_init__(self) -> None:
        check_choice("balance", self.balance, ("slowest", "proportional"))
        if self.preset:
            check(self.preset in PRESETS, "preset", self.preset,
                  f"one of {', '.join(PRESETS)}, or \"\" with fleet.groups given")
            if self.groups:
                self.preset = ""  # explicit groups win; say so in the resolved config
            else:
                self.groups = [FleetGroup(**g) for g in PRESETS[self.preset]]
        check(bool(self.groups), "groups", self.groups,
              "at least one group (or a fleet.preset), e.g. --fleet h800:2048")

    def sites(self) -> list[str]:
        """Site names in the order their first group appears."""
        return list(dict.fromkeys(g.site for g in self.groups))

    def resolve(self, chips: dict[str, Chip]) -> list[tuple[Chip, int, float]]:
        """(chip, count, price per chip-hour) per group, checked against the catalog."""
        out = []
        for i, g in enumerate(self.groups):
            chip = get_chip(chips, g.chip, f"fleet.groups[{i}].chip")
            out.append((chip, g.count, g.price_per_hour or chip.price_per_hour))
        return out


def parse_fleet_shorthand(text: str) -> list[dict]:
    """``'h20:30000@east,h800:10000'`` -> groups (``@site`` optional). Raises ConfigError on
    anything else."""
    groups = []
    for part in text.split(","):
        chip, sep, rest = part.strip().partition(":")
        count, at, site = rest.partition("@")
        if not sep or not chip or not count.strip().isdigit() or int(count) <= 0 or (at and not site.strip()):
            raise ConfigError("fleet", text, "a preset name, a TOML file, or chip:count[@site][,chip:count...] "
                              "with positive counts, e.g. h20:30000@east,h800:10000@west")
        groups.append(dict(chip=chip.strip(), count=int(count), site=site.strip()))
    return groups

"""The settings of bench/slow_links.py's arms: per arm, the inner AdamW's peak rate and the
schedule's floor (``optim.lr``, ``optim.min_lr_ratio``) and the outer step (lr, Nesterov momentum).

Chosen on the probe bench/slow_links_tune.py (other seeds, the bench's default budget), run before
the bench, which writes them to ``SETTINGS_FILE`` (docs/benchmarks.md); ``DEFAULTS`` (tenacia's own
and DiLoCo's) where it has not run. ``--settings`` reads another file of the same form, a budget's
own (``bench/slow_links_settings_16x.json``). A torchft arm takes the settings of the tenacia arm it
mirrors (``slow_links_arms.TORCHFT_AS``): the same model, data, seeds and hyperparameters.
"""

from __future__ import annotations

import json
from pathlib import Path

SETTINGS_FILE = Path(__file__).resolve().parent / "slow_links_settings.json"
DILOCO = {"lr": 3e-3, "min_lr_ratio": 0.1, "outer_lr": 0.7, "outer_momentum": 0.9}
AVERAGE = {**DILOCO, "outer_lr": 1.0, "outer_momentum": 0.0}
DEFAULTS: dict[str, dict[str, float]] = {
    "ddp": {"lr": 3e-3, "min_lr_ratio": 0.1}, "diloco": DILOCO, "diloco-int8": DILOCO, "diloco-int4-topk": AVERAGE,
    "streaming": DILOCO, "streaming-int4": DILOCO, "localsgd": AVERAGE, "diloco-overlap": DILOCO,
    "diloco-eager": DILOCO, "streaming-int4-eager": DILOCO}
# an arm added after a file's probe, with no entry of its own, takes the settings its own probes ran
# on: the plain loop's int2 reduce-scatter probes ran on diloco's (docs/benchmarks.md, 18:45), its
# delayed outer step's on the int2 reduce-scatter's (docs/benchmarks.md, 2026-12-05)
UNTUNED = {"diloco-int2-rs": "diloco", "diloco-delay-int2-rs": "diloco-int2-rs"}
SETTINGS: dict[str, dict[str, float]] = {}  # the settings in use (``use_settings``)


def use_settings(path: Path, twins: dict[str, str]) -> dict[str, dict[str, float]]:
    """Make the settings of ``path`` (``{"settings": {arm: {...}}}``; ``DEFAULTS`` where no such file
    exists) those in use (``SETTINGS``, replaced in place): an arm the file does not name takes its
    ``UNTUNED`` arm's, then an arm of ``twins`` (one that trains the same bits as another) its twin's.
    An arm still without settings has none: ``settings_overrides`` raises KeyError for it."""
    SETTINGS.clear()
    SETTINGS.update(json.loads(path.read_text())["settings"] if path.exists() else DEFAULTS)
    for arm, src in UNTUNED.items():  # in order: an arm may take one this filled
        if arm not in SETTINGS and src in SETTINGS:
            SETTINGS[arm] = SETTINGS[src]
    SETTINGS.update({arm: SETTINGS[twin] for arm, twin in twins.items() if twin in SETTINGS})
    return SETTINGS


def settings_overrides(arm: str) -> list[str]:
    """The config overrides of ``arm``'s settings in use."""
    s = SETTINGS[arm]
    out = [f"optim.lr={s['lr']:g}", f"optim.min_lr_ratio={s['min_lr_ratio']:g}"]
    if "outer_lr" in s:
        out += [f"replicas.outer.lr={s['outer_lr']:g}", f"replicas.outer.momentum={s['outer_momentum']:g}"]
    return out

"""Robust baselines that flag spikes: across replicas (median and MAD of one step's values) and
over time (an exponential moving mean and mean absolute deviation). Pure; the thresholds come from
``NumericsConfig`` (a value must be both ``spike_z`` deviations and a ratio times above
its baseline: a relative floor keeps a quiet baseline's tiny deviation from flagging noise)."""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping
from dataclasses import dataclass

MAD_TO_SIGMA = 1.4826  # MAD of a normal distribution, in standard deviations


def outliers(values: Mapping[int, float], z: float, ratio: float) -> list[int]:
    """Keys whose value lies above the median by ``z`` robust deviations and ``ratio`` times the
    median (needs three values or more; non-finite values are not judged here)."""
    finite = {k: v for k, v in values.items() if math.isfinite(v)}
    if len(finite) < 3:
        return []
    med = statistics.median(finite.values())
    mad = statistics.median(abs(v - med) for v in finite.values()) * MAD_TO_SIGMA
    scale = max(mad, 1e-12)
    return sorted(k for k, v in finite.items() if v > ratio * med and (v - med) / scale > z)


@dataclass(slots=True)
class Ema:
    """A baseline over time: ``mean`` and mean absolute deviation ``dev`` of the values seen."""

    alpha: float = 0.05
    mean: float = math.nan
    dev: float = 0.0
    seen: int = 0

    def spike(self, value: float, z: float, ratio: float, warmup: int) -> bool:
        """Is ``value`` a spike against the baseline so far (never during the warm-up)?"""
        if self.seen < max(warmup, 1) or not math.isfinite(value):
            return False
        scale = max(self.dev, 1e-3 * abs(self.mean), 1e-12)
        return value > ratio * self.mean and (value - self.mean) / scale > z

    def update(self, value: float) -> None:
        if not math.isfinite(value):
            return
        if self.seen == 0:
            self.mean, self.dev = value, 0.0
        else:
            self.dev += self.alpha * (abs(value - self.mean) - self.dev)
            self.mean += self.alpha * (value - self.mean)
        self.seen += 1

    def reset(self, value: float) -> None:
        """Take ``value`` as the new level (after a reproduced shift: the model moved, not a chip)."""
        if math.isfinite(value):
            self.mean, self.dev = value, abs(value) * 0.1

"""Reading a Hugging Face ``config.json``: the one error every family's mapping raises, and the
fields that every family spells alike (rotary embeddings).

Contract: ``require`` and ``rope_theta`` raise ``HFFormatError`` naming the field, its value and
what is allowed; ``hf.py`` (the Llama family and the dispatch by ``model_type``) and
``hf_deepseek.py`` both build on this module, never on each other's errors.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


class HFFormatError(ValueError):
    """A Hugging Face directory, config or state dict that tenacia cannot load faithfully."""


def require(ok: bool, field: str, value: Any, allowed: str) -> None:
    if not ok:
        raise HFFormatError(f"config.json field '{field}' = {value!r} is not supported: {allowed}")


def rope_theta(config: Mapping[str, Any]) -> float:
    """rope_theta from either layout: transformers >= 5 ``rope_parameters``, or the older
    top-level ``rope_theta`` plus ``rope_scaling``. Only unscaled ("default") rope is supported."""
    params = config.get("rope_parameters")
    field = "rope_parameters"
    if params is None:
        params, field = config.get("rope_scaling") or {}, "rope_scaling"
    require(isinstance(params, Mapping), field, params, "a table of rope parameters")
    kind = params.get("rope_type", params.get("type", "default"))
    require(kind == "default", f"{field}.rope_type", kind,
             "only 'default' (unscaled) rotary embeddings; linear/dynamic/yarn/llama3 scaling "
             "are not implemented by tenacia's model")
    theta = params.get("rope_theta", config.get("rope_theta", 10000.0))
    require(isinstance(theta, (int, float)) and theta > 0, "rope_theta", theta,
             "a positive number")
    return float(theta)

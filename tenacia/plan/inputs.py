"""From command-line words to a plan's config tree.

A plan is a dict built in this order, later steps winning: the ``-c`` TOML file, the shorthand
flags (``--model``, ``--fleet``, ``--layout``, ...), then ``-o key=value`` overrides; then
``tenacia.config.from_dict`` checks it into a dataclass tree. Shorthands:

- model: a preset name (``deepseek-v3``), a TOML file of ``ModelSpec`` fields, or a model tenacia
  runs, through ``tenacia.shape``: one of its presets (``smollm2-135m``), a run directory (its
  ``[model]``), or a Hugging Face ``config.json`` (or the directory holding it)
- fleet: a preset name (``seed-cluster``), a TOML file of ``FleetSpec`` fields, or
  ``chip:count[@site]`` groups joined by ``,`` or ``+`` (``h20:30000@east+h800:10000@west``)
- layout: ``auto`` (search every field) or ``key=value`` pairs joined by ``,``
  (``tp=8,pp=16,schedule=interleaved``: the rest is searched)

``-c`` takes a TOML path or the name of a scenario shipped in ``tenacia/plan/scenarios/``
(``deepseek-v3-report``, ``llama-3-405b-report``, ``r2-ascend-910c``, ``r2-ascend-sdc``,
``r1-mixed-hopper-3sites``).
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

import tomllib

from .. import config
from ..config import ConfigError
from ..shape import PRESETS as SHAPE_PRESETS
from ..shape import ModelConfig
from ..shape.hf import HFFormatError, model_config_from_hf
from . import fleet as fleet_mod
from . import models

SCENARIOS = Path(__file__).parent / "scenarios"


def scenario_names() -> list[str]:
    return sorted(p.stem for p in SCENARIOS.glob("*.toml"))


def _toml_file(kind: str, value: str) -> dict | None:
    path = Path(value)
    if not (value.endswith(".toml") or path.is_file()):
        return None
    if not path.is_file():
        raise ConfigError(kind, value, "a preset name or a path to an existing TOML file")
    try:
        return tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(kind, value, f"valid TOML ({e})") from None


def _tenacia_shape(value: str) -> ModelConfig | None:
    """The shape ``--model`` names when it is a model tenacia runs (module docstring), else None."""
    path = Path(value)
    if value in SHAPE_PRESETS and value not in models.PRESETS:
        return ModelConfig(preset=value)
    if (path / "config.toml").is_file():  # a tenacia run directory
        table = _toml_file("model", str(path / "config.toml")) or {}
        return config.from_dict(ModelConfig, table.get("model", {}), prefix="model")
    hf = path / "config.json" if path.is_dir() else path
    if hf.name.endswith(".json") and hf.is_file():
        try:
            return model_config_from_hf(json.loads(hf.read_text()))
        except (json.JSONDecodeError, HFFormatError, KeyError) as e:
            raise ConfigError("model", value, f"a Hugging Face config.json of a Llama-family model ({e})") from None
    return None


def shorthand(kind: str, value: str) -> list[tuple[list[str], Any]]:
    """(path, value) pairs that a shorthand sets in the plan dict."""
    if kind == "model":
        shape = _tenacia_shape(value)
        if shape is not None:
            return [(["model"], models.from_shape(shape))]
        table = _toml_file("model", value)
        if table is not None:
            return [(["model"], table)]
        if value not in models.PRESETS:
            raise ConfigError("model", value, f"a preset ({', '.join(models.PRESETS)}), a tenacia preset "
                              f"({', '.join(SHAPE_PRESETS)}), a run directory, a Hugging Face config.json, "
                              "or a TOML file of model fields")
        return [(["model"], {"preset": value})]
    if kind == "fleet":
        table = _toml_file("fleet", value)
        if table is not None:
            return [(["fleet"], table)]
        if value in fleet_mod.PRESETS:
            return [(["fleet"], {"preset": value})]
        if ":" not in value:
            raise ConfigError("fleet", value, f"a preset ({', '.join(fleet_mod.PRESETS)}), a TOML file, "
                              "or chip:count[+chip:count...]")
        return [(["fleet"], {"preset": "", "groups": fleet_mod.parse_fleet_shorthand(value.replace("+", ","))})]
    if kind == "layout":
        if value == "auto":  # every field back to its search value (zero: drop a given stage)
            return ([(["layout", k], 0) for k in ("tp", "cp", "pp", "ep", "microbatch_seqs", "virtual_stages")]
                    + [(["layout", k], "auto") for k in ("schedule", "recompute")] + [(["layout", "zero"], None)])
        pairs = []
        for part in value.split(","):
            key, value_ = config.parse_override(f"layout.{part.strip()}")
            pairs.append((key, value_))
        return pairs
    if kind == "recovery":
        return [(["recovery", "strategy"], value)]
    if kind in ("catalog", "chip"):  # file paths and names, taken verbatim
        return [([kind], value)]
    key, parsed = config.parse_override(f"{kind}={value}")
    return [(key, parsed)]


def build(toml_path: str | None, flags: list[tuple[str, str]], overrides: list[str]) -> dict[str, Any]:
    """The plan dict: ``toml_path`` then ``flags`` ((kind, value) shorthands) then overrides."""
    data: dict[str, Any] = {}
    if toml_path is not None:
        if not Path(toml_path).is_file() and toml_path in scenario_names():
            toml_path = str(SCENARIOS / f"{toml_path}.toml")
        if not Path(toml_path).is_file():
            raise ConfigError("config file", toml_path, "a path to an existing TOML file or a scenario: "
                              + ", ".join(scenario_names()))
        data = _toml_file("config file", toml_path) or {}
    for kind, value in flags:
        for path, v in shorthand(kind, value):
            if path in (["model"], ["fleet"]):
                data[path[0]] = v
            else:
                config.merge_override(data, path, v)
    for text in overrides:
        path, v = config.parse_override(text)
        config.merge_override(data, path, v)
    return data


def variations(specs: list[str]) -> list[list[tuple[str, str]]]:
    """``['fleet=a,b', 'recovery=checkpoint,live']`` -> the cartesian product as flag lists."""
    axes = []
    for spec in specs:
        key, sep, values = spec.partition("=")
        if not sep or not key.strip() or not values.strip():
            raise ConfigError("--vary", spec, "KEY=V1,V2,... e.g. recovery=checkpoint,live or fleet=h800-8k,ascend-910c-8k")
        axes.append([(key.strip(), v.strip()) for v in values.split(",") if v.strip()])
    return [list(combo) for combo in itertools.product(*axes)] if axes else [[]]

"""The config tree: TOML + overrides, and errors that name the field, the value and what is allowed."""

import subprocess
import sys

import pytest

from tenacia import config
from tenacia.train.config import RunConfig


def test_defaults_overrides_and_toml(tmp_path):
    f = tmp_path / "run.toml"
    f.write_text('[optim]\nlr = 1e-3\n[model]\npreset = "micro"\n[train]\nsteps = 7\n')
    cfg = config.load(RunConfig, f, ["optim.lr=5e-4", "train.run_dir=out/x", "model.dim=128"])
    assert cfg.optim.lr == 5e-4 and cfg.train.steps == 7 and cfg.train.run_dir == "out/x"
    assert cfg.model.dim == 128 and cfg.model.n_layers == 2  # preset fills the rest
    again = config.load(RunConfig, None, [])
    assert again.model.preset == "tiny"
    # the TOML that `config show` prints loads back to the same tree
    out = tmp_path / "resolved.toml"
    out.write_text(config.dumps_toml(cfg))
    assert config.to_dict(config.load(RunConfig, out)) == config.to_dict(cfg)


@pytest.mark.parametrize("override, field, allowed", [
    ("optim.lrr=1", "optim.lrr", "allowed keys here"),
    ("optim.lr=-1", "optim.lr", "positive"),
    ("model.preset=huge", "model.preset", "tiny"),
    ("train.steps=ten", "train.steps", "integer"),
    ("train.batch_size=10", "train.batch_size", "multiple of train.micro_batch_size"),
    ("model.n_kv_heads=3", "model.n_kv_heads", "divisor of n_heads"),
    ("device.type=tpu", "device.type", "'cpu'"),
    ("data.eval_fraction=0.9", "data.eval_fraction", "between 0 and 0.5"),
    ("nosuch.key=1", "nosuch", "allowed keys here"),
    ("chaos.kill_at=soon", "chaos.kill_at", "<point>@<step>"),
])
def test_bad_values_name_field_value_and_allowed(override, field, allowed):
    with pytest.raises(config.ConfigError) as e:
        config.load(RunConfig, None, [override])
    assert e.value.field == field
    assert allowed in str(e.value)


def test_cli_rejects_bad_config_before_any_work(tmp_path):
    r = subprocess.run([sys.executable, "-m", "tenacia", "train", "-o", "optim.lr=-1",
                        "--run-dir", str(tmp_path / "run")], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2
    assert "optim.lr" in r.stderr and "-1" in r.stderr and "positive" in r.stderr
    assert not (tmp_path / "run").exists()


def test_cli_config_show_prints_resolved_tree():
    r = subprocess.run([sys.executable, "-m", "tenacia", "config", "show", "-o", "model.preset=micro"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert "[model]" in r.stdout and 'preset = "micro"' in r.stdout and "dim = 64" in r.stdout


OLD_CONFIG = """[model]
preset = "micro"

[train]
device = "cpu"
threads = 2
steps = 7

[replicas]
threads = 2
"""


def test_a_config_from_before_the_device_section_still_loads(tmp_path, capsys):
    """TOML files and run directories written by tenacia 0.1.0 kept device and threads under
    [train] and [replicas]: they load, read at [device], with a note on stderr."""
    f = tmp_path / "config.toml"
    f.write_text(OLD_CONFIG)
    cfg = config.load(RunConfig, f, ["replicas.threads=2"])
    assert (cfg.device.type, cfg.device.threads, cfg.train.steps) == ("cpu", 2, 7)
    assert "'train.threads' is now 'device.threads'" in capsys.readouterr().err
    f.write_text(OLD_CONFIG + "\n[device]\nthreads = 1\n")
    with pytest.raises(config.ConfigError) as e:
        config.load(RunConfig, f)
    assert e.value.field == "train.threads" and "device.threads" in str(e.value)

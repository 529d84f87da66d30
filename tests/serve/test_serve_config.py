"""`tenacia serve` takes its config tree as every command does: -c FILE.toml, -o a.b=value, and
short flags that are aliases of tree fields (given, they override the file; not given, they leave
it alone)."""

import pytest

from tenacia.cli import build_parser
from tenacia.config import ConfigError
from tenacia.serve.cli import serve_config


def parse(*argv):
    return serve_config(build_parser().parse_args(["serve", *argv]))


def test_file_then_flags_then_overrides(tmp_path, monkeypatch):
    monkeypatch.delenv("TENACIA_API_KEY", raising=False)
    f = tmp_path / "serve.toml"
    f.write_text('model = "smollm2"\n[server]\nport = 1234\nmax_tokens_limit = 99\n[engine]\nblock_size = 8\n'
                 '[device]\nthreads = 3\n')
    cfg = parse("-c", str(f))
    assert (cfg.model, cfg.server.port, cfg.engine.block_size, cfg.device.threads) == ("smollm2", 1234, 8, 3)
    assert cfg.engine.prefix_caching and cfg.server.host == "127.0.0.1"  # defaults where nothing says
    cfg = parse("runs/x", "-c", str(f), "--port", "0", "--no-prefix-caching", "--threads", "1",
                "-o", "engine.block_size=32", "--api-key", "k")
    assert (cfg.model, cfg.server.port, cfg.engine.block_size, cfg.device.threads) == ("runs/x", 0, 32, 1)
    assert not cfg.engine.prefix_caching and cfg.server.max_tokens_limit == 99 and cfg.server.api_keys == ["k"]
    assert cfg.server.tool_parser == "auto" and parse("m", "--tool-parser", "mistral").server.tool_parser == "mistral"


@pytest.mark.parametrize("argv, field", [
    (["m", "--port", "70000"], "server.port"),
    (["m", "--threads", "-1"], "device.threads"),
    (["m", "-o", "engine.kv_cache_tokens=2"], "engine.kv_cache_tokens"),
    (["m", "-o", "engine.nosuch=1"], "engine.nosuch"),
    (["m", "--device", "tpu"], "device.type"),
    (["m", "--log-level", "loud"], "server.log_level"),
    (["m", "--tool-parser", "qwen"], "server.tool_parser"),
    ([], "model"),
])
def test_bad_values_name_the_field(argv, field, monkeypatch):
    monkeypatch.delenv("TENACIA_API_KEY", raising=False)
    with pytest.raises(ConfigError) as e:
        parse(*argv)
    assert e.value.field == field


def test_the_old_engine_device_field_is_read_as_device_type(tmp_path, capsys):
    f = tmp_path / "old.toml"
    f.write_text('model = "smollm2"\n[engine]\ndevice = "cpu"\n')
    assert parse("-c", str(f)).device.type == "cpu"
    assert "'engine.device' is now 'device.type'" in capsys.readouterr().err

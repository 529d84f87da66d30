"""`tenacia plan ...` end to end, in a subprocess, as a user runs it."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tenacia.plan.scenario import search_sync

from .test_calibrate import write_events, write_link_run

ROOT = Path(__file__).resolve().parents[2]


def tenacia(*args, check=True):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.run([sys.executable, "-m", "tenacia", "plan", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60)
    if check:
        assert proc.returncode == 0, proc.stderr
    return proc


def test_train_json_for_the_deepseek_v3_scenario():
    out = json.loads(tenacia("train", "-c", "deepseek-v3-report", "--trials", "100", "--json").stdout)
    t = out["training"]
    assert t["chips"] == 2048 and t["layout"]["ep"] == 64 and t["precision"] == "fp8"
    assert 0.85 < t["chip_hours"] / 2_664_000 < 1.15
    assert "BF16" in t["mfu_peak"] and 0 < t["mfu_bf16"] < 1
    assert out["simulation"]["trials"] == 100 and 0 < out["simulation"]["goodput_mean"] <= 1
    assert out["inputs"]["assumptions"]["compute_efficiency"] == 1.0  # every assumption is reported


def test_train_table_with_shorthands_and_a_searched_layout():
    out = tenacia("train", "--model", "llama-3-405b", "--fleet", "h100:4096+h800:4096", "--tokens", "1e12",
                  "--layout", "auto", "--recovery", "live", "--trials", "100", "--deadline-days", "90").stdout
    for text in ("4,096 h100 + 4,096 h800", "layouts estimated", "MFU", "dense BF16 peak", "goodput",
                 "P(finish by deadline)", "by day 90", "live", "uncertain inputs"):
        assert text in out, text


def test_model_fleet_and_catalog_from_files(tmp_path):
    model = tmp_path / "dense70b.toml"
    model.write_text('preset = ""\ntotal_params_b = 70.6\nactivated_params_b = 70.6\nlayers = 80\nhidden = 8192\n'
                     'ffn = 28672\nheads = 64\nhead_dim = 128\nv_head_dim = 128\nkv_heads = 8\nkv_dim = 0\n'
                     'vocab = 128256\nmoe_layers = 0\nexperts = 0\nshared_experts = 0\nexperts_per_token = 0\n'
                     'expert_ffn = 0\nrouting_max_groups = 0\nextra_activated_params_b = 0\nseq_len = 8192\n'
                     'train_tokens = 15e12\nglobal_batch_seqs = 2048\n')
    fleet = tmp_path / "fleet.toml"
    fleet.write_text('groups = [{ chip = "h100", count = 1024, price_per_hour = 3.0 }]\n')
    # the same H100 with a quarter of the scale-out bandwidth, from a user catalog
    text = (ROOT / "tenacia/plan/catalog.toml").read_text()
    block = text[text.index("[chips.h100]"):text.index("[chips.h800]")]
    (tmp_path / "slow.toml").write_text(block.replace("scale_out_gbs = { value = 50,", "scale_out_gbs = { value = 12.5,"))
    args = ["train", "--model", str(model), "--fleet", str(fleet), "--layout", "tp=8,pp=4,ep=1",
            "--trials", "20", "--json"]
    fast = json.loads(tenacia(*args).stdout)
    slow = json.loads(tenacia(*args, "--catalog", str(tmp_path / "slow.toml")).stdout)
    assert fast["inputs"]["model"]["layers"] == 80 and fast["training"]["chips"] == 1024
    assert fast["training"]["cost"] == pytest.approx(1024 * 3.0 * fast["training"]["ideal_days"] * 24)
    assert slow["training"]["step_time_s"] > fast["training"]["step_time_s"]


def test_compare_writes_charts(tmp_path):
    proc = tenacia("compare", "-c", "r2-ascend-910c", "--vary", "recovery=checkpoint,live",
                   "--trials", "100", "--charts", str(tmp_path), "--json")
    out = json.loads(proc.stdout)
    labels = [s["label"] for s in out["scenarios"]]
    assert labels == ["recovery=checkpoint", "recovery=live"]
    ckpt, live = (s["simulation"] for s in out["scenarios"])
    assert live["goodput_mean"] > ckpt["goodput_mean"]
    for name in ("completion.png", "goodput.png"):
        data = (tmp_path / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000


def test_calibrate_from_a_run_directory(tmp_path):
    run = write_events(tmp_path / "run")
    out = json.loads(tenacia("train", "--recovery", "live", "--calibrate", str(run), "--trials", "50", "--json").stdout)
    assert out["calibration"]["medians"]["stall_s"] == 4.0
    assert out["inputs"]["recovery"]["stall_s"] == 4.0 and out["inputs"]["recovery"]["heal_s"] == pytest.approx(0.6)


def test_serve_and_chips():
    serve = json.loads(tenacia("serve", "--chip", "h800", "--tpot-ms", "50", "--json").stdout)
    assert serve["chips"] == serve["prefill_chips"] + serve["decode_chips"] > 0
    assert serve["step_s"] <= 0.050
    chips = json.loads(tenacia("chips", "--json").stdout)
    assert chips["ascend-910c"]["crash_per_chip_year"]["uncertain"] is True
    assert "DeepSeek-V3 report" in chips["h800"]["scale_out_gbs"]["source"]


def test_sync_answers_the_mixed_hopper_question(tmp_path, plan_from):
    """The issue's question from the CLI, link efficiency calibrated; the same numbers in process."""
    links = write_link_run(tmp_path / "links.json", efficiency=0.5)
    out = json.loads(tenacia("sync", "-c", "r1-mixed-hopper-3sites", "--calibrate-links", str(links), "--json").stdout)
    assert out["link_calibration"]["efficiency"] == pytest.approx(0.5)
    assert out["inputs"]["sync"]["link"]["efficiency"] == pytest.approx(0.5)
    assert [s["site"] for s in out["sites"]] == ["h20-site", "h800-site", "h100-site"]
    found = out["candidates"]
    # ddp once; diloco, streaming x H x (4 compressions x 3 exchanges x 2 top-k, less dense int2 over
    # the ring and the 4 top-k through the reduce-scatter: 19)
    assert len(found) == 1 + 2 * 5 * 19
    assert {(c["compression"], c["exchange"]) for c in found if not c["topk"]} >= {("int2", "reduce_scatter"),
                                                                                  ("int2", "all_gather")}
    best, ddp = found[0], next(c for c in found if c["strategy"] == "ddp")
    assert best["strategy"] != "ddp" and best["utilization"]["sized"] > 0.9 > 0.05 > ddp["utilization"]["sized"]
    days = [c["days"]["sized"] for c in found]
    assert days == sorted(days)
    for c in found:  # lock-step: the H20 site sets the pace
        assert c["utilization"]["lockstep"] <= c["utilization"]["sized"] + 1e-12
    fitted = out["link_calibration"]["efficiency"]
    _, expected = search_sync(plan_from("r1-mixed-hopper-3sites", overrides=[f"sync.link.efficiency={fitted!r}"]))
    assert [c["days"] for c in found] == [e.summary()["days"] for e in expected]


@pytest.mark.parametrize("args, field", [
    (["train", "--fleet", "h100:0"], "fleet"),
    (["train", "--fleet", "tpu:64"], "fleet.groups[0].chip"),
    (["train", "--model", "gpt-5"], "model"),
    (["train", "--model", "llama-3-405b", "--fleet", "h100:1024", "--layout", "tp=3,pp=8,ep=1"], "layout.tp"),
    (["train", "--precision", "fp8", "--fleet", "ascend-910c:4096"], "precision"),
    (["train", "-o", "recovery.restart_s=-5"], "recovery.restart_s"),
    (["train", "-c", "no-such-scenario"], "config file"),
    (["serve", "--tpot-ms", "0"], "tpot_ms"),
    (["sync", "--fleet", "h100:64@a+h100:64@b", "--gbit-s", "0"], "sync.link.gbit_s"),
    (["train", "--fleet", "h100:64@a+h100:64@b", "--strategy", "diloco", "--exchange", "tree"], "sync.exchange"),
    (["train", "--fleet", "h100:64@a+h100:64@b", "--strategy", "diloco", "--compression", "int2"], "sync.exchange"),
])
def test_bad_input_exits_2_naming_the_field(args, field):
    proc = tenacia(*args, check=False)
    assert proc.returncode == 2, proc.stderr
    assert f"config field '{field}'" in proc.stderr and "Traceback" not in proc.stderr


def test_serve_deployment_flag_prices_aggregated_serving():
    out = json.loads(tenacia("serve", "--model", "llama-3-405b", "--chip", "h100", "--deployment", "aggregated",
                             "--json").stdout)
    assert out["prefill_chips"] == 0 and 0 < out["step_parts"]["chunk_share"] <= 1 and out["ttft_s"] > 0

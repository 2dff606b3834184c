# mypy: allow-untyped-defs
"""The native transport (``SNAIL_TRANSPORT=native``) and the native inbound server
(``SNAIL_INBOUND=native``) against the real server, in every run of the suite: a node
whose own calls (heartbeats, executor registration, results, map reports, logs) go over
the client's HTTP/2 connection instead of grpcio's channel, or whose port the server
calls is served by the client's HTTP/2 code instead of grpcio's server, or both, runs
cluster, map and logging jobs, and the server has their results and logs.

The whole suite also passes with every node on both:
``SNAILJOB_E2E_CLIENT_ENV=SNAIL_TRANSPORT=native,SNAIL_INBOUND=native`` (docs/e2e.md).
"""

from __future__ import annotations

import pytest

from tests.e2e.harness import TaskType
from tests.e2e.test_faults import assert_success, new_group, start_node
from tests.e2e.test_real_server import uid

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]


NATIVES = {"transport": ["SNAIL_TRANSPORT"], "inbound": ["SNAIL_INBOUND"], "both": ["SNAIL_TRANSPORT", "SNAIL_INBOUND"]}
NOTE = {"SNAIL_TRANSPORT": "native transport", "SNAIL_INBOUND": "native inbound server"}  # in the start-up line


@pytest.mark.parametrize("which", list(NATIVES))
def test_a_node_on_the_native_parts_runs_jobs_and_ships_logs(run, which):
    srv = run.srv
    settings = {name: "native" for name in NATIVES[which]}
    group, token = new_group(srv, "native")
    node = start_node(run, f"native-{which}", group, token, **settings)  # a log of its own
    started = next((line for line in node.output().splitlines() if "listening on" in line), "")
    assert all(NOTE[name] in started for name in settings), node.output()[-3000:]
    tag = f"tag-{uid()}"
    jobs = {
        "cluster": srv.create_job(f"native-cluster-{uid()}", "e2eCluster", TaskType.CLUSTER, group=group,
                                  args_str="hello-native"),
        "map": srv.create_job(f"native-map-{uid()}", "e2eMap", TaskType.MAP, group=group, args_str="320",
                              executor_timeout=170, parallel_num=8),
        "log": srv.create_job(f"native-log-{uid()}", "e2eLog", TaskType.CLUSTER, group=group, args_str=tag),
    }
    batches = {kind: srv.trigger_job(job_id) for kind, job_id in jobs.items()}
    assert_success(srv, list(batches.values()))
    (cluster,) = srv.task_tree(batches["cluster"])
    assert cluster["resultMessage"] == '{"echo":"hello-native","kind":"cluster"}'
    squares = [t for t in srv.task_tree(batches["map"]) if t["taskName"] == "SQUARE"]
    assert len(squares) == 320  # two map reports of up to 200 items each
    lines = srv.wait_logs(batches["log"], lambda ls: sum(tag in (ln.get("message") or "") for ln in ls) >= 3,
                          timeout=30)
    assert {ln["message"] for ln in lines if tag in (ln.get("message") or "")} == {
        f"log probe info {tag}", f"log probe warning {tag}", f"log probe caught {tag}"}
    names = " and ".join(f"{name}=native" for name in settings)
    run.note(f"{names}: a cluster job, a map of 320 sub-tasks and a logging job SUCCESS, "
             f"{len(lines)} log lines in the server")

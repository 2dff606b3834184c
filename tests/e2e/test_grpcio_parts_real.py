# mypy: allow-untyped-defs
"""The grpcio parts against the real server, in every run of the suite, now that
both native parts are the default (the rest of the suite runs on them): a node whose
own calls (heartbeats, executor registration, results, map reports, logs) go through
grpcio's channel (``SNAIL_TRANSPORT=grpc``), or whose port the server calls is served
by grpcio's server (``SNAIL_INBOUND=grpc``), or both, runs cluster, map and logging
jobs, and the server has their results and logs.

The whole suite also passes with every node on both:
``SNAILJOB_E2E_CLIENT_ENV=SNAIL_TRANSPORT=grpc,SNAIL_INBOUND=grpc`` (docs/e2e.md).
"""

from __future__ import annotations

import pytest

from tests.e2e.harness import TaskType
from tests.e2e.test_faults import assert_success, new_group, start_node
from tests.e2e.test_real_server import uid

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]


GRPCIO = {"transport": ["SNAIL_TRANSPORT"], "inbound": ["SNAIL_INBOUND"], "both": ["SNAIL_TRANSPORT", "SNAIL_INBOUND"]}
NOTE = {"SNAIL_TRANSPORT": "native transport", "SNAIL_INBOUND": "native inbound server"}  # in the start-up line


@pytest.mark.parametrize("which", list(GRPCIO))
def test_a_node_on_the_grpcio_parts_runs_jobs_and_ships_logs(run, which):
    srv = run.srv
    settings = {name: "grpc" for name in GRPCIO[which]}
    group, token = new_group(srv, "grpcio")
    node = start_node(run, f"grpcio-{which}", group, token, **settings)  # a log of its own
    started = next((line for line in node.output().splitlines() if "listening on" in line), "")
    assert started and all((NOTE[name] in started) == (name not in settings) for name in NOTE), \
        node.output()[-3000:]
    tag = f"tag-{uid()}"
    jobs = {
        "cluster": srv.create_job(f"grpcio-cluster-{uid()}", "e2eCluster", TaskType.CLUSTER, group=group,
                                  args_str="hello-grpcio"),
        "map": srv.create_job(f"grpcio-map-{uid()}", "e2eMap", TaskType.MAP, group=group, args_str="320",
                              executor_timeout=170, parallel_num=8),
        "log": srv.create_job(f"grpcio-log-{uid()}", "e2eLog", TaskType.CLUSTER, group=group, args_str=tag),
    }
    batches = {kind: srv.trigger_job(job_id) for kind, job_id in jobs.items()}
    assert_success(srv, list(batches.values()))
    (cluster,) = srv.task_tree(batches["cluster"])
    assert cluster["resultMessage"] == '{"echo":"hello-grpcio","kind":"cluster"}'
    squares = [t for t in srv.task_tree(batches["map"]) if t["taskName"] == "SQUARE"]
    assert len(squares) == 320  # two map reports of up to 200 items each
    lines = srv.wait_logs(batches["log"], lambda ls: sum(tag in (ln.get("message") or "") for ln in ls) >= 3,
                          timeout=30)
    assert {ln["message"] for ln in lines if tag in (ln.get("message") or "")} == {
        f"log probe info {tag}", f"log probe warning {tag}", f"log probe caught {tag}"}
    names = " and ".join(f"{name}=grpc" for name in settings)
    run.note(f"{names}: a cluster job, a map of 320 sub-tasks and a logging job SUCCESS, "
             f"{len(lines)} log lines in the server")

# mypy: allow-untyped-defs
"""Three client nodes on three other "hosts" (network namespaces), none told its address.

The server runs in the root namespace; each client runs in its own namespace and
reaches the server only over its own veth link, at 10.213.<i>.1, with no
SNAIL_HOST_IP: the node must find the address the server can call it back at
(10.213.<i>.2) by itself. The nodes form their own group, so broadcasts count them
exactly. Skipped, with the reason, where namespaces cannot be made (not root, no
iproute2).
"""

from __future__ import annotations

import collections
import os
import time

import pytest

from tests.e2e import netns
from tests.e2e.harness import BatchStatus, TaskType
from tests.e2e.test_real_server import address_of, assert_all_success, describe, run_job, uid

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(1200)]

GROUP = "py_e2e_many"
MAP_ITEMS = 10_000


@pytest.fixture(scope="module")
def many(run):
    """(group token, [3 ClientProcess]), each client alone in its own namespace."""
    why = netns.unavailable()
    if why:
        pytest.skip(f"no separate hosts on this machine: {why}")
    srv = run.srv
    token = "SJ_many_" + uid() * 3
    srv.create_group(GROUP, token)
    hosts = [netns.Host().create() for _ in range(3)]
    clients = [run.start_client(f"m{i + 1}", host, SNAIL_GROUP_NAME=GROUP, SNAIL_TOKEN=token,
                                SNAIL_HOST_ID=f"py-e2e-m{i + 1}-{uid()}")
               for i, host in enumerate(hosts)]
    try:
        yield token, [run.wait_online(client) for client in clients]
    finally:
        for client in clients:
            client.stop()
        for host in hosts:
            host.remove()


def cpu_seconds(pid):
    """User + system CPU seconds of a process so far (Linux /proc), 0.0 if it is gone."""
    try:
        fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def job(srv, name, executor, task_type, **kw):
    return run_job(srv, name, executor, task_type, group=GROUP, **kw)


def test_each_node_advertises_its_own_route_to_the_server(run, many):
    _, clients = many
    pods = run.srv.online_pods(GROUP)
    assert sorted(pods) == sorted(c.address for c in clients), pods
    assert not any(p.startswith("127.") for p in pods), pods
    for client in clients:
        out = client.output()
        assert f"advertised as {client.address} (route to {client.host.gateway})" in out, out[-2000:]
        assert "loopback" not in out, out[-2000:]


def test_every_task_type_runs_on_the_other_hosts(run, many):
    srv = run.srv
    _, clients = many
    names = {c.name for c in clients}
    addresses = {c.address for c in clients}
    timings = {}

    _, batch, _ = job(srv, "many-cluster", "e2eWhere", TaskType.CLUSTER)
    [task] = srv.tasks(batch)
    assert task["resultMessage"] in names and address_of(task) in addresses, task

    t0 = time.monotonic()
    _, batch, _ = job(srv, "many-broadcast", "e2eWhere", TaskType.BROADCAST)
    timings["broadcast"] = time.monotonic() - t0
    tasks = srv.tasks(batch)
    assert_all_success(tasks, "broadcast")
    assert sorted(t["resultMessage"] for t in tasks) == sorted(names), tasks
    assert {address_of(t) for t in tasks} == addresses, tasks

    t0 = time.monotonic()
    _, batch, _ = job(srv, "many-sharding", "e2eWhere", TaskType.SHARDING, args_str=["0.5"] * 6, parallel_num=6)
    timings["sharding"] = time.monotonic() - t0
    tasks = srv.tasks(batch)
    assert_all_success(tasks, "sharding")
    spread = collections.Counter(t["resultMessage"] for t in tasks)
    assert len(tasks) == 6 and len(spread) >= 2, spread
    assert {address_of(t) for t in tasks} <= addresses, tasks

    _, batch, _ = job(srv, "many-mapreduce", "e2eMapReduce", TaskType.MAP_REDUCE, args_str="mr", shard_num=3,
                      parallel_num=4)
    rows = srv.task_rows(batch)
    assert {r["client_info"].rsplit("@", 1)[-1] for r in rows} <= addresses, rows
    merge = [r for r in rows if int(r["mr_stage"] or 0) == 3]
    assert merge and merge[0]["result_message"] == str(sum(2 * i for i in range(1, 11))), rows
    run.note(f"3 nodes on other hosts: broadcast {timings['broadcast']:.1f}s, 6 shards over "
             f"{len(spread)} nodes {timings['sharding']:.1f}s ({dict(spread)})")


def test_a_map_of_10000_items_runs_every_item_exactly_once(run, many):
    srv = run.srv
    _, clients = many
    cpu0 = [cpu_seconds(srv.proc.pid), sum(cpu_seconds(c.proc.pid) for c in clients)]
    t0 = time.monotonic()
    _, batch, _ = job(srv, "many-map", "e2eEach", TaskType.MAP, args_str=str(MAP_ITEMS), parallel_num=16,
                      executor_timeout=900, timeout=900)
    wall = time.monotonic() - t0
    server_cpu = cpu_seconds(srv.proc.pid) - cpu0[0]
    clients_cpu = sum(cpu_seconds(c.proc.pid) for c in clients) - cpu0[1]
    runs = run.marker_lines("each", batch)
    items = collections.Counter(int(line.split()[1]) for line in runs)
    twice = [item for item, n in items.items() if n > 1]
    assert not twice, f"{len(twice)} items ran more than once, e.g. {twice[:10]}"
    assert sorted(items) == list(range(MAP_ITEMS)), f"{MAP_ITEMS - len(items)} items never ran"
    rows = srv.pg.query_json(f"SELECT task_status, count(*) AS n FROM sj_job_task WHERE task_batch_id = {batch} "
                             f"GROUP BY task_status", db=srv.DB)
    assert {int(r["task_status"]): int(r["n"]) for r in rows} == {3: MAP_ITEMS + 1}, rows
    by_node = collections.Counter(line.split()[2] for line in runs)
    assert set(by_node) == {c.name for c in clients}, by_node
    run.note(f"map of {MAP_ITEMS} items on 3 nodes: {wall:.0f}s ({MAP_ITEMS / wall:.0f} items/s), "
             f"per node {dict(sorted(by_node.items()))}; CPU: server {server_cpu:.0f}s, "
             f"3 clients {clients_cpu:.0f}s")


def test_a_node_without_the_executor(run, many):
    """A fourth node lacks ``e2eWhere``. It refuses what the server sends it for that executor;
    the server turns the refusal into a failed attempt (the job's retries go to another node,
    a broadcast's task on that node fails), exactly as with the Java client."""
    srv = run.srv
    token, clients = many
    host = netns.Host().create()
    lacking = run.start_client("m4-lacking", host, SNAIL_GROUP_NAME=GROUP, SNAIL_TOKEN=token,
                               SNAIL_HOST_ID=f"py-e2e-m4-{uid()}", E2E_WITHOUT="e2eWhere")
    try:
        run.wait_online(lacking)
        job_id = srv.create_job(f"many-lacking-{uid()}", "e2eWhere", TaskType.CLUSTER, group=GROUP,
                                route_key=4, max_retry_times=3, retry_interval=1)
        batches = [srv.trigger_job(job_id) for _ in range(8)]
        finals = {b: int(srv.wait_batch(b, timeout=120)["taskBatchStatus"]) for b in batches}
        assert set(finals.values()) == {BatchStatus.SUCCESS}, \
            {b: describe(srv, b) for b, s in finals.items() if s != BatchStatus.SUCCESS}
        ran_on = collections.Counter(line.split()[1] for b in batches for line in run.marker_lines("where", b))
        assert lacking.name not in ran_on and sum(ran_on.values()) == len(batches), ran_on
        refusals = lacking.output().count("no executor named 'e2eWhere'")
        assert refusals >= 1, lacking.output()[-3000:]

        _, batch, _ = job(srv, "many-lacking-broadcast", "e2eWhere", TaskType.BROADCAST, expect=BatchStatus.FAIL)
        tasks = srv.tasks(batch)
        failed = [t for t in tasks if int(t["taskStatus"]) != 3]
        assert len(tasks) == 4 and [address_of(t) for t in failed] == [lacking.address], tasks
        # the server keeps the refusal's text only for alarms (ExecuteResult.failure(null, message)):
        # the task's result stays empty; the node ships the reason to the task's log, and logs it
        # locally (at most once a minute per reason, so maybe only for an earlier refusal)
        def refused(lines):
            return [ln for ln in lines if "no executor named 'e2eWhere'" in (ln.get("message") or "")]

        shipped = refused(srv.wait_logs(batch, lambda ls: bool(refused(ls)), timeout=30))
        assert [int(ln["task_id"]) for ln in shipped] == [int(failed[0]["id"])], srv.job_logs(batch)
        assert "refused dispatch of task " in lacking.output(), lacking.output()[-3000:]
        run.note(f"node without the executor: refused {refusals} of 8 cluster dispatches, each retried "
                 f"on another node; its broadcast task FAILs")
    finally:
        lacking.stop()
        host.remove()


def test_an_ipv6_node(run):
    """A node whose only route to the server is IPv6 advertises its IPv6 address."""
    why = netns.unavailable()
    if why:
        pytest.skip(f"no separate hosts on this machine: {why}")
    srv = run.srv
    group, token = "py_e2e_v6", "SJ_v6_" + uid() * 3
    srv.create_group(group, token)
    with netns.Host(ipv6=True) as host:
        client = run.start_client("v6", host, SNAIL_SERVER_HOST=f"[{host.gateway6}]", SNAIL_GROUP_NAME=group,
                                  SNAIL_TOKEN=token, SNAIL_HOST_ID=f"py-e2e-v6-{uid()}")
        client.address = f"{host.address6}:{client.port}"
        try:
            run.wait_online(client)
            _, batch, _ = run_job(srv, "v6-cluster", "e2eWhere", TaskType.CLUSTER, group=group)
            [task] = srv.tasks(batch)
            assert task["resultMessage"] == "v6" and address_of(task) == client.address, task
        finally:
            client.stop()

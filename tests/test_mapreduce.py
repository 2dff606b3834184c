"""mr_do_map: argument checks, splitting, refusal, and use outside a job."""

import json
import time

import pytest

import snailjob as sj
from snailjob.args import unwrap_sentinel
from snailjob.transport import Reply

from .conftest import dispatch, dispatch_body, wait_for

MAP = "/batch/report/job/map/task/v1"
REPORT = "/report/dispatch/result"


def run_root(make_client, root, **overrides):
    mapper = sj.MapExecutor("m")
    mapper.map()(root)
    client, transport = make_client([mapper], **overrides)
    dispatch(client.host_port, dispatch_body("m", 4, mrStage=1, taskName="ROOT_MAP"))
    report = wait_for(lambda: transport.bodies(REPORT))[0][0]
    return transport, report


def test_ten_thousand_items_are_split_not_refused(make_client):
    items = [{"i": i} for i in range(10_000)]
    transport, report = run_root(make_client, lambda args: sj.mr_do_map(items, "LEAF"))
    chunks = [body[0]["subTask"] for body in transport.bodies(MAP)]
    assert [len(c) for c in chunks] == [200] * 50
    sent = [unwrap_sentinel(item) for chunk in chunks for item in chunk]
    assert [item for item, _ in sent] == items
    assert [i for i, (_, sentinel) in enumerate(sent) if sentinel] == [0]  # the first sub-task only
    assert {body[0]["taskName"] for body in transport.bodies(MAP)} == {"LEAF"}
    assert report["taskStatus"] == 3


def test_batch_size_setting(make_client):
    transport, _ = run_root(make_client, lambda args: sj.mr_do_map(list(range(10)), "LEAF"),
                            snail_map_batch_size=4)
    assert [len(b[0]["subTask"]) for b in transport.bodies(MAP)] == [4, 4, 2]


@pytest.mark.parametrize("items,name,message", [
    ([], "NEXT", "is empty"),
    ("abc", "NEXT", "must be a list"),
    ({"a": 1}, "NEXT", "must be a list"),
    (None, "NEXT", "must be a list"),
    ([1], "", "non-blank"),
    ([1], None, "non-blank"),
    ([1], "ROOT_MAP", "cannot be ROOT_MAP"),
    ([1, object()], "NEXT", "task_list[1] (object) is not a JSON value"),
    ([float("nan")], "NEXT", "task_list[0] (float) is not a JSON value"),
])
def test_bad_arguments_fail_the_task_with_a_clear_message(make_client, items, name, message):
    transport, report = run_root(make_client, lambda args: sj.mr_do_map(items, name))
    assert report["taskStatus"] == 4
    assert message in report["executeResult"]["message"]
    assert transport.bodies(MAP) == []


def test_server_refusal_fails_the_task(make_client):
    mapper = sj.MapExecutor("m")
    mapper.map()(lambda args: sj.mr_do_map([1, 2], "NEXT"))
    client, transport = make_client([mapper])
    transport.responder = lambda uri, body: (Reply(0, "Job config not existed", False) if uri == MAP
                                             else Reply(1, "", True))
    dispatch(client.host_port, dispatch_body("m", 4, mrStage=1, taskName="ROOT_MAP"))
    report = wait_for(lambda: transport.bodies(REPORT))[0][0]
    assert report["taskStatus"] == 4
    assert "server refused 2 sub-task(s) of 'NEXT': Job config not existed" in report["executeResult"]["message"]


def test_outside_a_job_or_outside_a_map_task(make_client):
    with pytest.raises(sj.NotInJobError):
        sj.mr_do_map([1], "NEXT")
    client, transport = make_client([sj.job("plain")(lambda args: sj.mr_do_map([1], "NEXT"))])
    dispatch(client.host_port, dispatch_body("plain"))
    report = wait_for(lambda: transport.bodies(REPORT))[0][0]
    assert "only be called from a map task" in report["executeResult"]["message"]


def test_map_reports_wait_for_the_server_and_keep_their_order(make_client):
    from snailjob.errors import TransportError

    outage = [4]

    def responder(uri, body):
        if uri == MAP and outage[0] > 0:
            outage[0] -= 1
            raise TransportError("UNAVAILABLE: simulated", code="UNAVAILABLE")
        return Reply(1, "", True)

    mapper = sj.MapExecutor("m")
    mapper.map()(lambda args: sj.mr_do_map(list(range(7)), "NEXT"))
    client, transport = make_client([mapper], snail_map_batch_size=3)
    transport.responder = responder
    dispatch(client.host_port, dispatch_body("m", 4, mrStage=1, taskName="ROOT_MAP"))
    report = wait_for(lambda: transport.bodies(REPORT), timeout=15)[0][0]
    assert report["taskStatus"] == 3
    delivered = [b[0]["subTask"] for b in transport.bodies(MAP)][4:]  # after the failed attempts
    assert delivered == [[{"__snailjob_sentinel__": 1, "item": 0}, 1, 2], [3, 4, 5], [6]]
    uris = [u for u, _, _ in transport.calls if u in (MAP, REPORT)]
    assert uris[-1] == REPORT  # the parent's result after all of its sub-tasks


def test_a_slow_map_report_is_never_sent_twice(make_client):
    from snailjob.errors import TransportError

    mapper = sj.MapExecutor("m")
    mapper.map()(lambda args: sj.mr_do_map([1, 2, 3], "NEXT"))
    client, transport = make_client([mapper])

    def timed_out(uri, body):
        if uri == MAP:  # the server got it but answered too late
            raise TransportError("DEADLINE_EXCEEDED: simulated", code="DEADLINE_EXCEEDED")
        return Reply(1, "", True)

    transport.responder = timed_out
    dispatch(client.host_port, dispatch_body("m", 4, mrStage=1, taskName="ROOT_MAP"))
    report = wait_for(lambda: transport.bodies(REPORT))[0][0]
    assert len(transport.bodies(MAP)) == 1  # no retry after a deadline
    assert report["taskStatus"] == 4
    assert "the server may have created some of them" in report["executeResult"]["message"]


def test_the_first_run_of_a_manual_retry_of_a_sentinel_is_reported_once(make_client):
    """The server answers the first result of a manual retry (``retryScene``
    2 without ``retryStatus``) by retrying the task, so a sentinel's result is
    then sent once; the same sentinel dispatched as usual repeats its own."""
    mapper = sj.MapExecutor("m")
    mapper.map("LEAF")(lambda args: args.map_result * 10)
    client, transport = make_client([mapper])
    sentinel = json.dumps({"jobParams": "", "maps": {"__snailjob_sentinel__": 1, "item": 1}})  # as mr_do_map sends it
    manual = dispatch_body("m", 4, mrStage=1, taskName="LEAF", argsStr=sentinel, retryScene=2)
    usual = dispatch_body("m", 4, mrStage=1, taskName="LEAF", argsStr=sentinel)
    for body in (manual, usual):
        assert dispatch(client.host_port, body).status == 1

    def reports(body):
        return [b[0] for b in transport.bodies(REPORT) if b[0]["taskId"] == body["taskId"]]

    wait_for(lambda: len(reports(usual)) >= 2, timeout=10, what="the usual sentinel's repeat")
    time.sleep(0.5)  # the manual one was delivered first: its repeat would have come by now
    [report] = reports(manual)
    assert (report["taskStatus"], report["retryScene"], report["retryStatus"]) == (3, 2, False)
    assert report["executeResult"]["result"] == 10


def test_a_map_report_names_the_task_that_made_it_as_parent(snailjob_emulator, run_client):
    """Each map report's ``parentId`` is the id of the task that called
    ``mr_do_map`` (ROOT_MAP, or a sub-task that maps further), in every chunk."""
    mapper = sj.MapExecutor("parents")
    mapper.map()(lambda args: sj.mr_do_map([1, 2, 3], "LEAF"))
    mapper.map("LEAF")(lambda args: sj.mr_do_map([args.map_result * 10], "DEEP") if args.map_result == 3 else "leaf")
    mapper.map("DEEP")(lambda args: "deep")
    run_client([mapper], snail_map_batch_size=2)
    snailjob_emulator.wait_for_clients(1)
    batch = snailjob_emulator.trigger("parents", 4, parallel_num=4)
    assert batch.wait(20) == 3
    [root] = batch.tasks_named("ROOT_MAP")
    [mapping_leaf] = [t for t in batch.tasks_named("LEAF") if t.args.get("maps") == 3]
    reports = [r for r in snailjob_emulator.map_reports if r["taskBatchId"] == batch.id]
    assert [(r["taskName"], r["parentId"]) for r in reports] == [
        ("LEAF", root.task_id), ("LEAF", root.task_id), ("DEEP", mapping_leaf.task_id)]
    assert {t.parent_id for t in batch.tasks_named("LEAF")} == {root.task_id}

"""Job-log entries: every field of protocol section 6.2, attribution, and
the rules for records outside a job."""

import logging
import threading
import time

import snailjob as sj

from .conftest import dispatch, dispatch_body, wait_for

LOGS = "/batch/server/report/log"


def shipped(transport):
    return [entry for body in transport.bodies(LOGS) for entry in body[0]]


def fields(entry):
    names = [f["name"] for f in entry["fieldList"]]
    assert len(names) == len(set(names)), names  # duplicates make the server drop the batch
    return {f["name"]: f["value"] for f in entry["fieldList"]}


def run_and_collect(make_client, func, count, **fields_):
    client, transport = make_client([sj.job("logger")(func)], snail_log_remote_interval=0.1)
    body = dispatch_body("logger", **fields_)
    dispatch(client.host_port, body)
    wait_for(lambda: len(shipped(transport)) >= count, timeout=5)
    return client, body, shipped(transport)


def test_entry_fields(make_client):
    before = int(time.time() * 1000)

    def job(args):
        sj.SnailLog.REMOTE.info("plain")
        sj.SnailLog.REMOTE.warning("rows=%d of %s", 3, "t")
        sj.SnailLog.REMOTE.info({"k": 1})
        try:
            _ = 1 / 0
        except ZeroDivisionError:
            sj.SnailLog.REMOTE.exception("failed")
        sj.SnailLog.REMOTE.info("bad %d args", "x")  # formatting error must not lose it

    client, body, entries = run_and_collect(make_client, job, 5)
    after = int(time.time() * 1000)
    plain, formatted, non_string, exc, bad = (fields(e) for e in entries[:5])
    for entry in entries[:5]:
        assert entry["logType"] == "JOB"
        assert (entry["jobId"], entry["taskBatchId"], entry["taskId"]) == (
            body["jobId"], body["taskBatchId"], body["taskId"])
        assert entry["namespaceId"] == "764d604ec6fc45f68cd92514c40e9e1a"
        assert entry["groupName"] == "snail_job_demo_group"
        f = fields(entry)
        assert before <= int(f["time_stamp"]) <= after
        assert entry["realTime"] == int(f["time_stamp"])
        assert f["host"] == "127.0.0.1" and f["port"] == str(client.host_port)
        assert f["thread"].startswith("snailjob-")
    assert plain["message"] == "plain" and plain["level"] == "INFO" and "throwable" not in plain
    # qualified by module, shaped like Java's Class.method(File.java:line)
    assert plain["location"] == f"tests.test_log.job(test_log.py:{job.__code__.co_firstlineno + 1})"
    # the level names the console colours (logback's)
    assert formatted["message"] == "rows=3 of t" and formatted["level"] == "WARN"
    assert non_string["message"] == "{'k': 1}"
    assert exc["level"] == "ERROR" and exc["message"] == "failed"
    # the console shows a throwable collapsed under its first line: the exception, as Java's
    title, traceback = exc["throwable"].split("\n", 1)
    assert title == "ZeroDivisionError: division by zero"
    assert traceback.startswith("Traceback (most recent call last)")
    assert traceback.rstrip().endswith("ZeroDivisionError: division by zero")
    assert "bad %d args" in bad["message"] and "could not apply args" in bad["message"]


def test_executor_exception_traceback_is_shipped(make_client):
    def job(args):
        raise KeyError("missing-key")  # the first line of job

    _, _, entries = run_and_collect(make_client, job, 1)
    f = fields(entries[0])
    assert f["level"] == "ERROR" and "KeyError: 'missing-key'" in f["message"]
    assert "raise KeyError" in f["throwable"]
    assert f["throwable"].startswith("KeyError: 'missing-key'\nTraceback")
    # the line the client writes for a failing job points at the user's code, not the library
    line = job.__code__.co_firstlineno + 1
    name = getattr(job.__code__, "co_qualname", "job")  # Python 3.11+ names the enclosing function too
    assert f["location"] == f"tests.test_log.{name}(test_log.py:{line})"


def test_failure_location_is_the_innermost_user_frame(make_client, caplog):
    import json as stdlib_json

    def parse(text):
        return stdlib_json.loads(text)  # the first line of parse; raises inside the standard library

    def job(args):
        parse("{broken")

    with caplog.at_level(logging.ERROR, logger="snailjob.remote"):
        _, _, entries = run_and_collect(make_client, job, 1)
    f = fields(entries[0])
    # not json/decoder.py: the innermost frame of the user's own code
    line = parse.__code__.co_firstlineno + 1
    assert f["location"].endswith(f".parse(test_log.py:{line})"), f["location"]
    assert f["throwable"].startswith("json.decoder.JSONDecodeError: Expecting property name")
    # local log formats see the same place
    record = next(r for r in caplog.records if r.getMessage().startswith("executor raised"))
    assert (record.module, record.funcName, record.lineno) == (
        "test_log", getattr(parse.__code__, "co_qualname", "parse"), line)


def test_levels_map_to_the_names_the_console_knows():
    from snailjob.log import level_name

    assert [level_name(n) for n in (5, 10, 15, 20, 25, 30, 40, 50)] == [
        "DEBUG", "DEBUG", "DEBUG", "INFO", "INFO", "WARN", "ERROR", "ERROR"]


def test_interleaved_tasks_on_reused_threads_are_attributed(make_client):
    @sj.job("inter")
    def inter(args):
        for i in range(5):
            sj.SnailLog.REMOTE.info("task %s line %d", args.task_id, i)
            time.sleep(0.01)

    client, transport = make_client([inter], snail_log_remote_interval=0.1)
    bodies = [dispatch_body("inter", 3, taskBatchId=700, parallelNum=2, shardingIndex=i,
                            taskName="SHARDING_TASK") for i in range(6)]
    for body in bodies:
        dispatch(client.host_port, body)
    wait_for(lambda: len(shipped(transport)) == 30, timeout=10)
    threads = set()
    for entry in shipped(transport):
        f = fields(entry)
        assert f["message"].startswith(f"task {entry['taskId']} ")
        threads.add(f["thread"])
    assert len(threads) <= 2  # two pooled threads ran six tasks


def test_user_handler_ships_only_inside_jobs(make_client):
    app = logging.getLogger("myapp.worker")
    handler = sj.RemoteLogHandler()
    app.addHandler(handler)
    app.setLevel(logging.INFO)
    try:
        app.info("outside any job")  # not shipped, does not raise

        def job(args):
            app.info("inside %s", "job")

        client, _, entries = run_and_collect(make_client, job, 1)
        assert [fields(e)["message"] for e in entries] == ["inside job"]
    finally:
        app.removeHandler(handler)


def test_remote_logger_outside_a_job_never_raises(make_client, monkeypatch):
    """Outside a job a record goes nowhere remote: ``emit`` neither raises nor
    reports an error, and the only entry shipped is the one a job logs after."""
    errors = []
    monkeypatch.setattr(sj.RemoteLogHandler, "handleError", lambda self, record: errors.append(record))
    client, transport = make_client([sj.job("logger")(lambda args: sj.SnailLog.REMOTE.info("inside job"))],
                                    snail_log_remote_interval=0.1)
    assert any(isinstance(h, sj.RemoteLogHandler) for h in sj.SnailLog.REMOTE.handlers)
    sj.SnailLog.REMOTE.info("not in a job")
    sj.SnailLog.REMOTE.exception("still fine")  # no active exception
    mine = sj.RemoteLogHandler()  # one of the program's own, called directly
    mine.handle(logging.LogRecord("app", logging.ERROR, __file__, 1, "direct %s", ("call",), None))
    dispatch(client.host_port, dispatch_body("logger"))
    wait_for(lambda: shipped(transport))
    time.sleep(0.3)  # a later batch would have come by now
    assert [fields(e)["message"] for e in shipped(transport)] == ["inside job"]
    assert errors == []


def test_a_multi_line_message_titles_the_throwable_with_its_first_line(make_client):
    """The console shows a throwable collapsed under its first line: the
    exception's type and the first line of its message; the rest follows."""
    def job(args):
        try:
            raise ValueError("first line\nsecond line")
        except ValueError:
            sj.SnailLog.REMOTE.exception("failed")

    _, _, entries = run_and_collect(make_client, job, 1)
    title, rest = fields(entries[0])["throwable"].split("\n", 1)
    assert title == "ValueError: first line"
    assert rest.startswith("Traceback (most recent call last)") and "second line" in rest


def test_record_shipped_once_with_handlers_on_two_loggers(make_client):
    root_handler = sj.RemoteLogHandler()
    logging.getLogger().addHandler(root_handler)
    try:
        _, _, entries = run_and_collect(make_client, lambda a: sj.SnailLog.REMOTE.info("once"), 1)
        time.sleep(0.3)
        assert [fields(e)["message"] for e in entries].count("once") == 1
    finally:
        logging.getLogger().removeHandler(root_handler)


def test_threads_started_with_copied_context_are_attributed(make_client):
    import contextvars

    def job(args):
        ctx = contextvars.copy_context()
        t = threading.Thread(target=ctx.run, args=(sj.SnailLog.REMOTE.info, "from child"))
        t.start()
        t.join()

    _, body, entries = run_and_collect(make_client, job, 1)
    assert fields(entries[0])["message"] == "from child"
    assert entries[0]["taskId"] == body["taskId"]

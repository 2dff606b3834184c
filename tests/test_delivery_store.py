"""The outbox file (``SNAIL_OUTBOX_PATH``) trusts nothing: modes 0700/0600
whatever the umask, files and directories of other users or writable by
others refused, symlinks refused, one client per file (a lock, across
threads and processes), corrupt or foreign files refused, and restored rows
sent only when they are reports this client writes.  Real files, real SQLite."""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import sqlite3
import stat
import tempfile
import time
from typing import Any, Dict, List

import pytest

import snailjob as sj
from snailjob.delivery import OutboxStore, ResultOutbox, RetryReporter
from snailjob.errors import ConfigurationError, OutboxError, TransportError
from snailjob.transport import Reply
from snailjob.wire import enums

from .conftest import RecordingTransport, wait_for

ROOT = os.geteuid() == 0
OTHER_UID = 65534  # nobody
as_root = pytest.mark.skipif(not ROOT, reason="giving a file to another user needs root")


def mode(path: Any) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def refused(path: Any, *words: str) -> str:
    """Opening ``path`` raises an ``OutboxError`` naming the variable, the
    path and ``words``; its message."""
    with pytest.raises(OutboxError) as caught:
        OutboxStore(str(path))
    message = str(caught.value)
    assert message.startswith(f"SNAIL_OUTBOX_PATH={path}: "), message
    for word in words:
        assert word in message, message
    return message


def made(path: Any) -> None:
    """Create a valid outbox at ``path`` and close it."""
    OutboxStore(str(path)).close()


def result_body(task_id: int) -> str:
    return json.dumps([{"taskId": task_id, "taskBatchId": 7, "executeResult": {"status": 1}}])


def transport() -> RecordingTransport:
    return RecordingTransport("test", lambda: {})


def open_fds() -> List[str]:
    return sorted(os.listdir("/proc/self/fd"))


# --- modes ------------------------------------------------------------------


def test_directories_are_made_0700_and_files_0600_whatever_the_umask(tmp_path):
    path = tmp_path / "a" / "b" / "outbox.db"
    old = os.umask(0)
    try:
        store = OutboxStore(str(path))
        store.add(1, enums.URI_REPORT_RESULT, result_body(1), time.time() + 60, "r")
    finally:
        os.umask(old)
    try:
        assert mode(tmp_path / "a") == 0o700 and mode(tmp_path / "a" / "b") == 0o700
        for name in ("outbox.db", "outbox.db-wal", "outbox.db-shm", "outbox.db.lock"):
            assert mode(path.parent / name) == 0o600, name
    finally:
        store.close()
    assert mode(path) == 0o600


def test_an_existing_directory_keeps_its_mode_and_an_old_readable_file_is_tightened(tmp_path):
    tmp_path.chmod(0o755)  # ours, not writable by others: accepted as it is
    path = tmp_path / "outbox.db"
    old = os.umask(0o022)
    try:
        sqlite3.connect(path).close()  # a file from before, 0644
    finally:
        os.umask(old)
    assert mode(path) == 0o644
    made(path)
    assert mode(path) == 0o600 and mode(tmp_path) == 0o755


# --- ownership, modes, symlinks ---------------------------------------------------


@as_root
def test_a_file_of_another_user_is_refused(tmp_path):
    path = tmp_path / "outbox.db"
    made(path)
    os.chown(path, OTHER_UID, -1)
    refused(path, f"belongs to uid {OTHER_UID}", f"uid {os.geteuid()}", "move it aside")


@as_root
def test_a_directory_of_another_user_is_refused(tmp_path):
    directory = tmp_path / "shared"
    directory.mkdir(mode=0o700)
    os.chown(directory, OTHER_UID, -1)
    message = refused(directory / "outbox.db", f"its directory {directory} belongs to uid {OTHER_UID}",
                      "use a directory of your own")
    assert not (directory / "outbox.db").exists(), message  # refused before anything was created


def test_a_file_writable_by_others_is_refused(tmp_path):
    path = tmp_path / "outbox.db"
    made(path)
    path.chmod(0o666)
    refused(path, "writable by group or others (mode 0666)", f"chmod 600 {path}")
    path.chmod(0o620)
    refused(path, "mode 0620")


@pytest.mark.parametrize("dir_mode", [0o777, 0o1777, 0o770])
def test_a_directory_writable_by_others_is_refused_even_with_the_sticky_bit(tmp_path, dir_mode):
    directory = tmp_path / "shared"
    directory.mkdir()
    directory.chmod(dir_mode)
    refused(directory / "outbox.db", f"its directory {directory} is writable by group or others",
            f"chmod 700 {directory}", "use a directory of your own")
    assert list(directory.iterdir()) == []


def test_a_symlink_is_refused(tmp_path):
    real = tmp_path / "real.db"
    made(real)
    link = tmp_path / "outbox.db"
    link.symlink_to(real)
    refused(link, f"the file {link} is a symlink", "use the real path")
    made(tmp_path / "other.db")
    (tmp_path / "other.db.lock").unlink()
    (tmp_path / "other.db.lock").symlink_to(tmp_path / "elsewhere")
    refused(tmp_path / "other.db", "the lock file", "is a symlink")
    assert not (tmp_path / "elsewhere").exists()


@as_root
def test_a_side_file_of_another_user_is_refused(tmp_path):
    path = tmp_path / "outbox.db"
    made(path)
    wal = tmp_path / "outbox.db-wal"
    wal.touch(mode=0o600)
    os.chown(wal, OTHER_UID, -1)
    refused(path, f"the side file {wal} belongs to uid {OTHER_UID}")


def test_outbox_error_is_a_configuration_error():
    assert issubclass(OutboxError, ConfigurationError) and sj.OutboxError is OutboxError


# --- corrupt, foreign, unusable files ------------------------------------------


def test_a_file_that_is_not_a_database_is_refused_and_nothing_stays_open(tmp_path):
    path = tmp_path / "outbox.db"
    path.write_bytes(b"results of someone else\n" * 200)
    path.chmod(0o600)
    before = open_fds()
    refused(path, "not a SnailJob outbox or corrupt", "move it aside")
    assert open_fds() == before
    path.unlink()
    made(path)  # the failed attempt released the lock


@pytest.mark.parametrize("damage", ["truncated", "overwritten"])
def test_a_truncated_or_damaged_outbox_is_refused(tmp_path, damage):
    path = tmp_path / "outbox.db"
    store = OutboxStore(str(path))
    for n in range(2000):
        store.add(n, enums.URI_REPORT_RESULT, result_body(n) + " " * 200, time.time() + 60, f"r{n}")
    store.close()  # the last connection's close leaves everything in the main file
    size = path.stat().st_size
    assert size > 100_000 and not (tmp_path / "outbox.db-wal").exists()
    with open(path, "r+b") as f:
        if damage == "truncated":
            f.truncate(size // 2)
        else:  # a page in the middle: the schema reads fine, SQLite's quick_check does not
            f.seek(size // 2)
            f.write(b"\xff" * 300)
    refused(path, "not a SnailJob outbox or corrupt", "move it aside")


@pytest.mark.parametrize("sql,what", [
    ("CREATE TABLE users (name TEXT)", "table 'users'"),
    ("CREATE TABLE results (id INTEGER PRIMARY KEY, uri TEXT)", "table results has columns"),
    (None, "trigger 'rewrite'"),
])
def test_a_database_of_something_else_is_refused(tmp_path, sql, what):
    path = tmp_path / "outbox.db"
    if sql is None:
        made(path)
        sql = ("CREATE TRIGGER rewrite AFTER INSERT ON results BEGIN "
               "UPDATE results SET uri = '/evil' WHERE id = new.id; END")
    with sqlite3.connect(path) as db:
        db.execute(sql)
    db.close()
    refused(path, "not a SnailJob outbox", what, "move it aside")


def test_a_directory_in_place_of_the_file_is_refused(tmp_path):
    (tmp_path / "outbox.db").mkdir()
    refused(tmp_path / "outbox.db", "is a directory")
    (tmp_path / "plain").write_text("")
    refused(tmp_path / "plain" / "outbox.db", f"its directory {tmp_path / 'plain'} is not a directory")


def _open_as_nobody(path: str, queue: Any) -> None:
    if os.geteuid() == 0:
        os.setgid(OTHER_UID)
        os.setuid(OTHER_UID)
    try:
        OutboxStore(path).close()
        queue.put("opened")
    except OutboxError as exc:
        queue.put(str(exc))


def test_a_file_this_user_cannot_write_is_refused(tmp_path):
    # root writes anything: the attempt is made by a child that is "nobody"
    directory = tempfile.mkdtemp()
    try:
        path = os.path.join(directory, "outbox.db")
        made(path)
        os.chmod(path, 0o400)
        if ROOT:
            for name in (directory, path, path + ".lock"):
                os.chown(name, OTHER_UID, OTHER_UID)
        ctx = multiprocessing.get_context("spawn")
        queue = ctx.Queue()
        child = ctx.Process(target=_open_as_nobody, args=(path, queue))
        child.start()
        message = queue.get(timeout=60)
        child.join(30)
        assert message.startswith(f"SNAIL_OUTBOX_PATH={path}: "), message
        assert "Permission denied" in message and f"chmod 600 {path}" in message, message
    finally:
        for name in os.listdir(directory):
            os.unlink(os.path.join(directory, name))
        os.rmdir(directory)


# --- one client per file -------------------------------------------------------


def test_a_second_store_on_the_same_file_is_refused_and_the_first_delivers_once(tmp_path):
    path = tmp_path / "outbox.db"
    down = transport()

    def outage(uri: str, body: Any) -> Reply:
        raise TransportError("UNAVAILABLE: simulated", code="UNAVAILABLE")

    down.responder = outage
    first = ResultOutbox(down, rpc_timeout=1, store=OutboxStore(str(path)))
    first.start()
    for n in range(3):
        first.offer(n, enums.URI_REPORT_RESULT, result_body(n), time.time() + 60, f"result {n}")
    wait_for(lambda: first.held()[0] == 3, what="three held results")  # tried and held
    refused(path, "another SnailJob client holds this outbox", f"{path}.lock",
            "give each client its own SNAIL_OUTBOX_PATH")
    down.responder = None  # the server is back
    assert first.flush(15)
    first.close(2)
    delivered = [body[0]["taskId"] for uri, body, _ in down.calls if uri == enums.URI_REPORT_RESULT]
    assert first.delivered == 3 and sorted(set(delivered)) == [0, 1, 2]

    again = transport()
    second = ResultOutbox(again, rpc_timeout=1, store=OutboxStore(str(path)))  # free after close()
    second.start()
    assert second.restored == 0 and second.flush(2) and again.calls == []
    second.close(1)


def _hold(path: str, ready: Any, release: Any) -> None:
    store = OutboxStore(path)
    ready.set()
    release.wait(60)
    store.close()


def _try(path: str, queue: Any) -> None:
    try:
        OutboxStore(path).close()
        queue.put("opened")
    except OutboxError as exc:
        queue.put(str(exc))


def test_a_store_held_by_another_process_is_refused_both_ways(tmp_path):
    path = str(tmp_path / "outbox.db")
    ctx = multiprocessing.get_context("spawn")
    ready, release = ctx.Event(), ctx.Event()
    holder = ctx.Process(target=_hold, args=(path, ready, release))
    holder.start()
    try:
        assert ready.wait(60)
        refused(path, "another SnailJob client holds this outbox")
    finally:
        release.set()
        holder.join(30)
    ours = OutboxStore(path)  # the other process closed it
    try:
        queue = ctx.Queue()
        other = ctx.Process(target=_try, args=(path, queue))
        other.start()
        message = queue.get(timeout=60)
        other.join(30)
        assert message.startswith(f"SNAIL_OUTBOX_PATH={path}: another SnailJob client holds this outbox"), message
    finally:
        ours.close()


# --- restored rows -------------------------------------------------------------


def plant(path: Any, table: str, rows: List[Dict[str, Any]]) -> None:
    with sqlite3.connect(path) as db:
        for row in rows:
            db.execute(f"INSERT INTO {table} ({', '.join(row)}) VALUES ({', '.join('?' * len(row))})",
                       tuple(row.values()))
    db.close()


def test_planted_results_are_never_sent_and_valid_ones_are_delivered_once(tmp_path, caplog):
    path = tmp_path / "outbox.db"
    later = time.time() + 60
    store = OutboxStore(str(path))
    store.add(1, enums.URI_REPORT_RESULT, result_body(1), later, "result 1")
    store.close()
    long_uri = "/evil/" + "x" * 500
    plant(path, "results", [
        {"batch_id": 2, "uri": long_uri, "body": result_body(666), "expires": later, "describe": "planted"},
        {"batch_id": 2, "uri": enums.URI_REPORT_RESULT, "body": "not json", "expires": later, "describe": "d"},
        {"batch_id": 2, "uri": enums.URI_REPORT_RESULT, "body": '{"taskId": 666}', "expires": later, "describe": "d"},
        {"batch_id": b"\x00", "uri": enums.URI_REPORT_RESULT, "body": result_body(666), "expires": later,
         "describe": "d"},
        {"batch_id": 2, "uri": enums.URI_REPORT_RESULT, "body": result_body(666), "expires": "soon", "describe": "d"},
        {"batch_id": "retry-3", "uri": enums.URI_RETRY_RESULT, "body": result_body(2), "expires": later,
         "describe": "retry result"},
    ])
    store = OutboxStore(str(path))
    store.add(4, enums.URI_RETRY_CALLBACK_RESULT, result_body(3), later, "callback result")
    seen = transport()
    outbox = ResultOutbox(seen, rpc_timeout=1, store=store)
    with caplog.at_level(logging.WARNING, logger="snailjob"):
        outbox.start()
        assert outbox.flush(10)
    outbox.close(2)
    sent = [(uri, body[0]["taskId"]) for uri, body, _ in seen.calls]
    assert sorted(sent) == [(enums.URI_REPORT_RESULT, 1), (enums.URI_RETRY_CALLBACK_RESULT, 3),
                            (enums.URI_RETRY_RESULT, 2)]
    assert outbox.restored == 3 and outbox.delivered == 3
    warnings = [r for r in caplog.records if r.name == "snailjob.outbox_store"]
    assert len(warnings) == 1 and warnings[0].levelno == logging.WARNING
    text = warnings[0].getMessage()
    assert f"SNAIL_OUTBOX_PATH={path}: 5 stored result(s) not sent and deleted" in text, text
    assert repr(long_uri)[:60] + "..." in text and long_uri not in text, text
    assert "body is not JSON: 'not json'" in text and "; ..." in text, text

    caplog.clear()
    again = transport()
    outbox = ResultOutbox(again, rpc_timeout=1, store=OutboxStore(str(path)))
    with caplog.at_level(logging.WARNING, logger="snailjob"):
        outbox.start()  # planted rows were deleted, valid ones delivered: nothing left
        assert outbox.flush(2)
    outbox.close(1)
    assert again.calls == [] and outbox.restored == 0 and not caplog.records
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT COUNT(*) FROM results").fetchone()[0] == 0
    db.close()


def test_planted_retry_reports_are_never_sent(tmp_path, caplog):
    path = tmp_path / "outbox.db"
    store = OutboxStore(str(path))
    store.add_report(json.dumps({"sceneName": "s", "idempotentId": "good", "groupName": "g"}))
    store.close()
    plant(path, "retry_reports", [{"entry": "[1, 2]"}, {"entry": "{not json"}, {"entry": '{"idempotentId": "x"}'},
                                  {"entry": json.dumps({"sceneName": "s", "idempotentId": "good2"})}])
    seen = transport()
    store = OutboxStore(str(path))
    reporter = RetryReporter(seen, rpc_timeout=1, interval=0.05, store=store)
    with caplog.at_level(logging.WARNING, logger="snailjob"):
        reporter.start()
        assert reporter.flush(5)
    reporter.close(2)
    assert store.load_reports() == []  # delivered and planted rows are all gone
    store.close()
    sent = [e["idempotentId"] for uri, body, _ in seen.calls for e in body[0]]
    assert sorted(sent) == ["good", "good2"] and reporter.restored == 2
    text = " ".join(r.getMessage() for r in caplog.records if r.name == "snailjob.outbox_store")
    assert "3 stored retry report(s) not sent and deleted" in text and "entry is not a JSON object" in text, text


def test_only_report_uris_are_written(tmp_path):
    store = OutboxStore(str(tmp_path / "outbox.db"))
    try:
        with pytest.raises(ValueError, match="STORED_URIS"):
            store.add(1, enums.URI_REPORT_MAP, "[{}]", time.time() + 60, "a map report")
        assert store.count() == 0
    finally:
        store.close()

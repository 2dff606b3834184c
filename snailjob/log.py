"""Job logs: ``SnailLog`` (the 0.1.3 facade) and ``RemoteLogHandler``.

``RemoteLogHandler`` turns a ``logging.LogRecord`` emitted inside a running
task into the server's job-log entry and hands it to the client's log
shipper.  ``emit`` does no I/O and never raises; records emitted outside a
task are ignored.  Attach it to any logger of yours to ship that logger's
records from inside jobs::

    logging.getLogger("myapp").addHandler(snailjob.RemoteLogHandler())

Nothing here configures logging at import.  ``configure_local_logging`` is
what ``client_main()`` calls: it adds a console handler to the ``snailjob``
logger only when the program configured no logging at all, and a rotating
file handler only when ``SNAIL_LOG_LOCAL_FILENAME`` is set.
"""

from __future__ import annotations

import logging
import logging.handlers
import os
import sys
import traceback
from typing import Any, Dict, List, Optional, Tuple

from snailjob.context import current_retry_or_none, current_task_or_none

PACKAGE_LOGGER = "snailjob"
_SHIPPED = "_snailjob_shipped"


class SnailLog:
    """``REMOTE`` logs to the server's console (and locally, by propagation);
    ``LOCAL`` logs locally only.  Both are ordinary ``logging.Logger``s."""

    LOCAL = logging.getLogger("snailjob.local")
    REMOTE = logging.getLogger("snailjob.remote")


def _message(record: logging.LogRecord) -> str:
    try:
        return record.getMessage()
    except Exception as exc:  # bad %-args must not lose the record
        return f"{record.msg!r} (could not apply args {record.args!r}: {exc})"


def _throwable(record: logging.LogRecord) -> Optional[str]:
    parts: List[str] = []
    if record.exc_info and record.exc_info[0] is not None:
        if not record.exc_text:
            record.exc_text = "".join(traceback.format_exception(*record.exc_info)).rstrip()
        parts.append(record.exc_text)
    elif record.exc_text:
        parts.append(record.exc_text)
    if record.stack_info:
        parts.append(record.stack_info)
    return "\n".join(parts) if parts else None


def build_entry(record: logging.LogRecord, identity: Dict[str, str], job_id: int,
                task_batch_id: int, task_id: int) -> Dict[str, Any]:
    """The wire form of one job-log entry (protocol.md section 6)."""
    millis, fields = _fields(record, identity)
    return {
        "logType": "JOB",
        "namespaceId": identity["namespace"],
        "groupName": identity["group"],
        "jobId": job_id,
        "taskBatchId": task_batch_id,
        "taskId": task_id,
        "realTime": millis,
        "fieldList": fields,
    }


def build_retry_entry(record: logging.LogRecord, identity: Dict[str, str], retry_id: Optional[int],
                      retry_task_id: int) -> Dict[str, Any]:
    """The wire form of one retry-log entry (``RetryLogTaskRequest``)."""
    millis, fields = _fields(record, identity)
    entry: Dict[str, Any] = {
        "logType": "RETRY",
        "namespaceId": identity["namespace"],
        "groupName": identity["group"],
        "retryTaskId": retry_task_id,
        "realTime": millis,
        "fieldList": fields,
        "clientInfo": identity.get("client_info", f"{identity['host']}:{identity['port']}"),
    }
    if retry_id is not None:
        entry["retryId"] = retry_id
    return entry


def _fields(record: logging.LogRecord, identity: Dict[str, str]) -> Tuple[int, List[Dict[str, Any]]]:
    millis = int(record.created * 1000)
    fields = [
        {"name": "time_stamp", "value": str(millis)},
        {"name": "level", "value": record.levelname},
        {"name": "thread", "value": record.threadName or str(record.thread)},
        {"name": "message", "value": _message(record)},
        {"name": "location", "value": f"{record.module}:{record.funcName}:{record.lineno}"},
    ]
    throwable = _throwable(record)
    if throwable is not None:
        fields.append({"name": "throwable", "value": throwable})
    fields.append({"name": "host", "value": identity["host"]})
    fields.append({"name": "port", "value": identity["port"]})
    return millis, fields


class RemoteLogHandler(logging.Handler):
    """Ships records emitted inside a running task (as JOB logs) or a
    server-driven retry or callback (as RETRY logs) to the server's console.

    Records outside both are ignored; a record handled by several
    ``RemoteLogHandler``s (through propagation) is shipped once.
    """

    def emit(self, record: logging.LogRecord) -> None:
        try:
            if getattr(record, _SHIPPED, False):
                return
            ctx = current_task_or_none()
            if ctx is not None:
                setattr(record, _SHIPPED, True)
                services = ctx.services
                services.ship_log(build_entry(record, services.log_identity, ctx.job_id,
                                              ctx.task_batch_id, ctx.task_id))
                return
            retry = current_retry_or_none()
            if retry is not None:
                setattr(record, _SHIPPED, True)
                retry.services.ship_log(build_retry_entry(record, retry.services.log_identity,
                                                          retry.retry_id, retry.retry_task_id))
        except Exception:
            pass  # logging must never raise into the job

    def handleError(self, record: logging.LogRecord) -> None:  # pragma: no cover
        pass


def install_remote_handler() -> None:
    """Attach one ``RemoteLogHandler`` to ``SnailLog.REMOTE`` (idempotent)."""
    if not any(isinstance(h, RemoteLogHandler) for h in SnailLog.REMOTE.handlers):
        SnailLog.REMOTE.addHandler(RemoteLogHandler())


def configure_local_logging(level: str, fmt: str, filename: Optional[str],
                            backup_count: int) -> List[logging.Handler]:
    """What ``client_main()`` does for local logs; returns the handlers added.

    - the ``snailjob`` logger gets ``level`` if it has none of its own;
    - if neither the root logger nor ``snailjob`` has a handler, a console
      handler (stderr, ``fmt``) is added to ``snailjob``;
    - if ``filename`` is set, a daily-rotating file handler keeping
      ``backup_count`` files is added to ``snailjob``.
    """
    package = logging.getLogger(PACKAGE_LOGGER)
    if package.level == logging.NOTSET:
        package.setLevel(level)
    added: List[logging.Handler] = []
    formatter = logging.Formatter(fmt)
    real = [h for h in package.handlers if not isinstance(h, logging.NullHandler)]
    if not logging.getLogger().handlers and not real:
        console = logging.StreamHandler(sys.stderr)
        console.setFormatter(formatter)
        added.append(console)
    if filename:
        directory = os.path.dirname(os.path.abspath(filename))
        os.makedirs(directory, exist_ok=True)
        file_handler = logging.handlers.TimedRotatingFileHandler(
            filename, when="d", backupCount=backup_count, encoding="utf-8")
        file_handler.setFormatter(formatter)
        added.append(file_handler)
    for handler in added:
        package.addHandler(handler)
    return added

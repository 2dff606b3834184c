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

import functools
import logging
import logging.handlers
import os
import sys
import sysconfig
import traceback
from types import TracebackType
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


def level_name(levelno: int) -> str:
    """The level as the console knows it (logback's names; it colours only
    these): ``WARNING`` is ``WARN``, ``CRITICAL`` is ``ERROR``, custom levels
    take the next standard level below them."""
    if levelno >= logging.ERROR:
        return "ERROR"
    if levelno >= logging.WARNING:
        return "WARN"
    if levelno >= logging.INFO:
        return "INFO"
    return "DEBUG"


def exception_type(exc: BaseException) -> str:
    """The exception's type as a traceback's last line names it: qualified
    by its module, except builtins."""
    kind = type(exc)
    if kind.__module__ in ("builtins", "__main__"):
        return kind.__qualname__
    return f"{kind.__module__}.{kind.__qualname__}"


def exception_title(exc: BaseException) -> str:
    """``module.Type: first line of the message``, the way a traceback's
    last line names an exception."""
    try:
        text = str(exc).strip()
    except Exception:
        text = "<exception str() failed>"
    return f"{exception_type(exc)}: {text.splitlines()[0]}" if text else exception_type(exc)


def _throwable(record: logging.LogRecord) -> Optional[str]:
    """The traceback, under a first line that names the exception: the
    console shows a throwable collapsed under its first line, as Java's
    ``Type: message`` is."""
    parts: List[str] = []
    if record.exc_info and record.exc_info[1] is not None:
        if not record.exc_text:
            record.exc_text = "".join(traceback.format_exception(*record.exc_info)).rstrip()
        parts += [exception_title(record.exc_info[1]), record.exc_text]
    elif record.exc_text:
        lines = [line for line in record.exc_text.splitlines() if line.strip()]
        if lines and lines[0].startswith("Traceback") and len(lines) > 1:
            parts.append(lines[-1])
        parts.append(record.exc_text)
    if record.stack_info:
        parts.append(record.stack_info)
    return "\n".join(parts) if parts else None


def module_name(pathname: str, fallback: str) -> str:
    """The dotted name of the module loaded from ``pathname`` (a script run
    as ``__main__``: its ``-m`` name, else ``fallback``, the file's stem)."""
    want = os.path.normcase(os.path.abspath(pathname))
    for name, module in list(sys.modules.items()):
        path = getattr(module, "__file__", None)
        if not path or os.path.normcase(os.path.abspath(path)) != want:
            continue
        if name == "__main__":
            spec = getattr(module, "__spec__", None)
            return spec.name if spec is not None and spec.name else fallback
        return name
    return fallback


@functools.lru_cache(maxsize=4096)
def _module_and_file(pathname: str) -> Tuple[str, str]:
    name = os.path.basename(pathname)
    return module_name(pathname, os.path.splitext(name)[0]), name


def format_location(pathname: str, lineno: int, func: str) -> str:
    """Where code is, like Java's ``Class.method(File.java:42)``:
    ``package.module.function(module.py:42)``."""
    module, name = _module_and_file(pathname)
    return f"{module}.{func}({name}:{lineno})"


_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep


@functools.lru_cache(maxsize=1)
def _library_dirs() -> Tuple[str, ...]:
    """The standard library's and installed packages' directories."""
    paths = sysconfig.get_paths()
    return tuple(sorted({os.path.abspath(p) + os.sep for p in (
        paths.get(k) for k in ("stdlib", "platstdlib", "purelib", "platlib")) if p}))


def user_frame(tb: Optional[TracebackType]) -> Optional[Tuple[str, int, str]]:
    """``(file, line, function)`` of the user code an exception came from:
    the innermost frame outside this package and outside the standard
    library and installed packages, else the outermost frame outside this
    package (the executor the client called), else ``None``."""
    outermost: Optional[Tuple[str, int, str]] = None
    innermost_own: Optional[Tuple[str, int, str]] = None
    libraries = _library_dirs()
    while tb is not None:
        code = tb.tb_frame.f_code
        path = os.path.abspath(code.co_filename)
        if not path.startswith(_PACKAGE_DIR):
            frame = (code.co_filename, tb.tb_lineno, getattr(code, "co_qualname", code.co_name))
            outermost = outermost or frame
            if not path.startswith(libraries):
                innermost_own = frame
        tb = tb.tb_next
    return innermost_own or outermost


def log_exception(logger: logging.Logger, msg: str, *args: Any,
                  exc: BaseException) -> Optional[Tuple[str, int, str]]:
    """Log ``exc`` at ERROR with its traceback, as if the record had been
    made where the exception came from in the user's code (``user_frame``):
    the console and local log formats show that location, not this library's.
    Returns that place (``None`` when the traceback has no frame outside
    this package)."""
    where = user_frame(exc.__traceback__)
    if not logger.isEnabledFor(logging.ERROR):
        return where
    exc_info = (type(exc), exc, exc.__traceback__)
    if where is None:
        logger.error(msg, *args, exc_info=exc_info, stacklevel=2)
    else:
        path, line, func = where
        logger.handle(logger.makeRecord(logger.name, logging.ERROR, path, line, msg, args, exc_info, func))
    return where


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
        {"name": "level", "value": level_name(record.levelno)},
        {"name": "thread", "value": record.threadName or str(record.thread)},
        {"name": "message", "value": _message(record)},
        {"name": "location", "value": format_location(record.pathname, record.lineno, record.funcName)},
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
                services.queue_log(build_entry(record, services.log_identity, ctx.job_id,
                                              ctx.task_batch_id, ctx.task_id))
                return
            retry = current_retry_or_none()
            if retry is not None:
                setattr(record, _SHIPPED, True)
                retry.services.queue_log(build_retry_entry(record, retry.services.log_identity,
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

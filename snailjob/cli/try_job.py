"""``snailjob try MODULE JOB``: run one job against an in-process server emulator.

It starts ``snailjob.testing.ServerEmulator`` on a free port of 127.0.0.1, a
``Client`` with every executor of MODULE (bound to 127.0.0.1, any free port,
short heartbeat), waits until the executors are registered, triggers JOB the
way the server dispatches it (``ServerEmulator.trigger``), waits for the batch
and prints its outcome, each task's status and result, and the job log lines
the emulator received.  Exit code 0 when the batch succeeded, 1 otherwise,
2 for usage errors.

The client's settings do not come from the environment or ``.env`` (a
``SNAIL_OUTBOX_PATH`` or ``SNAIL_HOST_ID`` of a real node must not be
touched): every setting has its default except the connection to the
emulator.  Limits: one node, so a broadcast job runs once; the emulator plays
a server (see its docstring for what it simplifies); a job that ignores its
stop is interrupted when the client stops after ``--timeout``.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
import time
from typing import Any, Dict, List, Optional, Tuple

from snailjob.cli.discover import Discovered, Item, UserImportError, discover, kind_of
from snailjob.client import Client
from snailjob.errors import SnailJobError
from snailjob.settings import Settings
from snailjob.wire.enums import JobTaskBatchStatusEnum, JobTaskStatusEnum, JobTaskTypeEnum

logger = logging.getLogger(__name__)

TASK_TYPES = {"cluster": JobTaskTypeEnum.CLUSTER, "broadcast": JobTaskTypeEnum.BROADCAST,
              "sharding": JobTaskTypeEnum.SHARDING, "map": JobTaskTypeEnum.MAP,
              "mapreduce": JobTaskTypeEnum.MAP_REDUCE}
_FITS = {"job": ("cluster", "broadcast", "sharding"), "map": ("map",), "mapreduce": ("mapreduce",)}
_DEFAULT_TYPE = {"job": "cluster", "map": "map", "mapreduce": "mapreduce"}
_RESULT_WIDTH = 300


class UsageError(Exception):
    pass


def _error(message: str) -> None:
    print(f"snailjob try: {message}", file=sys.stderr)


def try_command(ns: argparse.Namespace) -> int:
    try:
        found = discover([ns.module])
    except UserImportError as exc:
        sys.stderr.write(exc.text)
        _error(f"importing {exc.module} raised (traceback above)")
        return 1
    except SnailJobError as exc:
        _error(str(exc))
        return 2
    try:
        executor = find_job(found, ns.job)
        task_type, args_str = plan(ns, kind_of(executor) or "job")
        if ns.timeout <= 0:
            raise UsageError("--timeout must be > 0")
        if ns.shard_num < 1:
            raise UsageError("--shard-num must be at least 1")
    except UsageError as exc:
        _error(str(exc))
        return 2
    if ns.verbose:
        _verbose_logging()
    name = str(getattr(executor, "executor_name", ""))  # a job, map or map-reduce executor
    return run_try(found, name, task_type, args_str, ns.shard_num, ns.timeout)


def find_job(found: Discovered, job: str) -> Item:
    """The executor named ``job`` (its executor name, or else its Python name)."""
    candidates = [item for item in found.items if kind_of(item) != "retryable"]
    for item in candidates:
        if getattr(item, "executor_name", None) == job:
            return item
    module = found.modules[0]
    by_attribute = getattr(module, job, None)
    if by_attribute is not None and any(by_attribute is item for item in candidates):
        return by_attribute
    retryables = [item for item in found.items if kind_of(item) == "retryable"]
    if any(getattr(item, "executor_name", None) == job or getattr(module, job, None) is item
           for item in retryables):
        raise UsageError(f"{job} is a @retryable function: it runs through the retry server, not as a job")
    names = sorted(str(getattr(item, "executor_name", "")) for item in candidates)
    raise UsageError(f"no job named {job!r} in {module.__name__}; it declares: {', '.join(names) or 'none'}")


def plan(ns: argparse.Namespace, kind: str) -> Tuple[int, str]:
    """The task type and the ``args_str`` to trigger with."""
    chosen = ns.type or ("sharding" if ns.shards is not None and kind == "job" else _DEFAULT_TYPE[kind])
    if chosen not in _FITS[kind]:
        raise UsageError(f"a {kind} executor cannot run as --type {chosen} (it can: {', '.join(_FITS[kind])})")
    if chosen != "sharding":
        if ns.shards is not None:
            raise UsageError("--shards is only for --type sharding")
        return int(TASK_TYPES[chosen]), ns.params
    text = ns.shards if ns.shards is not None else ns.params
    if ns.shards is not None and ns.params:
        raise UsageError("a sharding job's parameters are its shards: give --shards or --params, not both")
    try:
        shards = json.loads(text or "")
    except ValueError:
        shards = None
    if not isinstance(shards, list) or not shards or not all(isinstance(s, str) for s in shards):
        raise UsageError('sharding needs a non-empty JSON array of strings, e.g. --shards \'["a","b"]\' '
                         "(the server creates one task per element)")
    return int(JobTaskTypeEnum.SHARDING), text


def _verbose_logging() -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s | %(name)-22s | %(levelname)-8s | %(message)s"))
    logging.getLogger("snailjob").addHandler(handler)


def isolated_settings(env: Dict[str, str]) -> Settings:
    """Defaults for every setting (not the environment's), pointed at the emulator."""
    values: Dict[str, Any] = {name: info.get_default(call_default_factory=True)
                              for name, info in Settings.model_fields.items()}
    values.update(snail_server_host=env["SNAIL_SERVER_HOST"], snail_server_port=int(env["SNAIL_SERVER_PORT"]),
                  snail_namespace=env["SNAIL_NAMESPACE"], snail_group_name=env["SNAIL_GROUP_NAME"],
                  snail_token=env["SNAIL_TOKEN"], snail_host_ip="127.0.0.1", snail_bind_host="127.0.0.1",
                  snail_host_port=0, snail_heartbeat_interval=0.3, snail_shutdown_grace=0.0,
                  snail_log_remote_interval=0.2, snail_interrupt_delay=0.5, snail_rpc_timeout=3.0)
    return Settings.load(env_file=None, **values)


def run_try(found: Discovered, name: str, task_type: int, args_str: str, shard_num: int, timeout: float) -> int:
    from snailjob.testing.emulator import ServerEmulator  # grpc server side: only for this command

    with ServerEmulator() as emulator:
        client = Client(isolated_settings(emulator.client_env()), executors=found.items)
        client.start()
        try:
            try:
                emulator.wait_until(lambda: name in emulator.registered_executors and bool(emulator.live_nodes),
                                    timeout=min(timeout, 15.0), message="registration")
            except TimeoutError:
                _error(f"the client did not register within {min(timeout, 15.0):g}s: "
                       f"{client.last_problem or 'no heartbeat answered'}")
                return 1
            started = time.monotonic()
            batch = emulator.trigger(name, task_type, args_str=args_str, shard_num=shard_num,
                                     executor_timeout=max(1, math.ceil(timeout)))
            try:
                status: Optional[int] = batch.wait(timeout)
            except TimeoutError:
                status = None
            elapsed = time.monotonic() - started
        finally:
            client.stop(grace=0.5)  # delivers the job logs
        print(f"job      {name} ({_type_name(task_type)}), parameters {args_str!r}")
        outcome = "TIMEOUT" if status is None else JobTaskBatchStatusEnum(status).name
        print(f"outcome  {outcome} (batch {batch.id}, {elapsed:.2f}s)")
        print("tasks")
        rows = []
        for task in batch.tasks:
            result = task.result if len(task.result) <= _RESULT_WIDTH else task.result[:_RESULT_WIDTH] + "..."
            shard = f" {task.sharding_index}/{task.sharding_total}" if task.sharding_total else ""
            rows.append((str(task.task_id), task.task_name + shard, _status_name(task.status), result or "-"))
        widths = [max((len(row[i]) for row in rows), default=0) for i in range(3)]
        for row in rows:
            print("  " + "  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row[:3])) + "  " + row[3])
        print("log")
        for level, message, throwable in log_lines(emulator.logs):
            print(f"  {level:<5} {message}")
            title = throwable.strip().splitlines()[0] if throwable and throwable.strip() else ""
            if title and title not in message:
                print("        " + title)
        if status is None:
            print(f"the batch did not end within {timeout:g}s (--timeout)")
        return 0 if status == JobTaskBatchStatusEnum.SUCCESS else 1


def log_lines(entries: List[Dict[str, Any]]) -> List[Tuple[str, str, Optional[str]]]:
    """``(level, message, throwable)`` of each job-log entry, in time order."""
    lines = []
    for entry in entries:
        fields = {item.get("name"): item.get("value") for item in entry.get("fieldList") or []
                  if isinstance(item, dict)}
        stamp = int(fields.get("time_stamp") or 0)
        lines.append((stamp, str(fields.get("level", "?")), str(fields.get("message", "")), fields.get("throwable")))
    lines.sort(key=lambda line: line[0])
    return [(level, message, throwable) for _, level, message, throwable in lines]


def _type_name(task_type: int) -> str:
    return next(name for name, value in TASK_TYPES.items() if value == task_type)


def _status_name(status: int) -> str:
    try:
        return JobTaskStatusEnum(status).name
    except ValueError:
        return str(status)

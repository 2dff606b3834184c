"""``mr_do_map``: fan a map task out into sub-tasks."""

from __future__ import annotations

import asyncio
import contextvars
import json
from typing import Any, List, Sequence, Tuple

from snailjob.args import wrap_sentinel
from snailjob.context import current_task
from snailjob.errors import MapError
from snailjob.wire.enums import ROOT_MAP, JobTaskTypeEnum, MapReduceStageEnum
from snailjob.wire.models import ExecuteResult

_MAX_CHUNK_BYTES = 4 * 1024 * 1024  # well inside the server's 10 MiB limit
_SENTINEL_BYTES = len(json.dumps(wrap_sentinel(None))) - len("null")


def mr_do_map(task_list: Sequence[Any], next_task_name: str) -> ExecuteResult:
    """Create one sub-task per item of ``task_list``, each run by the map
    function named ``next_task_name`` and receiving the item as
    ``args.map_result``.

    Call it from a map task (usually ``ROOT_MAP``) and return its result.
    The sub-tasks are reported before the calling task's own result; large
    lists are split into several reports (``SNAIL_MAP_BATCH_SIZE`` items each).
    Workflow-context keys the task appended so far travel with the sub-tasks.
    Raises ``MapError`` on bad arguments or when the server refuses them; the
    task then fails.  Items must be JSON values (dict, list, str, number...).

    The first sub-task a map task creates is its *sentinel*: its item travels
    wrapped (``args.SENTINEL_KEY``; the job sees the item as given), and the
    node that runs it repeats a successful result 1 s, 3 s, 8 s, 18 s after
    the first and then every 30 s, until the server stops the ended batch or
    the task's timeout passes, and holds a failure back 2 s.  The server
    checks whether a batch is complete only when a task without children
    reports, so a map task whose own result is stored after its last child's
    result was checked would leave the batch RUNNING for good; the
    sentinel's later report is a check after it (docs/e2e.md, "A map batch
    that never ends").  Limit: a sentinel that fails for good (no retries
    left) more than 2 s before its parent reports still leaves that window.
    A node that receives its batch's reduce stage ends the repeats at once.
    ``SNAIL_MAP_SENTINEL=false`` sends the first item like the others: for a
    group whose other nodes (Java, Go, 0.1.3) would see the envelope as the
    item; the window above is then open for every map task.
    """
    if not isinstance(next_task_name, str) or not next_task_name.strip():
        raise MapError(f"next_task_name must be a non-blank string, got {next_task_name!r}")
    if next_task_name == ROOT_MAP:
        raise MapError(f"next_task_name cannot be {ROOT_MAP}")
    if isinstance(task_list, (str, bytes, dict)) or not isinstance(task_list, Sequence):
        raise MapError(f"task_list must be a list of items, got {type(task_list).__name__}")
    if len(task_list) == 0:
        raise MapError(f"task_list for {next_task_name!r} is empty")
    ctx = current_task()
    request = ctx.request
    is_map = request.taskType == JobTaskTypeEnum.MAP or (
        request.taskType == JobTaskTypeEnum.MAP_REDUCE
        and request.mrStage in (None, MapReduceStageEnum.MAP))
    if not is_map:
        raise MapError(f"mr_do_map can only be called from a map task (task type {request.taskType}, "
                       f"stage {request.mrStage})")
    sizes = _encoded_sizes(task_list)
    items = list(task_list)
    if ctx.map_items_sent == 0 and ctx.services.map_sentinel:
        items[0] = wrap_sentinel(items[0])
        sizes[0] += _SENTINEL_BYTES
    for start, end in _chunks(sizes, ctx.services.map_batch_size):
        if ctx.is_stopped():
            raise MapError("the batch was stopped while its sub-tasks were being reported")
        ctx.services.report_map(ctx, items[start:end], next_task_name)
        ctx.map_items_sent += end - start
    return ExecuteResult.success()


async def mr_do_map_async(task_list: Sequence[Any], next_task_name: str) -> ExecuteResult:
    """``mr_do_map`` for coroutine executors: the reports are sent from a
    worker thread, so the event loop is not blocked while they are delivered."""
    loop = asyncio.get_running_loop()
    ctx = contextvars.copy_context()
    return await loop.run_in_executor(None, ctx.run, mr_do_map, task_list, next_task_name)


def _encoded_sizes(items: Sequence[Any]) -> List[int]:
    """The JSON size of each item; ``MapError`` names the first that is not
    a JSON value."""
    sizes = []
    for index, item in enumerate(items):
        try:
            text = json.dumps(item, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise MapError(f"task_list[{index}] ({type(item).__name__}) is not a JSON value: {exc}") from None
        sizes.append(len(text.encode("utf-8")))
    return sizes


def _chunks(sizes: List[int], count: int) -> List[Tuple[int, int]]:
    """``(start, end)`` slices of at most ``count`` items and about
    ``_MAX_CHUNK_BYTES`` of JSON each."""
    chunks: List[Tuple[int, int]] = []
    start, total = 0, 0
    for index, size in enumerate(sizes):
        if index > start and (index - start >= count or total + size > _MAX_CHUNK_BYTES):
            chunks.append((start, index))
            start, total = index, 0
        total += size
    if start < len(sizes):
        chunks.append((start, len(sizes)))
    return chunks

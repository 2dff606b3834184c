"""``/batch/server/report/log`` in the server emulator: job and retry log batches.

Job entries become the ``sj_job_log_message`` rows the server would write;
a batch the server would drop entirely is kept as a ``DroppedLogBatch``.
``_Logs`` needs only the state; the endpoint routes the URI to it.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Set, Tuple

from snailjob.testing._state import _State
from snailjob.testing._support import _INT_RE, _arg0, _Failure, logger
from snailjob.testing.records import DroppedLogBatch

_MSG_LOG_OK = "Batch Log Retry Data Upload Processed Successfully"


class _Logs:
    """The log URI and the rows it stores."""

    def __init__(self, state: _State) -> None:
        self._state = state

    def on_logs(self, args: Optional[List[Any]], headers: Dict[str, str]) -> Tuple[int, str, Any]:
        entries = _arg0(args)
        if not isinstance(entries, list):
            raise _Failure(f"Cannot deserialize value of type `java.util.ArrayList` from "
                           f"{type(entries).__name__}")
        job_entries: List[Dict[str, Any]] = []
        retry_entries: List[Dict[str, Any]] = []
        for entry in entries:
            if not isinstance(entry, dict):
                raise _Failure(f"Cannot deserialize log entry from {type(entry).__name__}")
            log_type = entry.get("logType")
            if log_type is None or log_type == "JOB":
                job_entries.append(entry)
            elif log_type == "RETRY":
                retry_entries.append(entry)
        with self._state.cond:
            if job_entries:
                self._store_job_logs(job_entries)
            if retry_entries:  # RetryLogActor: groupingBy retryTaskId, toMap of the fields
                reason = self._log_batch_problem(retry_entries, "retryTaskId")
                if reason:
                    self._state.dropped_logs.append(DroppedLogBatch(list(retry_entries), reason))
                    self._state.problem(f"RETRY log batch of {len(retry_entries)} entries dropped by the server: "
                                  f"{reason}")
                else:
                    self._state.retry_logs.extend(retry_entries)
            self._state.cond.notify_all()
        return 1, _MSG_LOG_OK, True

    def _log_batch_problem(self, entries: List[Dict[str, Any]], key: str) -> Optional[str]:
        for entry in entries:
            if entry.get(key) is None:
                return f"an entry has a null {key} (groupingBy throws; the whole batch is dropped)"
            fields = entry.get("fieldList")
            if not isinstance(fields, list):
                return "an entry has no fieldList list (the whole batch is dropped)"
            seen: Set[str] = set()
            for item in fields:
                if not isinstance(item, dict):
                    return "a fieldList element is not an object (the whole batch is dropped)"
                if item.get("value") is None:
                    continue
                name = item.get("name")
                if name is None:
                    return "a fieldList element has a null name (the whole batch is dropped)"
                if name in seen:
                    return f"an entry has the field {name!r} twice (toMap throws; the whole batch is dropped)"
                seen.add(name)
        return None

    def _store_job_logs(self, entries: List[Dict[str, Any]]) -> None:
        reason = self._log_batch_problem(entries, "taskId")
        if reason:
            self._state.dropped_logs.append(DroppedLogBatch(list(entries), reason))
            logger.info("snailjob emulator dropped a log batch of %d entries: %s", len(entries), reason)
            return
        groups: Dict[Any, List[Dict[str, Any]]] = {}
        for entry in entries:
            fields = {f["name"]: f.get("value") for f in entry["fieldList"] if f.get("value") is not None}
            stamp = fields.get("time_stamp")
            if not isinstance(stamp, str) or not _INT_RE.fullmatch(stamp):
                self._state.problem(f"log entry of task {entry.get('taskId')} has time_stamp {stamp!r}; "
                              "the console's log view needs epoch ms as a decimal string")
            for name in ("namespaceId", "groupName", "jobId", "taskBatchId", "realTime"):
                if entry.get(name) is None:
                    self._state.problem(f"log entry of task {entry.get('taskId')} has no {name}")
            groups.setdefault(entry["taskId"], []).append(entry)
        self._state.logs.extend(entries)
        for task_id, group in groups.items():
            first = group[0]
            self._state.log_rows.append({
                "taskId": task_id,
                "taskBatchId": first.get("taskBatchId"),
                "jobId": first.get("jobId"),
                "namespaceId": first.get("namespaceId"),
                "groupName": first.get("groupName"),
                "realTime": first.get("realTime"),
                "logNum": len(group),
                "message": [{f["name"]: f["value"] for f in e["fieldList"] if f.get("value") is not None}
                            for e in group],
            })

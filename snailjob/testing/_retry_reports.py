"""What clients report to the retry module of the server emulator.

``/batch/report`` (the server's checks, replies and de-duplication, scene
creation with ``init_scene``, the insert limits of the MySQL schema),
``/report/retry/dispatch/result`` and ``/report/retry/callback/result``
(checked, then applied by the retry server's handlers).  ``_RetryReports``
gets the state and the retry server; the endpoint routes the URIs to it and
the console shares its row checks.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Set, Tuple

from snailjob.testing._retry_server import _RetryServer
from snailjob.testing._state import _State
from snailjob.testing._support import (
    _KIND_CALLBACK,
    _RT_CANCEL,
    _RT_FAIL,
    _RT_NOT_COMPLETE,
    _RT_STOP,
    _RT_VALID,
    _arg0,
    _as_long,
    _Failure,
    _header,
    _java_text,
    _json_kind,
)
from snailjob.testing.records import (
    RETRY_REASON_CLIENT_STOP,
    RETRY_REASON_RETRY_FAIL,
    RETRY_RUNNING,
    RecordedRequest,
)
from snailjob.testing.retries import RetryScene
from snailjob.wire import enums
from snailjob.wire.codec import dumps

_MSG_RETRY_REPORT_OK = "Batch Retry Data Upload Processed Successfully"
_MSG_RETRY_RESULT_OK = "Report dispatch result processed successfully"
_INIT_SCENE_MAX_RETRY = 21  # DelayLevelEnum._21
_INIT_SCENE_CB_MAX = 16  # DelayLevelEnum._16
_INIT_SCENE_TIMEOUT = 5  # sj_retry_scene_config.executor_timeout default
# VARCHAR limits of sj_retry (doc/sql/snail_job_mysql.sql); a longer value
# fails the insert on MySQL in strict mode and on PostgreSQL.
_RETRY_COLUMNS = (("sceneName", "scene_name", 64), ("idempotentId", "idempotent_id", 64),
                  ("bizNo", "biz_no", 64), ("executorName", "executor_name", 512),
                  ("serializerName", "serializer_name", 32))
_RETRY_NOT_NULL = (("executorName", "executor_name"), ("argsStr", "args_str"),
                   ("serializerName", "serializer_name"))
_RETRY_STRING_FIELDS = ("groupName", "sceneName", "idempotentId", "executorName", "bizNo", "argsStr",
                        "extAttrs", "serializerName")
_SERVER_EXCEPTION = "com.aizuda.snailjob.server.common.exception.SnailJobServerException"
_DATA_INTEGRITY = "org.springframework.dao.DataIntegrityViolationException"
_MSG_RETRY_SAME_GROUP = "Batch report data, the same batch can only be the same group. ReqId:[{}]"
_MSG_RETRY_NULL_SCENE = "element cannot be mapped to a null key"
_MSG_RETRY_NO_SCENE = ("failed to report data, no scene configuration found. "
                       "groupName:[{}] sceneName:[{}]")
_MSG_RETRY_NULL_IDEMPOTENT = ('java.lang.NullPointerException: Cannot invoke "java.lang.Comparable.compareTo'
                              '(Object)" because the return value of "java.util.function.Function.apply'
                              '(Object)" is null')
_MSG_RETRY_STATUS_INVALID = "task status code is invalid"
_MSG_RETRY_STATUS_NULL = "status is marked non-null but is null"


class _RetryReports:
    """The retry module's inbound URIs."""

    def __init__(self, state: _State, server: _RetryServer) -> None:
        self._state = state
        self._server = server

    def _record_retry_request(self, uri: str, args: Optional[List[Any]], headers: Dict[str, str]) -> None:
        with self._state.cond:
            self._state.retry_requests.append(RecordedRequest(uri, dict(headers), dumps(args)))
            self._state.cond.notify_all()

    def _req_id(self) -> int:
        return int(getattr(self._state.tls, "req_id", 0))

    def on_retry_report(self, args: Optional[List[Any]], headers: Dict[str, str]) -> Tuple[int, str, Any]:
        """``ReportRetryInfoHttpRequestHandler`` + ``AbstractGenerator``."""
        self._record_retry_request(enums.URI_RETRY_REPORT, args, headers)
        rows = _arg0(args)  # args null or empty: the catch block itself throws (status 0)
        if rows is None:
            rows = []
        if not isinstance(rows, list):
            return self._retry_refused(f"Cannot deserialize value of type `java.util.ArrayList<RetryTaskRequest>` "
                                       f"from {_json_kind(rows)} value", problem=True)
        for row in rows:
            if row is not None and not isinstance(row, dict):
                return self._retry_refused(f"Cannot deserialize value of type `RetryTaskRequest` from "
                                           f"{_json_kind(row)} value", problem=True)
        present: List[Dict[str, Any]] = [row for row in rows if row is not None]
        if len(present) != len(rows):
            return self._retry_refused('Cannot invoke "com.aizuda.snailjob.model.request.RetryTaskRequest.'
                                       'getGroupName()" because "<parameter1>" is null', problem=True)
        clean: List[Dict[str, Any]] = []
        for row in present:
            copy = dict(row)
            for name in _RETRY_STRING_FIELDS:
                value = copy.get(name)
                if isinstance(value, (dict, list)):
                    return self._retry_refused(f"Cannot deserialize value of type `java.lang.String` from "
                                               f"{_json_kind(value)} value (through reference chain: "
                                               f"RetryTaskRequest[\"{name}\"])", problem=True)
                if value is not None and not isinstance(value, str):
                    copy[name] = _java_text(value)
            clean.append(copy)
        group = _header(headers, "group-name") or ""
        groups: Set[str] = {row["groupName"] for row in clean if row.get("groupName") is not None}
        if len(groups) > 1:
            return self._retry_refused(_MSG_RETRY_SAME_GROUP.format(self._req_id()), problem=True)
        if any(row.get("sceneName") is None for row in clean):
            return self._retry_refused(_MSG_RETRY_NULL_SCENE, problem=True)
        by_scene: Dict[str, List[Dict[str, Any]]] = {}
        for row in clean:
            by_scene.setdefault(row["sceneName"], []).append(row)
        with self._state.cond:
            if not clean:
                self._state.problem("/batch/report with an empty list (the server accepts it and creates nothing)")
            if groups and groups != {group}:
                self._state.problem(f"/batch/report rows name group {next(iter(groups))!r} but the caller's group-name "
                              f"header is {group!r}; the server files them under the header's group")
            elif len(clean) != sum(1 for row in clean if row.get("groupName") is not None):
                self._state.problem("/batch/report rows without groupName (the server uses the group-name header)")
            for scene_name, scene_rows in by_scene.items():
                error = self._generate_retries(scene_name, scene_rows)
                if error is not None:
                    self._state.cond.notify_all()
                    return 1, error, False
            self._state.retry_reports.extend(dict(row) for row in rows if isinstance(row, dict))
            self._state.cond.notify_all()
        return 1, _MSG_RETRY_REPORT_OK, True

    def _retry_refused(self, message: str, problem: bool) -> Tuple[int, str, Any]:
        """A retry-module refusal: ``status`` 1 with ``data`` false."""
        if problem:
            with self._state.cond:
                self._state.problem(f"the server refuses this retry-module request (status=1, data=false): {message}")
        return 1, message, False

    def _generate_retries(self, scene_name: str, rows: List[Dict[str, Any]]) -> Optional[str]:
        """``AbstractGenerator.taskGenerator`` for one scene (lock held); the
        failure message (the server's ``ExecutionException`` text) or ``None``."""
        scene = self._state.retry_scenes.get(scene_name)
        if scene is None:
            if not self._state.init_scene:
                return f"{_SERVER_EXCEPTION}: " + _MSG_RETRY_NO_SCENE.format(self._state.group, scene_name)
            if len(scene_name) > 64:
                self._state.problem(f"/batch/report names scene {scene_name[:80]!r}...: longer than scene_name "
                              "VARCHAR(64), the scene cannot be created")
                return f"{_DATA_INTEGRITY}: Data too long for column 'scene_name' at row 1"
            scene = RetryScene(name=scene_name, max_retry_count=_INIT_SCENE_MAX_RETRY,
                               executor_timeout=_INIT_SCENE_TIMEOUT, cb_max_count=_INIT_SCENE_CB_MAX,
                               auto_created=True)
            self._state.retry_scenes[scene_name] = scene
        if any(row.get("idempotentId") is None for row in rows):
            self._state.problem(f"/batch/report row of scene {scene_name!r} without idempotentId (the report is "
                          "refused: status=1, data=false)")
            return _MSG_RETRY_NULL_IDEMPOTENT
        unique: Dict[str, Dict[str, Any]] = {}
        for row in rows:  # TreeSet by idempotentId: the first row of each id wins, sorted
            unique.setdefault(row["idempotentId"], row)
        fresh = [unique[key] for key in sorted(unique)
                 if self._server.running_retry(scene_name, key) is None]
        for index, row in enumerate(fresh, start=1):
            error = self.row_error(row, index)
            if error is not None:
                return f"{_DATA_INTEGRITY}: {error}"
        for row in fresh:
            conflict = self._server.key_conflict(scene_name, row["idempotentId"])
            if conflict is not None:
                return conflict
        for row in fresh:
            self._server.create_retry(row, RETRY_RUNNING, source="report")
        return None

    def row_error(self, row: Dict[str, Any], index: int, problem: bool = True) -> Optional[str]:
        """The database error inserting this row would raise (MySQL strict
        mode), with a ``problems`` entry when ``problem``."""
        for name, column in _RETRY_NOT_NULL:
            if row.get(name) is None:
                if problem:
                    self._state.problem(f"/batch/report row {row.get('idempotentId')!r} has no {name}; {column} is "
                                  "NOT NULL (the report is refused: status=1, data=false)")
                return f"Column '{column}' cannot be null"
        for name, column, limit in _RETRY_COLUMNS:
            value = row.get(name)
            if isinstance(value, str) and len(value) > limit:
                if problem:
                    self._state.problem(f"/batch/report row {name} has {len(value)} characters; {column} is "
                                  f"VARCHAR({limit}) (the insert fails in strict mode, or the value is "
                                  "truncated)")
                return f"Data too long for column '{column}' at row {index}"
        return None

    def on_retry_result(self, uri: str, args: Optional[List[Any]],
                         headers: Dict[str, str]) -> Tuple[int, str, Any]:
        """``ReportDispatchResultHttpRequestHandler`` / ``ReportCallbackResultHttpRequestHandler``:
        every failure is ``status`` 1 with ``data`` false; the result itself is
        applied later by ``RetryResultActor`` (here: at once)."""
        self._record_retry_request(uri, args, headers)
        try:
            req = _arg0(args)
        except _Failure as failure:
            return self._retry_refused(failure.message, problem=True)
        if not isinstance(req, dict):
            return self._retry_refused(f"Cannot deserialize value of type `DispatchRetryResultRequest` from "
                                       f"{_json_kind(req)} value", problem=True)
        try:
            retry_id = _as_long(req.get("retryId"), "retryId", required=False)
            task_id = _as_long(req.get("retryTaskId"), "retryTaskId", required=False)
            status = _as_long(req.get("taskStatus"), "taskStatus", required=False)
        except _Failure as failure:
            return self._retry_refused(failure.message, problem=True)
        for name in ("namespaceId", "groupName", "sceneName", "result", "exceptionMsg"):
            if isinstance(req.get(name), (dict, list)):
                return self._retry_refused(f"Cannot deserialize value of type `java.lang.String` from "
                                           f"{_json_kind(req[name])} value (through reference chain: "
                                           f"[\"{name}\"])", problem=True)
        if status is None:
            return self._retry_refused(_MSG_RETRY_STATUS_NULL, problem=True)
        if status not in _RT_VALID:
            return self._retry_refused_status(status)
        with self._state.cond:
            self._apply_client_result(uri, req, retry_id, task_id, int(status))
            self._state.cond.notify_all()
        return 1, _MSG_RETRY_RESULT_OK, True

    def _retry_refused_status(self, status: int) -> Tuple[int, str, Any]:
        with self._state.cond:
            self._state.problem(f"retry result with taskStatus {status}: the server answers status=1, data=false "
                          f"({_MSG_RETRY_STATUS_INVALID!r})")
        return 1, _MSG_RETRY_STATUS_INVALID, False

    def _apply_client_result(self, uri: str, req: Dict[str, Any], retry_id: Optional[int],
                             task_id: Optional[int], status: int) -> None:
        """``RetryResultActor`` with the success, stop and failure handlers (lock held)."""
        task = self._state.retry_task_index.get(task_id) if task_id is not None else None
        where = "/report/retry/callback/result" if uri == enums.URI_RETRY_CALLBACK_RESULT else \
            "/report/retry/dispatch/result"
        if task is None:
            self._state.problem(f"{where} for unknown retry task {task_id} (retry {retry_id}); the server ignores it")
            return
        task.reports.append(dict(req))
        retry = self._state.retries[task.retry_id]
        expected_uri = enums.URI_RETRY_CALLBACK_RESULT if task.kind == _KIND_CALLBACK else enums.URI_RETRY_RESULT
        if uri != expected_uri:
            self._state.problem(f"{where} for {task.kind} task {task.id}; a {task.kind} result belongs on "
                          f"{expected_uri}")
        sent_id = task.request.get("retryId")
        if retry_id != sent_id:
            self._state.problem(f"{where} for retry task {task.id} has retryId {retry_id}, but the task was sent "
                          f"retryId {sent_id}; the server looks the retry up by retryId (result ignored)")
            return
        for name, expected in (("namespaceId", retry.namespace), ("groupName", retry.group),
                               ("sceneName", retry.scene)):
            if req.get(name) != expected:
                self._state.problem(f"{where} for retry task {task.id} has {name} {req.get(name)!r}, expected "
                              f"{expected!r}; the server's scene lookup fails and the result is ignored")
                return
        if status in _RT_NOT_COMPLETE:
            self._state.problem(f"{where} for retry task {task.id} with taskStatus {status}: not a final status, "
                          "no result handler takes it (ignored)")
            return
        if status == _RT_CANCEL:
            self._state.problem(f"{where} for retry task {task.id} with taskStatus 6 (CANCEL): a client reports "
                          "3, 4 or 5; the server treats it as a failure")
        if task.reported:
            self._state.problem(f"duplicate result for {task.kind} task {task.id} (taskStatus {status}; the task "
                          f"already is {task.status})")
        reason: Optional[int] = None
        if uri == enums.URI_RETRY_RESULT:  # only the dispatch-result handler sets a reason
            reason = {_RT_FAIL: RETRY_REASON_RETRY_FAIL, _RT_STOP: RETRY_REASON_CLIENT_STOP}.get(status)
        message = req.get("exceptionMsg")
        if status == _RT_STOP and reason == RETRY_REASON_CLIENT_STOP and self._state.retry_stop_quirk:
            return  # vsj2.0.2: RetryStopHandler throws a NullPointerException, nothing changes
        was = task.status
        applied = self._server.outcome(task, status, reason, True, message if isinstance(message, str) else None)
        if applied:
            task.reported = True
            result = req.get("result")
            task.result = result if result is None or isinstance(result, str) else _java_text(result)
        elif not task.reported:
            self._state.problem(f"{where} (taskStatus {status}) for {task.kind} task {task.id} that already is {was}: "
                          "the server ignores it")

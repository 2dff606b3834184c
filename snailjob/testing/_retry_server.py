"""The server side of the distributed retry module in the server emulator.

``/batch/report`` (checks, replies, de-duplication, scene creation with
``init_scene``), ``/report/retry/dispatch/result`` and
``/report/retry/callback/result``; then what the server runs: scheduling
with a fixed backoff, ``/retry/dispatch/v1`` and ``/retry/callback/v1`` with
failover, the success / stop / failure handlers, timeouts and
``/retry/stop/v1``.
"""

from __future__ import annotations

import functools
import time
import uuid
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Set, Tuple

from snailjob.testing._transport import _TransportMixin
from snailjob.testing.records import (
    RETRY_FINISH,
    RETRY_MAX_COUNT,
    RETRY_REASON_CLIENT_STOP,
    RETRY_REASON_NONE,
    RETRY_REASON_NOT_CLIENT,
    RETRY_REASON_RETRY_FAIL,
    RETRY_REASON_TIMEOUT,
    RETRY_RUNNING,
    RETRY_SUSPEND,
    ClientNode,
    RecordedRequest,
)
from snailjob.testing.retries import EmulatedRetry, EmulatedRetryTask, RetryScene
from snailjob.testing.support import (
    _KIND_CALLBACK,
    _KIND_RETRY,
    _MSG_CLIENT_MISSING,
    _RETRY_RPC_ATTEMPTS,
    _RETRY_RPC_WAIT,
    _RT_CANCEL,
    _RT_FAIL,
    _RT_NOT_COMPLETE,
    _RT_RUNNING,
    _RT_STOP,
    _RT_SUCCESS,
    _RT_VALID,
    _STOP_TIMEOUT,
    _TIMEOUT_GRACE,
    _arg0,
    _as_long,
    _Failure,
    _header,
    _java_text,
    _json_kind,
)
from snailjob.wire import enums
from snailjob.wire import snailjob_pb2 as pb2
from snailjob.wire.codec import dumps

_MSG_RETRY_REPORT_OK = "Batch Retry Data Upload Processed Successfully"
_MSG_RETRY_RESULT_OK = "Report dispatch result processed successfully"
_HEADER_SNAIL_JOB = "snail-job"
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


class _RetryServerMixin(_TransportMixin):
    """What clients report to the retry module and what the retry server runs."""

    if TYPE_CHECKING:  # provided by _ConsoleMixin (an EmulatedRetry calls them)
        def stop_retry(self, retry_id: int, suspend: bool = False) -> Optional[Tuple[int, str, str]]: ...

        def trigger_retry(self, retry_id: int) -> EmulatedRetryTask: ...

    # -- retry module: /batch/report -----------------------------------------

    def _record_retry_request(self, uri: str, args: Optional[List[Any]], headers: Dict[str, str]) -> None:
        with self._cond:
            self._retry_requests.append(RecordedRequest(uri, dict(headers), dumps(args)))
            self._cond.notify_all()

    def _req_id(self) -> int:
        return int(getattr(self._tls, "req_id", 0))

    def _on_retry_report(self, args: Optional[List[Any]], headers: Dict[str, str]) -> Tuple[int, str, Any]:
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
        with self._cond:
            if not clean:
                self._problem("/batch/report with an empty list (the server accepts it and creates nothing)")
            if groups and groups != {group}:
                self._problem(f"/batch/report rows name group {next(iter(groups))!r} but the caller's group-name "
                              f"header is {group!r}; the server files them under the header's group")
            elif len(clean) != sum(1 for row in clean if row.get("groupName") is not None):
                self._problem("/batch/report rows without groupName (the server uses the group-name header)")
            for scene_name, scene_rows in by_scene.items():
                error = self._generate_retries(scene_name, scene_rows)
                if error is not None:
                    self._cond.notify_all()
                    return 1, error, False
            self._retry_reports.extend(dict(row) for row in rows if isinstance(row, dict))
            self._cond.notify_all()
        return 1, _MSG_RETRY_REPORT_OK, True

    def _retry_refused(self, message: str, problem: bool) -> Tuple[int, str, Any]:
        """A retry-module refusal: ``status`` 1 with ``data`` false."""
        if problem:
            with self._cond:
                self._problem(f"the server refuses this retry-module request (status=1, data=false): {message}")
        return 1, message, False

    def _generate_retries(self, scene_name: str, rows: List[Dict[str, Any]]) -> Optional[str]:
        """``AbstractGenerator.taskGenerator`` for one scene (lock held); the
        failure message (the server's ``ExecutionException`` text) or ``None``."""
        scene = self._retry_scenes.get(scene_name)
        if scene is None:
            if not self.init_scene:
                return f"{_SERVER_EXCEPTION}: " + _MSG_RETRY_NO_SCENE.format(self.group, scene_name)
            if len(scene_name) > 64:
                self._problem(f"/batch/report names scene {scene_name[:80]!r}...: longer than scene_name "
                              "VARCHAR(64), the scene cannot be created")
                return f"{_DATA_INTEGRITY}: Data too long for column 'scene_name' at row 1"
            scene = RetryScene(name=scene_name, max_retry_count=_INIT_SCENE_MAX_RETRY,
                               executor_timeout=_INIT_SCENE_TIMEOUT, cb_max_count=_INIT_SCENE_CB_MAX,
                               auto_created=True)
            self._retry_scenes[scene_name] = scene
        if any(row.get("idempotentId") is None for row in rows):
            self._problem(f"/batch/report row of scene {scene_name!r} without idempotentId (the report is "
                          "refused: status=1, data=false)")
            return _MSG_RETRY_NULL_IDEMPOTENT
        unique: Dict[str, Dict[str, Any]] = {}
        for row in rows:  # TreeSet by idempotentId: the first row of each id wins, sorted
            unique.setdefault(row["idempotentId"], row)
        fresh = [unique[key] for key in sorted(unique)
                 if self._running_retry(scene_name, key) is None]
        for index, row in enumerate(fresh, start=1):
            error = self._retry_row_error(row, index)
            if error is not None:
                return f"{_DATA_INTEGRITY}: {error}"
        for row in fresh:
            conflict = self._retry_key_conflict(scene_name, row["idempotentId"])
            if conflict is not None:
                return conflict
        for row in fresh:
            self._create_retry(row, RETRY_RUNNING, source="report")
        return None

    def _retry_row_error(self, row: Dict[str, Any], index: int, problem: bool = True) -> Optional[str]:
        """The database error inserting this row would raise (MySQL strict
        mode), with a ``problems`` entry when ``problem``."""
        for name, column in _RETRY_NOT_NULL:
            if row.get(name) is None:
                if problem:
                    self._problem(f"/batch/report row {row.get('idempotentId')!r} has no {name}; {column} is "
                                  "NOT NULL (the report is refused: status=1, data=false)")
                return f"Column '{column}' cannot be null"
        for name, column, limit in _RETRY_COLUMNS:
            value = row.get(name)
            if isinstance(value, str) and len(value) > limit:
                if problem:
                    self._problem(f"/batch/report row {name} has {len(value)} characters; {column} is "
                                  f"VARCHAR({limit}) (the insert fails in strict mode, or the value is "
                                  "truncated)")
                return f"Data too long for column '{column}' at row {index}"
        return None

    def _running_retry(self, scene: str, idempotent_id: str) -> Optional[EmulatedRetry]:
        for retry in self._retries_by_key.get((scene, idempotent_id), ()):
            if retry._status == RETRY_RUNNING:
                return retry
        return None

    def _retry_key_conflict(self, scene: str, idempotent_id: str) -> Optional[str]:
        """``uk_scene_tasktype_idempotentid_deleted``: a not-RUNNING retry whose
        ``deleted`` is still 0 (SUSPEND) blocks a new one with the same id."""
        for retry in self._retries_by_key.get((scene, idempotent_id), ()):
            if not retry._deleted:
                return (f"Duplicate entry '{idempotent_id}' for key "
                        "'sj_retry.uk_scene_tasktype_idempotentid_deleted'")
        return None

    # -- retry module: /report/retry/dispatch/result, /report/retry/callback/result

    def _on_retry_result(self, uri: str, args: Optional[List[Any]],
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
        with self._cond:
            self._apply_client_result(uri, req, retry_id, task_id, int(status))
            self._cond.notify_all()
        return 1, _MSG_RETRY_RESULT_OK, True

    def _retry_refused_status(self, status: int) -> Tuple[int, str, Any]:
        with self._cond:
            self._problem(f"retry result with taskStatus {status}: the server answers status=1, data=false "
                          f"({_MSG_RETRY_STATUS_INVALID!r})")
        return 1, _MSG_RETRY_STATUS_INVALID, False

    def _apply_client_result(self, uri: str, req: Dict[str, Any], retry_id: Optional[int],
                             task_id: Optional[int], status: int) -> None:
        """``RetryResultActor`` with the success, stop and failure handlers (lock held)."""
        task = self._retry_task_index.get(task_id) if task_id is not None else None
        where = "/report/retry/callback/result" if uri == enums.URI_RETRY_CALLBACK_RESULT else \
            "/report/retry/dispatch/result"
        if task is None:
            self._problem(f"{where} for unknown retry task {task_id} (retry {retry_id}); the server ignores it")
            return
        task.reports.append(dict(req))
        retry = self._retries[task.retry_id]
        expected_uri = enums.URI_RETRY_CALLBACK_RESULT if task.kind == _KIND_CALLBACK else enums.URI_RETRY_RESULT
        if uri != expected_uri:
            self._problem(f"{where} for {task.kind} task {task.id}; a {task.kind} result belongs on "
                          f"{expected_uri}")
        sent_id = task.request.get("retryId")
        if retry_id != sent_id:
            self._problem(f"{where} for retry task {task.id} has retryId {retry_id}, but the task was sent "
                          f"retryId {sent_id}; the server looks the retry up by retryId (result ignored)")
            return
        for name, expected in (("namespaceId", retry.namespace), ("groupName", retry.group),
                               ("sceneName", retry.scene)):
            if req.get(name) != expected:
                self._problem(f"{where} for retry task {task.id} has {name} {req.get(name)!r}, expected "
                              f"{expected!r}; the server's scene lookup fails and the result is ignored")
                return
        if status in _RT_NOT_COMPLETE:
            self._problem(f"{where} for retry task {task.id} with taskStatus {status}: not a final status, "
                          "no result handler takes it (ignored)")
            return
        if status == _RT_CANCEL:
            self._problem(f"{where} for retry task {task.id} with taskStatus 6 (CANCEL): a client reports "
                          "3, 4 or 5; the server treats it as a failure")
        if task.reported:
            self._problem(f"duplicate result for {task.kind} task {task.id} (taskStatus {status}; the task "
                          f"already is {task.status})")
        reason: Optional[int] = None
        if uri == enums.URI_RETRY_RESULT:  # only the dispatch-result handler sets a reason
            reason = {_RT_FAIL: RETRY_REASON_RETRY_FAIL, _RT_STOP: RETRY_REASON_CLIENT_STOP}.get(status)
        message = req.get("exceptionMsg")
        if status == _RT_STOP and reason == RETRY_REASON_CLIENT_STOP and self.retry_stop_quirk:
            return  # vsj2.0.2: RetryStopHandler throws a NullPointerException, nothing changes
        was = task.status
        applied = self._retry_outcome(task, status, reason, True, message if isinstance(message, str) else None)
        if applied:
            task.reported = True
            result = req.get("result")
            task.result = result if result is None or isinstance(result, str) else _java_text(result)
        elif not task.reported:
            self._problem(f"{where} (taskStatus {status}) for {task.kind} task {task.id} that already is {was}: "
                          "the server ignores it")

    # ------------------------------------------------------------------
    # retries (callers hold the lock unless noted)
    # ------------------------------------------------------------------

    def _retry_live_nodes(self) -> List[ClientNode]:
        return [n for n in self._nodes.values()
                if n.namespace == self.namespace and n.group == self.group and self._is_live(n)]

    def _next_retry_node(self) -> Optional[ClientNode]:
        """Round robin over the group's live nodes (scene labels are not modelled)."""
        live = self._retry_live_nodes()
        if not live:
            return None
        node = live[self._retry_rr % len(live)]
        self._retry_rr += 1
        return node

    def _create_retry(self, row: Dict[str, Any], status: int, source: str) -> EmulatedRetry:
        """``AbstractGenerator.doConvertTask``: blank bizNo -> UUID, blank extAttrs -> ""."""
        biz_no = row.get("bizNo")
        if not isinstance(biz_no, str) or not biz_no.strip():
            biz_no = uuid.uuid4().hex  # hutool IdUtil.fastSimpleUUID()
        ext_attrs = row.get("extAttrs")
        if not isinstance(ext_attrs, str) or not ext_attrs.strip():
            ext_attrs = ""
        retry = EmulatedRetry(self, next(self._ids), self.namespace, self.group, row["sceneName"],
                              row["idempotentId"], biz_no, row["executorName"], row["argsStr"],
                              row["serializerName"], ext_attrs, status, source)
        self._retries[retry.id] = retry
        self._retries_by_key.setdefault((retry.scene, retry.idempotent_id), []).append(retry)
        if status == RETRY_RUNNING:
            self._schedule_retry(retry, self._retry_scenes[retry.scene].interval, _KIND_RETRY)
        return retry

    def _schedule_retry(self, retry: EmulatedRetry, delay: float, kind: str) -> None:
        """The next run of the retry (or of its callback); a newer schedule
        replaces an older one."""
        if kind == _KIND_RETRY:
            retry._gen += 1
            retry._parked = False
            gen = retry._gen
        else:
            retry._cb_gen += 1
            retry._cb_parked = False
            gen = retry._cb_gen
        if self._scheduler is not None:
            self._scheduler.schedule(delay, functools.partial(self._retry_due, retry, kind, gen))

    def _unpark_scene(self, name: str) -> None:
        for retry in self._retries.values():
            if retry.scene != name:
                continue
            if retry._parked and retry._status == RETRY_RUNNING:
                self._schedule_retry(retry, 0.0, _KIND_RETRY)
            if retry._cb_parked and retry._cb_status == _RT_RUNNING:
                self._schedule_retry(retry, 0.0, _KIND_CALLBACK)

    def _retry_due(self, retry: EmulatedRetry, kind: str, gen: int) -> None:
        """``ScanRetryActor`` + ``RetryExecutor`` for one due retry or
        callback (runs on a pool thread)."""
        with self._cond:
            if self._stopping.is_set():
                return
            if kind == _KIND_RETRY and (gen != retry._gen or retry._status != RETRY_RUNNING):
                return
            if kind == _KIND_CALLBACK and (gen != retry._cb_gen or retry._cb_status != _RT_RUNNING):
                return
            scene = self._retry_scenes[retry.scene]
            if not scene.enabled:  # the scan skips closed scenes
                if kind == _KIND_RETRY:
                    retry._parked = True
                else:
                    retry._cb_parked = True
                return
            if any(t.kind == kind and t.status in _RT_NOT_COMPLETE for t in retry._tasks):
                return  # the running task's end schedules the next run
            task = self._open_retry_task(retry, scene, kind, manual=False)
            if task.status != _RT_RUNNING:  # no live client: CANCEL, the next scan tries again
                self._schedule_retry(retry, scene.interval if kind == _KIND_RETRY else scene.cb_interval, kind)
            self._cond.notify_all()
        if task.status == _RT_RUNNING:
            self._retry_send(task)

    def _new_retry_task(self, retry: EmulatedRetry, kind: str, manual: bool) -> EmulatedRetryTask:
        task = EmulatedRetryTask(id=next(self._task_ids), retry_id=retry.id, kind=kind, manual=manual)
        retry._tasks.append(task)
        self._retry_task_index[task.id] = task
        return task

    def _end_retry_task(self, task: EmulatedRetryTask, status: int, reason: int) -> None:
        task.status = status
        task.operation_reason = reason
        task.finished_at = time.time()

    def _open_retry_task(self, retry: EmulatedRetry, scene: RetryScene, kind: str,
                         manual: bool) -> EmulatedRetryTask:
        """``RetryExecutor.doExecute``: pick a node, build the request, arm the
        timeout check (``executorTimeout`` + 500 ms)."""
        task = self._new_retry_task(retry, kind, manual)
        node = self._next_retry_node()
        if node is None:
            self._end_retry_task(task, _RT_CANCEL, RETRY_REASON_NOT_CLIENT)
            return task
        task.node, task.client_address = node.host_id, node.address
        body: Dict[str, Any] = {
            "namespaceId": retry.namespace,
            "groupName": retry.group,
            "sceneName": retry.scene,
            "argsStr": retry.args_str,
            "executorName": retry.executor_name,
        }
        if kind == _KIND_RETRY:  # DispatchRetryRequest
            task.retry_count = retry._retry_count
            body.update({"retryCount": retry._retry_count, "retryTaskId": task.id, "retryId": retry.id})
            task.snail_job_header = {"retry": True, "retryId": str(retry.id), "ddl": scene.executor_timeout}
        else:  # RetryCallbackRequest: the parent's status now, the callback row's id
            body.update({"retryStatus": retry._status, "retryTaskId": task.id, "retryId": retry._cb_id})
        body.update({"executorTimeout": scene.executor_timeout, "serializerName": retry.serializer_name})
        task.request = {key: value for key, value in body.items() if value is not None}
        if self._scheduler is not None:
            self._scheduler.schedule(scene.executor_timeout + _TIMEOUT_GRACE,
                                     functools.partial(self._retry_timeout, task))
        return task

    def _retry_send(self, task: EmulatedRetryTask) -> None:
        """``RequestRetryClientActor`` / ``RequestCallbackClientActor`` (pool
        thread): 3 s per attempt, 3 attempts 1 s apart with failover on a
        failed call; a dispatch needs ``status=1, data=true``, a callback
        ``status=1``; otherwise the task fails (not counted as an attempt)."""
        with self._cond:
            node = self._node_by_id(task.node) if task.node else None
            if node is None or not self._is_live(node):
                self._retry_outcome(task, _RT_FAIL, None, False, _MSG_CLIENT_MISSING)
                self._cond.notify_all()
                return
            uri = enums.URI_RETRY_DISPATCH if task.kind == _KIND_RETRY else enums.URI_RETRY_CALLBACK
            args: List[Any] = [task.request]
            if task.snail_job_header is not None:
                args.append(task.snail_job_header)
            text = dumps(args)
        attempt = 0
        while True:
            attempt += 1
            with self._lock:
                headers = self.server_headers(node)
            if task.snail_job_header is not None:
                headers[_HEADER_SNAIL_JOB] = dumps(task.snail_job_header)
            reply, error, data_value = self._call_and_record(node, uri, text, headers, task.dispatch_replies)
            if error is None:
                break
            if self._stopping.is_set():
                return
            with self._cond:
                node.alive = False  # a failed call marks the node not alive until its next beat
                if attempt >= _RETRY_RPC_ATTEMPTS:
                    self._retry_outcome(task, _RT_FAIL, None, False, error)
                    self._cond.notify_all()
                    return
                other = self._next_retry_node()
                if other is not None:  # failover
                    node = other
                    task.node, task.client_address = node.host_id, node.address
            if self._stopping.wait(_RETRY_RPC_WAIT):
                return
        assert reply is not None
        with self._cond:
            accepted = reply.status == 1 and (task.kind == _KIND_CALLBACK or data_value is True)
            if not accepted:
                self._retry_outcome(task, _RT_FAIL, None, False, reply.message)
            self._cond.notify_all()

    def _retry_timeout(self, task: EmulatedRetryTask) -> None:
        """``RetryTimeoutCheckTask`` (pool thread): a task still running fails
        (reason 1, counted as an attempt) and the node is told to stop it."""
        with self._cond:
            if self._stopping.is_set() or task.done:
                return
            task.timed_out = True
            self._retry_outcome(task, _RT_FAIL, RETRY_REASON_TIMEOUT, True, None)
            self._cond.notify_all()
        if not self.retry_stop_quirk:
            self._send_retry_stop(task)

    def _retry_outcome(self, task: EmulatedRetryTask, status: int, reason: Optional[int], increment: bool,
                       message: Optional[str]) -> bool:
        """``RetrySuccessHandler`` / ``RetryStopHandler`` / ``RetryFailureHandler``;
        false when the failure handler's guard (task not WAITING/RUNNING)
        leaves everything unchanged."""
        retry = self._retries[task.retry_id]
        scene = self._retry_scenes[retry.scene]
        callback = task.kind == _KIND_CALLBACK
        if status == _RT_SUCCESS:  # no guard on the task's status
            self._end_retry_task(task, _RT_SUCCESS, task.operation_reason)
            if callback:
                retry._cb_status = _RT_SUCCESS
                retry._cb_count += 1
            else:
                retry._status = RETRY_FINISH
                retry._retry_count += 1
                retry._deleted = True
                self._create_callback(retry, scene)
            return True
        if status == _RT_STOP and reason == RETRY_REASON_CLIENT_STOP:  # the retry is suspended
            self._end_retry_task(task, _RT_STOP, RETRY_REASON_CLIENT_STOP)
            if message is not None:
                task.exception_msg = message
            if callback:
                retry._cb_status = _RT_STOP
                retry._cb_count += 1
            else:
                retry._status = RETRY_SUSPEND
                retry._retry_count += 1
            return True
        if task.status not in _RT_NOT_COMPLETE:
            return False
        self._end_retry_task(task, status, RETRY_REASON_NONE if reason is None else reason)
        if message is not None:
            task.exception_msg = message
        limit = scene.cb_max_count if callback else scene.max_retry_count
        current = (retry._cb_count if callback else retry._retry_count) + 1
        if limit <= current:
            if callback:
                retry._cb_status = _RT_FAIL
                retry._cb_count = current
            else:
                retry._status = RETRY_MAX_COUNT
                retry._retry_count = current
                retry._deleted = True
                self._create_callback(retry, scene)
            return True
        if increment:
            if callback:
                retry._cb_count = current
            else:
                retry._retry_count = current
        if callback and retry._cb_status == _RT_RUNNING:
            self._schedule_retry(retry, scene.cb_interval, _KIND_CALLBACK)
        elif not callback and retry._status == RETRY_RUNNING:
            self._schedule_retry(retry, scene.interval, _KIND_RETRY)
        return True

    def _create_callback(self, retry: EmulatedRetry, scene: RetryScene) -> None:
        """``CallbackRetryTaskHandler.create``: a new callback row, first run
        ``cb_interval`` from now; none while the previous one is pending or
        suspended (its unique key is still taken)."""
        if not scene.callback or retry._cb_status in (_RT_RUNNING, _RT_STOP):
            return
        retry._cb_id = next(self._ids)
        retry._cb_status = _RT_RUNNING
        retry._cb_count = 0
        self._schedule_retry(retry, scene.cb_interval, _KIND_CALLBACK)

    def _send_retry_stop(self, task: EmulatedRetryTask) -> Optional[pb2.GrpcResult]:
        """``/retry/stop/v1`` to the task's node (blocking, on a pool thread):
        1 s per attempt, 3 attempts 1 s apart, no failover; the answer is
        only logged by the server."""
        with self._lock:
            node = self._node_by_id(task.node) if task.node else None
            if node is None or not self._is_live(node):
                return None
            retry = self._retries[task.retry_id]
            body = {"namespaceId": retry.namespace, "groupName": retry.group, "scene": retry.scene,
                    "retryTaskId": task.id, "retryId": task.request.get("retryId", retry.id)}
        text = dumps([body])
        for attempt in range(1, _RETRY_RPC_ATTEMPTS + 1):
            with self._lock:
                headers = self.server_headers(node)
            reply, error, _ = self._invoke(node, enums.URI_RETRY_STOP, text, headers, _STOP_TIMEOUT)
            if error is None:
                return reply
            if self._stopping.is_set():
                return None
            with self._cond:
                node.alive = False
            if attempt < _RETRY_RPC_ATTEMPTS and self._stopping.wait(_RETRY_RPC_WAIT):
                return None
        return None

"""The retry server of the server emulator: what it runs for a retry.

Retries and their tasks (``sj_retry``, ``sj_retry_task``), scheduling with
a fixed backoff, ``/retry/dispatch/v1`` and ``/retry/callback/v1`` with
failover, the success / stop / failure handlers, timeouts, callbacks and
``/retry/stop/v1``, and the console's two buttons that act on a running
retry (``trigger_retry``, ``stop_retry``).  ``_RetryServer`` gets the state
and the transport; it is the console buttons of the retries it creates.
What clients report is parsed in ``_retry_reports.py``, the rest of the
console is ``_console.py``.
"""

from __future__ import annotations

import functools
import time
import uuid
from typing import Any, Dict, List, Optional, Tuple

from snailjob.testing._state import _State
from snailjob.testing._support import (
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
    _STOP_TIMEOUT,
    _TIMEOUT_GRACE,
)
from snailjob.testing._transport import _Transport
from snailjob.testing.records import (
    RETRY_FINISH,
    RETRY_MAX_COUNT,
    RETRY_REASON_CLIENT_STOP,
    RETRY_REASON_MANUAL_STOP,
    RETRY_REASON_NONE,
    RETRY_REASON_NOT_CLIENT,
    RETRY_REASON_SCENE_CLOSED,
    RETRY_REASON_TIMEOUT,
    RETRY_RUNNING,
    RETRY_SUSPEND,
    ClientNode,
)
from snailjob.testing.retries import EmulatedRetry, EmulatedRetryTask, RetryScene
from snailjob.wire import enums
from snailjob.wire import snailjob_pb2 as pb2
from snailjob.wire.codec import dumps

_HEADER_SNAIL_JOB = "snail-job"
_MSG_MANUAL_STOP = "User manually triggered stop"


class _RetryServer:
    """Retries, their tasks and the calls the retry server makes (callers hold the lock unless noted)."""

    def __init__(self, state: _State, transport: _Transport) -> None:
        self._state = state
        self._transport = transport

    def trigger_retry(self, retry_id: int) -> EmulatedRetryTask:
        """``ServerEmulator.trigger_retry`` (documented there)."""
        self._state.require_running()
        send = False
        with self._state.cond:
            retry = self._state.retries[retry_id]
            scene = self._state.retry_scenes.get(retry.scene)
            if scene is None or not scene.enabled:
                task = self.new_task(retry, _KIND_RETRY, manual=True)
                self.end_task(task, _RT_CANCEL, RETRY_REASON_SCENE_CLOSED)
            else:
                task = self.open_task(retry, scene, _KIND_RETRY, manual=True)
                send = task.status == _RT_RUNNING
            self._state.cond.notify_all()
        if send:
            self._transport.submit(lambda: self.send(task))
        return task

    def stop_retry(self, retry_id: int, suspend: bool = False) -> Optional[Tuple[int, str, str]]:
        """``ServerEmulator.stop_retry`` (documented there)."""
        self._state.require_running()
        with self._state.cond:
            retry = self._state.retries[retry_id]
            if suspend:
                retry._status = RETRY_SUSPEND
                self._state.cond.notify_all()
            if self._state.retry_stop_quirk:
                return None
            running = [t for t in retry._tasks if t.status in _RT_NOT_COMPLETE]
            for task in running:
                self.outcome(task, _RT_FAIL, RETRY_REASON_MANUAL_STOP, True, _MSG_MANUAL_STOP)
            self._state.cond.notify_all()
        answer: Optional[Tuple[int, str, str]] = None
        for task in running:
            reply = self._transport.on_pool(functools.partial(self.send_stop, task),
                                  timeout=_RETRY_RPC_ATTEMPTS * (_STOP_TIMEOUT + _RETRY_RPC_WAIT) + 5.0)
            if reply is not None:
                answer = (reply.status, reply.message, reply.data)
        return answer

    def running_retry(self, scene: str, idempotent_id: str) -> Optional[EmulatedRetry]:
        for retry in self._state.retries_by_key.get((scene, idempotent_id), ()):
            if retry._status == RETRY_RUNNING:
                return retry
        return None

    def key_conflict(self, scene: str, idempotent_id: str) -> Optional[str]:
        """``uk_scene_tasktype_idempotentid_deleted``: a not-RUNNING retry whose
        ``deleted`` is still 0 (SUSPEND) blocks a new one with the same id."""
        for retry in self._state.retries_by_key.get((scene, idempotent_id), ()):
            if not retry._deleted:
                return (f"Duplicate entry '{idempotent_id}' for key "
                        "'sj_retry.uk_scene_tasktype_idempotentid_deleted'")
        return None

    def live_nodes(self) -> List[ClientNode]:
        return [n for n in self._state.nodes.values()
                if n.namespace == self._state.namespace and n.group == self._state.group and self._transport.is_live(n)]

    def next_node(self) -> Optional[ClientNode]:
        """Round robin over the group's live nodes (scene labels are not modelled)."""
        live = self.live_nodes()
        if not live:
            return None
        node = live[self._state.retry_rr % len(live)]
        self._state.retry_rr += 1
        return node

    def create_retry(self, row: Dict[str, Any], status: int, source: str) -> EmulatedRetry:
        """``AbstractGenerator.doConvertTask``: blank bizNo -> UUID, blank extAttrs -> ""."""
        biz_no = row.get("bizNo")
        if not isinstance(biz_no, str) or not biz_no.strip():
            biz_no = uuid.uuid4().hex  # hutool IdUtil.fastSimpleUUID()
        ext_attrs = row.get("extAttrs")
        if not isinstance(ext_attrs, str) or not ext_attrs.strip():
            ext_attrs = ""
        st = self._state
        retry = EmulatedRetry(st.guard, self, next(st.ids), st.namespace, st.group, row["sceneName"],
                              row["idempotentId"], biz_no, row["executorName"], row["argsStr"],
                              row["serializerName"], ext_attrs, status, source)
        self._state.retries[retry.id] = retry
        self._state.retries_by_key.setdefault((retry.scene, retry.idempotent_id), []).append(retry)
        if status == RETRY_RUNNING:
            self.schedule_retry(retry, self._state.retry_scenes[retry.scene].interval, _KIND_RETRY)
        return retry

    def schedule_retry(self, retry: EmulatedRetry, delay: float, kind: str) -> None:
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
        self._state.schedule(delay, functools.partial(self._due, retry, kind, gen))

    def unpark_scene(self, name: str) -> None:
        for retry in self._state.retries.values():
            if retry.scene != name:
                continue
            if retry._parked and retry._status == RETRY_RUNNING:
                self.schedule_retry(retry, 0.0, _KIND_RETRY)
            if retry._cb_parked and retry._cb_status == _RT_RUNNING:
                self.schedule_retry(retry, 0.0, _KIND_CALLBACK)

    def _due(self, retry: EmulatedRetry, kind: str, gen: int) -> None:
        """``ScanRetryActor`` + ``RetryExecutor`` for one due retry or
        callback (runs on a pool thread)."""
        with self._state.cond:
            if self._state.stopping.is_set():
                return
            if kind == _KIND_RETRY and (gen != retry._gen or retry._status != RETRY_RUNNING):
                return
            if kind == _KIND_CALLBACK and (gen != retry._cb_gen or retry._cb_status != _RT_RUNNING):
                return
            scene = self._state.retry_scenes[retry.scene]
            if not scene.enabled:  # the scan skips closed scenes
                if kind == _KIND_RETRY:
                    retry._parked = True
                else:
                    retry._cb_parked = True
                return
            if any(t.kind == kind and t.status in _RT_NOT_COMPLETE for t in retry._tasks):
                return  # the running task's end schedules the next run
            task = self.open_task(retry, scene, kind, manual=False)
            if task.status != _RT_RUNNING:  # no live client: CANCEL, the next scan tries again
                self.schedule_retry(retry, scene.interval if kind == _KIND_RETRY else scene.cb_interval, kind)
            self._state.cond.notify_all()
        if task.status == _RT_RUNNING:
            self.send(task)

    def new_task(self, retry: EmulatedRetry, kind: str, manual: bool) -> EmulatedRetryTask:
        task = EmulatedRetryTask(id=next(self._state.task_ids), retry_id=retry.id, kind=kind, manual=manual)
        retry._tasks.append(task)
        self._state.retry_task_index[task.id] = task
        return task

    def end_task(self, task: EmulatedRetryTask, status: int, reason: int) -> None:
        task.status = status
        task.operation_reason = reason
        task.finished_at = time.time()

    def open_task(self, retry: EmulatedRetry, scene: RetryScene, kind: str,
                         manual: bool) -> EmulatedRetryTask:
        """``RetryExecutor.doExecute``: pick a node, build the request, arm the
        timeout check (``executorTimeout`` + 500 ms)."""
        task = self.new_task(retry, kind, manual)
        node = self.next_node()
        if node is None:
            self.end_task(task, _RT_CANCEL, RETRY_REASON_NOT_CLIENT)
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
        self._state.schedule(scene.executor_timeout + _TIMEOUT_GRACE, functools.partial(self._timeout, task))
        return task

    def send(self, task: EmulatedRetryTask) -> None:
        """``RequestRetryClientActor`` / ``RequestCallbackClientActor`` (pool
        thread): 3 s per attempt, 3 attempts 1 s apart with failover on a
        failed call; a dispatch needs ``status=1, data=true``, a callback
        ``status=1``; otherwise the task fails (not counted as an attempt)."""
        with self._state.cond:
            node = self._transport.node_by_id(task.node) if task.node else None
            if node is None or not self._transport.is_live(node):
                self.outcome(task, _RT_FAIL, None, False, _MSG_CLIENT_MISSING)
                self._state.cond.notify_all()
                return
            uri = enums.URI_RETRY_DISPATCH if task.kind == _KIND_RETRY else enums.URI_RETRY_CALLBACK
            args: List[Any] = [task.request]
            if task.snail_job_header is not None:
                args.append(task.snail_job_header)
            text = dumps(args)
        attempt = 0
        while True:
            attempt += 1
            with self._state.lock:
                headers = self._transport.server_headers(node)
            if task.snail_job_header is not None:
                headers[_HEADER_SNAIL_JOB] = dumps(task.snail_job_header)
            reply, error, data_value = self._transport.call_and_record(node, uri, text, headers, task.dispatch_replies)
            if error is None:
                break
            if self._state.stopping.is_set():
                return
            with self._state.cond:
                node.alive = False  # a failed call marks the node not alive until its next beat
                if attempt >= _RETRY_RPC_ATTEMPTS:
                    self.outcome(task, _RT_FAIL, None, False, error)
                    self._state.cond.notify_all()
                    return
                other = self.next_node()
                if other is not None:  # failover
                    node = other
                    task.node, task.client_address = node.host_id, node.address
            if self._state.stopping.wait(_RETRY_RPC_WAIT):
                return
        assert reply is not None
        with self._state.cond:
            accepted = reply.status == 1 and (task.kind == _KIND_CALLBACK or data_value is True)
            if not accepted:
                self.outcome(task, _RT_FAIL, None, False, reply.message)
            self._state.cond.notify_all()

    def _timeout(self, task: EmulatedRetryTask) -> None:
        """``RetryTimeoutCheckTask`` (pool thread): a task still running fails
        (reason 1, counted as an attempt) and the node is told to stop it."""
        with self._state.cond:
            if self._state.stopping.is_set() or task.done:
                return
            task.timed_out = True
            self.outcome(task, _RT_FAIL, RETRY_REASON_TIMEOUT, True, None)
            self._state.cond.notify_all()
        if not self._state.retry_stop_quirk:
            self.send_stop(task)

    def outcome(self, task: EmulatedRetryTask, status: int, reason: Optional[int], increment: bool,
                       message: Optional[str]) -> bool:
        """``RetrySuccessHandler`` / ``RetryStopHandler`` / ``RetryFailureHandler``;
        false when the failure handler's guard (task not WAITING/RUNNING)
        leaves everything unchanged."""
        retry = self._state.retries[task.retry_id]
        scene = self._state.retry_scenes[retry.scene]
        callback = task.kind == _KIND_CALLBACK
        if status == _RT_SUCCESS:  # no guard on the task's status
            self.end_task(task, _RT_SUCCESS, task.operation_reason)
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
            self.end_task(task, _RT_STOP, RETRY_REASON_CLIENT_STOP)
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
        self.end_task(task, status, RETRY_REASON_NONE if reason is None else reason)
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
            self.schedule_retry(retry, scene.cb_interval, _KIND_CALLBACK)
        elif not callback and retry._status == RETRY_RUNNING:
            self.schedule_retry(retry, scene.interval, _KIND_RETRY)
        return True

    def _create_callback(self, retry: EmulatedRetry, scene: RetryScene) -> None:
        """``CallbackRetryTaskHandler.create``: a new callback row, first run
        ``cb_interval`` from now; none while the previous one is pending or
        suspended (its unique key is still taken)."""
        if not scene.callback or retry._cb_status in (_RT_RUNNING, _RT_STOP):
            return
        retry._cb_id = next(self._state.ids)
        retry._cb_status = _RT_RUNNING
        retry._cb_count = 0
        self.schedule_retry(retry, scene.cb_interval, _KIND_CALLBACK)

    def send_stop(self, task: EmulatedRetryTask) -> Optional[pb2.GrpcResult]:
        """``/retry/stop/v1`` to the task's node (blocking, on a pool thread):
        1 s per attempt, 3 attempts 1 s apart, no failover; the answer is
        only logged by the server."""
        with self._state.lock:
            node = self._transport.node_by_id(task.node) if task.node else None
            if node is None or not self._transport.is_live(node):
                return None
            retry = self._state.retries[task.retry_id]
            body = {"namespaceId": retry.namespace, "groupName": retry.group, "scene": retry.scene,
                    "retryTaskId": task.id, "retryId": task.request.get("retryId", retry.id)}
        text = dumps([body])
        for attempt in range(1, _RETRY_RPC_ATTEMPTS + 1):
            with self._state.lock:
                headers = self._transport.server_headers(node)
            reply, error, _ = self._transport.invoke(node, enums.URI_RETRY_STOP, text, headers, _STOP_TIMEOUT)
            if error is None:
                return reply
            if self._state.stopping.is_set():
                return None
            with self._state.cond:
                node.alive = False
            if attempt < _RETRY_RPC_ATTEMPTS and self._state.stopping.wait(_RETRY_RPC_WAIT):
                return None
        return None

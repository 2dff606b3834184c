"""The retry console's operations in the server emulator.

Scenes (``add_retry_scene``, ``set_retry_scene_enabled``), ``add_retry``,
``trigger_retry``, ``stop_retry``, ``update_retry_status``, and the calls
the console makes to a client (``generate_idempotent_id``,
``deserialize_args``).
"""

from __future__ import annotations

import functools
import json
from typing import Any, Dict, Optional, Tuple

from snailjob.testing._retry_server import _RetryServerMixin
from snailjob.testing.records import (
    RETRY_FINISH,
    RETRY_MAX_COUNT,
    RETRY_REASON_MANUAL_STOP,
    RETRY_REASON_SCENE_CLOSED,
    RETRY_RUNNING,
    RETRY_SUSPEND,
    ClientNode,
)
from snailjob.testing.retries import EmulatedRetry, EmulatedRetryTask, RetryScene
from snailjob.testing.support import (
    _KIND_RETRY,
    _RETRY_RPC_ATTEMPTS,
    _RETRY_RPC_WAIT,
    _RT_CANCEL,
    _RT_FAIL,
    _RT_NOT_COMPLETE,
    _RT_RUNNING,
    _STOP_TIMEOUT,
)
from snailjob.wire import enums
from snailjob.wire import snailjob_pb2 as pb2
from snailjob.wire.codec import dumps

_CONSOLE_TIMEOUT = 5.0
_MSG_MANUAL_STOP = "User manually triggered stop"


class _ConsoleMixin(_RetryServerMixin):
    """The console's retry buttons and forms."""

    # ------------------------------------------------------------------
    # driving retries
    # ------------------------------------------------------------------

    def add_retry_scene(self, name: str, max_retry_count: int = 3, interval: float = 0.2,
                        executor_timeout: int = 5, callback: bool = False, cb_max_count: int = 3,
                        cb_interval: float = 0.2, enabled: bool = True) -> RetryScene:
        """Create a retry scene of the emulator's group, or replace the
        settings of an existing one (its retries are kept).

        ``interval`` / ``cb_interval``: seconds between the end of an attempt
        and the next one (a new retry is first dispatched ``interval`` after
        it was reported).  ``executor_timeout``: whole seconds, sent as
        ``executorTimeout`` and ``ddl``; an attempt without a result after
        ``executor_timeout + 0.5`` s fails.  ``callback``: send
        ``/retry/callback/v1`` once the retry reaches FINISH or MAX_COUNT, up
        to ``cb_max_count`` attempts.  A disabled scene accepts reports but
        nothing of it is dispatched until ``set_retry_scene_enabled``.
        """
        if not isinstance(name, str) or not name.strip():
            raise ValueError("a scene name must be a non-blank string")
        if len(name) > 64:
            raise ValueError("a scene name has at most 64 characters (scene_name is VARCHAR(64))")
        if max_retry_count < 1 or cb_max_count < 1:
            raise ValueError("max_retry_count and cb_max_count must be at least 1")
        if interval < 0 or cb_interval < 0:
            raise ValueError("interval and cb_interval must not be negative")
        if executor_timeout < 1 or int(executor_timeout) != executor_timeout:
            raise ValueError("executor_timeout is whole seconds, at least 1")
        scene = RetryScene(name=name, max_retry_count=int(max_retry_count), interval=float(interval),
                           executor_timeout=int(executor_timeout), callback=bool(callback),
                           cb_max_count=int(cb_max_count), cb_interval=float(cb_interval),
                           enabled=bool(enabled))
        with self._cond:
            self._retry_scenes[name] = scene
            if scene.enabled:
                self._unpark_scene(name)
            self._cond.notify_all()
        return scene

    def set_retry_scene_enabled(self, name: str, enabled: bool) -> None:
        """Open or close a scene (the console's scene switch).  Retries that
        came due while it was closed are dispatched at once when it opens."""
        with self._cond:
            scene = self._retry_scenes[name]
            scene.enabled = bool(enabled)
            if scene.enabled:
                self._unpark_scene(name)
            self._cond.notify_all()

    def add_retry(self, scene: str, executor_name: str, args_str: str, idempotent_id: Optional[str] = None,
                  biz_no: str = "", serializer_name: str = "jackson", ext_attrs: str = "",
                  status: int = RETRY_RUNNING) -> Optional[EmulatedRetry]:
        """Create a retry like the console's "add retry" (``RetryWebServiceImpl.saveRetryTask``).

        Without ``idempotent_id`` the client is asked first
        (``generate_idempotent_id``), as the console's form does.  Returns the
        new retry, or ``None`` when a RUNNING retry of the scene already has
        this idempotent id (the server then inserts nothing and still reports
        success).  Raises ``RuntimeError`` where the console shows an error.
        """
        self._require_running()
        if status not in (RETRY_RUNNING, RETRY_FINISH, RETRY_MAX_COUNT, RETRY_SUSPEND):
            raise RuntimeError("Retry status error")
        for value, label in ((scene, "Scene name"), (executor_name, "Executor name"),
                             (serializer_name, "serializerName")):
            if not isinstance(value, str) or not value.strip():
                raise RuntimeError(f"{label} cannot be empty")
        if idempotent_id is None:
            idempotent_id = self.generate_idempotent_id(scene, executor_name, args_str, serializer_name)
        if not idempotent_id.strip():
            raise RuntimeError("Idempotent ID cannot be empty")
        row = {"sceneName": scene, "idempotentId": idempotent_id, "executorName": executor_name,
               "bizNo": biz_no, "argsStr": args_str, "extAttrs": ext_attrs, "serializerName": serializer_name}
        with self._cond:
            if scene not in self._retry_scenes:
                # the console does not set initScene: checkAndInitScene throws a NullPointerException
                raise RuntimeError(f"no retry scene {scene!r} (the server fails with a NullPointerException)")
            error = self._retry_row_error(row, 1, problem=False)
            if error is not None:
                raise RuntimeError(error)
            if self._running_retry(scene, idempotent_id) is not None:
                return None
            conflict = self._retry_key_conflict(scene, idempotent_id)
            if conflict is not None:
                raise RuntimeError(conflict)
            retry = self._create_retry(row, status, source="console")
            self._cond.notify_all()
            return retry

    def generate_idempotent_id(self, scene: str, executor_name: str, args_str: str,
                               serializer_name: str = "jackson") -> str:
        """Ask a live client for the idempotent id of these arguments
        (``/retry/generate/idempotent-id/v1``, as the console's "generate"
        button does) and return its answer.  ``RuntimeError`` with the
        server's message when the scene is unknown, no client is live, the
        call fails or the client answers ``status`` 0 or a non-string."""
        self._require_running()
        with self._lock:
            if scene not in self._retry_scenes:
                raise RuntimeError("Failed to generate idempotentId: RetrySceneConfig nodes exist")
            node = self._next_retry_node()
        if node is None:
            raise RuntimeError("Failed to generate idempotentId: No active client nodes exist")
        body = {"group": self.group, "scene": scene, "argsStr": args_str, "executorName": executor_name,
                "serializerName": serializer_name}
        reply, data, error = self._console_call(node, enums.URI_RETRY_IDEMPOTENT_ID, body)
        if reply is None:
            raise RuntimeError(f"idempotentId generation failed: {error}")
        if reply.status != 1:
            raise RuntimeError("idempotentId generation failed: Ensure that the parameters and executor "
                               "name are correct")
        if not isinstance(data, str):
            with self._cond:
                self._problem(f"/retry/generate/idempotent-id/v1 answered data {reply.data[:200]!r}: "
                              "the server casts data to a String")
            raise RuntimeError(f"idempotentId generation failed: data {reply.data[:200]!r} is not a JSON string")
        if len(data) > 64:
            with self._cond:
                self._problem(f"/retry/generate/idempotent-id/v1 answered an id of {len(data)} characters; "
                              "idempotent_id is VARCHAR(64)")
        return data

    def deserialize_args(self, scene: str, executor_name: str, args_str: str,
                         serializer_name: str = "jackson") -> Any:
        """Ask a live client to decode ``args_str`` (``/retry/deserialize/args/v1``,
        as the console's retry detail view does) and return its ``data``
        decoded.  Like the server, fall back to ``args_str`` itself when the
        scene is unknown, no client is live, the call fails, or the client
        answers ``status`` 0 or a null ``data``."""
        self._require_running()
        with self._lock:
            if scene not in self._retry_scenes:
                return args_str
            node = self._next_retry_node()
        if node is None:
            return args_str
        body = {"namespaceId": self.namespace, "group": self.group, "scene": scene, "argsStr": args_str,
                "executorName": executor_name, "serializerName": serializer_name}
        reply, data, _ = self._console_call(node, enums.URI_RETRY_DESERIALIZE, body)
        if reply is None or reply.status == 0 or data is None:
            return args_str
        return data

    def trigger_retry(self, retry_id: int) -> EmulatedRetryTask:
        """Run a retry now, like the console's "execute" button
        (``triggerRetry``): whatever its status, without waiting for a running
        task.  Returns the new task (CANCEL when the scene is closed or no
        client is live); the dispatch itself is asynchronous."""
        self._require_running()
        send = False
        with self._cond:
            retry = self._retries[retry_id]
            scene = self._retry_scenes.get(retry.scene)
            if scene is None or not scene.enabled:
                task = self._new_retry_task(retry, _KIND_RETRY, manual=True)
                self._end_retry_task(task, _RT_CANCEL, RETRY_REASON_SCENE_CLOSED)
            else:
                task = self._open_retry_task(retry, scene, _KIND_RETRY, manual=True)
                send = task.status == _RT_RUNNING
            self._cond.notify_all()
        if send:
            self._submit(lambda: self._retry_send(task))
        return task

    def stop_retry(self, retry_id: int, suspend: bool = False) -> Optional[Tuple[int, str, str]]:
        """Stop the retry's running task like the console's stop button
        (``RetryTaskServiceImpl.stopById`` -> ``RetryTaskStopHandler``): the
        task becomes FAIL with reason 7 and counts as a failed attempt
        (MAX_COUNT when the limit is reached, otherwise the retry runs again
        after its interval), and ``/retry/stop/v1`` goes to the node running
        it.  With ``suspend=True`` the retry is first set to SUSPEND (the
        console's status switch), so it does not run again.

        Returns the node's answer ``(status, message, data)`` to the stop
        call, or ``None`` when nothing was sent.  With ``retry_stop_quirk``
        only ``suspend`` has an effect (vsj2.0.2, see the class docstring).
        """
        self._require_running()
        with self._cond:
            retry = self._retries[retry_id]
            if suspend:
                retry._status = RETRY_SUSPEND
                self._cond.notify_all()
            if self.retry_stop_quirk:
                return None
            running = [t for t in retry._tasks if t.status in _RT_NOT_COMPLETE]
            for task in running:
                self._retry_outcome(task, _RT_FAIL, RETRY_REASON_MANUAL_STOP, True, _MSG_MANUAL_STOP)
            self._cond.notify_all()
        answer: Optional[Tuple[int, str, str]] = None
        for task in running:
            reply = self._on_pool(functools.partial(self._send_retry_stop, task),
                                  timeout=_RETRY_RPC_ATTEMPTS * (_STOP_TIMEOUT + _RETRY_RPC_WAIT) + 5.0)
            if reply is not None:
                answer = (reply.status, reply.message, reply.data)
        return answer

    def update_retry_status(self, retry_id: int, status: int) -> None:
        """The console's status switch (``updateRetryStatus``): 0 resumes
        (next run after the scene interval), 1 FINISH, 2 MAX_COUNT, 3
        SUSPEND.  No client is called; a running task keeps running."""
        if status not in (RETRY_RUNNING, RETRY_FINISH, RETRY_MAX_COUNT, RETRY_SUSPEND):
            raise ValueError(f"Retry status error. [{status}]")
        with self._cond:
            retry = self._retries[retry_id]
            retry._status = status
            if status == RETRY_RUNNING:
                retry._deleted = False
                scene = self._retry_scenes.get(retry.scene)
                self._schedule_retry(retry, scene.interval if scene is not None else 0.0, _KIND_RETRY)
            elif status == RETRY_FINISH:
                retry._deleted = True
            self._cond.notify_all()

    def _console_call(self, node: ClientNode, uri: str,
                      body: Dict[str, Any]) -> Tuple[Optional[pb2.GrpcResult], Any, Optional[str]]:
        """A console-initiated call (idempotent id, deserialize): 5 s per
        attempt, 3 attempts 1 s apart, no failover.  Returns ``(reply, data
        decoded, error)``; runs on the pool and waits for it (bounded)."""
        text = dumps([body])

        def work() -> Tuple[Optional[pb2.GrpcResult], Any, Optional[str]]:
            error: Optional[str] = None
            for attempt in range(1, _RETRY_RPC_ATTEMPTS + 1):
                with self._lock:
                    headers = self.server_headers(node)
                reply, error, _ = self._invoke(node, uri, text, headers, _CONSOLE_TIMEOUT)
                if reply is not None and error is None:
                    if not reply.data.strip():
                        return reply, None, None
                    try:
                        return reply, json.loads(reply.data), None
                    except ValueError:
                        error = f"data is not JSON: {reply.data[:200]!r}"
                if self._stopping.is_set():
                    break
                with self._cond:
                    node.alive = False
                if attempt < _RETRY_RPC_ATTEMPTS and self._stopping.wait(_RETRY_RPC_WAIT):
                    break
            return None, None, error

        return self._on_pool(work, _RETRY_RPC_ATTEMPTS * (_CONSOLE_TIMEOUT + _RETRY_RPC_WAIT) + 5.0)

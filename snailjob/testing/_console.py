"""The retry console of the server emulator: its forms and the calls it makes.

Scenes (``add_retry_scene``, ``set_retry_scene_enabled``), ``add_retry``,
``update_retry_status``, and the calls the console makes to a client
(``generate_idempotent_id``, ``deserialize_args``).  ``_Console`` gets the
state, the transport, the retry server (scheduling, retries) and the retry
reports (the row checks of an insert); the buttons that act on a running
retry are the retry server's.
"""

from __future__ import annotations

import json
from typing import Any, Dict, Optional, Tuple

from snailjob.testing._retry_reports import _RetryReports
from snailjob.testing._retry_server import _RetryServer
from snailjob.testing._state import _State
from snailjob.testing._support import _KIND_RETRY, _RETRY_RPC_ATTEMPTS, _RETRY_RPC_WAIT
from snailjob.testing._transport import _Transport
from snailjob.testing.records import (
    RETRY_FINISH,
    RETRY_MAX_COUNT,
    RETRY_RUNNING,
    RETRY_SUSPEND,
    ClientNode,
)
from snailjob.testing.retries import EmulatedRetry, RetryScene
from snailjob.wire import enums
from snailjob.wire import snailjob_pb2 as pb2
from snailjob.wire.codec import dumps

_CONSOLE_TIMEOUT = 5.0


class _Console:
    """The console's retry forms and switches."""

    def __init__(self, state: _State, transport: _Transport, server: _RetryServer,
                 reports: _RetryReports) -> None:
        self._state = state
        self._transport = transport
        self._server = server
        self._reports = reports

    def add_retry_scene(self, name: str, max_retry_count: int = 3, interval: float = 0.2,
                        executor_timeout: int = 5, callback: bool = False, cb_max_count: int = 3,
                        cb_interval: float = 0.2, enabled: bool = True) -> RetryScene:
        """``ServerEmulator.add_retry_scene`` (documented there)."""
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
        with self._state.cond:
            self._state.retry_scenes[name] = scene
            if scene.enabled:
                self._server.unpark_scene(name)
            self._state.cond.notify_all()
        return scene

    def set_retry_scene_enabled(self, name: str, enabled: bool) -> None:
        """``ServerEmulator.set_retry_scene_enabled`` (documented there)."""
        with self._state.cond:
            scene = self._state.retry_scenes[name]
            scene.enabled = bool(enabled)
            if scene.enabled:
                self._server.unpark_scene(name)
            self._state.cond.notify_all()

    def add_retry(self, scene: str, executor_name: str, args_str: str, idempotent_id: Optional[str] = None,
                  biz_no: str = "", serializer_name: str = "jackson", ext_attrs: str = "",
                  status: int = RETRY_RUNNING) -> Optional[EmulatedRetry]:
        """``ServerEmulator.add_retry`` (documented there)."""
        self._state.require_running()
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
        with self._state.cond:
            if scene not in self._state.retry_scenes:
                # the console does not set initScene: checkAndInitScene throws a NullPointerException
                raise RuntimeError(f"no retry scene {scene!r} (the server fails with a NullPointerException)")
            error = self._reports.row_error(row, 1, problem=False)
            if error is not None:
                raise RuntimeError(error)
            if self._server.running_retry(scene, idempotent_id) is not None:
                return None
            conflict = self._server.key_conflict(scene, idempotent_id)
            if conflict is not None:
                raise RuntimeError(conflict)
            retry = self._server.create_retry(row, status, source="console")
            self._state.cond.notify_all()
            return retry

    def generate_idempotent_id(self, scene: str, executor_name: str, args_str: str,
                               serializer_name: str = "jackson") -> str:
        """``ServerEmulator.generate_idempotent_id`` (documented there)."""
        self._state.require_running()
        with self._state.lock:
            if scene not in self._state.retry_scenes:
                raise RuntimeError("Failed to generate idempotentId: RetrySceneConfig nodes exist")
            node = self._server.next_node()
        if node is None:
            raise RuntimeError("Failed to generate idempotentId: No active client nodes exist")
        body = {"group": self._state.group, "scene": scene, "argsStr": args_str, "executorName": executor_name,
                "serializerName": serializer_name}
        reply, data, error = self._console_call(node, enums.URI_RETRY_IDEMPOTENT_ID, body)
        if reply is None:
            raise RuntimeError(f"idempotentId generation failed: {error}")
        if reply.status != 1:
            raise RuntimeError("idempotentId generation failed: Ensure that the parameters and executor "
                               "name are correct")
        if not isinstance(data, str):
            with self._state.cond:
                self._state.problem(f"/retry/generate/idempotent-id/v1 answered data {reply.data[:200]!r}: "
                              "the server casts data to a String")
            raise RuntimeError(f"idempotentId generation failed: data {reply.data[:200]!r} is not a JSON string")
        if len(data) > 64:
            with self._state.cond:
                self._state.problem(f"/retry/generate/idempotent-id/v1 answered an id of {len(data)} characters; "
                              "idempotent_id is VARCHAR(64)")
        return data

    def deserialize_args(self, scene: str, executor_name: str, args_str: str,
                         serializer_name: str = "jackson") -> Any:
        """``ServerEmulator.deserialize_args`` (documented there)."""
        self._state.require_running()
        with self._state.lock:
            if scene not in self._state.retry_scenes:
                return args_str
            node = self._server.next_node()
        if node is None:
            return args_str
        body = {"namespaceId": self._state.namespace, "group": self._state.group, "scene": scene, "argsStr": args_str,
                "executorName": executor_name, "serializerName": serializer_name}
        reply, data, _ = self._console_call(node, enums.URI_RETRY_DESERIALIZE, body)
        if reply is None or reply.status == 0 or data is None:
            return args_str
        return data

    def update_retry_status(self, retry_id: int, status: int) -> None:
        """``ServerEmulator.update_retry_status`` (documented there)."""
        if status not in (RETRY_RUNNING, RETRY_FINISH, RETRY_MAX_COUNT, RETRY_SUSPEND):
            raise ValueError(f"Retry status error. [{status}]")
        with self._state.cond:
            retry = self._state.retries[retry_id]
            retry._status = status
            if status == RETRY_RUNNING:
                retry._deleted = False
                scene = self._state.retry_scenes.get(retry.scene)
                self._server.schedule_retry(retry, scene.interval if scene is not None else 0.0, _KIND_RETRY)
            elif status == RETRY_FINISH:
                retry._deleted = True
            self._state.cond.notify_all()

    def _console_call(self, node: ClientNode, uri: str,
                      body: Dict[str, Any]) -> Tuple[Optional[pb2.GrpcResult], Any, Optional[str]]:
        """A console-initiated call (idempotent id, deserialize): 5 s per
        attempt, 3 attempts 1 s apart, no failover.  Returns ``(reply, data
        decoded, error)``; runs on the pool and waits for it (bounded)."""
        text = dumps([body])

        def work() -> Tuple[Optional[pb2.GrpcResult], Any, Optional[str]]:
            error: Optional[str] = None
            for attempt in range(1, _RETRY_RPC_ATTEMPTS + 1):
                with self._state.lock:
                    headers = self._transport.server_headers(node)
                reply, error, _ = self._transport.invoke(node, uri, text, headers, _CONSOLE_TIMEOUT)
                if reply is not None and error is None:
                    if not reply.data.strip():
                        return reply, None, None
                    try:
                        return reply, json.loads(reply.data), None
                    except ValueError:
                        error = f"data is not JSON: {reply.data[:200]!r}"
                if self._state.stopping.is_set():
                    break
                with self._state.cond:
                    node.alive = False
                if attempt < _RETRY_RPC_ATTEMPTS and self._state.stopping.wait(_RETRY_RPC_WAIT):
                    break
            return None, None, error

        return self._transport.on_pool(work, _RETRY_RPC_ATTEMPTS * (_CONSOLE_TIMEOUT + _RETRY_RPC_WAIT) + 5.0)

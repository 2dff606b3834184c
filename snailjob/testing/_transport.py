"""Client nodes and server -> client calls of the server emulator.

Node liveness and lookup, the headers the server sends, the long-lived
channels to the nodes, raw calls (``call_client``), the worker pool every
outbound call runs on (never under the lock) and the timer that feeds it.
Every part that reaches a node goes through ``_Transport``; it needs only
the state.
"""

from __future__ import annotations

import json
import time
from concurrent import futures
from typing import Any, Callable, Dict, List, Optional, Tuple, TypeVar, Union

import grpc

from snailjob.testing._state import _State
from snailjob.testing._support import _MAX_MESSAGE, _Scheduler, logger
from snailjob.testing.batches import _Job
from snailjob.testing.records import DEFAULT_NAMESPACE, SERVER_GROUP, ClientNode, DispatchReply, OutboundCall
from snailjob.wire import enums
from snailjob.wire import snailjob_pb2 as pb2

_METHOD = "/UnaryRequest/unaryRequest"
_DISPATCH_TIMEOUT = 3.0

_T = TypeVar("_T")


class _Transport:
    """Nodes and the calls the emulator makes to them."""

    def __init__(self, state: _State) -> None:
        self._state = state

    def open(self) -> None:
        """Create the worker pool and start the timer (``start()``)."""
        st = self._state
        st.pool = futures.ThreadPoolExecutor(max_workers=max(16, st.max_workers),
                                             thread_name_prefix="snailjob-emu-call")
        st.scheduler = _Scheduler(self.submit, name="snailjob-emu-timer")
        st.scheduler.start()

    def close(self) -> None:
        """Cancel pending timers, close the channels, end the pool (``stop()``)."""
        st = self._state
        if st.scheduler is not None:
            st.scheduler.close()
        with st.lock:
            channels = list(st.channels.values())
            st.channels.clear()
        for channel, _ in channels:
            try:
                channel.close()
            except Exception:  # pragma: no cover - best effort
                logger.debug("closing a client channel failed", exc_info=True)
        if st.pool is not None:
            st.pool.shutdown(wait=True, cancel_futures=True)

    # ------------------------------------------------------------------
    # nodes
    # ------------------------------------------------------------------

    def expired(self, node: ClientNode) -> bool:
        return time.monotonic() - node.last_beat_monotonic > self._state.node_expiry

    def is_live(self, node: ClientNode) -> bool:
        return node.registered and node.alive and not self.expired(node)

    @staticmethod
    def _labels_match(node: ClientNode, labels: Dict[str, str]) -> bool:
        if not node.labels:
            return True
        wanted = dict(labels)
        wanted["state"] = "up"
        return all(node.labels.get(key) == value for key, value in wanted.items())

    def live_nodes(self, job: _Job) -> List[ClientNode]:
        return [n for n in self._state.nodes.values()
                if n.namespace == job.namespace and n.group == job.group
                and self.is_live(n) and self._labels_match(n, job.labels)]

    def node_by_id(self, host_id: str, job: Optional[_Job] = None) -> Optional[ClientNode]:
        for node in self._state.nodes.values():
            if node.host_id == host_id and (job is None or (node.group == job.group
                                                            and node.namespace == job.namespace)):
                return node
        return None

    def resolve_node(self, node: Union[ClientNode, str, None]) -> ClientNode:
        if isinstance(node, ClientNode):
            return node
        if isinstance(node, str):
            found = self.node_by_id(node)
            if found is None:
                raise LookupError(f"no node with host id {node!r}")
            return found
        live = [n for n in self._state.nodes.values() if self.is_live(n)]
        if not live:
            raise LookupError("no live client node")
        return live[0]

    # ------------------------------------------------------------------
    # outbound calls (never under the lock)
    # ------------------------------------------------------------------

    def server_headers(self, node: Optional[ClientNode] = None) -> Dict[str, str]:
        """``ServerEmulator.server_headers`` (documented there)."""
        token = self._state.token
        if node is not None:
            token = self.expected_token(node.group, node.namespace) or self._state.token
        return {
            enums.HEADER_SERVER_TOKEN: token,
            "host-id": self._state.server_host_id,
            "host-ip": self._state.host,
            "host-port": str(self._state.port),
            "group-name": SERVER_GROUP,
            "namespace": DEFAULT_NAMESPACE,
            "token": self._state.server_token,
        }

    def expected_token(self, group: str, namespace: Optional[str]) -> str:
        if group == SERVER_GROUP:
            return self._state.server_token
        if group == self._state.group and namespace == self._state.namespace:
            return self._state.token
        return ""

    def call_client(self, uri: str, body: str, headers: Optional[Dict[str, str]] = None,
                    node: Union[ClientNode, str, None] = None,
                    timeout: float = 3.0) -> Tuple[int, str, str]:
        """``ServerEmulator.call_client`` (documented there)."""
        self._state.require_running()
        with self._state.lock:
            target = self.resolve_node(node)
            hdrs = dict(headers) if headers is not None else self.server_headers(target)
        reply, error, exc = self.invoke(target, uri, body, hdrs, timeout)
        if exc is not None:
            raise exc
        if reply is None:  # pragma: no cover - defensive
            raise RuntimeError(error or "no reply")
        return reply.status, reply.message, reply.data

    def submit(self, fn: Callable[[], None]) -> None:
        pool = self._state.pool
        if pool is None or self._state.stopping.is_set():
            return

        def guarded() -> None:
            if self._state.stopping.is_set():
                return
            try:
                fn()
            except Exception:
                logger.exception("snailjob emulator background work failed")

        try:
            pool.submit(guarded)
        except RuntimeError:  # pool shut down
            pass

    def _channel_call(self, address: str) -> Any:
        """The unary callable of the long-lived channel to ``address``
        (``None`` once the emulator is stopping)."""
        with self._state.lock:
            if self._state.stopping.is_set():
                return None
            entry = self._state.channels.get(address)
            if entry is None:
                channel = grpc.insecure_channel(address, options=[
                    ("grpc.max_receive_message_length", _MAX_MESSAGE),
                    ("grpc.max_send_message_length", _MAX_MESSAGE),
                    ("grpc.enable_retries", 0),
                ])
                call = channel.unary_unary(_METHOD,
                                           request_serializer=pb2.GrpcSnailJobRequest.SerializeToString,
                                           response_deserializer=pb2.GrpcResult.FromString)
                entry = (channel, call)
                self._state.channels[address] = entry
            return entry[1]

    def invoke(self, node: ClientNode, uri: str, body: str, headers: Dict[str, str],
                timeout: float) -> Tuple[Optional[pb2.GrpcResult], Optional[str], Optional[grpc.RpcError]]:
        if self._state.stopping.is_set():
            return None, "emulator stopped", None
        req_id = next(self._state.req_ids)
        record = OutboundCall(uri=uri, node=node.host_id, address=node.address, headers=dict(headers),
                              body=body, req_id=req_id, at=time.time())
        with self._state.cond:
            self._state.outbound.append(record)
        call = self._channel_call(node.address)
        if call is None:
            with self._state.cond:
                record.error, record.finished = "emulator stopped", True
            return None, "emulator stopped", None
        request = pb2.GrpcSnailJobRequest(reqId=req_id, metadata=pb2.Metadata(uri=uri, headers=headers),
                                          body=body)
        reply: Optional[pb2.GrpcResult] = None
        error: Optional[str] = None
        exc: Optional[grpc.RpcError] = None
        try:
            reply = call(request, timeout=timeout)
        except grpc.RpcError as rpc_error:
            exc = rpc_error
            code = getattr(rpc_error, "code", lambda: None)()
            details = getattr(rpc_error, "details", lambda: None)()
            error = f"{getattr(code, 'name', code)}: {details}"
        except ValueError:  # the channel was closed by stop() meanwhile
            error = "emulator stopped"
        with self._state.cond:
            if reply is not None:
                record.status, record.message, record.data = reply.status, reply.message, reply.data
            record.error = error
            record.finished = True
            self._state.cond.notify_all()
        return reply, error, exc

    def call_and_record(self, node: ClientNode, uri: str, text: str, headers: Dict[str, str],
                         replies: List[DispatchReply]) -> Tuple[Any, Optional[str], Any]:
        """One server -> client call; the reply is recorded in ``replies``.
        Returns ``(reply, error, decoded data)``."""
        reply, error, _ = self.invoke(node, uri, text, headers, _DISPATCH_TIMEOUT)
        data_value: Any = None
        if reply is not None and reply.data.strip():
            try:
                data_value = json.loads(reply.data)
            except ValueError:
                error = f"data is not JSON: {reply.data[:200]!r}"
        with self._state.cond:
            replies.append(DispatchReply(
                node=node.host_id,
                status=reply.status if reply is not None else None,
                message=reply.message if reply is not None else None,
                data=reply.data if reply is not None else None,
                error=error))
            self._state.cond.notify_all()
        return reply, error, data_value

    def on_pool(self, fn: Callable[[], _T], timeout: float) -> _T:
        """Run ``fn`` on the emulator's pool and wait for it (bounded)."""
        pool = self._state.pool
        if pool is None or self._state.stopping.is_set():
            raise RuntimeError("the emulator is not running (call start() or use it as a context manager)")
        return pool.submit(fn).result(timeout=timeout)

"""Client nodes and server -> client calls of the server emulator.

Node liveness and lookup, the headers the server sends, the long-lived
channels to the nodes, raw calls (``call_client``) and the worker pool every
outbound call runs on (never under the lock).
"""

from __future__ import annotations

import json
import time
from typing import Any, Callable, Dict, List, Optional, Tuple, TypeVar, Union

import grpc

from snailjob.testing._base import _EmulatorBase
from snailjob.testing.batches import _Job
from snailjob.testing.records import DEFAULT_NAMESPACE, SERVER_GROUP, ClientNode, DispatchReply, OutboundCall
from snailjob.testing.support import _MAX_MESSAGE, logger
from snailjob.wire import enums
from snailjob.wire import snailjob_pb2 as pb2

_METHOD = "/UnaryRequest/unaryRequest"
_DISPATCH_TIMEOUT = 3.0

_T = TypeVar("_T")


class _TransportMixin(_EmulatorBase):
    """Nodes and the calls the emulator makes to them."""

    # ------------------------------------------------------------------
    # nodes
    # ------------------------------------------------------------------

    def _expired(self, node: ClientNode) -> bool:
        return time.monotonic() - node.last_beat_monotonic > self.node_expiry

    def _is_live(self, node: ClientNode) -> bool:
        return node.registered and node.alive and not self._expired(node)

    @staticmethod
    def _labels_match(node: ClientNode, labels: Dict[str, str]) -> bool:
        if not node.labels:
            return True
        wanted = dict(labels)
        wanted["state"] = "up"
        return all(node.labels.get(key) == value for key, value in wanted.items())

    def _live_nodes(self, job: _Job) -> List[ClientNode]:
        return [n for n in self._nodes.values()
                if n.namespace == job.namespace and n.group == job.group
                and self._is_live(n) and self._labels_match(n, job.labels)]

    def _node_by_id(self, host_id: str, job: Optional[_Job] = None) -> Optional[ClientNode]:
        for node in self._nodes.values():
            if node.host_id == host_id and (job is None or (node.group == job.group
                                                            and node.namespace == job.namespace)):
                return node
        return None

    def _resolve_node(self, node: Union[ClientNode, str, None]) -> ClientNode:
        if isinstance(node, ClientNode):
            return node
        if isinstance(node, str):
            found = self._node_by_id(node)
            if found is None:
                raise LookupError(f"no node with host id {node!r}")
            return found
        live = [n for n in self._nodes.values() if self._is_live(n)]
        if not live:
            raise LookupError("no live client node")
        return live[0]

    # ------------------------------------------------------------------
    # outbound calls (never under the lock)
    # ------------------------------------------------------------------

    def server_headers(self, node: Optional[ClientNode] = None) -> Dict[str, str]:
        """The headers the server sends on a server -> client call."""
        token = self.token
        if node is not None:
            token = self._expected_token(node.group, node.namespace) or self.token
        return {
            enums.HEADER_SERVER_TOKEN: token,
            "host-id": self.server_host_id,
            "host-ip": self.host,
            "host-port": str(self.port),
            "group-name": SERVER_GROUP,
            "namespace": DEFAULT_NAMESPACE,
            "token": self.server_token,
        }

    def _expected_token(self, group: str, namespace: Optional[str]) -> str:
        if group == SERVER_GROUP:
            return self.server_token
        if group == self.group and namespace == self.namespace:
            return self.token
        return ""

    def call_client(self, uri: str, body: str, headers: Optional[Dict[str, str]] = None,
                    node: Union[ClientNode, str, None] = None,
                    timeout: float = 3.0) -> Tuple[int, str, str]:
        """Make a raw server -> client call and return ``(status, message, data)``.

        ``headers`` defaults to the server's headers (with the node group's
        ``SJ-TOKEN``); ``node`` (a ``ClientNode`` or host id) defaults to the
        first live node.  A gRPC failure raises the ``grpc.RpcError``.
        """
        self._require_running()
        with self._lock:
            target = self._resolve_node(node)
            hdrs = dict(headers) if headers is not None else self.server_headers(target)
        reply, error, exc = self._invoke(target, uri, body, hdrs, timeout)
        if exc is not None:
            raise exc
        if reply is None:  # pragma: no cover - defensive
            raise RuntimeError(error or "no reply")
        return reply.status, reply.message, reply.data

    def _submit(self, fn: Callable[[], None]) -> None:
        pool = self._pool
        if pool is None or self._stopping.is_set():
            return

        def guarded() -> None:
            if self._stopping.is_set():
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
        with self._lock:
            if self._stopping.is_set():
                return None
            entry = self._channels.get(address)
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
                self._channels[address] = entry
            return entry[1]

    def _invoke(self, node: ClientNode, uri: str, body: str, headers: Dict[str, str],
                timeout: float) -> Tuple[Optional[pb2.GrpcResult], Optional[str], Optional[grpc.RpcError]]:
        if self._stopping.is_set():
            return None, "emulator stopped", None
        req_id = next(self._req_ids)
        record = OutboundCall(uri=uri, node=node.host_id, address=node.address, headers=dict(headers),
                              body=body, req_id=req_id, at=time.time())
        with self._cond:
            self._outbound.append(record)
        call = self._channel_call(node.address)
        if call is None:
            with self._cond:
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
        with self._cond:
            if reply is not None:
                record.status, record.message, record.data = reply.status, reply.message, reply.data
            record.error = error
            record.finished = True
            self._cond.notify_all()
        return reply, error, exc

    def _call_and_record(self, node: ClientNode, uri: str, text: str, headers: Dict[str, str],
                         replies: List[DispatchReply]) -> Tuple[Any, Optional[str], Any]:
        """One server -> client call; the reply is recorded in ``replies``.
        Returns ``(reply, error, decoded data)``."""
        reply, error, _ = self._invoke(node, uri, text, headers, _DISPATCH_TIMEOUT)
        data_value: Any = None
        if reply is not None and reply.data.strip():
            try:
                data_value = json.loads(reply.data)
            except ValueError:
                error = f"data is not JSON: {reply.data[:200]!r}"
        with self._cond:
            replies.append(DispatchReply(
                node=node.host_id,
                status=reply.status if reply is not None else None,
                message=reply.message if reply is not None else None,
                data=reply.data if reply is not None else None,
                error=error))
            self._cond.notify_all()
        return reply, error, data_value

    def _on_pool(self, fn: Callable[[], _T], timeout: float) -> _T:
        """Run ``fn`` on the emulator's pool and wait for it (bounded)."""
        pool = self._pool
        if pool is None or self._stopping.is_set():
            raise RuntimeError("the emulator is not running (call start() or use it as a context manager)")
        return pool.submit(fn).result(timeout=timeout)

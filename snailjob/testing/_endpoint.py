"""The server emulator's gRPC endpoint and protocol checks.

The inbound handler (every call recorded as an ``Exchange``), the blank-uri
hold, routing by path, the token check, and the node-facing URIs:
``/beat``, ``/register/job/executors`` and ``/sync/version``; the gRPC
server itself (``serve``, ``close``).  ``_Endpoint`` gets the state, the
transport (node expiry, the tokens) and the parts it routes the other URIs
to: the job reports, the logs and the retry reports.
"""

from __future__ import annotations

import functools
import json
import threading
import time
from concurrent import futures
from typing import Any, Dict, List, NoReturn, Optional, Tuple

import grpc

from snailjob.testing._job_reports import _JobReports
from snailjob.testing._logs import _Logs
from snailjob.testing._retry_reports import _RetryReports
from snailjob.testing._state import _State
from snailjob.testing._support import (
    _INT_RE,
    _MAX_MESSAGE,
    Handler,
    _arg0,
    _Failure,
    _fmt,
    _header,
    _parse_args,
    _path_of,
    logger,
)
from snailjob.testing._transport import _Transport
from snailjob.testing.records import ClientNode, Exchange, RecordedBeat
from snailjob.wire import enums
from snailjob.wire import snailjob_pb2 as pb2
from snailjob.wire.codec import dumps

_BLANK_URI_HOLD_MAX = 30.0
_MSG_BEAT_OK = ""
_MSG_REGISTER_OK = "Batch Register Job Executors Processed Successfully"
_MSG_REGISTER_NULL = "Beat register job executors arg is null"


class _Endpoint:
    """Inbound gRPC: handling, routing, token check, beats and registration."""

    def __init__(self, state: _State, transport: _Transport, job_reports: _JobReports, logs: _Logs,
                 retry_reports: _RetryReports) -> None:
        self._state = state
        self._transport = transport
        self._routes: Dict[str, Handler] = {
            enums.URI_BEAT: self._on_beat,
            enums.URI_REGISTER_EXECUTORS: self._on_register_executors,
            enums.URI_REPORT_RESULT: job_reports.on_report_result,
            enums.URI_REPORT_MAP: job_reports.on_map_report,
            enums.URI_REPORT_LOG: logs.on_logs,
            enums.URI_SYNC_VERSION: self._on_sync_version,
            enums.URI_RETRY_REPORT: retry_reports.on_retry_report,
            enums.URI_RETRY_RESULT: functools.partial(retry_reports.on_retry_result, enums.URI_RETRY_RESULT),
            enums.URI_RETRY_CALLBACK_RESULT: functools.partial(retry_reports.on_retry_result,
                                                               enums.URI_RETRY_CALLBACK_RESULT),
        }

    def serve(self) -> int:
        """Bind ``host:requested_port`` and start the gRPC server; the bound port."""
        st = self._state
        server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=st.max_workers, thread_name_prefix="snailjob-emu-rpc"),
            options=[("grpc.max_receive_message_length", _MAX_MESSAGE),
                     ("grpc.max_send_message_length", _MAX_MESSAGE),
                     ("grpc.so_reuseport", 0)])
        handler = grpc.unary_unary_rpc_method_handler(
            self._handle,
            request_deserializer=pb2.GrpcSnailJobRequest.FromString,
            response_serializer=pb2.GrpcResult.SerializeToString)
        server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler("UnaryRequest", {"unaryRequest": handler}),))
        bound = server.add_insecure_port(f"{st.host}:{st.requested_port}")
        if not bound:
            raise RuntimeError(f"could not bind {st.host}:{st.requested_port}")
        server.start()
        st.server = server
        return int(bound)

    def close(self) -> None:
        """Stop answering (in-flight calls are cancelled)."""
        if self._state.server is not None:
            self._state.server.stop(grace=0).wait(timeout=3.0)

    def _handle(self, request: pb2.GrpcSnailJobRequest, context: grpc.ServicerContext) -> pb2.GrpcResult:
        uri = request.metadata.uri
        headers = dict(request.metadata.headers)
        exchange = Exchange(uri=uri, headers=headers, body=request.body, req_id=request.reqId, at=time.time())
        with self._state.cond:
            self._state.exchanges.append(exchange)
        if not uri.strip():
            self._hold_forever(context)
        self._state.tls.req_id = request.reqId  # some retry-module messages name it
        status, message, data = self._process(uri, headers, request.body)
        text = dumps(data)
        with self._state.cond:
            exchange.status, exchange.message, exchange.data = status, message, text
            self._state.cond.notify_all()
        return pb2.GrpcResult(reqId=request.reqId, status=status, message=message, data=text)

    def _hold_forever(self, context: grpc.ServicerContext) -> NoReturn:
        """The server logs "uri can not be null" and never answers: hold the
        call until the caller gives up (bounded)."""
        finished = threading.Event()
        context.add_callback(finished.set)
        remaining = context.time_remaining()
        limit = _BLANK_URI_HOLD_MAX if remaining is None else min(_BLANK_URI_HOLD_MAX, max(0.0, remaining))
        deadline = time.monotonic() + limit
        while not finished.is_set() and not self._state.stopping.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                break
            finished.wait(min(left, 0.1))
        context.abort(grpc.StatusCode.DEADLINE_EXCEEDED,
                      "SnailJob server never answers a blank uri (emulator gave up)")
        raise AssertionError("unreachable")  # pragma: no cover

    def _process(self, uri: str, headers: Dict[str, str], body: str) -> Tuple[int, str, Any]:
        try:
            args = _parse_args(body)
            self._check_token(headers)
            path = _path_of(uri)
            handler = self._routes.get(path)
            if handler is None:
                raise _Failure(f"No matching handler found. Path:[{path}] method:[{{}}]")
            status, message, data = handler(args, headers)
            return status, message or "", data
        except _Failure as failure:
            return 0, failure.message, failure.data
        except Exception as exc:  # a bug here must not hang the caller
            logger.exception("emulator handler failed for %s", uri)
            return 0, f"{type(exc).__name__}: {exc}", None

    def _check_token(self, headers: Dict[str, str]) -> None:
        group = headers.get("group-name")
        namespace = headers.get("namespace")
        token = headers.get("token")
        if token is None or not token.strip():
            raise _Failure(f"Token authentication failed. [namespace:{_fmt(namespace)} "
                           f"groupName:{_fmt(group)} token:{_fmt(token)}]")
        if group is None:
            raise _Failure("")  # NullPointerException in CacheToken.get: empty message
        if self._transport.expected_token(group, namespace) != token:
            raise _Failure(f"Token authentication failed. [namespace:{_fmt(namespace)} "
                           f"groupName:{_fmt(group)} token:{_fmt(token)}]")

    # -- /beat -----------------------------------------------------------

    def _on_beat(self, args: Optional[List[Any]], headers: Dict[str, str]) -> Tuple[int, str, Any]:
        raw_port = _header(headers, "host-port")
        if raw_port is None:
            raise _Failure("Cannot parse null string: null")
        if not _INT_RE.fullmatch(raw_port):
            raise _Failure(f'For input string: "{raw_port}"')
        port = int(raw_port)
        host_id = _header(headers, "host-id")
        host_ip = _header(headers, "host-ip")
        group = headers.get("group-name", "")
        namespace = headers.get("namespace", "")
        now, mono = time.time(), time.monotonic()
        with self._state.cond:
            self._state.beats.append(RecordedBeat(host_id, host_ip, port, dict(headers), args, now))
            if not host_id or not host_ip:
                self._state.problem(f"/beat without host-id or host-ip (host-id={host_id!r}, host-ip={host_ip!r})")
            elif "@" in host_id:
                self._state.problem(f"host-id {host_id!r} contains '@'")
            key = (namespace, group, host_id or "")
            node = self._state.nodes.get(key)
            if node is not None and self._transport.expired(node):
                del self._state.nodes[key]
                node = None
            if node is None:
                node = ClientNode(host_id=host_id or "", host_ip=host_ip or "", host_port=port,
                                  namespace=namespace, group=group,
                                  labels=self._parse_labels(_header(headers, "label"), host_id),
                                  headers=dict(headers), first_beat=now, last_beat=now,
                                  registered=self._state.register_delay <= 0, last_beat_monotonic=mono)
                self._state.nodes[key] = node
                if not node.registered:
                    self._state.schedule(self._state.register_delay, functools.partial(self._register, node))
            else:
                node.last_beat, node.last_beat_monotonic = now, mono
                node.beat_count += 1
                node.headers = dict(headers)
                node.alive = True
                if node.address != f"{host_ip}:{port}":
                    self._state.problem(f"node {host_id} beat from {host_ip}:{port} but is registered at "
                                  f"{node.address}; the server keeps the first address")
            self._state.cond.notify_all()
        return 1, _MSG_BEAT_OK, "PONG"

    def _register(self, node: ClientNode) -> None:
        with self._state.cond:
            node.registered = True
            self._state.cond.notify_all()

    def _parse_labels(self, raw: Optional[str], host_id: Optional[str]) -> Dict[str, str]:
        if raw is None or not raw.strip():
            return {}
        try:
            value = json.loads(raw)
        except ValueError:
            value = None
        if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
            self._state.problem(f"node {host_id}: label header {raw!r} is not a JSON object of strings "
                          "(the server's node refresh would fail)")
            return {}
        return dict(value)

    # -- /register/job/executors ---------------------------------------------

    def _on_register_executors(self, args: Optional[List[Any]],
                               headers: Dict[str, str]) -> Tuple[int, str, Any]:
        first = _arg0(args)
        if first is None:
            return 0, _MSG_REGISTER_NULL, False
        if not isinstance(first, list):
            raise _Failure("Cannot deserialize value of type `java.util.ArrayList` from "
                           f"{type(first).__name__}")
        names: List[str] = []
        for item in first:
            if not isinstance(item, dict):
                raise _Failure("Cannot deserialize value of type `JobExecutorRequest` from "
                               f"{type(item).__name__}")
            name = item.get("executorInfo")
            if isinstance(name, str) and name:
                names.append(name)
        with self._state.cond:
            self._state.executors.update(names)
            self._state.cond.notify_all()
        return 1, _MSG_REGISTER_OK, True

    # -- /sync/version -------------------------------------------------------

    def _on_sync_version(self, args: Optional[List[Any]], headers: Dict[str, str]) -> Tuple[int, str, Any]:
        return 1, "", self._state.config

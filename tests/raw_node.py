"""A raw fake client node for emulator tests, written directly on
``snailjob.wire`` (the gRPC message types and the JSON codec), never on
``snailjob.Client``: a gRPC server answering the emulator's calls
(``_serve``, defined by subclasses) and a channel to the emulator."""

from __future__ import annotations

import itertools
import json
import threading
import time
from concurrent import futures
from typing import Any, Callable, Dict, List, Optional

import grpc

from snailjob.testing import ServerEmulator
from snailjob.wire import enums
from snailjob.wire import snailjob_pb2 as pb2
from snailjob.wire.codec import encode_body

METHOD = "/UnaryRequest/unaryRequest"


class RawNode:
    def __init__(self, emu: ServerEmulator, host_id: str,
                 labels: Optional[Dict[str, str]] = None) -> None:
        self.emu = emu
        self.host_id = host_id
        self.labels = labels if labels is not None else {"state": "up", "env": "test"}
        self.errors: List[BaseException] = []
        self._lock = threading.Lock()
        self._req_ids = itertools.count(1)
        self._workers = futures.ThreadPoolExecutor(max_workers=8)
        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
        handler = grpc.unary_unary_rpc_method_handler(
            self._serve,
            request_deserializer=pb2.GrpcSnailJobRequest.FromString,
            response_serializer=pb2.GrpcResult.SerializeToString)
        self._server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler("UnaryRequest", {"unaryRequest": handler}),))
        self.port = self._server.add_insecure_port("127.0.0.1:0")
        self._server.start()
        self._channel = grpc.insecure_channel(emu.address)
        self._call = self._channel.unary_unary(
            METHOD,
            request_serializer=pb2.GrpcSnailJobRequest.SerializeToString,
            response_deserializer=pb2.GrpcResult.FromString)

    def close(self) -> None:
        """Stop serving, let running behaviours finish their reports, close."""
        self._server.stop(grace=0).wait(2.0)
        self._workers.shutdown(wait=True, cancel_futures=True)
        self._channel.close()

    # -- client -> server ---------------------------------------------------

    def headers(self, **override: str) -> Dict[str, str]:
        headers = {
            "token": self.emu.token,
            "group-name": self.emu.group,
            "namespace": self.emu.namespace,
            "host-id": self.host_id,
            "host-ip": "127.0.0.1",
            "host-port": str(self.port),
            "executor-type": "2",
            "system-version": "test",
            "label": json.dumps(self.labels),
        }
        headers.update(override)
        return headers

    def send(self, uri: str, body: str, headers: Optional[Dict[str, str]] = None,
             timeout: float = 3.0, req_id: Optional[int] = None) -> pb2.GrpcResult:
        request = pb2.GrpcSnailJobRequest(
            reqId=next(self._req_ids) if req_id is None else req_id,
            metadata=pb2.Metadata(uri=uri, headers=self.headers() if headers is None else headers),
            body=body)
        result: pb2.GrpcResult = self._call(request, timeout=timeout)
        return result

    def send_args(self, uri: str, *args: Any) -> pb2.GrpcResult:
        return self.send(uri, encode_body(*args))

    def beat(self) -> pb2.GrpcResult:
        return self.send_args(enums.URI_BEAT, "PING", self.labels)

    # -- server -> client -----------------------------------------------------

    def _serve(self, request: pb2.GrpcSnailJobRequest, context: grpc.ServicerContext) -> pb2.GrpcResult:
        raise NotImplementedError

    def _run(self, behaviour: Callable[[Any, Dict[str, Any]], Any], req: Dict[str, Any]) -> None:
        try:
            behaviour(self, req)
        except BaseException as exc:  # surfaced by the tests through .errors
            self.errors.append(exc)


def eventually(predicate: Callable[[], Any], timeout: float = 2.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.01)

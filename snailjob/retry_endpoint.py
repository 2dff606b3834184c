"""The calls the retry server makes to a client, and their outcomes.

``RetryEndpoint`` answers ``/retry/dispatch/v1`` (replay a ``@retryable``
call), ``/retry/callback/v1`` (run its completion callback),
``/retry/stop/v1``, ``/retry/generate/idempotent-id/v1`` and
``/retry/deserialize/args/v1`` (the console's "add retry" and argument
display).  Replays and callbacks run on the client's dispatcher as
``RetryWork``; their outcomes become ``/report/retry/dispatch/result`` and
``/report/retry/callback/result`` reports, queued through the client's
result outbox.  A refused call is answered with ``status`` 0 and a message
that names the problem; nothing runs.
"""

from __future__ import annotations

import functools
import json
import logging
import threading
from collections import OrderedDict
from typing import Any, Callable, Dict, Optional, Protocol, Tuple, Union, cast

from pydantic import ValidationError

from snailjob.context import RetryContext, TaskServices
from snailjob.dispatcher import Dispatcher, DispatcherFull
from snailjob.errors import RetrySerializationError, SnailJobError
from snailjob.retry import Retryable, RetryCall, StopRetry
from snailjob.retry_args import SERIALIZER_NAME
from snailjob.retry_registry import RetryRegistry
from snailjob.retry_work import RetryOutcome, RetryWork
from snailjob.settings import Settings
from snailjob.threads import StopEvent
from snailjob.transport import Reply
from snailjob.wire import enums
from snailjob.wire.codec import BodyError, decode_body, encode_body, first_object, short, summarize
from snailjob.wire.models import (
    DispatchCallbackResultRequest,
    DispatchRetryRequest,
    DispatchRetryResultRequest,
    GenerateRetryIdempotentIdRequest,
    RetryArgsDeserializeRequest,
    RetryCallbackRequest,
    StopRetryRequest,
)
from snailjob.work import Work

logger = logging.getLogger(__name__)

_STOPPED_MEMORY = 4096  # retries a StopRetry ended, remembered to answer their later replays


class EndpointReports(TaskServices, Protocol):
    """What the endpoint needs of its node's reports (``reporting.Reports``)."""

    def queue_result(self, work: Work, uri: str, body: str, timeout: Optional[int], describe: str) -> None: ...

    def discard_results(self, key: Any) -> None: ...


class RetryEndpoint:
    def __init__(self, registry: RetryRegistry, dispatcher: Dispatcher, settings: Settings,
                 reports: EndpointReports, accepting: Callable[[], bool]) -> None:
        self.registry = registry
        self._dispatcher = dispatcher
        self._settings = settings
        self._reports = reports
        self._accepting = accepting
        self._lock = threading.Lock()
        self._stopped: OrderedDict[int, str] = OrderedDict()  # retryId -> the StopRetry text
        self.handlers: Dict[str, Callable[[str], Reply]] = {
            enums.URI_RETRY_DISPATCH: self.dispatch,
            enums.URI_RETRY_CALLBACK: self.callback,
            enums.URI_RETRY_STOP: self.stop,
            enums.URI_RETRY_IDEMPOTENT_ID: self.idempotent_id,
            enums.URI_RETRY_DESERIALIZE: self.deserialize,
        }

    # --- server calls -----------------------------------------------------

    def dispatch(self, body: str) -> Reply:
        """Replay a call: one attempt, under the scene's ``executorTimeout``."""
        accepted = self._accept(DispatchRetryRequest, body, "retry dispatch")
        if isinstance(accepted, Reply):
            return accepted
        request, retryable, args, kwargs = accepted
        ctx = RetryContext(request.sceneName, request.executorName, request.retryId, request.retryTaskId,
                           request.retryCount or 0, "retry", StopEvent(), self._reports)
        func: Callable[[], Any] = retryable.replay(tuple(args), dict(kwargs))
        with self._lock:
            stopped = self._stopped.get(request.retryId) if request.retryId is not None else None
        if stopped is not None:
            func = functools.partial(_raise_stop, stopped)  # answered without running the function
        return self._submit(RetryWork(func, ctx, request.executorTimeout, request))

    def callback(self, body: str) -> Reply:
        """Run ``on_success`` (retry FINISH) or ``on_max_count`` (MAX_COUNT)
        with the decoded call; a retryable without one succeeds at once."""
        accepted = self._accept(RetryCallbackRequest, body, "retry callback")
        if isinstance(accepted, Reply):
            return accepted
        request, retryable, args, kwargs = accepted
        status = request.retryStatus
        call = RetryCall(request.sceneName, request.executorName, tuple(args), dict(kwargs),
                         request.retryId, request.retryTaskId, status)
        callback = (retryable.on_success if status == enums.RetryStatusEnum.FINISH
                    else retryable.on_max_count if status == enums.RetryStatusEnum.MAX_COUNT else None)
        ctx = RetryContext(request.sceneName, request.executorName, request.retryId, request.retryTaskId,
                           0, "callback", StopEvent(), self._reports,
                           retry_status=status)
        func = functools.partial(callback, call) if callback is not None else _no_callback
        return self._submit(RetryWork(func, ctx, request.executorTimeout, request))

    def _submit(self, work: RetryWork) -> Reply:
        try:
            self._dispatcher.submit(work, self.on_outcome)
        except DispatcherFull as exc:
            logger.warning("%s refused: %s", work.describe(), exc)
            return Reply(1, str(exc), False)
        return Reply(1, "", True)

    def stop(self, body: str) -> Reply:
        request = self._parse(StopRetryRequest, body, "retry stop")
        if isinstance(request, Reply):
            return request
        key = f"retry-{request.retryTaskId}"
        self._dispatcher.stop_batch(key, reason="stopped by the server")
        self._reports.discard_results(key)
        return Reply(1, "", True)

    def idempotent_id(self, body: str) -> Reply:
        request = self._parse(GenerateRetryIdempotentIdRequest, body, "idempotent id")
        if isinstance(request, Reply):
            return request
        found = self._find(request.scene, request.executorName, request.serializerName)
        if isinstance(found, str):
            return self._refuse(found)
        try:
            args, kwargs = found.decode_args(request.argsStr)
        except RetrySerializationError as exc:
            return self._refuse(f"idempotent id: {exc}")
        try:
            # from the canonical text, so the id is the one a report of this call carries
            return Reply(1, "", found.idempotent_id_for(args, kwargs, found.encode_args(args, kwargs)))
        except SnailJobError as exc:
            return self._refuse(f"idempotent id of scene {short(request.scene, 64)}: {exc}")
        except Exception as exc:  # the user's idempotent_id function failed
            return self._refuse(f"idempotent id function of {found.executor_name} raised "
                                f"{type(exc).__name__}: {short(str(exc), 200)}")

    def deserialize(self, body: str) -> Reply:
        request = self._parse(RetryArgsDeserializeRequest, body, "deserialize")
        if isinstance(request, Reply):
            return request
        found = self._find(request.scene, request.executorName, request.serializerName)
        if isinstance(found, str):
            return self._refuse(found)
        try:
            args, kwargs = found.decode_args(request.argsStr)
            return Reply(1, "", json.loads(found.encode_args(args, kwargs)))
        except SnailJobError as exc:
            return self._refuse(f"deserialize: {exc}")

    # --- outcomes ---------------------------------------------------------

    def on_outcome(self, work: RetryWork, outcome: RetryOutcome) -> None:
        """Queue the report of a replay or callback that ran to its end."""
        ctx, req, s = work.context, work.request, self._settings
        if outcome.stop and ctx.retry_id is not None:
            with self._lock:
                self._stopped[ctx.retry_id] = outcome.exception or "StopRetry"
                while len(self._stopped) > _STOPPED_MEMORY:
                    self._stopped.popitem(last=False)
        common: Dict[str, Any] = dict(
            namespaceId=req.namespaceId or s.snail_namespace, groupName=req.groupName or s.snail_group_name,
            sceneName=ctx.scene, retryId=ctx.retry_id, retryTaskId=ctx.retry_task_id,
            exceptionMsg=outcome.exception)
        if ctx.kind == "retry":
            payload: Any = DispatchRetryResultRequest(taskStatus=outcome.status, result=outcome.result, **common)
            uri = enums.URI_RETRY_RESULT
        else:
            payload = DispatchCallbackResultRequest(taskStatus=outcome.status, **common)
            uri = enums.URI_RETRY_CALLBACK_RESULT
        self._reports.queue_result(work, uri, encode_body(payload.to_wire()), work.timeout, f"{work.describe()} result")

    # --- helpers ----------------------------------------------------------

    def _find(self, scene: str, executor_name: str, serializer: Optional[str]) -> Union[Retryable[Any, Any], str]:
        """The retryable a server call names, or why there is none."""
        if serializer and serializer != SERIALIZER_NAME:
            return (f"serializer {short(serializer, 40)} is not supported by the Python client "
                    f"(it reads {SERIALIZER_NAME!r}: a JSON array with one value per parameter)")
        retryable = self.registry.get(scene, executor_name)
        if retryable is None:
            known = ", ".join(f"{s}/{e}" for s, e in self.registry.names()) or "none"
            return (f"no retryable for scene {short(scene, 64)} and executor {short(executor_name)} "
                    f"on this client (registered: {short(known, 300)})")
        return cast("Retryable[Any, Any]", retryable)  # the registry holds only Retryables

    def _parse(self, model: Any, body: str, what: str) -> Any:
        """``model`` from the body, or a refusal ``Reply``."""
        try:
            return model.model_validate(first_object(decode_body(body), what))
        except BodyError as exc:
            return self._refuse(f"invalid {what} request: {exc}")
        except ValidationError as exc:
            return self._refuse(f"invalid {what} request: {summarize(exc)}")

    def _accept(self, model: Any, body: str,
                what: str) -> Union[Reply, Tuple[Any, Retryable[Any, Any], Any, Any]]:
        """A replay or callback to run: ``(request, retryable, args, kwargs)``,
        or the refusal ``Reply`` (bad body, shutting down, unknown retryable,
        undecodable arguments)."""
        request = self._parse(model, body, what)
        if isinstance(request, Reply):
            return request
        if not self._accepting():
            return self._refuse("this client is shutting down")
        found = self._find(request.sceneName, request.executorName, request.serializerName)
        if isinstance(found, str):
            return self._refuse(found)
        try:
            args, kwargs = found.decode_args(request.argsStr)
        except SnailJobError as exc:  # RetrySerializationError, or an annotation that cannot resolve
            return self._refuse(f"{what} {request.retryTaskId}: {exc}")
        return request, found, args, kwargs

    @staticmethod
    def _refuse(message: str) -> Reply:
        logger.warning("retry call refused: %s", message)
        return Reply(0, message, False)


def _raise_stop(text: str) -> None:
    raise StopRetry(f"{text.split(': ', 1)[-1]} (an earlier replay of this retry raised StopRetry)")


def _no_callback() -> None:
    """The completion callback of a retryable that declares none."""

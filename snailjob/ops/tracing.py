"""OpenTelemetry spans for job tasks (extra ``otel``).

``Tracing(client)`` (or ``Tracing(client, tracer_provider=...)``) makes one
span per task, named ``snailjob <executor>``, current while the job runs, so
the job's own spans (database calls, HTTP requests) nest under it.  The
span's attributes: ``snailjob.job_id``, ``snailjob.batch_id``,
``snailjob.task_id``, ``snailjob.executor``, ``snailjob.task_type``,
``snailjob.task_name``, ``snailjob.retry_count``, ``snailjob.group``,
``snailjob.namespace``, ``snailjob.workflow_batch_id``, ``snailjob.outcome``;
a failed task has status ERROR and the exception recorded.

Every task of one batch is in one trace, on every node: the trace id and the
parent span id are derived from the namespace and the batch id (the server
propagates no trace context).  So a map task, its sub-tasks, the reduce and
the merge of one batch appear together, each span a child of the batch's
shared (never exported) span context.  The
dispatch does not say which task emitted a sub-task, so a sub-task's span is
a sibling of its parent's, not its child.

Exporting is the application's business: configure a ``TracerProvider``
with the exporter you use (OTLP, Jaeger, console) before starting the
client, or pass one here.
"""

from __future__ import annotations

import hashlib
from typing import Any, Dict, Optional, Tuple

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import NonRecordingSpan, SpanContext, SpanKind, Status, StatusCode, TraceFlags

from snailjob._version import __version__
from snailjob.observe import FAILURE, TaskInfo


def batch_span_context(namespace: str, batch_id: int) -> SpanContext:
    """The remote parent every task span of a batch shares (deterministic)."""
    digest = hashlib.sha256(f"snailjob:{namespace}:{batch_id}".encode()).digest()
    trace_id = int.from_bytes(digest[:16], "big") or 1
    span_id = int.from_bytes(digest[16:24], "big") or 1
    return SpanContext(trace_id=trace_id, span_id=span_id, is_remote=True,
                       trace_flags=TraceFlags(TraceFlags.SAMPLED))


class Tracing:
    """A task observer that makes each task a span."""

    def __init__(self, client: Any = None, tracer_provider: Any = None) -> None:
        self.tracer = trace.get_tracer("snailjob", __version__, tracer_provider=tracer_provider)
        if client is not None:
            client.add_observer(self)

    def task_started(self, task: TaskInfo) -> Tuple[Any, object]:
        parent = trace.set_span_in_context(NonRecordingSpan(batch_span_context(task.namespace, task.batch_id)))
        attributes: Dict[str, Any] = {
            "snailjob.job_id": task.job_id, "snailjob.batch_id": task.batch_id, "snailjob.task_id": task.task_id,
            "snailjob.executor": task.executor, "snailjob.task_type": task.task_type,
            "snailjob.retry_count": task.retry_count, "snailjob.group": task.group,
            "snailjob.namespace": task.namespace,
        }
        if task.task_name:
            attributes["snailjob.task_name"] = task.task_name
        if task.workflow_batch_id:
            attributes["snailjob.workflow_batch_id"] = task.workflow_batch_id
        span = self.tracer.start_span(f"snailjob {task.executor}", context=parent, kind=SpanKind.CONSUMER,
                                      attributes=attributes)
        token = otel_context.attach(trace.set_span_in_context(span))
        return span, token

    def task_finished(self, task: TaskInfo, state: Any, outcome: str, duration: float,
                      error: Optional[BaseException]) -> None:
        span, token = state
        try:
            span.set_attribute("snailjob.outcome", outcome)
            if error is not None:
                span.record_exception(error)
            if outcome == FAILURE:
                span.set_status(Status(StatusCode.ERROR, f"{type(error).__name__}: {error}" if error else None))
        finally:
            span.end()
            otel_context.detach(token)

"""Prometheus metrics of one client (extra ``prometheus``: prometheus-client).

``Metrics(client)`` observes every task (``Client.add_observer``) and reads
the rest from ``client.stats()`` at each scrape.  It keeps its own
``CollectorRegistry`` (``.registry``), so several clients in one process, or
in one test run, never collide; ``render()`` is what ``/metrics`` serves.

Series (every name starts with ``snailjob_``):

- ``tasks_started_total{executor, task_type}``
- ``tasks_finished_total{executor, task_type, outcome}`` (success, failure, stopped)
- ``task_duration_seconds{executor, task_type}`` (histogram)
- ``tasks_running`` (queued or running on this node), ``batches_active``
- ``results_pending``, ``results_held`` (waiting after a failed attempt),
  ``result_delivery_retries_total``, ``results_delivered_total``,
  ``results_late_total``, ``results_dropped_total``
- ``heartbeat_failures_total``, ``server_up`` (0/1), ``registered`` (0/1)
- ``log_entries_dropped_total``, ``log_entries_shipped_total``
- ``alarms_sent_total``, ``alarms_failed_total``, ``alarms_dropped_total``,
  ``alarms_rate_limited_total`` (client-side alarms, docs/alarms.md)

Only executor names and task types are labels (bounded sets); ids never are.
"""

from __future__ import annotations

from typing import Any, Iterator, Optional, Tuple

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from snailjob.observe import TaskInfo

_BUCKETS = (0.005, 0.025, 0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600)

# (stats key, metric name, help, kind)
_FROM_STATS = (
    ("tasks_active", "snailjob_tasks_running", "Tasks queued or running on this node.", "gauge"),
    ("batches_active", "snailjob_batches_active", "Batches with work on this node.", "gauge"),
    ("threads_busy", "snailjob_threads_busy", "Threads running tasks (at most SNAIL_MAX_RUNNING).", "gauge"),
    ("tasks_queued", "snailjob_tasks_queued", "Thread tasks accepted and waiting to start.", "gauge"),
    ("tasks_refused", "snailjob_tasks_refused", "Dispatches refused because the node was full.", "counter"),
    ("queued_bytes", "snailjob_queued_argument_bytes",
     "Characters of arguments held by waiting tasks (at most SNAIL_MAX_QUEUED_BYTES).", "gauge"),
    ("inbound_refused", "snailjob_inbound_refused", "Inbound calls refused for their SJ-TOKEN.", "counter"),
    ("inbound_evicted", "snailjob_inbound_evicted",
     "Inbound calls ended while waiting for their message, to make room for newer ones.", "counter"),
    ("inbound_timed_out", "snailjob_inbound_timed_out",
     "Inbound calls ended because their message did not come within 10 s.", "counter"),
    ("inbound_acceptors", "snailjob_inbound_acceptors",
     "Extra requests for new calls kept pending (SNAIL_INBOUND_ACCEPTORS; 0: grpcio's own only).", "gauge"),
    ("results_pending", "snailjob_results_pending", "Task results not yet delivered.", "gauge"),
    ("results_held", "snailjob_results_held", "Task results waiting for the server after a failed attempt.",
     "gauge"),
    ("delivery_retries", "snailjob_result_delivery_retries", "Failed attempts to deliver a task result.",
     "counter"),
    ("results_delivered", "snailjob_results_delivered", "Task results the server accepted.", "counter"),
    ("results_late", "snailjob_results_late", "Task results delivered after a failed attempt.", "counter"),
    ("results_dropped", "snailjob_results_dropped", "Task results given up (expired or over the queue limit).",
     "counter"),
    ("heartbeat_failures", "snailjob_heartbeat_failures", "Heartbeats that failed or were refused.", "counter"),
    ("logs_dropped", "snailjob_log_entries_dropped", "Job-log entries dropped (buffer full or refused).",
     "counter"),
    ("logs_shipped", "snailjob_log_entries_shipped", "Job-log entries the server accepted.", "counter"),
    ("alarms_sent", "snailjob_alarms_sent", "Client-side alarm messages a receiver took.", "counter"),
    ("alarms_failed", "snailjob_alarms_failed", "Client-side alarm messages that did not go out.", "counter"),
    ("alarms_dropped", "snailjob_alarms_dropped", "Client-side alarm messages dropped (queue full, shutdown).",
     "counter"),
    ("alarms_rate_limited", "snailjob_alarms_rate_limited",
     "Client-side alarm messages held back by SNAIL_ALARM_RATE_LIMIT.", "counter"),
)


class Metrics:
    """Task metrics (an observer) plus the client's counters, in one registry."""

    def __init__(self, client: Any, registry: Optional[CollectorRegistry] = None) -> None:
        self.client = client
        self.registry = registry or CollectorRegistry()
        labels = ("executor", "task_type")
        self.started = Counter("snailjob_tasks_started", "Tasks started on this node.", labels,
                               registry=self.registry)
        self.finished = Counter("snailjob_tasks_finished", "Tasks ended on this node, by outcome.",
                                (*labels, "outcome"), registry=self.registry)
        self.duration = Histogram("snailjob_task_duration_seconds", "Time from a task's start to its end.",
                                  labels, buckets=_BUCKETS, registry=self.registry)
        self.registry.register(_StatsCollector(client))
        client.add_observer(self)

    def task_started(self, task: TaskInfo) -> None:
        self.started.labels(task.executor, task.task_type).inc()

    def task_finished(self, task: TaskInfo, state: Any, outcome: str, duration: float,
                      error: Optional[BaseException]) -> None:
        self.finished.labels(task.executor, task.task_type, outcome).inc()
        self.duration.labels(task.executor, task.task_type).observe(duration)

    def render(self) -> Tuple[bytes, str]:
        """The text exposition and its content type."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


class _StatsCollector:
    """Reads ``client.stats()`` once per scrape."""

    def __init__(self, client: Any) -> None:
        self.client = client

    def describe(self) -> list:
        return []  # collected on demand; no fixed description needed

    def collect(self) -> Iterator[Any]:
        stats = self.client.stats()
        for key, name, text, kind in _FROM_STATS:
            family = GaugeMetricFamily(name, text) if kind == "gauge" else CounterMetricFamily(name, text)
            family.add_metric([], float(stats.get(key, 0)))
            yield family
        for name, text, value in (("snailjob_server_up", "1 while the last heartbeat reached the server.",
                                   self.client.server_up),
                                  ("snailjob_registered", "1 once the executors are registered.",
                                   self.client.registered)):
            gauge = GaugeMetricFamily(name, text)
            gauge.add_metric([], 1.0 if value else 0.0)
            yield gauge

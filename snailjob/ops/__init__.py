"""Operations surfaces above the client: health endpoints, Prometheus
metrics (extra ``prometheus``) and OpenTelemetry tracing (extra ``otel``).

They use only the client's public API (``health()``, ``stats()``,
``add_observer()``); nothing here is imported by the client itself, and the
optional dependencies are imported only when their feature is used.
"""

from snailjob.ops.health import HealthServer, serve_health, start_operations

__all__ = ["HealthServer", "serve_health", "start_operations"]

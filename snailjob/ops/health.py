"""HTTP endpoints for operations: ``/livez``, ``/readyz``, ``/stats``, ``/metrics``.

Standard library only (``http.server`` on a daemon thread); it reads the
client through its public API (``health()``, ``stats()``) and never blocks
it.  ``/metrics`` serves the Prometheus text format when prometheus-client is
installed (``pip install "snail-job-python[prometheus]"``) and a ``metrics``
object was given; otherwise it answers 501 with how to enable it.
"""

from __future__ import annotations

import json
import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Optional, Tuple

logger = logging.getLogger(__name__)

_ENABLE_METRICS = ('metrics need the prometheus extra: pip install "snail-job-python[prometheus]" '
                   "(then client_main() and `snailjob run` serve them here)\n")


class HealthServer:
    """Serves one client's health on ``host:port`` (port 0: a free one, see ``.port``)."""

    def __init__(self, client: Any, port: int, host: str = "0.0.0.0", metrics: Any = None) -> None:
        self.client = client
        self.metrics = metrics  # an ops.metrics.Metrics, or None
        handler = _handler_for(self)
        family_host = host.strip("[]")
        server_class = _V6Server if ":" in family_host else ThreadingHTTPServer
        self._httpd = server_class((family_host, port), handler)
        self._httpd.daemon_threads = True
        self.port = int(self._httpd.server_address[1])
        self.host = family_host
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.5},
                                        name="snailjob-health", daemon=True)
        self._closed = False

    def start(self) -> HealthServer:
        self._thread.start()
        logger.info("health endpoints on http://%s:%d (/livez /readyz /stats /metrics)",
                    f"[{self.host}]" if ":" in self.host else self.host, self.port)
        return self

    def close(self) -> None:
        """Stop serving; idempotent."""
        if self._closed:
            return
        self._closed = True
        if self._thread.is_alive():
            self._httpd.shutdown()
        self._httpd.server_close()

    # --- answers ------------------------------------------------------------

    def answer(self, path: str) -> Tuple[int, str, bytes]:
        """(status, content type, body) for a GET of ``path``."""
        path = path.split("?", 1)[0].rstrip("/") or "/"
        if path == "/livez":
            health = self.client.health()
            return _json(200 if health["live"] else 503, _pick(health, "live", "state", "reasons"))
        if path == "/readyz":
            health = self.client.health()
            return _json(200 if health["ready"] else 503, health)
        if path == "/stats":
            return _json(200, {**self.client.stats(), "held_batches": self.client.held_batches(),
                               "health": self.client.health()})
        if path == "/metrics":
            if self.metrics is None:
                return 501, "text/plain; charset=utf-8", _ENABLE_METRICS.encode()
            body, content_type = self.metrics.render()
            return 200, content_type, body
        return 404, "text/plain; charset=utf-8", b"not found: try /livez /readyz /stats /metrics\n"


class _V6Server(ThreadingHTTPServer):
    import socket as _socket

    address_family = _socket.AF_INET6


def _pick(data: dict, *keys: str) -> dict:
    return {k: data[k] for k in keys}


def _json(status: int, data: Any) -> Tuple[int, str, bytes]:
    return status, "application/json", (json.dumps(data, sort_keys=True, default=str) + "\n").encode()


def _handler_for(server: HealthServer) -> Callable[..., BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            try:
                status, content_type, body = server.answer(self.path)
            except Exception:  # a probe must get an answer, never a dropped connection
                logger.exception("health endpoint %s failed", self.path[:100])
                status, content_type, body = 500, "text/plain; charset=utf-8", b"internal error\n"
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            logger.debug("health: " + format, *args)

    return Handler


def serve_health(client: Any, port: int, host: str = "0.0.0.0", metrics: Any = None) -> HealthServer:
    """Start serving ``client``'s health endpoints; returns the started server."""
    return HealthServer(client, port, host, metrics).start()


def metrics_or_none(client: Any) -> Optional[Any]:
    """Prometheus metrics for ``client`` if prometheus-client is installed, else None."""
    try:
        from snailjob.ops.metrics import Metrics
    except ImportError:
        return None
    return Metrics(client)


def start_operations(client: Any) -> Optional[HealthServer]:
    """What ``client_main()`` and ``snailjob run`` add to a client: when
    ``SNAIL_HEALTH_PORT`` is set, the health endpoints, with Prometheus
    metrics if prometheus-client is installed. None when the port is unset."""
    settings = client.settings
    if settings.snail_health_port is None:
        return None
    return serve_health(client, settings.snail_health_port, settings.snail_health_host,
                        metrics_or_none(client))

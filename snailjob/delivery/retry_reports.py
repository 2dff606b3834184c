"""``RetryReporter``: calls handed to the retry server (``/batch/report``),
one call per scene, kept in the outbox file when there is one.
"""

from __future__ import annotations

import json
import logging
from typing import Any, Dict, List, Optional

from snailjob.delivery.shipper import BufferedShipper
from snailjob.delivery.store import OutboxStore
from snailjob.transport import Reply, Transport
from snailjob.wire import enums
from snailjob.wire.codec import clean

logger = logging.getLogger("snailjob.delivery")  # the name its lines have always had


class RetryReporter(BufferedShipper):
    """Calls handed to the server for ``/batch/report``, one call per scene
    (the server refuses a whole call when one scene is unknown).  A report
    is kept and re-sent until the server answers; one it refuses (unknown
    scene, group without automatic scene creation) is logged with the
    server's reason and not sent again.  With a ``store`` (``SNAIL_OUTBOX_PATH``)
    every report is written to the file when queued and deleted when done
    with, so reports not yet accepted survive a restart or a killed process."""

    uri = enums.URI_RETRY_REPORT
    what = "retry reports"
    thread_name = "snailjob-retry-reports"

    def __init__(self, transport: Transport, rpc_timeout: float, parcel_size: int = 50,
                 interval: float = 1.0, max_buffer: int = 10000, store: Optional[OutboxStore] = None) -> None:
        super().__init__(transport, rpc_timeout, parcel_size, interval, max_buffer)
        self._store = store
        self._rows: Dict[int, int] = {}  # id(entry) -> row in the store
        self.restored = 0

    def start(self) -> None:
        """Restore reports kept in the store; the sending thread starts with
        the first report, so a client without retries runs no extra thread."""
        if self._store is not None:
            for row, text in self._store.load_reports():
                entry = json.loads(text)
                self._rows[id(entry)] = row
                self._queue(entry)
                self.restored += 1
            if self.restored:
                logger.info("restored %d undelivered retry report(s) from %s", self.restored, self._store.path)

    def offer(self, entry: Dict[str, Any]) -> bool:
        if self._store is not None:
            with self._cond:
                if self._closed:
                    return False
            self._rows[id(entry)] = self._store.add_report(json.dumps(entry))
        return self._queue(entry)

    def _queue(self, entry: Dict[str, Any]) -> bool:
        with self._cond:
            if self._thread is None and not self._closed:
                super().start()
        return super().offer(entry)

    def count_sent(self, count: int) -> None:
        """Reports sent by the caller's thread (``Retryable(report_timeout=...)``)."""
        with self._cond:
            self.shipped += count

    def kept_note(self) -> str:
        return f"; kept in {self._store.path}" if self._store is not None else ""

    def forget(self, entries: List[Dict[str, Any]]) -> None:
        if self._store is None:
            return
        rows = [r for r in (self._rows.pop(id(e), None) for e in entries) if r is not None]
        if rows:
            try:
                self._store.remove_reports(rows)
            except Exception:  # sqlite3.Error: the report was handled, the file is stale
                logger.exception("could not update the outbox file")

    def split(self, parcel: List[Dict[str, Any]]) -> List[List[Dict[str, Any]]]:
        scenes: Dict[Any, List[Dict[str, Any]]] = {}
        for entry in parcel:
            scenes.setdefault(entry.get("sceneName"), []).append(entry)
        return list(scenes.values())

    def accepted(self, reply: Reply) -> bool:
        return reply.accepted

    def on_refused(self, part: List[Dict[str, Any]], reply: Reply) -> None:
        ids = ", ".join(str(e.get("idempotentId")) for e in part[:5])
        logger.error("server refused %d retry report(s) of scene %s (idempotent ids %s%s): %s",
                     len(part), part[0].get("sceneName"), ids, "..." if len(part) > 5 else "",
                     clean(reply.message) or "no reason given")
        self.on_problem(f"the server refused {len(part)} retry report(s) of scene {part[0].get('sceneName')} "
                        f"(idempotent ids {ids}{'...' if len(part) > 5 else ''}): "
                        f"{clean(reply.message) or 'no reason given'}")

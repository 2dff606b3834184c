"""``LogShipper``: job and retry log entries for the server, in parcels of
``SNAIL_LOG_REMOTE_BUFFER_SIZE`` entries or every ``SNAIL_LOG_REMOTE_INTERVAL``
seconds.
"""

from __future__ import annotations

from typing import Any, Dict, List

from snailjob.delivery.shipper import BufferedShipper
from snailjob.transport import Reply
from snailjob.wire import enums


class LogShipper(BufferedShipper):
    """Job and retry log entries for ``/batch/server/report/log``.  The
    sending thread starts with the client, not with the first entry: that
    entry is often logged by a job at the moment it is stopped, and a thread
    start inside a job can be cut short by the job's interruption."""

    uri = enums.URI_REPORT_LOG
    what = "log entries"
    thread_name = "snailjob-logs"

    def on_refused(self, part: List[Dict[str, Any]], reply: Reply) -> None:
        with self._cond:
            self.dropped += len(part)
        super().on_refused(part, reply)


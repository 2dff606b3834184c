"""Outbound queues: task results, job logs and retry reports, delivered in
the background with deadlines and bounded retries, so that job threads never
wait on the network.

- ``backoff``: the pause between attempts, and ``call_with_retry``, the
  synchronous form used by ``mr_do_map``.
- ``outbox``: ``ResultOutbox`` keeps results until the server accepts them
  or the retry window (``SNAIL_REPORT_RETRY_SECONDS``) runs out.
- ``shipper``: ``BufferedShipper`` ships entries in parcels from a bounded
  buffer and counts what it had to drop; ``logs``: ``LogShipper`` for log
  entries (50 entries or 5 s); ``retry_reports``: ``RetryReporter`` for
  calls handed to the retry server.
- ``store``: ``OutboxStore``, the ``SNAIL_OUTBOX_PATH`` file that results and
  retry reports are kept in until delivered.

Imports flow one way: ``backoff`` and ``store`` first, the queues above
them, this module last; nothing here imports the client.
"""

from snailjob.delivery.backoff import backoff, call_with_retry
from snailjob.delivery.logs import LogShipper
from snailjob.delivery.outbox import REPEAT_DELAYS, ResultOutbox
from snailjob.delivery.retry_reports import RetryReporter
from snailjob.delivery.shipper import BufferedShipper
from snailjob.delivery.store import OutboxStore

__all__ = ["REPEAT_DELAYS", "BufferedShipper", "LogShipper", "OutboxStore", "ResultOutbox", "RetryReporter",
           "backoff", "call_with_retry"]

"""Test helpers for SnailJob clients.

``ServerEmulator`` is an in-process fake of the SnailJob server's
client-facing gRPC protocol; the pytest plugin
(``snailjob.testing.pytest_plugin``) provides it as the ``snailjob_emulator``
fixture.
"""

from snailjob.testing.emulator import (
    ClientNode,
    DispatchReply,
    DroppedLogBatch,
    EmulatedBatch,
    EmulatedRetry,
    EmulatedRetryTask,
    EmulatedTask,
    EmulatedWorkflow,
    Exchange,
    OutboundCall,
    RecordedBeat,
    RecordedRequest,
    RetryScene,
    ServerEmulator,
)

__all__ = [
    "ClientNode",
    "DispatchReply",
    "DroppedLogBatch",
    "EmulatedBatch",
    "EmulatedRetry",
    "EmulatedRetryTask",
    "EmulatedTask",
    "EmulatedWorkflow",
    "Exchange",
    "OutboundCall",
    "RecordedBeat",
    "RecordedRequest",
    "RetryScene",
    "ServerEmulator",
]

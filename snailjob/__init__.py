"""snail-job-python: the Python client of the SnailJob job scheduler.

Write jobs as decorated functions, register them, run the client::

    import snailjob as sj

    @sj.job("testJobExecutor")
    def my_job(args: sj.JobArgs) -> sj.ExecuteResult:
        sj.SnailLog.REMOTE.info("params: %s", args.job_params)
        return sj.ExecuteResult.success()

    sj.ExecutorManager.register(my_job)
    sj.client_main()

Importing this package has no side effects: no threads, files or handlers.
"""

import logging as _logging
from typing import TYPE_CHECKING as _TYPE_CHECKING
from typing import Any as _Any

from snailjob._version import __version__
from snailjob.args import (
    JobArgs,
    MapArgs,
    MergeReduceArgs,
    ParamsError,
    ReduceArgs,
    ShardingJobArgs,
    WfContext,
)
from snailjob.client import Client
from snailjob.compat import (
    ExecutorManager,
    SnailContextManager,
    ThreadPoolCache,
    client_main,
    configure_settings,
    get_snailjob_settings,
)
from snailjob.context import RetryContext, TaskContext, current_retry, current_task
from snailjob.errors import (
    ConfigurationError,
    ExecutorRegistrationError,
    MapError,
    NotInJobError,
    OutboxError,
    RetryDefinitionError,
    RetryReportError,
    RetrySerializationError,
    SnailJobError,
    TaskInterrupted,
    TransportError,
)
from snailjob.executors import Executor, ExecutorRegistry, MapExecutor, MapReduceExecutor, job
from snailjob.log import RemoteLogHandler, SnailLog
from snailjob.mapreduce import mr_do_map, mr_do_map_async
from snailjob.retry_registry import RetryRegistry
from snailjob.settings import Settings
from snailjob.wire.enums import ROOT_MAP
from snailjob.wire.models import ExecuteResult

if _TYPE_CHECKING:
    from snailjob.retry import (
        Backoff,
        Propagation,
        Retryable,
        RetryCall,
        RetryResult,
        RetryStrategy,
        StopRetry,
        retryable,
    )

# Loaded on first access, so that a job client does not load them: name -> module.
_LAZY = {name: "snailjob.retry" for name in ("Backoff", "Propagation", "Retryable", "RetryCall", "RetryResult",
                                              "RetryStrategy", "StopRetry", "retryable")}

_logging.getLogger(__name__).addHandler(_logging.NullHandler())

__all__ = [
    "ROOT_MAP",
    "Backoff",
    "Client",
    "ConfigurationError",
    "ExecuteResult",
    "Executor",
    "ExecutorManager",
    "ExecutorRegistrationError",
    "ExecutorRegistry",
    "JobArgs",
    "MapArgs",
    "MapError",
    "MapExecutor",
    "MapReduceExecutor",
    "MergeReduceArgs",
    "NotInJobError",
    "OutboxError",
    "ParamsError",
    "Propagation",
    "ReduceArgs",
    "RemoteLogHandler",
    "RetryCall",
    "RetryContext",
    "RetryDefinitionError",
    "RetryRegistry",
    "RetrySerializationError",
    "RetryStrategy",
    "RetryReportError",
    "RetryResult",
    "Retryable",
    "Settings",
    "ShardingJobArgs",
    "SnailContextManager",
    "SnailJobError",
    "SnailLog",
    "StopRetry",
    "TaskContext",
    "TaskInterrupted",
    "ThreadPoolCache",
    "TransportError",
    "WfContext",
    "__version__",
    "client_main",
    "configure_settings",
    "current_retry",
    "current_task",
    "get_snailjob_settings",
    "job",
    "mr_do_map",
    "mr_do_map_async",
    "retryable",
]


def __getattr__(name: str) -> _Any:
    # 0.1.3 exposed ``snailjob.settings`` (built at import); here it is built
    # on first access.
    if name == "settings":
        return get_snailjob_settings()
    module = _LAZY.get(name)
    if module is not None:
        import importlib

        value = getattr(importlib.import_module(module), name)
        globals()[name] = value  # later lookups do not come here
        return value
    raise AttributeError(f"module 'snailjob' has no attribute {name!r}")


def __dir__() -> "list[str]":
    return sorted(set(globals()) | set(_LAZY))

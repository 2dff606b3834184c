"""The module-level API of snail-job-python 0.1.3, kept for existing programs.

``ExecutorManager`` and ``client_main`` use a default registry that tests can
replace (``ExecutorManager.registry = ExecutorRegistry()``); everything else
delegates to ``Client``.
"""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING, Any, Dict, Optional, Union, cast

from snailjob.client import Client, live_clients
from snailjob.context import current_task, current_task_or_none
from snailjob.executors import Executor, ExecutorRegistry
from snailjob.log import configure_local_logging
from snailjob.retry_registry import RetryRegistry, is_retryable
from snailjob.settings import Settings, env_file_message
from snailjob.wire.models import DispatchJobRequest

if TYPE_CHECKING:
    from snailjob.retry import Retryable

logger = logging.getLogger(__name__)


class ExecutorManager:
    """0.1.3's registry of executors, used by ``client_main()``."""

    registry: ExecutorRegistry = ExecutorRegistry()
    retries: RetryRegistry = RetryRegistry()

    @classmethod
    def register(cls, executor: Union[Executor, Retryable[Any, Any]]) -> None:
        """Register an ``@job`` function, a ``MapExecutor``, a
        ``MapReduceExecutor`` or a ``@retryable`` function;
        ``ExecutorRegistrationError`` / ``RetryDefinitionError`` (both
        ``SnailJobError``) explain a wrong argument or a duplicate name."""
        if is_retryable(executor):
            cls.retries.register(cast("Retryable[Any, Any]", executor))  # live clients share this registry
            return
        cls.registry.register(executor)
        for client in live_clients():
            if client.registry is cls.registry:
                client.register(executor)


class ThreadPoolCache:
    """0.1.3's access to a batch's stop event."""

    @staticmethod
    def get_stop_event(task_batch_id: Optional[int]) -> Optional[threading.Event]:
        """The stop event of batch ``task_batch_id`` on a running client, if
        that client has (or recently had) work of the batch."""
        ctx = current_task_or_none()
        if ctx is not None and ctx.task_batch_id == task_batch_id:
            return ctx.stop_event
        if task_batch_id is None:
            return None
        for client in live_clients():
            event = client.dispatcher.stop_event(task_batch_id)
            if event is not None:
                return event
        return None

    @staticmethod
    def event_is_set(task_batch_id: Optional[int]) -> bool:
        """True once batch ``task_batch_id`` was stopped (from the console, by
        the server's timeout, or by this client's ``executorTimeout``)."""
        event = ThreadPoolCache.get_stop_event(task_batch_id)
        return event is not None and event.is_set()


class SnailContextManager:
    """0.1.3's accessors of the running task (prefer ``snailjob.current_task``)."""

    @staticmethod
    def get_job_context() -> DispatchJobRequest:
        return current_task().request

    @staticmethod
    def get_log_context() -> Dict[str, Any]:
        ctx = current_task()
        return {"jobId": ctx.job_id, "taskBatchId": ctx.task_batch_id, "taskId": ctx.task_id}


_settings_lock = threading.Lock()
_settings: Optional[Settings] = None


def get_snailjob_settings() -> Settings:
    """The settings ``client_main()`` uses, read from the environment and
    ``.env`` on first call (0.1.3 read them at import)."""
    global _settings
    with _settings_lock:
        if _settings is None:
            _settings = Settings.load()
        return _settings


def configure_settings(**overrides: Any) -> Settings:
    """Replace the settings ``client_main()`` uses (fields as in 0.1.3, e.g.
    ``snail_server_host="10.0.0.5"``); the environment fills the rest."""
    global _settings
    with _settings_lock:
        _settings = Settings.load(**overrides)
        return _settings


def client_main(settings: Optional[Settings] = None) -> None:
    """Run a client with the registered executors until SIGINT or SIGTERM.

    Local logging: see ``snailjob.log.configure_local_logging`` (a console
    handler only if the program configured none; a file only if
    ``SNAIL_LOG_LOCAL_FILENAME`` is set).
    """
    settings = settings or get_snailjob_settings()
    configure_local_logging(settings.snail_log_level, settings.snail_log_format,
                            settings.snail_log_local_filename, settings.snail_log_local_backup_count)
    logger.info("%s", env_file_message(settings))
    client = Client(settings, executors=ExecutorManager.registry, retries=ExecutorManager.retries)
    operations = None
    if settings.snail_health_port is not None:  # /livez /readyz /stats /metrics
        from snailjob.ops.health import start_operations  # http.server only when it runs

        operations = start_operations(client)
    try:
        client.run()
    finally:
        if operations is not None:
            operations.close()

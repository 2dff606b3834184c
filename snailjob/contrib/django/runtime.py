"""Settings, executor discovery, connection handling and the in-process client."""

from __future__ import annotations

import atexit
import importlib
import logging
import os
import sys
import threading
from typing import Any, Dict, List, Optional

from django.apps import apps
from django.conf import settings as django_settings
from django.db import close_old_connections

from snailjob.cli.discover import Item, executors_in
from snailjob.client import Client
from snailjob.errors import ConfigurationError
from snailjob.observe import TaskInfo
from snailjob.settings import Settings

logger = logging.getLogger(__name__)

_OWN_KEYS = ("JOBS_MODULE", "IN_PROCESS")
_started: List[Client] = []
_start_lock = threading.Lock()


def snailjob_settings() -> Settings:
    """``Settings`` from ``settings.SNAILJOB`` over the ``SNAIL_*`` environment."""
    config: Dict[str, Any] = dict(getattr(django_settings, "SNAILJOB", None) or {})
    overrides = {}
    for key, value in config.items():
        if key in _OWN_KEYS:
            continue
        field = "snail_" + key.lower()
        if field not in Settings.model_fields:
            raise ConfigurationError(f"settings.SNAILJOB[{key!r}] is not a setting (SNAIL_{key} does not exist; "
                                     f"see CONFIGURATION.md)")
        overrides[field] = value
    return Settings.load(**overrides)


def discover_executors(module_name: Optional[str] = None) -> List[Item]:
    """Executors declared in ``<app>.<module_name>`` of every installed app
    (``SNAILJOB["JOBS_MODULE"]``, default ``jobs``), in app order."""
    name = module_name or (getattr(django_settings, "SNAILJOB", None) or {}).get("JOBS_MODULE", "jobs")
    found: List[Item] = []
    for config in apps.get_app_configs():
        target = f"{config.name}.{name}"
        try:
            module = importlib.import_module(target)
        except ModuleNotFoundError as exc:
            if exc.name == target:
                continue  # this app has no jobs module
            raise
        found += [item for item in executors_in(module) if not any(item is seen for seen in found)]
    return found


class DjangoConnections:
    """A task observer that treats a job like a request: stale connections
    of the job's thread are closed before it starts and after it ends."""

    def task_started(self, task: TaskInfo) -> None:
        if not task.is_async:
            close_old_connections()

    def task_finished(self, task: TaskInfo, state: Any, outcome: str, duration: float,
                      error: Optional[BaseException]) -> None:
        if not task.is_async:
            close_old_connections()


def build_client(settings: Optional[Settings] = None) -> Client:
    """A client with the project's executors and Django's connection handling."""
    client = Client(settings or snailjob_settings(), executors=discover_executors())
    client.add_observer(DjangoConnections())
    return client


def _serving_process() -> bool:
    """True in a process that serves requests: runserver's child (or runserver
    --noreload), or a WSGI/ASGI server that imported the project.  False in the
    autoreloader's watcher and in other management commands (migrate, shell...)."""
    if os.environ.get("RUN_MAIN") == "true":
        return True  # the reloader's child: the process that serves
    if os.path.basename(sys.argv[0]) in ("manage.py", "django-admin", "django-admin.py"):
        return sys.argv[1:2] == ["runserver"] and "--noreload" in sys.argv
    return True


def start_in_process() -> Optional[Client]:
    """Start one client in this process (idempotent); None in the reloader's watcher."""
    with _start_lock:
        if _started:
            return _started[0]
        if not _serving_process():
            logger.debug("autoreloader watcher: the SnailJob client starts in the serving child")
            return None
        client = build_client().start()
        _started.append(client)
        atexit.register(client.stop)
        logger.info("SnailJob client started inside the Django process (development mode)")
        return client

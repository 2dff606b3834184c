"""A SnailJob client inside a Flask app: ``SnailJob(app)`` or ``init_app``.

::

    app = Flask(__name__)
    app.config["SNAILJOB"] = {"GROUP_NAME": "reports"}      # SNAIL_* names without the prefix
    snailjob = SnailJob(app, executors=[send_digest])

Every job runs inside ``app.app_context()``, so ``current_app``, ``g`` and
extensions that use the app context (Flask-SQLAlchemy's session) work in it,
and the context is torn down after the job as after a request.  The client
starts with the app (``init_app``) unless ``SNAILJOB_START`` is false, and is
stopped at interpreter exit or by ``snailjob.stop()``.  Under the debug
reloader only the child that serves requests starts one, never the watcher.

Limits: one client per process; in a server with several worker processes
(gunicorn), each worker starts its own node (give them distinct
``SNAIL_HOST_PORT``s, e.g. ``0``), or run the client as its own process with
``snailjob run`` instead.
"""

from __future__ import annotations

import atexit
import os
import signal
import threading
from typing import Any, Iterable, List, Optional

from flask import Flask

from snailjob.client import Client
from snailjob.errors import ConfigurationError
from snailjob.observe import TaskInfo
from snailjob.settings import Settings


class AppContextObserver:
    """Pushes the app's context around each job (on the job's own thread)."""

    def __init__(self, app: Flask) -> None:
        self.app = app

    def task_started(self, task: TaskInfo) -> Any:
        context = self.app.app_context()
        context.push()
        return context

    def task_finished(self, task: TaskInfo, state: Any, outcome: str, duration: float,
                      error: Optional[BaseException]) -> None:
        state.pop(error)


class SnailJob:
    """The Flask extension; ``client`` is the node once ``init_app`` ran."""

    def __init__(self, app: Optional[Flask] = None, executors: Iterable[Any] = ()) -> None:
        self.executors: List[Any] = list(executors)
        self.client: Optional[Client] = None
        if app is not None:
            self.init_app(app)

    def init_app(self, app: Flask) -> None:
        overrides = {}
        for key, value in (app.config.get("SNAILJOB") or {}).items():
            field = "snail_" + str(key).lower()
            if field not in Settings.model_fields:
                raise ConfigurationError(f"app.config['SNAILJOB'][{key!r}] is not a setting "
                                         f"(SNAIL_{key} does not exist; see CONFIGURATION.md)")
            overrides[field] = value
        self.client = Client(Settings.load(**overrides), executors=self.executors)
        self.client.add_observer(AppContextObserver(app))
        app.extensions["snailjob"] = self
        if app.config.get("SNAILJOB_START", True) and _serving_process(app):
            self.client.start()
            atexit.register(self.stop)
            _drain_on_sigterm(self)

    def stop(self) -> None:
        """Drain and stop the client (idempotent)."""
        if self.client is not None:
            self.client.stop()


def _drain_on_sigterm(extension: SnailJob) -> None:
    """Flask's development server dies on SIGTERM without running atexit
    handlers: where nothing else handles SIGTERM, drain the client first,
    then let the signal end the process as it would have."""
    if threading.current_thread() is not threading.main_thread():
        return
    if signal.getsignal(signal.SIGTERM) not in (signal.SIG_DFL, None):
        return  # the server (gunicorn, ...) has its own handling, which ends in atexit

    def on_sigterm(signum: int, frame: Any) -> None:
        extension.stop()
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGTERM)

    signal.signal(signal.SIGTERM, on_sigterm)


def _serving_process(app: Flask) -> bool:
    """False in the debug reloader's watcher process."""
    if os.environ.get("WERKZEUG_RUN_MAIN") == "true":
        return True
    return not (app.debug and os.environ.get("FLASK_RUN_FROM_CLI") == "true")

"""``snailjob run``: serve a module's executors, and ``--reload`` for development.

``run`` does what ``client_main()`` does, with the executors found by
``snailjob.cli.discover``: local logging, the operations endpoints
(``SNAIL_HEALTH_PORT``), ``Client.run()`` until SIGINT/SIGTERM.

``--reload`` runs ``snailjob run`` (same arguments) as a child process and
restarts it when a ``.py`` file changes under the directories of the named
modules (the top-level package's directory for a dotted name), polling
modification times every 0.5 s.  Limits, on purpose: modules imported from
other directories are not watched; a restart is a full stop (the running
jobs get ``SNAIL_SHUTDOWN_GRACE`` seconds, then the child is killed 10 s
later) and the new node has a new host id; a child that exits on its own is
restarted only after the next change.  It is a development aid, not a
process manager.
"""

from __future__ import annotations

import argparse
import importlib.machinery
import importlib.util
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from types import FrameType
from typing import Dict, List, Optional, Sequence, Tuple

from snailjob.cli.discover import DiscoveryError, UserImportError, discover, split_target
from snailjob.cli.options import settings_overrides
from snailjob.errors import ConfigurationError, SnailJobError, TransportError
from snailjob.log import configure_local_logging
from snailjob.ops.health import start_operations
from snailjob.settings import Settings, env_file_message

logger = logging.getLogger(__name__)

POLL_SECONDS = 0.5
KILL_AFTER = 10.0  # seconds after SNAIL_SHUTDOWN_GRACE before a child that ignores SIGTERM is killed
_SKIP_DIRS = {"__pycache__", "site-packages", "dist-packages", "node_modules"}


def _error(message: str) -> None:
    print(f"snailjob run: {message}", file=sys.stderr)


def run_command(ns: argparse.Namespace, argv: Sequence[str]) -> int:
    """Exit codes: 0 stopped by a signal, 1 the module raised at import or the
    client could not start, 2 usage or configuration error."""
    overrides = settings_overrides(ns)
    try:
        settings = Settings.load(**overrides)
    except ConfigurationError as exc:
        _error(str(exc))
        return 2
    if ns.reload:
        return Supervisor([arg for arg in argv if arg != "--reload"], ns.targets, settings).run()
    return run_once(ns.targets, settings, bool(overrides))


class _EarlyStop(BaseException):
    """A signal arrived before the client took over signal handling."""


def run_once(targets: Sequence[str], settings: Settings, has_overrides: bool = False) -> int:
    """Import, discover, and run one client until a signal; see ``run_command``."""
    finished = threading.Event()

    def early(signum: int, frame: Optional[FrameType]) -> None:
        # Client.run() replaces this handler while it runs; before it, a signal ends the command
        if not finished.is_set():
            raise _EarlyStop()

    previous = {sig: signal.signal(sig, early) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        return _run(targets, settings, has_overrides, finished)
    except _EarlyStop:
        logger.info("signal received before the client started: exiting")
        return 0
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _run(targets: Sequence[str], settings: Settings, has_overrides: bool, finished: threading.Event) -> int:
    try:
        found = discover(targets)
    except UserImportError as exc:
        sys.stderr.write(exc.text)
        _error(f"importing {exc.module} raised (traceback above)")
        return 1
    except SnailJobError as exc:  # DiscoveryError, ConfigurationError, a bad executor definition
        _error(str(exc))
        return 2
    if found.client is not None:
        if has_overrides:
            _error("warning: the settings options are ignored: the Client object has its own settings")
        settings = found.client.settings
    configure_local_logging(settings.snail_log_level, settings.snail_log_format,
                            settings.snail_log_local_filename, settings.snail_log_local_backup_count)
    logger.info("%s", env_file_message(settings))
    client = found.build_client(settings)
    if client.running:
        _error("the Client object was already started at import; let `snailjob run` start it")
        return 2
    jobs, retryables = found.job_items(), len(found.items) - len(found.job_items())
    logger.info("snailjob run: %d executor(s)%s from %s: %s", len(jobs),
                f" and {retryables} retryable(s)" if retryables else "",
                ", ".join(m.__name__ for m in found.modules), ", ".join(found.names()))
    try:
        operations = start_operations(client)
    except OSError as exc:
        _error(f"cannot serve the health endpoints on port {settings.snail_health_port}: {exc} "
               "(choose another SNAIL_HEALTH_PORT)")
        return 1
    try:
        try:
            client.run()  # handles SIGINT / SIGTERM itself
        finally:
            finished.set()
    except TransportError as exc:
        _error(f"{exc} (choose another SNAIL_HOST_PORT or stop the process using it)")
        return 1
    except SnailJobError as exc:
        _error(str(exc))
        return 1
    finally:
        if operations is not None:
            operations.close()
    return 0


# --- --reload ----------------------------------------------------------------------


def watch_roots(targets: Sequence[str]) -> List[str]:
    """Directories to watch: each target's top-level package directory, or the
    directory of a top-level module; found without importing anything.
    Directories inside site-packages are left out."""
    search = [os.getcwd()] + [p for p in sys.path if p]
    roots: List[str] = []
    for target in targets:
        try:
            module, _ = split_target(target)
        except DiscoveryError:
            continue
        spec = importlib.machinery.PathFinder.find_spec(module.split(".")[0], search)
        if spec is None:
            continue
        if spec.submodule_search_locations:
            found = list(spec.submodule_search_locations)
        elif spec.origin and spec.origin.endswith(".py"):
            found = [os.path.dirname(spec.origin)]
        else:
            found = []
        for path in (os.path.realpath(p) for p in found):
            if any(part in ("site-packages", "dist-packages") for part in path.split(os.sep)):
                logger.warning("not watching %s (an installed package)", path)
            elif path not in roots:
                roots.append(path)
    return [r for r in roots if not any(r != o and r.startswith(o + os.sep) for o in roots)]


Snapshot = Dict[str, Tuple[int, int]]


def scan(roots: Sequence[str]) -> Snapshot:
    """``{path: (mtime_ns, size)}`` of every ``.py`` file under ``roots``,
    skipping hidden directories, caches, site-packages and virtual environments."""
    files: Snapshot = {}
    for root in roots:
        for directory, dirs, names in os.walk(root):
            dirs[:] = [d for d in dirs if not d.startswith(".") and d not in _SKIP_DIRS
                       and not os.path.exists(os.path.join(directory, d, "pyvenv.cfg"))]
            for name in names:
                if name.endswith(".py"):
                    path = os.path.join(directory, name)
                    try:
                        info = os.stat(path)
                    except OSError:
                        continue  # removed meanwhile
                    files[path] = (info.st_mtime_ns, info.st_size)
    return files


def changed_files(old: Snapshot, new: Snapshot) -> List[str]:
    return sorted(p for p in set(old) | set(new) if old.get(p) != new.get(p))


def drop_bytecode(paths: Sequence[str]) -> None:
    """Remove the cached bytecode of changed files: a ``.pyc`` records the
    source's mtime in whole seconds and its size, so an edit that keeps the
    size within the same second would otherwise be missed by the new child."""
    for path in paths:
        try:
            os.remove(importlib.util.cache_from_source(path))
        except (OSError, ValueError, NotImplementedError):
            pass


class Supervisor:
    """Runs ``snailjob run ARGS`` as a child and restarts it on changes (see the module docstring)."""

    def __init__(self, child_args: Sequence[str], targets: Sequence[str], settings: Settings) -> None:
        self.command = [sys.executable, "-m", "snailjob", *child_args]
        self.targets = list(targets)
        self.settings = settings
        self.signals: List[int] = []
        self.wakeup = threading.Event()
        self.child: Optional[subprocess.Popen[bytes]] = None
        self.last_code = 0

    def _on_signal(self, signum: int, frame: Optional[FrameType]) -> None:
        self.signals.append(signum)
        self.wakeup.set()

    def run(self) -> int:
        s = self.settings
        configure_local_logging(s.snail_log_level, s.snail_log_format, None, 0)
        roots = watch_roots(self.targets)
        if not roots:
            _error("--reload: found no directory to watch for " + ", ".join(self.targets))
            return 2
        watched = [signal.SIGINT, signal.SIGTERM] + ([signal.SIGHUP] if hasattr(signal, "SIGHUP") else [])
        previous = {sig: signal.signal(sig, self._on_signal) for sig in watched}
        try:
            logger.info("reload: watching %s for changes to .py files", ", ".join(roots))
            snapshot = scan(roots)
            self._start()
            while True:
                self.wakeup.wait(POLL_SECONDS)
                self.wakeup.clear()
                if self.signals:
                    return self._finish()
                if self.child is not None and self.child.poll() is not None:
                    self.last_code = _exit_code(self.child.returncode)
                    logger.warning("reload: child exited with code %d; restarting after the next change",
                                   self.last_code)
                    self.child = None
                current = scan(roots)
                changed = changed_files(snapshot, current)
                if changed:
                    shown = ", ".join(os.path.relpath(p) for p in changed[:5])
                    more = f" and {len(changed) - 5} more" if len(changed) > 5 else ""
                    logger.info("reload: %s changed; restarting", shown + more)
                    drop_bytecode(changed)
                    self._stop_child(signal.SIGTERM)
                    if self.signals:
                        return self._finish()
                    snapshot = current
                    self._start()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _start(self) -> None:
        # its own session: a Ctrl-C in the terminal reaches the supervisor only, which forwards it once
        self.child = subprocess.Popen(self.command, start_new_session=True)
        logger.info("reload: started child %d: %s", self.child.pid, " ".join(self.command[1:]))

    def _stop_child(self, signum: int) -> None:
        child = self.child
        if child is None:
            return
        if child.poll() is None:
            child.send_signal(signum)
        deadline = time.monotonic() + self.settings.snail_shutdown_grace + KILL_AFTER
        forwarded = len(self.signals)
        while child.poll() is None:
            if len(self.signals) > forwarded:  # a second signal: the child stops at once
                forwarded = len(self.signals)
                child.send_signal(signal.SIGINT if self.signals[-1] == signal.SIGINT else signal.SIGTERM)
            if time.monotonic() > deadline:
                logger.warning("reload: child %d did not stop in time: killing it", child.pid)
                child.kill()
            self.wakeup.wait(0.1)
            self.wakeup.clear()
        self.last_code = _exit_code(child.returncode)
        self.child = None

    def _finish(self) -> int:
        signum = self.signals[0]
        logger.info("reload: %s received: stopping", signal.Signals(signum).name)
        if self.child is not None:
            self._stop_child(signal.SIGINT if signum == signal.SIGINT else signal.SIGTERM)
        return self.last_code


def _exit_code(returncode: int) -> int:
    return 128 - returncode if returncode < 0 else returncode

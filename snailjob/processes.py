"""Jobs in worker processes: ``@job(..., isolation="process")``.

A ``ProcessPool`` owned by the client keeps up to ``SNAIL_PROCESS_POOL_SIZE``
worker processes, started lazily with ``forkserver`` (``spawn`` where there
is none; never a plain fork of the threaded client).  A task marked for
process isolation still has its batch's worker thread in the client: that
thread hands the task to a free worker process and stays its proxy until it
ends.  Everything the job does that reaches the server goes through that
thread, inside the task's own context, exactly as for a thread job:

- ``SnailLog.REMOTE`` records are built into job-log entries in the worker
  and shipped by the client with the task's identity;
- ``mr_do_map`` reports are sent by the client, in order, and their answer
  (or ``MapError``) returned to the job;
- ``append_context`` changes travel back with the result;
- ``current_task()``, ``ThreadPoolCache.event_is_set`` and
  ``current_task().is_stopped()`` work in the worker (the stop is forwarded).

Stop and timeout: the batch's stop event is forwarded to the worker at once;
after ``SNAIL_INTERRUPT_DELAY`` the worker gets SIGTERM (``TaskInterrupted``
is raised in the job: it ends code in ``time.sleep`` or between bytecodes),
and ``SNAIL_PROCESS_KILL_GRACE`` seconds later SIGKILL, which ends anything,
C code and endless loops included.  The process is then replaced.  As for
thread jobs, a stopped task is not reported (the server records STOP).

A worker that dies on its own (segfault, ``os._exit``, the kernel's OOM
killer) fails only its task, with a reason that names the exit code or
signal; the pool starts a new one.  Workers are recycled after
``SNAIL_PROCESS_MAX_TASKS`` tasks or when their RSS passes
``SNAIL_PROCESS_MAX_RSS_MB`` after a task.  ``SNAIL_PROCESS_MEMORY_LIMIT_MB``
caps each worker's address space (``RLIMIT_AS``): an allocation beyond it
raises ``MemoryError`` in the job, which fails the task; memory a C library
cannot get may instead crash the worker, which fails the task as above.

Limits: the job function must be importable by the worker (defined at
module level of an importable module or of the main script); its arguments
and results cross a pipe (pickled); each task costs a round trip to
another process (measured in BENCHMARKS.md).  Threads the job starts are
ended with its worker.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import pickle
import queue
import signal
import threading
from typing import Any, Callable, Dict, List, Optional, Tuple

from snailjob.args import build_args
from snailjob.context import TaskContext, enter, leave
from snailjob.errors import MapError, TaskInterrupted
from snailjob.executors import isolation_of  # noqa: F401  (defined here before; kept importable)
from snailjob.log import install_remote_handler
from snailjob.wire.models import DispatchJobRequest, ExecuteResult

logger = logging.getLogger(__name__)
_remote = logging.getLogger("snailjob.remote")

_POLL = 0.05  # seconds between checks of the stop event and of the worker's life


class ProcessJobError(Exception):
    """What a job raised in its worker process (type name and message; the
    traceback is in the job log)."""


# --- the client's side ------------------------------------------------------------------


class ProcessPool:
    """Worker processes for isolated jobs; see the module docstring."""

    def __init__(self, size: int, max_tasks: int = 0, max_rss_mb: Optional[int] = None,
                 memory_limit_mb: Optional[int] = None, kill_grace: float = 3.0, log_level: str = "INFO",
                 start_method: Optional[str] = None) -> None:
        methods = multiprocessing.get_all_start_methods()
        method = start_method or ("forkserver" if "forkserver" in methods else "spawn")
        self._mp: Any = multiprocessing.get_context(method)
        self.start_method = method
        self.size = max(1, size)
        self.max_tasks = max_tasks
        self.max_rss_mb = max_rss_mb
        self.memory_limit_mb = memory_limit_mb
        self.kill_grace = kill_grace
        self.log_level = log_level
        self._slots = threading.BoundedSemaphore(self.size)
        self._lock = threading.Lock()
        self._idle: List[_Worker] = []
        self._workers: List[_Worker] = []
        self._closed = False
        self.started = 0
        self.replaced = 0
        self.died = 0

    def run(self, task: Any, services: Any) -> Tuple[ExecuteResult, Optional[BaseException]]:
        """Run ``task`` (a dispatcher ``Task``) in a worker; blocks this thread,
        which serves the worker's calls.  ``TaskInterrupted`` propagates after
        the worker was ended."""
        self._slots.acquire()
        worker: Optional[_Worker] = None
        try:
            worker = self._take()
            try:
                return worker.execute(task, services, self)
            except _Undelivered:
                # The idle worker died before it took the task (is_alive() lags
                # behind the death under forkserver): a fresh one runs it.
                self._give_back(worker)
                worker = None
                worker = self._take(fresh=True)
                return worker.execute(task, services, self)
        except Exception as exc:  # a broken pipe or a bad message must fail the task, not lose it
            if worker is not None:
                worker.broken = True
            text = f"the worker process could not run this task: {type(exc).__name__}: {exc}"
            logger.exception("%s", text)
            return _failed("ProcessJobError", text), ProcessJobError(text)
        finally:
            if worker is not None:
                self._give_back(worker)
            self._slots.release()

    def _take(self, fresh: bool = False) -> _Worker:
        with self._lock:
            if self._closed:
                raise RuntimeError("the process pool is closed")
            while self._idle and not fresh:
                worker = self._idle.pop()
                if worker.alive():
                    return worker
                self._workers.remove(worker)
        worker = _Worker(self)
        with self._lock:
            self._workers.append(worker)
            self.started += 1
        return worker

    def _give_back(self, worker: _Worker) -> None:
        retire = (not worker.alive() or worker.broken
                  or (self.max_tasks and worker.tasks_done >= self.max_tasks)
                  or (self.max_rss_mb and worker.rss_mb > self.max_rss_mb))
        if retire:
            if worker.alive() and not worker.broken:
                logger.info("recycling worker process %s after %d task(s), RSS %.0f MB",
                            worker.pid, worker.tasks_done, worker.rss_mb)
            worker.end(grace=self.kill_grace)
            with self._lock:
                if worker in self._workers:
                    self._workers.remove(worker)
                self.replaced += 1
            return
        with self._lock:
            if self._closed:
                worker.end(grace=0.5)
            else:
                self._idle.append(worker)

    def pids(self) -> List[int]:
        with self._lock:
            return [w.pid for w in self._workers if w.alive()]

    def close(self) -> None:
        """End every worker (idempotent)."""
        with self._lock:
            self._closed = True
            workers, self._workers, self._idle = list(self._workers), [], []
        for worker in workers:
            worker.end(grace=1.0)


class _Undelivered(Exception):
    """The worker died before it took the task (the pipe broke, or it ended
    before saying ``started``): nothing of the task ran."""


class _Worker:
    """One worker process and the parent's end of its pipe."""

    def __init__(self, pool: ProcessPool) -> None:
        parent, child = pool._mp.Pipe(duplex=True)
        self.conn = parent
        self.process = pool._mp.Process(
            target=worker_main, args=(child, pool.memory_limit_mb, pool.log_level),
            name="snailjob-worker", daemon=True)
        self.process.start()
        child.close()
        self.pid = int(self.process.pid or 0)
        self.tasks_done = 0
        self.rss_mb = 0.0
        self.broken = False

    def alive(self) -> bool:
        return self.process.is_alive()

    def execute(self, task: Any, services: Any, pool: ProcessPool) -> Tuple[ExecuteResult, Optional[BaseException]]:
        request: DispatchJobRequest = task.request
        info = {"host_id": services.host_id, "map_batch_size": services.map_batch_size,
                "map_sentinel": services.map_sentinel,
                "log_identity": dict(services.log_identity),
                "map_items_sent": task.context.map_items_sent}
        try:
            payload = pickle.dumps(("run", task.func, request.model_dump(), info))
        except Exception as exc:
            text = (f"cannot run {getattr(task.func, '__qualname__', task.func)!r} in a worker process: "
                    f"{type(exc).__name__}: {exc} (define the job at module level of an importable module)")
            _remote.error("%s", text)
            return _failed("ProcessJobError", text), ProcessJobError(text)
        try:
            self.conn.send_bytes(payload)
        except OSError as exc:  # the worker is gone: nothing of the task ran
            self.broken = True
            raise _Undelivered(str(exc)) from exc
        try:
            return self._serve(task, services, pool)
        except TaskInterrupted:
            self._interrupt(task, pool)
            raise

    def _serve(self, task: Any, services: Any, pool: ProcessPool) -> Tuple[ExecuteResult, Optional[BaseException]]:
        stop_sent = started = False
        while True:
            try:
                ready = self.conn.poll(_POLL)
                message = self.conn.recv() if ready else None
            except (EOFError, OSError):
                message = None
                self.process.join(1.0)
            if message is None:
                if not self.process.is_alive():
                    if not started:  # it died before it took the task: nothing of the task ran
                        self.broken = True
                        raise _Undelivered("the worker process died before it took the task")
                    return self._died(pool)
                if not stop_sent and task.context.stop_event.is_set():
                    self._send(("stop",))
                    stop_sent = True
                continue
            kind = message[0]
            if kind == "started":
                started = True
            elif kind == "log":
                services.queue_log(message[1])
            elif kind == "map":
                self._send(("map_reply", _report_map(services, task.context, message[1], message[2])))
            elif kind == "result":
                _, result, changes, error, items_sent, rss_mb = message
                self.tasks_done += 1
                self.rss_mb = rss_mb
                task.context.map_items_sent = items_sent
                if changes is not None:
                    for key, value in changes.items():
                        task.args.append_context(key, value)
                return ExecuteResult.model_validate(result), (ProcessJobError(error) if error else None)

    def _send(self, message: tuple) -> None:
        try:
            self.conn.send(message)
        except (OSError, ValueError):
            pass  # the worker is gone; the loop notices

    def _died(self, pool: ProcessPool) -> Tuple[ExecuteResult, Optional[BaseException]]:
        self.broken = True
        with pool._lock:
            pool.died += 1
        reason = f"the worker process running this task died: {_exit_reason(self.process.exitcode)}"
        _remote.error("%s", reason)
        logger.error("%s (pid %s); starting a new one for the next task", reason, self.pid)
        return _failed("WorkerDied", reason), ProcessJobError(reason)

    def _interrupt(self, task: Any, pool: ProcessPool) -> None:
        """The task was stopped or timed out: end the job in the worker, by
        force if it does not end, and retire the worker."""
        self.broken = True
        self._send(("stop",))
        self.end(grace=pool.kill_grace, sigterm_first=True)

    def end(self, grace: float, sigterm_first: bool = False) -> None:
        """Stop the process: a polite exit (or SIGTERM), then SIGKILL after ``grace``."""
        if self.process.is_alive():
            if sigterm_first:
                try:
                    os.kill(self.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
            else:
                self._send(("exit",))
            self.process.join(grace)
            if self.process.is_alive():
                logger.warning("worker process %s did not end within %.1fs; killing it", self.pid, grace)
                self.process.kill()
                self.process.join(5)
        try:
            self.conn.close()
        except OSError:
            pass


def _report_map(services: Any, ctx: TaskContext, items: list, next_task_name: str) -> Optional[str]:
    try:
        services.report_map(ctx, items, next_task_name)
    except MapError as exc:
        return str(exc)
    except Exception as exc:  # the worker must get an answer
        return f"{type(exc).__name__}: {exc}"
    return None


def _failed(kind: str, text: str) -> ExecuteResult:
    return ExecuteResult.failure(result={"exception": kind, "message": text}, message=text)


def _exit_reason(code: Optional[int]) -> str:
    if code is None:
        return "it stopped answering"
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        hint = " (the kernel's OOM killer sends it when memory runs out)" if -code == signal.SIGKILL else ""
        return f"killed by {name}{hint}"
    return f"it exited with code {code}"


# --- the worker's side -------------------------------------------------------------------


class _WorkerServices:
    """``TaskServices`` inside a worker: everything goes to the parent."""

    def __init__(self, link: _Link, info: Dict[str, Any]) -> None:
        self._link = link
        self._info = info

    @property
    def host_id(self) -> str:
        return str(self._info["host_id"])

    @property
    def map_batch_size(self) -> int:
        return int(self._info["map_batch_size"])

    @property
    def map_sentinel(self) -> bool:
        return bool(self._info["map_sentinel"])

    @property
    def log_identity(self) -> Dict[str, str]:
        return dict(self._info["log_identity"])

    def queue_log(self, entry: Dict[str, Any]) -> None:
        self._link.send(("log", entry))

    def report_map(self, task: TaskContext, items: list, next_task_name: str) -> None:
        self._link.send(("map", items, next_task_name))
        error = self._link.replies.get()
        if error is not None:
            raise MapError(error)


class _Link:
    """The worker's end of the pipe: sends from any thread; a reader thread
    takes the parent's messages (the next task, stop, map answers)."""

    def __init__(self, conn: Any) -> None:
        self.conn = conn
        self._send_lock = threading.Lock()
        self.inbox: queue.Queue = queue.Queue()
        self.replies: queue.Queue = queue.Queue()
        self.stop_event = threading.Event()
        threading.Thread(target=self._read, name="snailjob-worker-link", daemon=True).start()

    def send(self, message: tuple) -> None:
        with self._send_lock:
            self.conn.send(message)

    def _read(self) -> None:
        while True:
            try:
                raw = self.conn.recv_bytes()
            except (EOFError, OSError):
                os._exit(0)  # the client is gone: so is its worker
            message = pickle.loads(raw)
            if message[0] == "stop":
                self.stop_event.set()
            elif message[0] == "map_reply":
                self.replies.put(message[1])
            else:
                self.inbox.put(message)


def _on_sigterm(signum: int, frame: Any) -> None:
    raise TaskInterrupted("stopped by the client (stop or executorTimeout)")


def worker_main(conn: Any, memory_limit_mb: Optional[int], log_level: str) -> None:
    """The worker process: run tasks the parent sends until told to exit."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole group: the client decides
    signal.signal(signal.SIGTERM, _on_sigterm)
    if memory_limit_mb:
        import resource

        limit = int(memory_limit_mb) * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    logging.getLogger("snailjob").setLevel(log_level)
    install_remote_handler()
    link = _Link(conn)
    try:
        while True:
            message = link.inbox.get()
            if message[0] == "exit":
                return
            if message[0] == "run":
                link.send(("started",))  # the parent may give a task to another worker until this comes
                _run_one(link, message[1], message[2], message[3])
    except TaskInterrupted:
        return  # SIGTERM between tasks (a stop that came as the job ended): just go


def _run_one(link: _Link, func: Callable[..., Any], raw: Dict[str, Any], info: Dict[str, Any]) -> None:
    from snailjob.work import is_async_callable, run_coroutine, run_function

    request = DispatchJobRequest.model_validate(raw)
    args, _warnings, sentinel = build_args(request)  # the client logged the warnings
    link.stop_event.clear()
    ctx = TaskContext(request, args, link.stop_event, _WorkerServices(link, info), sentinel=sentinel,
                      map_items_sent=int(info.get("map_items_sent", 0)))
    token = enter(ctx)
    errors: List[BaseException] = []
    try:
        if is_async_callable(func):
            result = asyncio.run(run_coroutine(func, args, errors))
        else:
            result = run_function(func, args, errors)
    except TaskInterrupted:
        return  # the client ends this process now
    finally:
        leave(token)
    changes = args.change_wf_context.to_dict() if args.change_wf_context is not None else None
    error = f"{type(errors[0]).__name__}: {errors[0]}" if errors else None
    try:
        link.send(("result", result.model_dump(), changes, error, ctx.map_items_sent, _rss_mb()))
    except Exception as exc:  # the value cannot cross the pipe: say so instead of dying
        text = f"the job's result cannot be sent to the client: {type(exc).__name__}: {exc}"
        link.send(("result", _failed("ProcessJobError", text).model_dump(), None, text, ctx.map_items_sent,
                   _rss_mb()))


def _rss_mb() -> float:
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1024 / 1024
    except (OSError, ValueError, IndexError):
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def describe_pool(pool: Optional[ProcessPool]) -> Dict[str, int]:
    """Counters for ``Client.stats()``."""
    if pool is None:
        return {"process_workers": 0, "process_workers_started": 0, "process_workers_died": 0}
    return {"process_workers": len(pool.pids()), "process_workers_started": pool.started,
            "process_workers_died": pool.died}


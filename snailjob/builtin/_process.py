"""The process of a script executor: started in its own process group, its
output shipped to the task's remote log line by line, ended with its group.

Output: stdout lines go to the remote log at INFO and stderr lines at
WARNING, as they come, decoded with the script's charset (undecodable bytes
replaced).  A line is cut at ``LINE_CHARS`` characters and at most
``MAX_LINES`` lines are shipped per task; the rest is counted in one last
line.  The last stderr lines are kept for the result.  The pipes are read
from the task's own thread (``selectors``), which is what attributes the
lines to the task.

Ending: on POSIX the script is the leader of a new session, so its children
are in its process group unless they leave it themselves (``setsid``,
``nohup`` does not).  A stop sends SIGTERM to the group and, ``grace``
seconds later, SIGKILL to what is left; children still running when the
script's main process exits are ended the same way.  ``TaskInterrupted``
arriving meanwhile does not cut the grace short: it is raised again once
the group is gone.  On Linux, members are found in ``/proc`` (zombies do not
count); elsewhere ``killpg(pgid, 0)`` is the test.

On Windows (``cmd.exe``, ``powershell.exe``) the pipes are read by two
helper threads, a stop ends the process tree at once with
``taskkill /F /T`` (there is no polite signal for a console program), and
children left after a normal exit are not looked for.  Those paths are not
exercised by the test suite, which runs on Linux.
"""

from __future__ import annotations

import codecs
import functools
import logging
import os
import queue
import selectors
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import IO, Callable, Deque, Dict, List, Optional, Tuple

from snailjob.errors import TaskInterrupted

remote = logging.getLogger("snailjob.remote")

LINE_CHARS = 8192
MAX_LINES = 10_000
TAIL_LINES = 10
TAIL_BYTES = 2048
POLL = 0.1  # the stop event is checked at least this often
KILL_WAIT = 2.0  # how long processes are waited for after SIGKILL
DRAIN = 1.0  # once the group is gone, how long pipes held by escaped processes are read
WINDOWS = sys.platform == "win32"


def shielded(action: Callable[[], None]) -> None:
    """Run ``action`` to its end even if ``TaskInterrupted`` arrives meanwhile
    (it is run again: it must be repeatable), then raise that exception."""
    caught: Optional[BaseException] = None
    while True:
        try:
            action()
            break
        except TaskInterrupted as exc:
            caught = exc
    if caught is not None:
        raise caught


class Output:
    """Turns the bytes of stdout and stderr into remote log lines."""

    def __init__(self, charset: str, max_lines: int = MAX_LINES) -> None:
        self.max_lines = max_lines
        self.shipped = 0
        self.dropped = 0
        self.tail: Deque[str] = deque(maxlen=TAIL_LINES)
        self._decoders = {s: codecs.getincrementaldecoder(charset)(errors="replace") for s in ("out", "err")}
        self._pending = {"out": "", "err": ""}
        self._cutting = {"out": False, "err": False}  # dropping the rest of a line cut at LINE_CHARS

    def feed(self, stream: str, data: bytes, final: bool = False) -> None:
        text = self._decoders[stream].decode(data, final)
        if self._cutting[stream]:
            end = text.find("\n")
            if end < 0:
                return
            text, self._cutting[stream] = text[end + 1:], False
        lines = (self._pending[stream] + text).split("\n")
        rest = lines.pop()
        for line in lines:
            self._line(stream, line)
        if len(rest) > LINE_CHARS:
            self._line(stream, rest)
            rest, self._cutting[stream] = "", True
        elif final and rest:
            self._line(stream, rest)
            rest = ""
        self._pending[stream] = rest

    def _line(self, stream: str, line: str) -> None:
        if line.endswith("\r"):
            line = line[:-1]
        if len(line) > LINE_CHARS:
            line = line[:LINE_CHARS] + f" [cut at {LINE_CHARS} characters]"
        if stream == "err":
            self.tail.append(line)
        if self.shipped >= self.max_lines:
            self.dropped += 1
            return
        self.shipped += 1
        if stream == "err":
            remote.warning("%s", line)
        else:
            remote.info("%s", line)

    def finish(self) -> None:
        for stream in ("out", "err"):
            self.feed(stream, b"", final=True)
        if self.dropped:
            remote.warning("%d more output line(s) not shipped (at most %d lines per task)",
                           self.dropped, self.max_lines)
            self.dropped = 0

    def stderr_tail(self) -> List[str]:
        """The last stderr lines, at most ``TAIL_LINES`` and ``TAIL_BYTES``."""
        kept: List[str] = []
        size = 0
        for line in reversed(self.tail):
            size += len(line.encode("utf-8", "replace")) + 1
            if size > TAIL_BYTES:
                break
            kept.append(line)
        return kept[::-1]


class _Pipes:
    """stdout and stderr of the process, read without blocking (POSIX)."""

    def __init__(self, out: IO[bytes], err: IO[bytes]) -> None:
        self._sel = selectors.DefaultSelector()
        for name, pipe in (("out", out), ("err", err)):
            os.set_blocking(pipe.fileno(), False)
            self._sel.register(pipe, selectors.EVENT_READ, name)

    @property
    def open(self) -> bool:
        return bool(self._sel.get_map())

    def read(self, timeout: float) -> List[Tuple[str, bytes]]:
        if not self.open:
            time.sleep(timeout)
            return []
        chunks = []
        for key, _ in self._sel.select(timeout):
            try:
                data = os.read(key.fd, 65536)
            except BlockingIOError:
                continue
            except OSError:
                data = b""
            if not data:
                self._sel.unregister(key.fileobj)
                key.fileobj.close()  # type: ignore[union-attr]
            chunks.append((key.data, data))
        return chunks

    def close(self) -> None:
        for key in list(self._sel.get_map().values()):
            self._sel.unregister(key.fileobj)
            key.fileobj.close()  # type: ignore[union-attr]
        self._sel.close()


class _ThreadedPipes:
    """The same on Windows, where pipes cannot be selected: a thread per pipe
    moves bytes to a queue the task's thread reads (and logs)."""

    def __init__(self, out: IO[bytes], err: IO[bytes]) -> None:
        self._queue: queue.Queue[Tuple[str, bytes]] = queue.Queue()
        self._pipes = {"out": out, "err": err}
        self._open = set(self._pipes)
        for name, pipe in self._pipes.items():
            threading.Thread(target=self._pump, args=(name, pipe), daemon=True, name=f"script-{name}").start()

    def _pump(self, name: str, pipe: IO[bytes]) -> None:
        try:
            while True:
                data = pipe.read(65536) or b""  # unbuffered: what one read returns
                self._queue.put((name, data))
                if not data:
                    return
        except (OSError, ValueError):
            self._queue.put((name, b""))

    @property
    def open(self) -> bool:
        return bool(self._open)

    def read(self, timeout: float) -> List[Tuple[str, bytes]]:
        chunks = []
        try:
            chunks.append(self._queue.get(timeout=timeout))
            while True:
                chunks.append(self._queue.get_nowait())
        except queue.Empty:
            pass
        for name, data in chunks:
            if not data:
                self._open.discard(name)
        return chunks

    def close(self) -> None:
        for pipe in self._pipes.values():
            pipe.close()
        self._open.clear()


def group_members(pgid: int) -> int:
    """How many live (not zombie) processes are in process group ``pgid``
    (on systems without ``/proc``: 1 if any process is, else 0)."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return 0
    except PermissionError:
        return 1
    if not os.path.isdir("/proc/self"):
        return 1
    count = 0
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if len(fields) > 2 and fields[2] == str(pgid).encode() and fields[0] not in (b"Z", b"X"):
            count += 1
    return count


@dataclass
class Outcome:
    returncode: Optional[int]
    stopped: bool
    output: Output
    seconds: float


class _Supervisor:
    """Watches one process and its group; ``step`` is safe to repeat after
    an exception arrived in the middle of it."""

    def __init__(self, proc: subprocess.Popen, output: Output, stop: threading.Event, grace: float) -> None:
        self.proc, self.output, self.stop, self.grace = proc, output, stop, grace
        self.pipes = (_ThreadedPipes if WINDOWS else _Pipes)(proc.stdout, proc.stderr)  # type: ignore[arg-type]
        self.returncode: Optional[int] = None
        self.stopped = False
        self.term_at: Optional[float] = None
        self.killed_at: Optional[float] = None
        self.empty_at: Optional[float] = None
        self.done = False

    def step(self) -> bool:
        """One round: act on a stop, read output; True when all is over."""
        if self.term_at is None and self.stop.is_set():
            self.stopped = True
            self.end_group(f"stopped: SIGTERM sent to the script's process group; SIGKILL after {self.grace:g} s")
        if self.term_at is not None and self.killed_at is None and time.monotonic() >= self.term_at + self.grace:
            self.kill_group()
        for stream, data in self.pipes.read(POLL):
            if data:
                self.output.feed(stream, data)
        if self.returncode is None:
            self.returncode = self.proc.poll()
            if self.returncode is None:
                return False
            if self.term_at is None and not WINDOWS:
                left = group_members(self.proc.pid)
                if left:
                    self.end_group(f"the script exited and left {left} process(es) running in its group: "
                                   f"SIGTERM sent to them; SIGKILL after {self.grace:g} s")
        if self.empty_at is None:
            if not WINDOWS and group_members(self.proc.pid):
                if self.killed_at is None or time.monotonic() < self.killed_at + KILL_WAIT:
                    return False
                remote.warning("some processes of the script's group outlived SIGKILL (not waited for)")
            self.empty_at = time.monotonic()
        self.done = not self.pipes.open or time.monotonic() >= self.empty_at + DRAIN
        return self.done

    def end_group(self, reason: str) -> None:
        if self.term_at is not None:
            return
        self.term_at = time.monotonic()
        if WINDOWS:
            remote.warning("stopped: the script's process tree ended (taskkill /F /T)")
            self.kill_group()
            return
        remote.warning("%s", reason)
        _signal_group(self.proc.pid, signal.SIGTERM)

    def kill_group(self) -> None:
        self.killed_at = time.monotonic()
        if WINDOWS:
            if self.proc.poll() is None:
                subprocess.run(["taskkill", "/F", "/T", "/PID", str(self.proc.pid)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
            return
        if self.term_at is not None and group_members(self.proc.pid):
            remote.warning("the script's process group was still running %g s after SIGTERM: SIGKILL sent",
                           self.grace)
        _signal_group(self.proc.pid, signal.SIGKILL)

    def close(self) -> None:
        """Close the pipes, after killing whatever is left if the watch did
        not end normally (an unexpected error)."""
        if not self.done:
            _kill_all(self.proc)
        self.pipes.close()


def _kill_all(proc: subprocess.Popen) -> None:
    if WINDOWS:
        proc.kill()
    else:
        _signal_group(proc.pid, signal.SIGKILL)
    try:
        proc.wait(KILL_WAIT)
    except subprocess.TimeoutExpired:
        pass


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def run(command: List[str], cwd: str, charset: str, stop: threading.Event, grace: float) -> Outcome:
    """Run ``command`` in ``cwd`` until it and its group are done (or
    stopped and ended); ``TaskInterrupted`` is raised after that."""
    output = Output(charset)
    started = time.monotonic()
    if stop.is_set():
        return Outcome(None, True, output, 0.0)
    flags: Dict[str, object] = ({"creationflags": subprocess.CREATE_NEW_PROCESS_GROUP}  # type: ignore[attr-defined]
                                if WINDOWS else {"start_new_session": True})
    proc: Optional[subprocess.Popen] = None
    supervisor: Optional[_Supervisor] = None
    interrupted: Optional[BaseException] = None
    try:
        proc = subprocess.Popen(command, cwd=cwd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, bufsize=0, **flags)  # type: ignore[call-overload]
        supervisor = _Supervisor(proc, output, stop, grace)
        while True:
            try:
                if supervisor.step():
                    break
            except TaskInterrupted as exc:  # finish ending the group first
                interrupted = exc
                supervisor.stopped = True
                supervisor.end_group(f"interrupted: SIGTERM sent to the script's process group; "
                                     f"SIGKILL after {grace:g} s")
    finally:
        if supervisor is not None:
            shielded(supervisor.close)
        elif proc is not None:
            shielded(functools.partial(_kill_all, proc))
    output.finish()
    if interrupted is not None:
        raise interrupted
    assert supervisor is not None
    return Outcome(supervisor.returncode, supervisor.stopped, output, time.monotonic() - started)

"""What to do about a problem: the "fix:" texts that ``snailjob check``
prints and that a running client repeats while it cannot register.

The texts are plain strings, so that both the client and the command line
can import them (the client must not import ``snailjob.cli``).
``LastingProblem`` is how a running client keeps saying that the server
refuses it or cannot be reached, without a line per heartbeat.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Callable, Optional, Tuple

FIX_SETTINGS = "correct the variable named above (see CONFIGURATION.md), or the matching option"
FIX_SERVER = ("start the server, or fix SNAIL_SERVER_HOST / SNAIL_SERVER_PORT: the server's gRPC port "
              "(snail-job.server-port, 17888 by default), not its web port")
FIX_WEB_PORT = ("this is an HTTP (web) port; SNAIL_SERVER_PORT (or the port in SNAIL_SERVER_HOST) must be the "
                "server's gRPC port, snail-job.server-port (default 17888)")
FIX_ADDRESS = "set SNAIL_HOST_IP to an address of this host that the server can reach"
FIX_PORT = "choose another SNAIL_HOST_PORT or stop the process using it"
FIX_TOKEN = ("set SNAIL_TOKEN to the group's token (console: group management); if it is right, "
             "the group is unknown in that namespace: create the group in the console or fix "
             "SNAIL_GROUP_NAME / SNAIL_NAMESPACE (the server answers both the same way)")
FIX_UNREACHABLE = "the server did not answer the heartbeat: see the server check above"
FIX_OTHER = "see the server's log for this refusal"
CHECK_HINT = "run `snailjob check` with the same settings to test them one by one"


def fix_for(problem: str, reachable: bool = True) -> str:
    """The fix line for a refused or failed heartbeat, chosen by the message."""
    lowered = problem.lower()
    if "token authentication failed" in lowered:
        return FIX_TOKEN
    if "unavailable" in lowered or "deadline_exceeded" in lowered or not reachable:
        return FIX_UNREACHABLE if not reachable else FIX_SERVER
    return FIX_OTHER


REFUSED = "refused"
"""The server answered and said no (a wrong token, an unknown group or namespace)."""
UNREACHABLE = "unreachable"
"""No answer: the connection failed or the deadline passed (``UNAVAILABLE``, ``DEADLINE_EXCEEDED``)."""
FAILED = "failed"
"""Any other gRPC error: something answered, but not as a SnailJob server does."""

WARN_AGAIN: Tuple[float, float] = (60.0, 300.0)
"""While a problem lasts it is logged at its first failure, again after
``WARN_AGAIN[0]`` seconds, then every ``WARN_AGAIN[1]`` seconds."""


def kind_of(code: str) -> str:
    """``UNREACHABLE`` for the gRPC codes of a call that got no answer, else ``FAILED``."""
    return UNREACHABLE if code in ("UNAVAILABLE", "DEADLINE_EXCEEDED") else FAILED


def fix_for_kind(kind: str, problem: str) -> str:
    """The fix line of a running client's failed call of ``kind``."""
    if kind == REFUSED:
        return FIX_TOKEN if "token authentication failed" in problem.lower() else FIX_OTHER
    return FIX_SERVER


def duration(seconds: float) -> str:
    """``45s``, ``3m 5s``, ``2h 4m``."""
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m {seconds % 60}s"
    return f"{seconds // 3600}h {seconds % 3600 // 60}m"


class LastingProblem:
    """Warns about a problem that lasts across attempts of one call (the
    heartbeat, the executor registration): at the first failure, again
    ``again[0]`` seconds after it, then every ``again[1]`` seconds, with how
    long it has lasted and how many attempts failed; at once when the kind
    of failure changes (refused / unreachable / failed).  ``cleared()``
    returns the note for the one INFO line the caller writes when it works
    again.  Every warning ends with a ``fix:`` line and a pointer to
    ``snailjob check``.  ``detail`` must already be redacted and quoted."""

    def __init__(self, log: logging.Logger, call: str, again: Optional[Tuple[float, float]] = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._log = log
        self._call = call
        self.again = again if again is not None else WARN_AGAIN
        self._clock = clock
        self._lock = threading.Lock()
        self._kind: Optional[str] = None
        self._since = 0.0
        self._next = 0.0
        self._warned = 0
        self.failures = 0

    @property
    def lasting(self) -> bool:
        return self._kind is not None

    def failed(self, kind: str, where: str, detail: str, fix: str) -> bool:
        """Note one failed attempt; True when it was logged."""
        now = self._clock()
        with self._lock:
            first = self._kind is None
            if first:
                self._since = now
                self.failures = 0
                self._warned = 0
            self.failures += 1
            changed = not first and kind != self._kind
            self._kind = kind
            if not (first or changed or now >= self._next):
                return False
            self._next = now + (self.again[0] if self._warned == 0 else self.again[1])
            self._warned += 1
            failures, lasted = self.failures, now - self._since
        if first:
            head = self._head(kind, where).format(call=self._call, still="")
        else:
            head = self._head(kind, where, still=True).format(
                call=self._call, still=f" after {duration(lasted)} ({failures} failed attempts)")
        self._log.warning("%s: %s; retrying, next warning in %s if it lasts\n    fix: %s\n    or: %s",
                          head, detail, duration(self.again[0] if self._warned == 1 else self.again[1]),
                          fix, CHECK_HINT)
        return True

    @staticmethod
    def _head(kind: str, where: str, still: bool = False) -> str:
        """The start of a warning, with ``{call}`` and ``{still}`` (how long) to fill in."""
        if kind == REFUSED:
            return f"SnailJob server {where} {'still refuses' if still else 'refused'} the {{call}}{{still}}"
        if kind == UNREACHABLE:
            return f"SnailJob server {where} {'still ' if still else ''}unreachable for the {{call}}{{still}}"
        return f"the {{call}} to SnailJob server {where} {'still fails' if still else 'failed'}{{still}}"

    def cleared(self) -> Optional[str]:
        """Forget the problem; a note of how long it lasted, or None if there was none."""
        with self._lock:
            if self._kind is None:
                return None
            kind, failures, lasted = self._kind, self.failures, self._clock() - self._since
            self._kind = None
        return f"after {duration(lasted)} of {kind} {self._call}s ({failures} failed attempts)"

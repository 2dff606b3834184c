"""The console's built-in executors, run on a Python node.

SnailJob's console offers four executors a user picks instead of writing code:
``snailJobHttpExecutor`` (an HTTP call), ``snailJobShellJobExecutor``,
``snailJobCMDJobExecutor`` and ``snailJobPowerShellJobExecutor`` (a script).
The console stores its form as JSON in the job's arguments, which reach the
node as ``args.job_params``; the server sends such a task to any node of the
group, whatever its language.  Like the Java client, a node runs them under
exactly these names, whatever executor type the dispatch carries, and never
reports them in its executor registration.

Running what the server sends is remote code execution by design (a script)
or a request from inside the node's network (HTTP): each runs only when the
node enables it with ``SNAIL_BUILTIN_EXECUTORS`` (docs/security.md says why
none is on by default).  ``http.py`` and ``scripts.py`` are loaded when a
task first needs them.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, Optional, Union

from snailjob.builtin.forms import http_form, script_form
from snailjob.settings import Settings

HTTP_EXECUTOR = "snailJobHttpExecutor"
SHELL_EXECUTOR = "snailJobShellJobExecutor"
CMD_EXECUTOR = "snailJobCMDJobExecutor"
POWERSHELL_EXECUTOR = "snailJobPowerShellJobExecutor"
KIND_OF: Dict[str, str] = {HTTP_EXECUTOR: "http", SHELL_EXECUTOR: "shell", CMD_EXECUTOR: "cmd",
                           POWERSHELL_EXECUTOR: "powershell"}
"""Executor name -> its word in ``SNAIL_BUILTIN_EXECUTORS``."""

JobFunction = Callable[[Any], Any]

__all__ = ["CMD_EXECUTOR", "HTTP_EXECUTOR", "POWERSHELL_EXECUTOR", "SHELL_EXECUTOR", "Builtins", "http_form",
           "is_builtin", "script_form"]


def is_builtin(name: Optional[str]) -> bool:
    return name in KIND_OF


class Builtins:
    """The built-in executors of one node: a job function per enabled name,
    built on first use."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._jobs: Dict[str, JobFunction] = {}

    def job(self, name: str) -> Union[JobFunction, str]:
        """The job function of built-in executor ``name``, or why this node
        does not run it."""
        kind = KIND_OF[name]
        if kind not in self._settings.builtin_kinds:
            return (f"the built-in executor {name} is off on this node: add {kind} to SNAIL_BUILTIN_EXECUTORS "
                    f"(now {self._settings.snail_builtin_executors or 'empty'}) to run it; "
                    "docs/builtin-executors.md says what that allows")
        found = self._jobs.get(name)
        if found is None:
            found = self._jobs[name] = _make(kind, self._settings)
        return found


def _make(kind: str, settings: Settings) -> JobFunction:
    if kind == "http":
        from snailjob.builtin.http import http_job

        func = http_job(settings)
    else:
        from snailjob.builtin.scripts import script_job

        func = script_job(kind, settings)
    func.snailjob_isolation = "thread"  # type: ignore[attr-defined]  # it starts its own processes
    return func

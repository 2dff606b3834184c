"""The console's script executors: ``snailJobShellJobExecutor`` (shell),
``snailJobCMDJobExecutor`` (cmd) and ``snailJobPowerShellJobExecutor``
(powershell).

The console's form arrives as ``args.job_params`` (JSON text or a dict):
``{"method": ..., "scriptParams": ..., "charset": ...}``.  ``method`` is
``LOCAL_SCRIPT`` (``scriptParams`` is a file of the node, copied),
``SCRIPT_CODE`` (the script's text, written with ``charset``) or
``DOWNLOAD`` (an http(s) URL; ``_sources`` says with which limits).
``charset`` also decodes the script's output; blank, it is UTF-8 for shell
and PowerShell 7 (``pwsh``), the node's locale encoding for ``cmd.exe`` and
``powershell.exe`` (what the Java client uses); an unknown name gives a
remote warning and that default.

Each task gets a new private directory (0700) in the workspace
(``SNAIL_BUILTIN_WORKSPACE``, else ``~/.snailjob/workspace``, created 0700),
which must be a real directory of this node's user that group and others
cannot write.  The script file in it is named as the Java client names it
(``shell_<jobId>.sh``, ``cmd_<jobId>.bat``, ``powershell_<jobId>.ps1``);
the script runs there as its working directory, with stdin from the null
device and the node's environment, and the directory is removed afterwards
whatever happened.

Commands: ``sh FILE`` (not on Windows); ``cmd.exe /c FILE`` (Windows only);
``powershell.exe -ExecutionPolicy Bypass -File FILE`` on Windows, elsewhere
``pwsh -NoProfile -ExecutionPolicy Bypass -File FILE`` when PowerShell 7 is
on the PATH (Windows PowerShell exists only on Windows; ``pwsh`` runs the
same scripts on Linux and macOS).  Otherwise the task fails saying so.

Output, stop and timeout: see ``_process`` (stdout at INFO, stderr at
WARNING, line by line; the script's whole process group is ended).

Result: exit code 0 is a success with result ``{"exitCode": 0}``; anything
else is a failure whose result holds a message, the exit code (or the
signal) and the last stderr lines.  Setup problems (the form, the
workspace, the source, the platform) fail the task with a message that
names the field or setting.

Differences from the Java client, on purpose: one directory per task (Java
shares one file per job between concurrent tasks); the script's text is not
logged (it may hold secrets); output is shipped line by line (Java ships it
all in one line after the end); the exit code and stderr tail are in the
result; children of the script are ended with it (Java ends only the direct
child); a download is size- and time-limited, http(s) only.
"""

from __future__ import annotations

import codecs
import json
import locale
import os
import shutil
import signal
import stat
import tempfile
import threading
from typing import Any, Callable, Dict, List, Tuple, Union

from snailjob.args import JobArgs
from snailjob.builtin import _process, _sources
from snailjob.builtin._process import WINDOWS, remote, shielded
from snailjob.builtin._sources import ScriptError
from snailjob.context import current_task_or_none
from snailjob.settings import Settings
from snailjob.wire.models import ExecuteResult

METHODS = ("LOCAL_SCRIPT", "SCRIPT_CODE", "DOWNLOAD")
EXAMPLE = '{"method": "SCRIPT_CODE", "scriptParams": "echo hello", "charset": "UTF-8"}'
_FILES = {"shell": "shell_{}.sh", "cmd": "cmd_{}.bat", "powershell": "powershell_{}.ps1"}
_NAMES = {"shell": "snailJobShellJobExecutor", "cmd": "snailJobCMDJobExecutor",
          "powershell": "snailJobPowerShellJobExecutor"}
_JSON_TYPES = {list: "array", str: "string", int: "number", float: "number", bool: "boolean"}


def script_job(kind: str, settings: Settings) -> Callable[[Any], Any]:
    """The job function of script executor ``kind`` ("shell", "cmd" or "powershell")."""
    if kind not in _FILES:
        raise ValueError(f"unknown script executor kind {kind!r}")

    def run(args: JobArgs) -> ExecuteResult:
        try:
            return _run(kind, settings, args)
        except ScriptError as exc:
            remote.error("%s", exc)
            return ExecuteResult.failure(str(exc))

    run.__name__ = run.__qualname__ = _NAMES[kind]
    return run


def parse_form(params: Any) -> Tuple[str, str, str]:
    """``(method, scriptParams, charset)`` of the console's form."""
    if params is None or (isinstance(params, str) and not params.strip()):
        raise ScriptError(f"the job parameters are empty: a script job needs the console's form, e.g. {EXAMPLE}")
    form = params
    if isinstance(params, (str, bytes)):
        try:
            form = json.loads(params)
        except (ValueError, RecursionError) as exc:
            raise ScriptError(f"the job parameters are not JSON ({exc}): a script job needs the console's form, "
                              f"e.g. {EXAMPLE}") from None
    if not isinstance(form, dict):
        kind = "null" if form is None else _JSON_TYPES.get(type(form), type(form).__name__)
        raise ScriptError(f"the job parameters are a JSON {kind}, not an object: a script job needs "
                          f"the console's form, e.g. {EXAMPLE}")
    method = form.get("method")
    if method not in METHODS:
        what = "is missing" if method is None else f"is {method!r}"
        raise ScriptError(f"method {what}: it must be one of {', '.join(METHODS)}")
    script = form.get("scriptParams")
    if not isinstance(script, str) or not script.strip():
        meaning = {"LOCAL_SCRIPT": "the path of a script file on the node", "SCRIPT_CODE": "the script's text",
                   "DOWNLOAD": "the http(s) URL of the script"}[method]
        what = "is missing" if script is None else "is blank" if isinstance(script, str) else "is not text"
        raise ScriptError(f"scriptParams {what}: with method {method} it must be {meaning}")
    charset = form.get("charset")
    if charset is not None and not isinstance(charset, str):
        raise ScriptError(f"charset must be a charset name such as UTF-8 or GBK, not {charset!r}")
    if method != "SCRIPT_CODE":
        script = script.strip()
    return method, script, (charset or "").strip()


def resolve_charset(name: str, kind: str) -> str:
    default = "utf-8" if kind == "shell" or not WINDOWS else locale.getpreferredencoding(False)
    if not name:
        return default
    try:
        "".encode(name)  # a text encoding, not e.g. base64
        codecs.lookup(name)
        return name
    except LookupError:
        remote.warning("unknown charset %r: using %s", name, default)
        return default


def command(kind: str) -> Union[List[str], str]:
    """The command line before the script's path, or why this node cannot run it."""
    if kind == "shell":
        if WINDOWS:
            return ("shell scripts cannot run on Windows nodes (sh is not there): "
                    "use snailJobCMDJobExecutor or snailJobPowerShellJobExecutor")
        return ["sh"]
    if kind == "cmd":
        if WINDOWS:
            return ["cmd.exe", "/c"]
        return "cmd.exe runs only on Windows nodes: this node is not Windows (use snailJobShellJobExecutor)"
    if WINDOWS:
        return ["powershell.exe", "-ExecutionPolicy", "Bypass", "-File"]
    pwsh = shutil.which("pwsh")
    if pwsh is None:
        return ("PowerShell scripts on a node that is not Windows need PowerShell 7: install it so that "
                "pwsh is on the node's PATH (Windows PowerShell, powershell.exe, exists only on Windows)")
    return [pwsh, "-NoProfile", "-ExecutionPolicy", "Bypass", "-File"]


def workspace(settings: Settings) -> str:
    """The workspace directory, created 0700 if missing, checked."""
    path = settings.snail_builtin_workspace or os.path.join("~", ".snailjob", "workspace")
    path = os.path.abspath(os.path.expanduser(path))
    where = f"the script workspace {path} (SNAIL_BUILTIN_WORKSPACE)"
    try:
        if not os.path.lexists(path):
            os.makedirs(path, mode=0o700)
        info = os.lstat(path)
    except OSError as exc:
        raise ScriptError(f"cannot create {where}: {exc.strerror or exc}") from None
    if stat.S_ISLNK(info.st_mode):
        raise ScriptError(f"{where} is a symbolic link: name the real directory")
    if not stat.S_ISDIR(info.st_mode):
        raise ScriptError(f"{where} is not a directory")
    if not WINDOWS:
        if info.st_uid != os.geteuid():
            raise ScriptError(f"{where} belongs to uid {info.st_uid}, not to this node's user "
                              f"(uid {os.geteuid()}): use a directory of the node's user")
        if info.st_mode & 0o022:
            raise ScriptError(f"{where} is writable by group or others (mode {stat.S_IMODE(info.st_mode):04o}): "
                              f"make it private (chmod 700 {path})")
    return path


def remove_tree(path: str) -> None:
    """Remove ``path`` even where the script took write permission away."""
    shutil.rmtree(path, ignore_errors=True)
    if os.path.lexists(path):
        for root, dirs, _ in os.walk(path):
            for name in dirs:
                try:
                    os.chmod(os.path.join(root, name), 0o700, follow_symlinks=False)
                except (OSError, NotImplementedError):
                    pass
        shutil.rmtree(path, ignore_errors=True)
    if os.path.lexists(path):
        remote.warning("could not remove the task directory %s entirely", path)


def _run(kind: str, settings: Settings, args: JobArgs) -> ExecuteResult:
    method, script, charset_name = parse_form(args.job_params)
    prefix = command(kind)
    if isinstance(prefix, str):
        raise ScriptError(prefix)
    base = workspace(settings)
    charset = resolve_charset(charset_name, kind)
    ctx = current_task_or_none()
    stop = ctx.stop_event if ctx is not None else threading.Event()
    job_id = args.job_id if args.job_id is not None else 0
    task_dir = tempfile.mkdtemp(prefix=f"job{job_id}-task{args.task_id}-", dir=base)
    try:
        path = os.path.join(task_dir, _FILES[kind].format(job_id))
        if method == "LOCAL_SCRIPT":
            size = _sources.local_script(script, path)
        elif method == "SCRIPT_CODE":
            size = _sources.script_code(script, charset, path)
        else:
            size = _sources.download(script, settings, path, stop)
        shown = [os.path.basename(part) for part in prefix[:1]] + prefix[1:] + [os.path.basename(path)]
        remote.info("%s: %d bytes; running %s in %s (charset %s)", method, size, " ".join(shown), task_dir, charset)
        try:
            outcome = _process.run(prefix + [path], task_dir, charset, stop, settings.snail_script_kill_grace)
        except OSError as exc:
            raise ScriptError(f"cannot start {prefix[0]}: {exc.strerror or exc}") from None
        return _result(outcome)
    finally:
        shielded(lambda: remove_tree(task_dir))


def _result(outcome: _process.Outcome) -> ExecuteResult:
    code = outcome.returncode
    took = f"{outcome.seconds:.2f} s"
    if code == 0 and not outcome.stopped:
        remote.info("script exited with code 0 after %s", took)
        return ExecuteResult.success({"exitCode": 0})
    result: Dict[str, Any] = {}
    if code is not None and code < 0:
        name = _signal_name(-code)
        text = f"script killed by signal {name}"
        result["signal"] = name
    elif code is not None:
        text = f"script exited with code {code}"
        if 128 < code < 160 and not WINDOWS:  # sh's code for a command a signal ended
            text += f" (128+{code - 128}: a command of the script was ended by {_signal_name(code - 128)})"
        result["exitCode"] = code
    else:
        text = "script not started"
    if outcome.stopped:
        text = f"stopped (the batch was stopped or timed out): {text}"
        result["stopped"] = True
    result = {"message": text, **result, "stderrTail": outcome.output.stderr_tail()}
    remote.error("%s after %s", text, took)
    return ExecuteResult.failure(result, text)


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"number {number}"

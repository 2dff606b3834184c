"""Importing the user's modules and finding the executors they declare.

Shared by ``snailjob run``, ``jobs`` and ``try``.  A target is ``MODULE`` or
``MODULE:OBJECT`` (``OBJECT`` may be a dotted attribute path).  For a bare
``MODULE`` every module-level object is looked at once, in definition order:

- ``@sj.job`` functions (callables carrying a string ``executor_name``),
- ``MapExecutor`` and ``MapReduceExecutor`` instances,
- ``@sj.retryable`` functions (``snailjob.Retryable``).

Objects imported into the module from elsewhere count too (they are
module-level objects of it); the same object found twice is taken once.
Executors registered only inside ``if __name__ == "__main__":`` are not
seen, since that block does not run on import.

Limits: importing runs the module's top-level code, with its side effects,
in this process; a module that starts a client itself at import will run it.
"""

from __future__ import annotations

import importlib
import json
import logging
import os
import sys
import traceback
import typing
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

from snailjob.args import declared_types
from snailjob.client import Client
from snailjob.compat import ExecutorManager
from snailjob.errors import ConfigurationError, SnailJobError
from snailjob.executors import Executor, ExecutorRegistry, MapExecutor, MapReduceExecutor
from snailjob.retry import Retryable, RetryRegistry
from snailjob.settings import Settings
from snailjob.work import is_async_callable

logger = logging.getLogger(__name__)

Item = Union[Executor, Retryable[Any, Any]]


class DiscoveryError(SnailJobError):
    """A usage problem: no such module or object, nothing to run, a clash of names."""


class UserImportError(Exception):
    """Importing the user's module raised; ``text`` is the traceback to show."""

    def __init__(self, module: str, text: str) -> None:
        super().__init__(f"importing {module} failed")
        self.module = module
        self.text = text


@dataclass
class Discovered:
    """What the targets hold.  ``client`` is set for a ``MODULE:client`` target;
    ``registry`` / ``retries`` are set when one registry-like object (the
    ``ExecutorManager`` class, an ``ExecutorRegistry``) is to be used as is."""

    modules: List[ModuleType] = field(default_factory=list)
    items: List[Item] = field(default_factory=list)
    client: Optional[Client] = None
    registry: Optional[ExecutorRegistry] = None
    retries: Optional[RetryRegistry] = None

    def names(self) -> List[str]:
        """Executor names (of retryables too), sorted."""
        return sorted(describe(item)["name"] for item in self.items)

    def job_items(self) -> List[Executor]:
        return [item for item in self.items if not isinstance(item, Retryable)]

    def build_client(self, settings: Settings) -> Client:
        """The client to run: the user's own, or a new one with these executors."""
        if self.client is not None:
            return self.client
        if self.registry is not None:
            return Client(settings, executors=self.registry, retries=self.retries)
        return Client(settings, executors=self.items)


def split_target(target: str) -> Tuple[str, Optional[str]]:
    """``"pkg.mod:obj"`` -> ``("pkg.mod", "obj")``; a ``.py`` path becomes a module name."""
    module, sep, attribute = target.partition(":")
    if not module or (sep and not attribute):
        raise DiscoveryError(f"{target!r} is not MODULE or MODULE:OBJECT")
    if module.endswith(".py"):
        path = os.path.abspath(module)
        if not os.path.isfile(path):
            raise DiscoveryError(f"no file {module}")
        directory, name = os.path.split(path[:-3])
        if directory not in sys.path:
            sys.path.insert(1, directory)
        module = name
    return module, attribute or None


def add_cwd_to_path() -> None:
    """Put the working directory first on ``sys.path``, as ``python -m`` does."""
    cwd = os.getcwd()
    if not sys.path or sys.path[0] not in ("", cwd):
        sys.path.insert(0, cwd)


def import_module(name: str) -> ModuleType:
    """Import ``name``; ``DiscoveryError`` when the module itself does not
    exist, ``UserImportError`` (with the traceback) when its code raised."""
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        missing = exc.name or ""
        if missing and (name == missing or name.startswith(missing + ".")):
            raise DiscoveryError(f"no module named {name!r} (searched the current directory and sys.path; "
                                 "give a dotted module name, not a path, or a .py file)") from None
        raise UserImportError(name, _user_traceback(exc)) from None
    except ConfigurationError:
        raise  # the settings are wrong, not the code: shown without a traceback
    except (Exception, SystemExit) as exc:  # KeyboardInterrupt and other BaseExceptions propagate
        raise UserImportError(name, _user_traceback(exc)) from None


def _user_traceback(exc: BaseException) -> str:
    """The traceback without the frames of this module and of importlib."""
    shown = traceback.TracebackException.from_exception(exc)
    machinery = os.path.dirname(importlib.__file__)
    frames = [frame for frame in shown.stack
              if frame.filename != __file__ and not frame.filename.startswith("<frozen importlib")
              and os.path.dirname(frame.filename) != machinery]
    shown.stack = traceback.StackSummary.from_list(frames)
    return "".join(shown.format())


def _attribute(module: ModuleType, path: str) -> Any:
    if path == "ExecutorManager" and not hasattr(module, path):
        return ExecutorManager  # sj.ExecutorManager.register(...) in a module that imports only snailjob
    value: Any = module
    for part in path.split("."):
        try:
            value = getattr(value, part)
        except AttributeError:
            raise DiscoveryError(f"module {module.__name__!r} has no object {path!r}") from None
    return value


def kind_of(obj: Any) -> Optional[str]:
    """``job``, ``map``, ``mapreduce``, ``retryable``, or None for anything else."""
    if isinstance(obj, (ModuleType, type)):
        return None
    if isinstance(obj, Retryable):
        return "retryable"
    if isinstance(obj, MapReduceExecutor):
        return "mapreduce"
    if isinstance(obj, MapExecutor):
        return "map"
    try:
        name = getattr(obj, "executor_name", None)
    except Exception:  # an odd proxy object: not ours
        return None
    return "job" if callable(obj) and isinstance(name, str) else None


def executors_in(module: ModuleType) -> List[Item]:
    """The module-level executors of ``module``, in definition order."""
    found: List[Item] = []
    for value in list(vars(module).values()):
        if kind_of(value) is not None and not any(value is seen for seen in found):
            found.append(value)
    return found


def _registry_items(registry: ExecutorRegistry, retries: Optional[RetryRegistry]) -> List[Item]:
    items: List[Item] = []
    for name in registry.names():
        spec = registry.get(name)
        if spec is not None:
            items.append(spec.source)  # type: ignore[arg-type]
    for scene, executor in (retries.names() if retries is not None else []):
        retryable = retries.get(scene, executor) if retries is not None else None
        if isinstance(retryable, Retryable):
            items.append(retryable)
    return items


def discover(targets: Sequence[str]) -> Discovered:
    """Import every target and collect what it declares (see the module docstring)."""
    add_cwd_to_path()
    result = Discovered()
    registries: List[Tuple[ExecutorRegistry, Optional[RetryRegistry]]] = []
    for target in targets:
        module_name, attribute = split_target(target)
        module = import_module(module_name)
        result.modules.append(module)
        if attribute is None:
            _extend(result.items, executors_in(module))
            continue
        value = _attribute(module, attribute)
        if isinstance(value, Client):
            if len(targets) != 1:
                raise DiscoveryError(f"{target} is a Client: run it alone (it has its own executors)")
            result.client = value
            _extend(result.items, _registry_items(value.registry, value.retries))
        elif value is ExecutorManager or (isinstance(value, type) and issubclass(value, ExecutorManager)):
            registries.append((value.registry, value.retries))
            _extend(result.items, _registry_items(value.registry, value.retries))
        elif isinstance(value, ExecutorRegistry):
            registries.append((value, None))
            _extend(result.items, _registry_items(value, None))
        elif isinstance(value, (list, tuple)):
            for index, element in enumerate(value):
                if kind_of(element) is None:
                    raise DiscoveryError(f"{target}[{index}] is {type(element).__name__}, not an executor "
                                         "(@sj.job function, MapExecutor, MapReduceExecutor or @sj.retryable)")
            _extend(result.items, list(value))
        elif kind_of(value) is not None:
            _extend(result.items, [value])
        else:
            raise DiscoveryError(f"{target} is a {type(value).__name__}; expected a snailjob.Client, "
                                 "ExecutorManager, an ExecutorRegistry, an executor or a list of executors")
    if len(targets) == 1 and len(registries) == 1:
        result.registry, result.retries = registries[0]  # used as is: later registrations reach the client
    if not result.items:
        where = ", ".join(targets)
        raise DiscoveryError(f"no executor found in {where}: declare @sj.job functions, MapExecutor / "
                             "MapReduceExecutor objects or @sj.retryable functions at module level, "
                             "or name an object with MODULE:OBJECT")
    _check_names(result.items)
    return result


def _extend(items: List[Item], new: Sequence[Item]) -> None:
    for item in new:
        if not any(item is seen for seen in items):
            items.append(item)


def _check_names(items: Sequence[Item]) -> None:
    """Executor names are unique among jobs; retryables by (scene, executor name)."""
    seen: Dict[Tuple[str, str], Item] = {}
    for item in items:
        name = describe(item)["name"]
        key = (item.scene, name) if isinstance(item, Retryable) else ("", name)
        if key in seen:
            what = f"retryables of scene {key[0]!r}" if key[0] else "executors"
            raise DiscoveryError(f"two different {what} are named {name!r} "
                                 f"({_origin(seen[key])} and {_origin(item)}); the names must be unique")
        seen[key] = item


# --- describing executors (``snailjob jobs``) ------------------------------------


def _origin(obj: Any) -> str:
    target = obj.func if isinstance(obj, Retryable) else obj
    module = getattr(target, "__module__", None) or "?"
    name = getattr(target, "__qualname__", None) or type(target).__name__
    return f"{module}.{name}"


def type_name(kind: Any) -> Optional[str]:
    """A readable name of a declared type (``Invoice``, ``List[int]``), None for none."""
    if kind is None:
        return None
    if isinstance(kind, type) and not typing.get_args(kind):
        return kind.__qualname__
    return str(kind).replace("typing.", "")


def _function(func: Callable[..., Any], task: Optional[str] = None) -> Dict[str, Any]:
    declared = declared_types(func)
    row: Dict[str, Any] = {"function": _origin(func), "async": is_async_callable(func),
                           "params": type_name(declared.get("params")), "item": type_name(declared.get("item"))}
    if task is not None:
        row = {"task": task, **row}
    return row


def describe(obj: Item) -> Dict[str, Any]:
    """A JSON-ready description: name, kind, async, params, and details per kind.

    ``params`` is the declared type of ``job_params`` (``@sj.job(params=...)``
    or a ``JobArgs[T]`` annotation, as ``snailjob.args.declared_types`` finds
    it); for map executors that of the ``ROOT_MAP`` function."""
    kind = kind_of(obj)
    if isinstance(obj, Retryable):
        return {"name": obj.executor_name, "kind": "retryable", "async": obj.is_async, "params": None,
                "scene": obj.scene, "signature": f"{obj.func.__name__}{obj.signature}",
                "function": _origin(obj)}
    if isinstance(obj, MapExecutor):
        functions = [_function(func, task) for task, func in obj.map_methods.items()]
        if isinstance(obj, MapReduceExecutor):
            if obj.reduce_method is not None:
                functions.append(_function(obj.reduce_method, "reduce"))
            if obj.merge_method is not None:
                functions.append(_function(obj.merge_method, "merge"))
        flags = {row["async"] for row in functions}
        root = next((row for row in functions if row["task"] == "ROOT_MAP"), None)
        return {"name": obj.executor_name, "kind": kind,
                "async": "mixed" if len(flags) > 1 else bool(flags and flags.pop()),
                "params": root["params"] if root else None, "functions": functions}
    row = _function(obj)
    name = str(getattr(obj, "executor_name", ""))
    return {"name": name, "kind": "job", "async": row["async"], "params": row["params"],
            "function": row["function"]}


def detail_text(info: Dict[str, Any]) -> str:
    """The last column of ``snailjob jobs``."""
    if info["kind"] == "retryable":
        return f"scene {info['scene']}: {info['signature']}"
    if info["kind"] == "job":
        return str(info["function"])
    parts = []
    for row in info.get("functions", []):
        extra = [f"{key}={row[key]}" for key in ("params", "item") if row[key]]
        if row["async"]:
            extra.append("async")
        parts.append(f"{row['task']}({', '.join(extra)})" if extra else str(row["task"]))
    return ", ".join(parts) or "no functions yet"


def jobs_command(ns: Any) -> int:
    """``snailjob jobs MODULE... [--json]``: 0 listed, 1 an import raised, 2 usage error."""
    try:
        found = discover(ns.targets)
    except UserImportError as exc:
        sys.stderr.write(exc.text)
        print(f"snailjob jobs: importing {exc.module} raised (traceback above)", file=sys.stderr)
        return 1
    except SnailJobError as exc:  # DiscoveryError, ConfigurationError, definition errors
        print(f"snailjob jobs: {exc}", file=sys.stderr)
        return 2
    rows = sorted((describe(item) for item in found.items), key=lambda row: (row["kind"], row["name"]))
    if ns.json:
        print(json.dumps(rows, indent=2))
        return 0
    table = [("NAME", "KIND", "ASYNC", "PARAMS", "DETAIL")]
    for row in rows:
        flag = row["async"] if isinstance(row["async"], str) else ("yes" if row["async"] else "no")
        table.append((row["name"], row["kind"], flag, row["params"] or "-", detail_text(row)))
    widths = [max(len(line[i]) for line in table) for i in range(4)]
    for line in table:
        print("  ".join(cell.ljust(widths[i]) for i, cell in enumerate(line[:4])) + "  " + line[4])
    return 0

"""What a ``@retryable`` call becomes on the wire: its arguments as
``argsStr``, its idempotent id and business number, and the server's limits.

Arguments travel as a JSON array with one element per parameter of the
function, in declaration order (the format SnailJob's ``jackson``
serializer uses, hence that serializer name): ``*args`` as a nested array,
``**kwargs`` as a nested object.  Values are converted with pydantic
(dataclasses, pydantic models, dates, decimals, UUIDs...); on a replay,
annotated parameters are converted back to their declared type, others
stay plain JSON values.

A replay's ``argsStr`` is text from the network: it is parsed within
bounds (``MAX_ARGS_DEPTH``, ``MAX_NUMBER_DIGITS``) and checked against the
function's signature before the function runs, and every refusal names what
is wrong.  Kept apart from ``snailjob.retry`` (the decorator and its local
attempts) because this is the codec and its limits; ``Retryable`` checks
its names and parameters with the functions here at decoration, and its
``encode_args`` / ``decode_args`` / ``idempotent_id_for`` / ``biz_no_for``
call them with what they need.
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import json
from typing import Any, Callable, Dict, List, Optional, Tuple, Type, Union, cast, get_type_hints

from pydantic import TypeAdapter, ValidationError
from pydantic_core import PydanticSerializationError, to_jsonable_python

from snailjob.errors import RetryDefinitionError, RetrySerializationError, SnailJobError
from snailjob.wire.codec import clean, dumps, location, short, too_deep

SERIALIZER_NAME = "jackson"
"""``serializerName`` of every report: the argument format is that of
SnailJob's ``jackson`` serializer (a JSON array, one element per parameter)."""

MAX_SCENE = 64
MAX_IDEMPOTENT_ID = 64
MAX_BIZ_NO = 64
MAX_EXECUTOR_NAME = 512
MAX_ARGS_DEPTH = 200
"""Deepest nesting of arrays/objects accepted in a replay's ``argsStr``."""
MAX_NUMBER_DIGITS = 4300
"""Longest number accepted in a replay's ``argsStr`` (Python's own limit for
converting text to ``int``)."""

Adapters = Dict[str, TypeAdapter[Any]]


# --- names -------------------------------------------------------------------


def wire_names(scene: Any, executor_name: Optional[str], func: Callable[..., Any]) -> Tuple[str, str]:
    """The scene and executor name a retryable reports under, checked against
    the server's limits; the executor name defaults to ``module.qualname``."""
    return (_check_text(scene, "scene", MAX_SCENE),
            _check_text(executor_name or _qualified_name(func), "executor name", MAX_EXECUTOR_NAME))


def check_sendable(signature: inspect.Signature, *, scene: str, executor_name: str) -> None:
    """Refuse a method: its ``self`` / ``cls`` cannot be sent to the server."""
    params = list(signature.parameters)
    if params and params[0] in ("self", "cls"):
        raise RetryDefinitionError(
            f"@retryable({scene!r}) {executor_name}: remote retries replay a function call and "
            f"cannot send {params[0]!r}; decorate a module-level function or use strategy=LOCAL_ONLY")


# --- idempotent id and business number --------------------------------------


def _md5(text: str) -> str:
    return hashlib.md5(text.encode("utf-8"), usedforsecurity=False).hexdigest()


def default_idempotent_id(scene: str, executor_name: str, args_str: str) -> str:
    """The default idempotent id: MD5 (hex) of ``scene_executorName_argsStr``;
    stable across processes and Python versions."""
    return _md5(f"{scene}_{executor_name}_{args_str}")


def idempotent_id(make: Optional[Callable[..., str]], args: Tuple[Any, ...], kwargs: Dict[str, Any], *,
                  scene: str, executor_name: str, args_str: str) -> str:
    """The call's idempotent id: ``make(*args, **kwargs)`` (the retryable's
    ``idempotent_id`` function), or the default."""
    if make is None:
        return default_idempotent_id(scene, executor_name, args_str)
    value = make(*args, **kwargs)
    return _check_text(str(value), "idempotent id", MAX_IDEMPOTENT_ID, error=RetrySerializationError)


def business_number(biz_no: Union[None, str, Callable[..., Any]], signature: inspect.Signature,
                    args: Tuple[Any, ...], kwargs: Dict[str, Any], *, executor_name: str) -> str:
    """The call's business number: ``biz_no`` names a parameter or is a
    function of the arguments; ``""`` without one."""
    if biz_no is None:
        return ""
    if callable(biz_no):
        value = biz_no(*args, **kwargs)
    else:
        bound = signature.bind(*args, **kwargs)
        bound.apply_defaults()
        value = bound.arguments[biz_no]
    text = "" if value is None else str(value)
    if len(text) > MAX_BIZ_NO:
        raise RetrySerializationError(f"business number of {executor_name} is longer than "
                                      f"{MAX_BIZ_NO} characters ({len(text)})")
    return text


# --- arguments ----------------------------------------------------------------


def encode_args(signature: inspect.Signature, args: Tuple[Any, ...], kwargs: Dict[str, Any], *,
                scene: str, executor_name: str) -> str:
    """A call's ``argsStr``: a JSON array, one element per parameter."""
    try:
        bound = signature.bind(*args, **kwargs)
    except TypeError as exc:
        raise RetrySerializationError(f"{executor_name}: {exc}") from None
    bound.apply_defaults()
    values: List[Any] = []
    for name, param in signature.parameters.items():
        value = bound.arguments.get(name)
        if param.kind is inspect.Parameter.VAR_POSITIONAL:
            value = list(value or ())
        elif param.kind is inspect.Parameter.VAR_KEYWORD:
            value = dict(value or {})
        try:
            values.append(to_jsonable_python(value))
        except (PydanticSerializationError, TypeError, ValueError) as exc:
            raise RetrySerializationError(
                f"argument {name!r} of {executor_name} (scene {scene}) cannot be sent to the "
                f"server for a retry: {type(value).__name__} is not JSON-serializable ({exc})") from None
    return dumps(values)


def decode_args(signature: inspect.Signature, args_str: Optional[str], adapters: Callable[[], Adapters], *,
                scene: str, name: str) -> Tuple[Tuple[Any, ...], Dict[str, Any]]:
    """``argsStr`` (text from the server) back to ``(args, kwargs)`` for a
    function of ``signature`` called ``name``; the parameters that
    ``adapters()`` has an adapter for are converted to their declared type
    (``adapters`` is called only when there is a value to convert).

    Raises ``RetrySerializationError`` naming the scene and what is wrong
    with the arguments (not JSON, not an array, nested deeper than
    ``MAX_ARGS_DEPTH``, a number longer than ``MAX_NUMBER_DIGITS``, the
    wrong number of values, a value of the wrong type), so a bad replay
    is refused before the function runs."""
    where = f"scene {scene!r}"
    text = args_str or "[]"
    if too_deep(text, MAX_ARGS_DEPTH):
        raise RetrySerializationError(f"{where}: argsStr is nested too deeply (limit {MAX_ARGS_DEPTH})")
    try:
        values = json.loads(text, parse_int=_bounded_int, parse_float=_bounded_float)
    except _NumberTooLong as exc:
        raise RetrySerializationError(f"{where}: argsStr holds {exc}") from None
    except ValueError as exc:
        raise RetrySerializationError(f"{where}: argsStr is not JSON ({exc})") from None
    except RecursionError:  # the depth scan should have caught it
        raise RetrySerializationError(f"{where}: argsStr is nested too deeply") from None
    if not isinstance(values, list):
        raise RetrySerializationError(
            f"{where}: argsStr must be a JSON array (one value per parameter), got a JSON "
            f"{_json_type(values)}")
    params = list(signature.parameters.values())
    least = max((i + 1 for i, p in enumerate(params) if _required(p)), default=0)
    if not least <= len(values) <= len(params):
        takes = f"{least}" if least == len(params) else f"{least} to {len(params)}"
        raise RetrySerializationError(
            f"{where}: argsStr holds {_count(len(values), 'argument')}, {name}() takes {takes}")
    args: List[Any] = []
    kwargs: Dict[str, Any] = {}
    named = {p.name for p in params if p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD,
                                                   inspect.Parameter.KEYWORD_ONLY)}
    try:
        for param, value in zip(params, values):
            if param.kind is inspect.Parameter.VAR_POSITIONAL and not isinstance(value, (list, type(None))):
                raise RetrySerializationError(
                    f"{where}: argument {param.name!r} (*{param.name}) must be a JSON array or null, "
                    f"got a JSON {_json_type(value)}")
            if param.kind is inspect.Parameter.VAR_KEYWORD:
                if not isinstance(value, (dict, type(None))):
                    raise RetrySerializationError(
                        f"{where}: argument {param.name!r} (**{param.name}) must be a JSON object or null, "
                        f"got a JSON {_json_type(value)}")
                clash = sorted(named & set(value or ()))
                if clash:
                    raise RetrySerializationError(
                        f"{where}: argument {param.name!r} (**{param.name}) repeats the parameter "
                        f"{short(clash[0], 64)}")
            value = _convert(adapters().get(param.name), param, value, where, name)
            if param.kind is inspect.Parameter.VAR_POSITIONAL:
                args.extend(value or ())
            elif param.kind is inspect.Parameter.VAR_KEYWORD:
                kwargs.update(value or {})
            elif param.kind is inspect.Parameter.KEYWORD_ONLY:
                kwargs[param.name] = value
            else:
                args.append(value)
    except RecursionError:
        raise RetrySerializationError(f"{where}: argsStr is nested too deeply") from None
    try:
        signature.bind(*args, **kwargs)
    except TypeError as exc:  # a case the checks above missed: still the arguments' fault
        raise RetrySerializationError(
            f"{where}: argsStr does not fit {name}(): {short(str(exc), 200)}") from None
    return tuple(args), kwargs


def _convert(adapter: Optional[TypeAdapter[Any]], param: inspect.Parameter, value: Any, where: str,
             name: str) -> Any:
    if adapter is None:
        return value
    try:
        return adapter.validate_python(value)
    except ValidationError as exc:
        first = exc.errors()[0]
        # the location may hold keys from the server's text, the message the input: quoted
        at = location(first["loc"])
        raise RetrySerializationError(
            f"{where}: argument {param.name!r} of {name}(): {clean(first['msg'], 200)}"
            + (f" at {at}" if at else "")) from None


def parameter_adapters(func: Callable[..., Any], signature: inspect.Signature, *, scene: str,
                       executor_name: str, local_only: bool) -> Adapters:
    """A pydantic adapter per annotated parameter of ``func``; an annotation
    pydantic cannot handle is refused (skipped when ``local_only``: nothing
    is sent).  ``NameError`` when an annotation names something not defined
    yet."""
    hints = get_type_hints(func)
    adapters: Adapters = {}
    for name, param in signature.parameters.items():
        hint = hints.get(name)
        if hint is None or hint is Any:
            continue
        target: Any = hint
        if param.kind is inspect.Parameter.VAR_POSITIONAL:
            target = cast(Any, Tuple)[hint, ...]
        elif param.kind is inspect.Parameter.VAR_KEYWORD:
            target = cast(Any, Dict)[str, hint]
        try:
            adapters[name] = TypeAdapter(target)
        except Exception as exc:
            if local_only:
                continue
            raise RetryDefinitionError(
                f"@retryable({scene!r}) {executor_name}: parameter {name!r} of type "
                f"{getattr(hint, '__name__', hint)} cannot be sent to the server ({exc.__class__.__name__}); "
                "use JSON-friendly types (or a dataclass / pydantic model), or strategy=LOCAL_ONLY") from None
    return adapters


class ParameterAdapters:
    """``parameter_adapters`` of a function, built at decoration or, when an
    annotation names something defined later in its module, on first use;
    calling it gives them."""

    def __init__(self, func: Callable[..., Any], signature: inspect.Signature, *, scene: str,
                 executor_name: str, local_only: bool) -> None:
        self._build = functools.partial(parameter_adapters, func, signature, scene=scene,
                                        executor_name=executor_name, local_only=local_only)
        self._executor_name = executor_name
        self._cache: Optional[Adapters] = None
        try:
            self._cache = self._build()
        except NameError:
            pass  # a forward reference defined later in the module: resolved on first use

    def __call__(self) -> Adapters:
        if self._cache is None:
            try:
                self._cache = self._build()
            except NameError as exc:
                raise RetryDefinitionError(f"{self._executor_name}: cannot resolve a parameter annotation "
                                           f"({exc})") from None
        return self._cache


# --- helpers ----------------------------------------------------------------


class _NumberTooLong(Exception):
    """A number in ``argsStr`` longer than ``MAX_NUMBER_DIGITS``."""


def _bounded_int(text: str) -> int:
    if len(text) > MAX_NUMBER_DIGITS:
        raise _NumberTooLong(f"a number of {len(text)} digits (limit {MAX_NUMBER_DIGITS})")
    return int(text)


def _bounded_float(text: str) -> float:
    if len(text) > MAX_NUMBER_DIGITS:
        raise _NumberTooLong(f"a number of {len(text)} characters (limit {MAX_NUMBER_DIGITS})")
    return float(text)


def _required(param: inspect.Parameter) -> bool:
    """A parameter a replay's ``argsStr`` must give a value for."""
    return param.default is inspect.Parameter.empty and param.kind not in (
        inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


def _json_type(value: Any) -> str:
    """The JSON name of a decoded value's type."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    return "array" if isinstance(value, list) else "object"


def _check_text(value: Any, what: str, limit: int, error: Type[SnailJobError] = RetryDefinitionError) -> str:
    if not isinstance(value, str) or not value.strip():
        raise error(f"{what} must be a non-blank string, got {value!r}")
    if len(value) > limit:
        raise error(f"{what} {value[:80]!r} is longer than the server's {limit} characters ({len(value)})")
    return value


def _qualified_name(func: Callable[..., Any]) -> str:
    module = getattr(func, "__module__", None) or "?"
    return f"{module}.{getattr(func, '__qualname__', getattr(func, '__name__', repr(func)))}"


def retry_target(retry_with: Callable[..., Any], func: Callable[..., Any], signature: inspect.Signature,
                  is_async: bool, scene: str) -> Callable[..., Any]:
    """``retry_with``, checked: callable, of the same kind (coroutine or
    not) as the decorated function, and accepting its parameters."""
    where = f"@retryable({scene!r}) of {getattr(func, '__qualname__', func)!r}: retry_with"
    if not callable(retry_with):
        raise RetryDefinitionError(f"{where} must be a function, got {retry_with!r}")
    if inspect.iscoroutinefunction(retry_with) != is_async:
        kind = "a coroutine function" if is_async else "a plain function"
        raise RetryDefinitionError(f"{where} must be {kind}, like the function it stands in for")
    try:
        target_signature = inspect.signature(retry_with)
    except (TypeError, ValueError):
        return retry_with  # a builtin without a signature: trust it
    args, kwargs = _placeholders(signature)
    try:
        target_signature.bind(*args, **kwargs)
    except TypeError as exc:
        raise RetryDefinitionError(f"{where} does not take the function's arguments "
                                   f"{list(signature.parameters)}: {exc}") from None
    return retry_with


def _placeholders(signature: inspect.Signature) -> Tuple[Tuple[Any, ...], Dict[str, Any]]:
    """Arguments shaped like a call of ``signature``: positional-only
    parameters by position, the others by name (``*args``/``**kwargs``
    left empty)."""
    args: List[Any] = []
    kwargs: Dict[str, Any] = {}
    for name, param in signature.parameters.items():
        if param.kind is param.POSITIONAL_ONLY:
            args.append(None)
        elif param.kind in (param.POSITIONAL_OR_KEYWORD, param.KEYWORD_ONLY):
            kwargs[name] = None
    return tuple(args), kwargs

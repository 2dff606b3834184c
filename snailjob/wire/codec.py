"""JSON encoding of request bodies and reply data, as the Java server expects.

The body of every call is one JSON array of the Java method's arguments
(protocol.md section 2.2); ``GrpcResult.data`` is JSON text.  Values that
JSON cannot carry (sets, dataclasses, arbitrary objects, NaN) are converted
rather than allowed to fail a report: a result must never be lost because it
did not serialise.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from typing import Any, List, Optional

from pydantic import BaseModel, ValidationError


class BodyError(ValueError):
    """A request body that is not what the protocol requires."""


def _fallback(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    if isinstance(value, (bytes, bytearray)):
        return value.decode("utf-8", errors="replace")
    return str(value)


def _finite(value: Any) -> Any:
    """Replace NaN and infinities (which Jackson rejects) by their text."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def dumps(value: Any) -> str:
    """Compact JSON that the server's Jackson parser accepts, never raising
    for an unusual value.  The text is always valid UTF-8 (a protobuf string
    must be): lone surrogates, e.g. from undecodable file names, are sent as
    ``\\udXXX`` escapes."""
    try:
        text = json.dumps(value, separators=(",", ":"), ensure_ascii=False,
                          allow_nan=False, default=_fallback)
    except ValueError:
        # NaN/Infinity somewhere (possibly inside a converted object): round-trip
        # through a permissive encoding, then clean.
        loose = json.loads(json.dumps(value, default=_fallback))
        text = json.dumps(_finite(loose), separators=(",", ":"), ensure_ascii=False)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = json.dumps(json.loads(text), separators=(",", ":"), ensure_ascii=True)
    return text


# a JSON string (an unterminated one runs to the end of the text) or a bracket
_DEPTH_TOKENS = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*(?:"|\Z)|[\[\]{}]', re.DOTALL)


def too_deep(text: str, limit: int) -> bool:
    """True when the JSON ``text`` nests arrays/objects more than ``limit``
    levels deep.  A linear scan that never recurses, so it is safe before
    ``json.loads`` on untrusted text; brackets inside strings (escapes
    included) do not count."""
    if text.count("[") + text.count("{") <= limit:
        return False  # cannot be deeper than the number of openers
    depth = 0
    for match in _DEPTH_TOKENS.finditer(text):
        token = match.group()
        if token in "[{":
            depth += 1
            if depth > limit:
                return True
        elif token in "]}":
            depth -= 1
    return False


def encode_body(*args: Any) -> str:
    """The body of an outbound call: a JSON array of the arguments."""
    return dumps(list(args))


def decode_body(body: str) -> List[Any]:
    """Parse an inbound body; it must be a JSON array."""
    if not body or not body.strip():
        raise BodyError("body is empty; expected a JSON array")
    try:
        value = json.loads(body)
    except (ValueError, RecursionError) as exc:
        raise BodyError(f"body is not valid JSON: {str(exc)[:200]}") from None
    if not isinstance(value, list):
        raise BodyError(f"body is a JSON {type(value).__name__}; expected a JSON array")
    return value


def first_object(args: List[Any], what: str) -> dict:
    """``args[0]`` as a JSON object, or a ``BodyError`` naming ``what``."""
    if not args:
        raise BodyError(f"{what}: body is an empty array; expected [{{...}}]")
    if not isinstance(args[0], dict):
        raise BodyError(f"{what}: first element is a JSON {type(args[0]).__name__}; expected an object")
    return args[0]


def decode_data(data: str) -> Optional[Any]:
    """Parse ``GrpcResult.data``; blank or invalid text gives ``None``."""
    if not data:
        return None
    try:
        return json.loads(data)
    except ValueError:
        return None


def short(text: str, limit: int = 100) -> str:
    """``repr`` of ``text``, cut to about ``limit`` characters for messages."""
    return repr(text) if len(text) <= limit else repr(text[:limit]) + f"... ({len(text)} chars)"


def clean(text: str, limit: int = 300) -> str:
    """``text`` as it is when it is printable (no newline, no escape
    character) and at most ``limit`` characters long; otherwise ``short``.
    For text from the network that reads best unquoted (a server's message)."""
    return text if len(text) <= limit and text.isprintable() else short(text, limit)


def location(loc: Any) -> str:
    """A pydantic error location, ``a.b.0``; a part that is not a plain
    name (a key from the payload) is quoted with ``short``."""
    return ".".join(str(p) if isinstance(p, int) or (isinstance(p, str) and p.isidentifier())
                    else short(str(p), 40) for p in loc)


def summarize(exc: ValidationError) -> str:
    """The first problems of a payload that did not validate, ``field: why``
    (network text in either part quoted)."""
    parts = []
    for err in exc.errors()[:5]:
        where = location(err["loc"]) or "body"
        parts.append(f"{where}: {clean(err['msg'], 200)}")
    return "; ".join(parts)

"""The OpenAPI client's HTTP plumbing: one request, its headers and its errors.

Apart from the API methods (``_client.py``) so those read one call per
endpoint: ``Transport`` checks the connection settings once, sends each request
on a new connection to ``{base_url}{path}`` with the headers ``namespace``,
``group-name`` and ``token`` (and ``system-version``, ``executor-type: 2``),
unwraps the server's result envelope and turns everything that goes wrong (the
network, HTTP, a reply that is no SnailJob result, ``status != 1``) into an
``OpenApiError`` whose text never holds the token. What the envelope's ``data``
means is ``_codec.py``'s business.
"""

from __future__ import annotations

import html
import http.client
import json
import logging
import re
import socket
import ssl
import time
import urllib.parse
from typing import Any, Dict, Mapping, Optional

from snailjob._version import __version__
from snailjob.openapi.enums import ExecutorType
from snailjob.openapi.errors import (
    OpenApiAuthError,
    OpenApiHTTPError,
    OpenApiResponseError,
    OpenApiServerError,
    OpenApiTimeout,
    OpenApiTransportError,
    OpenApiValidationError,
)
from snailjob.openapi.paths import DEFAULT_PREFIX
from snailjob.wire.codec import clean

logger = logging.getLogger("snailjob.openapi")

_SNIPPET = 200  # characters of a reply body shown in an error
_READ_FOR_SNIPPET = 65536  # bytes of a body looked at for that
_HTML = re.compile(r"(?i)<(?:!doctype|html|head|body|title|h1|p|div)\b")
_HIDDEN = re.compile(r"(?is)<(head|style|script)\b.*?</\1\s*>")
_TAG = re.compile(r"(?s)<[^>]*>")


class Transport:
    """Where and as whom to call, checked; ``call`` sends one request.

    ``url_source`` says where ``base_url`` came from, for the error messages:
    ``"base_url"`` (given), ``"SNAIL_OPENAPI_URL"`` or ``"default"``."""

    def __init__(self, base_url: str, *, namespace: str, group: str, token: str, timeout: Optional[float],
                 ssl_context: Optional[ssl.SSLContext], url_source: str) -> None:
        self._url_source = url_source
        for field, value in (("namespace", namespace), ("group", group), ("token", token)):
            if not isinstance(value, str) or not value.strip():
                raise OpenApiValidationError(field, "must be a non-blank string")
            if any(ord(ch) < 32 or ord(ch) == 127 for ch in value):  # the value is never echoed
                raise OpenApiValidationError(field, "must not contain control characters (it is an HTTP header)")
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not timeout > 0:
            raise OpenApiValidationError("timeout", f"must be a number of seconds > 0, got {timeout!r}")
        parts = urllib.parse.urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise OpenApiValidationError("base_url", f"must look like http://host:8080/snail-job, got {base_url!r}")
        if parts.query or parts.fragment or parts.username or parts.password:
            raise OpenApiValidationError("base_url", "must not contain a query, a fragment or credentials")
        self._https = parts.scheme == "https"
        self._host = parts.hostname
        try:
            self._port = parts.port or (443 if self._https else 80)
        except ValueError:
            raise OpenApiValidationError("base_url", f"has an invalid port: {base_url!r}") from None
        self._prefix = parts.path.rstrip("/")
        self._netloc = parts.netloc
        self.base_url = urllib.parse.urlunsplit((parts.scheme, parts.netloc, self._prefix, "", ""))
        self.namespace = namespace
        self.group = group
        self.timeout = float(timeout)
        self._token = token
        self._ssl_context = ssl_context

    def _headers(self) -> Dict[str, str]:
        return {
            "Content-Type": "application/json",
            "Accept": "application/json",
            "User-Agent": f"snail-job-python/{__version__}",
            "namespace": self.namespace,
            "group-name": self.group,
            "token": self._token,
            "system-version": __version__,
            "executor-type": str(int(ExecutorType.PYTHON)),
        }

    def _redact(self, text: str) -> str:
        if len(self._token) >= 4:
            text = text.replace(self._token, "***")
        return re.sub(r"(?i)(token\s*[:=]\s*)[^\]\s,;\"']+", r"\1***", text)

    def _snippet(self, raw: bytes) -> str:
        """At most ``_SNIPPET`` characters of a reply body, token removed; an HTML page
        (a servlet container's error page) as its text on one line, tags and styles removed."""
        text = self._redact(raw[:_READ_FOR_SNIPPET].decode("utf-8", "replace"))
        if _HTML.search(text):
            text = self._redact(html.unescape(_TAG.sub(" ", _HIDDEN.sub(" ", text))))
            text = " ".join(text.split())
        else:
            text = text.strip()
        if len(text) > _SNIPPET or len(raw) > _READ_FOR_SNIPPET:
            text = text[:_SNIPPET - 3].rstrip() + "..."
        return text

    def _url_name(self) -> str:
        """How the messages name the base URL's setting."""
        return "SNAIL_OPENAPI_URL" if self._url_source != "base_url" else "the base URL"

    def _unreachable(self, exc: BaseException) -> str:
        """``cannot reach URL (where it came from): reason; what to do``."""
        if isinstance(exc, ConnectionRefusedError):
            reason = "connection refused"
        elif isinstance(exc, socket.gaierror):
            reason = f"unknown host {clean(self._host, 100)} ({clean(exc.strerror or str(exc), 100)})"
        elif isinstance(exc, ConnectionResetError):
            reason = "connection reset by the server"
        elif isinstance(exc, http.client.RemoteDisconnected):
            reason = "the server closed the connection without answering"
        elif isinstance(exc, http.client.BadStatusLine):
            # http.client's exceptions can carry the server's bytes
            reason = (f"the answer is not HTTP/1.x ({clean(self._redact(str(exc)), 60)}); "
                      "is this the server's gRPC port instead of its web port?")
        elif isinstance(exc, ssl.SSLError):
            reason = f"TLS error: {clean(self._redact(str(exc)), 200)}"
        elif isinstance(exc, OSError) and exc.strerror:
            reason = clean(exc.strerror.lower(), 200)
        else:
            reason = f"{type(exc).__name__}: {clean(self._redact(str(exc)), 300)}"
        if self._url_source == "SNAIL_OPENAPI_URL":
            where, fix = " (SNAIL_OPENAPI_URL)", "start the server or set SNAIL_OPENAPI_URL"
        elif self._url_source == "default":
            where, fix = " (the default: SNAIL_OPENAPI_URL is not set)", "start the server or set SNAIL_OPENAPI_URL"
        else:
            where, fix = "", "start the server or pass its web port's URL as base_url"
        return f"cannot reach {self.base_url}{where}: {reason}; {fix}"

    def _http_error(self, http_status: int, reason: str, target: str, raw: bytes) -> str:
        """``HTTP 404 Not Found from URL: short body; hint``: never a whole page."""
        url = urllib.parse.urlunsplit(("https" if self._https else "http", f"{self._netloc}", target, "", ""))
        reason = reason.strip() or http.client.responses.get(http_status, "")  # Tomcat sends no reason phrase
        text = f"HTTP {http_status} {clean(reason, 80)}".rstrip() + f" from {clean(url, 300)}"
        body = self._snippet(raw)
        if body:
            text += f": {clean(body, _SNIPPET + 50)}"
        if http_status == 404:
            name = self._url_name()
            if not self._prefix:
                text += f"; is {name} missing the /{DEFAULT_PREFIX} context path?"
            elif self._prefix != f"/{DEFAULT_PREFIX}":
                text += (f"; is {self._prefix}, the context path of {name}, right? "
                         f"(the server's default is /{DEFAULT_PREFIX})")
        return text

    def _connection(self) -> http.client.HTTPConnection:
        if self._https:
            context = self._ssl_context or ssl.create_default_context()
            return http.client.HTTPSConnection(self._host, self._port, timeout=self.timeout, context=context)
        return http.client.HTTPConnection(self._host, self._port, timeout=self.timeout)

    def call(self, method: str, path: str, *, query: Optional[Mapping[str, Any]] = None, body: Any = None) -> Any:
        """One request; returns the envelope's ``data`` or raises an ``OpenApiError``."""
        target = self._prefix + path
        if query:
            target += "?" + urllib.parse.urlencode(query)
        payload = None if body is None else json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()
        started = time.monotonic()
        conn = self._connection()
        try:
            conn.request(method, target, body=payload, headers=self._headers())
            response = conn.getresponse()
            raw = response.read()
            http_status, reason = response.status, response.reason
        except (socket.timeout, TimeoutError):
            logger.warning("%s %s: no answer within %.1fs", method, path, self.timeout)
            raise OpenApiTimeout(f"no answer from {self.base_url} within {self.timeout:g}s", path=path) from None
        except (OSError, http.client.HTTPException) as exc:
            problem = self._unreachable(exc)
            logger.warning("%s %s: %s", method, path, problem)
            raise OpenApiTransportError(problem, path=path) from None
        finally:
            conn.close()
        elapsed = (time.monotonic() - started) * 1000
        if not 200 <= http_status < 300:
            logger.warning("%s %s -> HTTP %s in %.0f ms", method, path, http_status, elapsed)
            raise OpenApiHTTPError(self._http_error(http_status, reason, target.split("?", 1)[0], raw), path=path,
                                   http_status=http_status)
        try:
            envelope = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            raise OpenApiResponseError(f"the reply is not JSON: {self._snippet(raw)!r}", path=path) from None
        if not isinstance(envelope, dict) or "status" not in envelope:
            raise OpenApiResponseError(f"the reply is not a SnailJob result: {self._snippet(raw)!r}", path=path)
        status = envelope.get("status")
        logger.debug("%s %s -> status %s in %.0f ms", method, path, status, elapsed)
        if status != 1:
            text = self._redact(str(envelope.get("message") or "(no message)"))
            code = status if isinstance(status, int) and not isinstance(status, bool) else None
            auth = code == 5001 or text.lower().startswith("token authentication failed")
            message = clean(text, 2000)  # quoted when it holds a newline or an escape character
            raise (OpenApiAuthError if auth else OpenApiServerError)(message, path=path, status=code)
        return envelope.get("data")

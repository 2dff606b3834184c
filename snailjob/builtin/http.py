"""``snailJobHttpExecutor``: the console's built-in HTTP call.

The console's form arrives as ``args.job_params`` (JSON text, or a dict):
``{"method", "url", "mediaType", "body", "headers": {name: value}, "timeout"}``.
The rules follow the Java client, except where noted:

- ``method`` is upper-cased; missing or blank is GET (Java fails with a
  NullPointerException).  Only POST, PUT and DELETE are sent as themselves;
  anything else (PATCH, HEAD, OPTIONS, ...) is sent as GET, as in Java, with
  a remote warning.
- ``url``: ``http://`` is prepended unless it starts with ``http://`` or
  ``https://`` (any case; Java checks for a lower-case ``http`` only).  Any
  other scheme (``file:``, ``ftp://``...) and credentials in the URL are
  refused.  Non-ASCII and spaces in the path are percent-encoded (UTF-8).
- ``body`` must be a string.  POST, PUT and DELETE send it (UTF-8); a blank
  one (also whitespace only; Java: only empty) is sent as ``{}``.  GET sends
  none.  Content-Type: ``mediaType`` when given; else ``application/json``
  when the body is valid JSON, unless the form's headers set a Content-Type.
- Headers: the form's headers, then each workflow-context entry (the context
  at dispatch plus the task's own changes), replacing a same-named header
  (names compared without case).  A string is sent as is, anything else as
  compact JSON.  A value with a CJK ideograph (U+3400-4DBF, U+4E00-9FFF,
  U+F900-FAFF, U+20000-3FFFF: a superset of Java's U+4E00-9FA5) is sent as
  the Base64 (standard, padded) of its UTF-8 bytes.  Any other value that is
  not ISO-8859-1 text without control characters, or a name that is not an
  HTTP token, fails the task naming the header.
- ``timeout`` (seconds, default 60, at most a day) bounds the connect and
  each read, not the whole exchange; 0 or less is 60 (Java: no timeout at
  all, a hang we do not copy).  Name resolution is not bounded by it.
- Redirects are not followed (a 3xx fails, as in Java); no proxy is used;
  HTTPS certificates are verified with ``ssl.create_default_context()``.
- Success is status 200 exactly, then, when ``SNAIL_HTTP_RESPONSE_CODE`` is
  set, the check Java intends (Java reads the type from the wrong property):
  ``json``: the body is a JSON object whose ``SNAIL_HTTP_RESPONSE_FIELD`` is
  the JSON integer equal to the code (``"200"`` and ``200.0`` are not, as in
  Java); ``text``: the body, stripped of surrounding whitespace (Java does not
  strip), is the code's digits.
- The result of a success is the response text, cut to 64 KiB (a note says
  so); at most 8 MiB of a response is read.  A failure's result is an object
  with the status, the reason and the first 2 KiB of the body.
- A stop of the task (its stop event) closes the connection; the call
  returns within about 0.1 s (except while resolving the host name).
"""

from __future__ import annotations

import base64
import errno
import http.client
import json
import logging
import math
import os
import re
import selectors
import socket
import ssl
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Dict, Optional, Tuple
from urllib.parse import quote, urlsplit

from snailjob.args import JobArgs
from snailjob.context import current_task_or_none
from snailjob.settings import Settings
from snailjob.wire.models import ExecuteResult

_remote = logging.getLogger("snailjob.remote")

DEFAULT_TIMEOUT = 60.0
MAX_TIMEOUT = 86400.0
RESULT_CAP = 64 * 1024
FAILURE_BODY_CAP = 2 * 1024
READ_LIMIT = 8 * 1024 * 1024
SENT_AS_IS = ("POST", "PUT", "DELETE")
_CJK = re.compile("[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0003ffff]")
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+\Z")
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*):(?![0-9])")
_URL_SAFE = "".join(chr(c) for c in range(0x21, 0x7F))  # printable ASCII stays; the rest is %-encoded
_PENDING = {errno.EINPROGRESS, errno.EWOULDBLOCK, errno.EAGAIN, getattr(errno, "WSAEWOULDBLOCK", -1)}
_JSON_NAMES = {dict: "object", list: "array", str: "string", bool: "boolean", int: "number", float: "number"}


class FormError(ValueError):
    """The console's form is unusable (the message names the field)."""


class _Stopped(Exception):
    pass


@dataclass
class Request:
    method: str  # what is sent
    asked: str  # what the form asked for
    url: str
    tls: bool
    host: str
    port: int
    target: str
    headers: Dict[str, str]
    body: Optional[bytes]
    timeout: float


def _kind(value: Any) -> str:
    return "null" if value is None else _JSON_NAMES.get(type(value), type(value).__name__)


def _text(form: Dict[str, Any], name: str) -> str:
    value = form.get(name)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise FormError(f"{name} must be a JSON string, not a JSON {_kind(value)}")
    return value


def _split_url(url: str) -> Tuple[str, bool, str, int, str]:
    if not url.lower().startswith(("http://", "https://")):
        scheme = _SCHEME.match(url)
        if scheme:
            raise FormError(f"url: the scheme {scheme.group(1)}: is not supported (only http and https)")
        url = "http://" + url
    if _CONTROL.search(url):
        raise FormError("url contains control characters")
    parts = urlsplit(url)
    if not parts.hostname:
        raise FormError(f"url {url!r} has no host")
    if parts.username is not None:
        raise FormError("url: credentials in the URL are not supported (send an Authorization header)")
    try:
        port = parts.port
    except ValueError:
        raise FormError(f"url {url!r} has an invalid port") from None
    tls = parts.scheme.lower() == "https"
    target = quote(parts.path or "/", safe=_URL_SAFE)
    if parts.query:
        target += "?" + quote(parts.query, safe=_URL_SAFE)
    return url, tls, parts.hostname, port or (443 if tls else 80), target


def _put(headers: Dict[str, str], name: Any, value: str, where: str) -> None:
    if not isinstance(name, str) or not _TOKEN.match(name):
        raise FormError(f"{where} {name!r}: not a valid HTTP header name")
    try:
        value.encode("latin-1")
    except UnicodeEncodeError:
        raise FormError(f"{where} {name!r}: the value has characters outside ISO-8859-1") from None
    if _CONTROL.search(value):
        raise FormError(f"{where} {name!r}: the value contains control characters (such as a newline)")
    for old in [k for k in headers if k.lower() == name.lower()]:
        del headers[old]
    headers[name] = value


def _is_json(text: str) -> bool:
    try:
        json.loads(text)
    except (ValueError, RecursionError):
        return False
    return True


def parse_form(job_params: Any, wf_context: Dict[str, Any]) -> Request:
    """The request the form asks for; ``FormError`` when it cannot be sent."""
    form = job_params
    if form is None or (isinstance(form, str) and not form.strip()):
        raise FormError("jobParams is empty: expected the console's HTTP form (a JSON object with a url)")
    if isinstance(form, str):
        try:
            form = json.loads(form)
        except (ValueError, RecursionError) as exc:
            raise FormError(f"jobParams is not valid JSON ({exc})") from None
    if not isinstance(form, dict):
        raise FormError(f"jobParams is a JSON {_kind(form)}, not an object (the console's HTTP form)")
    asked = _text(form, "method").strip().upper() or "GET"
    method = asked if asked in SENT_AS_IS else "GET"
    url = _text(form, "url").strip()
    if not url:
        raise FormError("url is empty")
    url, tls, host, port, target = _split_url(url)
    body, media_type = _text(form, "body"), _text(form, "mediaType").strip()
    timeout = form.get("timeout")
    if isinstance(timeout, str) and timeout.strip():
        try:
            timeout = float(timeout)
        except ValueError:
            raise FormError(f"timeout must be a number of seconds, not {timeout!r}") from None
    if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, (int, float))
                                or not math.isfinite(timeout)):
        raise FormError(f"timeout must be a number of seconds, not a JSON {_kind(timeout)} ({timeout!r})")
    seconds = float(timeout) if timeout is not None and timeout > 0 else DEFAULT_TIMEOUT
    if seconds > MAX_TIMEOUT:
        raise FormError(f"timeout must be at most {MAX_TIMEOUT:g} seconds, not {timeout!r}")
    given = form.get("headers")
    if given is not None and not isinstance(given, dict):
        raise FormError(f"headers must be a JSON object of name: value, not a JSON {_kind(given)}")
    headers: Dict[str, str] = {}
    for name, value in (given or {}).items():
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            raise FormError(f"header {name!r}: the value must be a string, not a JSON {_kind(value)}")
        _put(headers, name, value if isinstance(value, str) else json.dumps(value), "header")
    for name, value in wf_context.items():
        text = value if isinstance(value, str) else json.dumps(
            value, ensure_ascii=False, separators=(",", ":"), default=str)
        if _CJK.search(text):
            text = base64.b64encode(text.encode("utf-8")).decode("ascii")
        _put(headers, name, text, "workflow-context header")
    payload: Optional[bytes] = None
    if method in SENT_AS_IS:
        body = body if body.strip() else "{}"
        payload = body.encode("utf-8")
        if media_type:
            _put(headers, "Content-Type", media_type, "mediaType as header")
        elif _is_json(body) and not any(k.lower() == "content-type" for k in headers):
            headers["Content-Type"] = "application/json"
    return Request(method, asked, url, tls, host, port, target, headers, payload, seconds)


class _Canceller:
    """Shuts the connection's socket down (through a duplicate of it, so
    that TLS wrapping does not matter) when the task is stopped."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._sock: Optional[socket.socket] = None
        self.cancelled = False

    def watch(self, sock: socket.socket) -> None:
        with self._lock:
            if self.cancelled:
                raise _Stopped()
            self._sock = sock.dup()

    def cancel(self) -> None:
        with self._lock:
            self.cancelled = True
            if self._sock is not None:
                try:
                    self._sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self) -> None:
        with self._lock:
            if self._sock is not None:
                self._sock.close()
                self._sock = None


def _open(host: str, port: int, timeout: float, stop: threading.Event) -> socket.socket:
    """Connect within ``timeout``, giving up when ``stop`` is set."""
    deadline = time.monotonic() + timeout
    error: Optional[OSError] = None
    for family, kind, proto, _, address in socket.getaddrinfo(host, port, 0, socket.SOCK_STREAM):
        sock = socket.socket(family, kind, proto)
        try:
            sock.setblocking(False)
            code = sock.connect_ex(address)
            with selectors.DefaultSelector() as waiter:  # not select.select: no limit on the fd's number
                waiter.register(sock, selectors.EVENT_WRITE)
                while code in _PENDING:
                    left = deadline - time.monotonic()
                    if stop.is_set():
                        raise _Stopped()
                    if left <= 0:
                        raise socket.timeout(f"no connection within {timeout:g} s")
                    if waiter.select(min(left, 0.05)):
                        code = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if code:
                raise OSError(code, os.strerror(code))
            sock.settimeout(timeout)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            return sock
        except (socket.timeout, _Stopped):
            sock.close()
            raise
        except OSError as exc:
            sock.close()
            error = exc
    raise error or OSError(f"no address found for {host}")


class _Connection(http.client.HTTPConnection):
    def __init__(self, request: Request, stop: threading.Event, canceller: _Canceller,
                 tls: Optional[ssl.SSLContext]) -> None:
        super().__init__(request.host, request.port, timeout=request.timeout)
        self._stop, self._canceller, self._tls = stop, canceller, tls

    def connect(self) -> None:
        sock = _open(self.host, self.port, float(self.timeout or DEFAULT_TIMEOUT), self._stop)
        try:
            self._canceller.watch(sock)
            self.sock = self._tls.wrap_socket(sock, server_hostname=self.host) if self._tls else sock
        except BaseException:
            sock.close()
            raise


def _watch(stop: threading.Event, done: threading.Event, canceller: _Canceller) -> None:
    while not done.wait(0.05):
        if stop.is_set():
            canceller.cancel()
            return


def send(request: Request, stop: threading.Event,
         tls: Optional[ssl.SSLContext] = None) -> Tuple[http.client.HTTPResponse, bytes, bool]:
    """Send ``request``: the response, at most ``READ_LIMIT`` bytes of its
    body, and whether there was more.  ``_Stopped`` (or the error the closed
    socket gives) once ``stop`` is set; no thread outlives the call."""
    canceller, done = _Canceller(), threading.Event()
    watcher = threading.Thread(target=_watch, args=(stop, done, canceller), name="snailjob-http-stop", daemon=True)
    connection = _Connection(request, stop, canceller, tls)
    watcher.start()
    try:
        connection.request(request.method, request.target, body=request.body, headers=request.headers)
        response = connection.getresponse()
        chunks, size = [], 0
        while size <= READ_LIMIT:
            chunk = response.read(64 * 1024)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        data = b"".join(chunks)
        return response, data[:READ_LIMIT], len(data) > READ_LIMIT
    finally:
        done.set()
        connection.close()
        canceller.close()
        watcher.join()


def _decode(response: http.client.HTTPResponse, data: bytes) -> str:
    charset = response.headers.get_content_charset() or "utf-8"
    try:
        return data.decode(charset, "replace")
    except LookupError:
        return data.decode("utf-8", "replace")


def _cap(text: str, limit: int, more: bool = False) -> str:
    data = text.encode("utf-8")
    if len(data) <= limit and not more:
        return text
    total = f"more than {READ_LIMIT}" if more else str(len(data))
    return data[:limit].decode("utf-8", "ignore") + f"\n[cut: the first {limit} of {total} bytes]"


def check(settings: Settings, text: str) -> Optional[str]:
    """What is wrong with a 200 response's ``text`` under the configured
    ``SNAIL_HTTP_RESPONSE_*`` check; ``None`` when it passes (or no check)."""
    code = settings.snail_http_response_code
    if code is None:
        return None
    if settings.snail_http_response_type == "text":
        return None if text.strip() == str(code) else f"the response body is not {code}: {text[:100]!r}"
    field = settings.snail_http_response_field
    try:
        value = json.loads(text)
    except (ValueError, RecursionError):
        return f"the response is not JSON (expected an object with {field!r}: {code})"
    if not isinstance(value, dict):
        return f"the response is a JSON {_kind(value)}, not an object with {field!r}: {code}"
    if field not in value:
        return f"the response has no field {field!r} (expected {code})"
    got = value[field]
    if isinstance(got, bool) or not isinstance(got, int) or got != code:
        return f"the response's {field!r} is {json.dumps(got)[:100]}, not {code}"
    return None


def http_job(settings: Settings) -> Callable[[Any], Any]:
    """The job function of ``snailJobHttpExecutor`` for this node.  It reads
    the stop event of the current task (none outside a task: the call then
    ends only by its timeout) and returns an ``ExecuteResult``; it raises
    only what interrupts its thread."""
    contexts: Dict[str, ssl.SSLContext] = {}

    def snail_job_http(args: JobArgs) -> ExecuteResult:
        wf_context = dict(args.wf_context or {})
        if args.change_wf_context is not None:
            wf_context.update(args.change_wf_context.to_dict())
        try:
            request = parse_form(args.job_params, wf_context)
        except FormError as exc:
            message = f"snailJobHttpExecutor: {exc}"
            _remote.error("[snail-job] %s", message)
            return ExecuteResult.failure(message)
        task = current_task_or_none()
        stop = task.stop_event if task is not None else threading.Event()
        what = f"{request.method} {request.url}"
        if stop.is_set():
            return ExecuteResult.failure(f"stopped before the request: {what}")
        if request.asked != request.method:
            _remote.warning("[snail-job] the method %s is sent as GET (only POST, PUT and DELETE are sent as "
                            "themselves, as in the Java client)", request.asked)
        _remote.info("[snail-job] HTTP request: %s, timeout %g s", what, request.timeout)
        if request.tls and "tls" not in contexts:
            contexts["tls"] = ssl.create_default_context()
        tls = contexts.get("tls") if request.tls else None
        started = time.monotonic()
        try:
            response, data, more = send(request, stop, tls)
        except Exception as exc:
            elapsed = time.monotonic() - started
            if stop.is_set():
                _remote.info("[snail-job] %s stopped after %.3f s", what, elapsed)
                return ExecuteResult.failure(f"stopped: {what}")
            reason = "no answer within the timeout" if isinstance(exc, socket.timeout) else type(exc).__name__
            message = f"{what} failed after {elapsed:.3f} s: {reason}: {exc}"
            _remote.error("[snail-job] %s", message)
            return ExecuteResult.failure({"message": message, "error": type(exc).__name__}, message)
        elapsed = time.monotonic() - started
        status, text = response.status, _decode(response, data)
        level = logging.INFO if status == 200 else logging.WARNING
        _remote.log(level, "[snail-job] HTTP %s %s from %s in %.3f s", status, response.reason, what, elapsed)
        failed: Dict[str, Any] = {"status": status, "body": _cap(text, FAILURE_BODY_CAP)}
        if status != 200:
            message = " ".join(filter(None, ["HTTP", str(status), response.reason, "from", what]))
            if 300 <= status < 400:
                message += " (redirects are not followed)"
                failed["location"] = response.getheader("Location")
            return ExecuteResult.failure({"message": message, **failed}, message)
        problem = check(settings, text)
        if problem is not None:
            if more:
                problem += f" (only the first {READ_LIMIT} bytes were read)"
            message = f"{problem} (HTTP 200 from {what})"
            _remote.error("[snail-job] %s", message)
            return ExecuteResult.failure({"message": message, **failed}, message)
        return ExecuteResult.success(_cap(text, RESULT_CAP, more))

    return snail_job_http

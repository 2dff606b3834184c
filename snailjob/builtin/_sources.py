"""Where a script executor's script comes from: a file of the node
(``LOCAL_SCRIPT``), the console's text (``SCRIPT_CODE``) or an http(s) URL
(``DOWNLOAD``).  Each writes the script to a new file (mode 0700) and raises
``ScriptError`` with a message for the console when it cannot.

A local file and a download are copied byte for byte (the charset is then
only used to read the script's output); the console's text is encoded with
the charset.

A download: http and https only (redirects too), the proxy settings of the
node's environment, certificates checked.  Each network wait lasts at most
``min(30 s, SNAIL_SCRIPT_DOWNLOAD_TIMEOUT)``; the total time is checked
between reads, so a download may overrun it by that much at most.  A body
larger than ``SNAIL_SCRIPT_DOWNLOAD_MAX_BYTES`` is refused.
"""

from __future__ import annotations

import http.client
import os
import socket
import threading
import time
import urllib.error
import urllib.request
from typing import Any, Optional
from urllib.parse import urlsplit, urlunsplit

from snailjob.settings import Settings

USER_AGENT = "snailjob-python script executor"


class ScriptError(Exception):
    """A script executor cannot run the script; the message is for the console."""


def write_file(path: str, data: bytes) -> None:
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_BINARY", 0)
    fd = os.open(path, flags, 0o700)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def local_script(source: str, path: str) -> int:
    """Copy the node's file ``source``; its size."""
    try:
        with open(source, "rb") as f:
            data = f.read()
    except OSError as exc:
        raise ScriptError(f"LOCAL_SCRIPT: cannot read the script file {source!r} on this node: "
                          f"{exc.strerror or exc}") from None
    write_file(path, data)
    return len(data)


def script_code(text: str, charset: str, path: str) -> int:
    """Write the console's text with ``charset``; the size in bytes."""
    try:
        data = text.encode(charset)
    except UnicodeEncodeError as exc:
        raise ScriptError(f"SCRIPT_CODE: scriptParams has characters the charset {charset} cannot encode "
                          f"({exc.object[exc.start:exc.end]!r} at position {exc.start}); "
                          "choose another charset") from None
    write_file(path, data)
    return len(data)


def shown(url: str) -> str:
    """``url`` for messages: without user and password, at most 300 characters."""
    try:
        parts = urlsplit(url)
        if parts.username is not None or parts.password is not None:
            host = parts.hostname or ""
            url = urlunsplit(parts._replace(netloc=host + (f":{parts.port}" if parts.port else "")))
    except ValueError:
        pass
    return url if len(url) <= 300 else url[:300] + "..."


def check_url(url: str) -> None:
    try:
        parts = urlsplit(url)
    except ValueError as exc:
        raise ScriptError(f"DOWNLOAD: scriptParams is not a URL ({exc}): {shown(url)}") from None
    if parts.scheme.lower() not in ("http", "https") or not parts.netloc:
        raise ScriptError(f"DOWNLOAD: scriptParams must be an http or https URL, not {shown(url)!r}")


class _HttpOnlyRedirects(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, req: Any, fp: Any, code: int, msg: str, headers: Any,
                         newurl: str) -> Optional[urllib.request.Request]:
        if urlsplit(newurl).scheme.lower() not in ("http", "https"):
            raise ScriptError(f"DOWNLOAD: {shown(req.full_url)} redirects to {shown(newurl)!r}, "
                              "which is not an http or https URL")
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def download(url: str, settings: Settings, path: str, stop: threading.Event) -> int:
    """Download ``url`` to ``path``; the size."""
    check_url(url)
    limit = settings.snail_script_download_timeout
    cap = settings.snail_script_download_max_bytes
    too_slow = (f"DOWNLOAD: {shown(url)} took longer than SNAIL_SCRIPT_DOWNLOAD_TIMEOUT "
                f"({limit:g} s)")
    too_big = (f"DOWNLOAD: {shown(url)} is larger than SNAIL_SCRIPT_DOWNLOAD_MAX_BYTES "
               f"({cap} bytes)")
    # one network wait lasts min(30 s, limit): a wait of the whole limit overruns it
    waited = too_slow if limit <= 30 else f"DOWNLOAD: {shown(url)} sent nothing for 30 s"
    deadline = time.monotonic() + limit
    opener = urllib.request.build_opener(_HttpOnlyRedirects)
    request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
    body = bytearray()
    try:
        with opener.open(request, timeout=min(30.0, limit)) as response:
            if response.status != 200:
                raise ScriptError(f"DOWNLOAD: {shown(url)} answered HTTP {response.status} "
                                  f"{response.reason}, expected 200")
            length = response.headers.get("Content-Length")
            if length is not None and length.strip().isdigit() and int(length) > cap:
                raise ScriptError(too_big)
            while True:
                if stop.is_set():
                    raise ScriptError("DOWNLOAD: stopped during the download")
                if time.monotonic() > deadline:
                    raise ScriptError(too_slow)
                chunk = response.read1(65536)
                if not chunk:
                    break
                body += chunk
                if len(body) > cap:
                    raise ScriptError(too_big)
    except urllib.error.HTTPError as exc:
        raise ScriptError(f"DOWNLOAD: {shown(url)} answered HTTP {exc.code} {exc.reason}, expected 200") from None
    except socket.timeout:
        raise ScriptError(waited) from None
    except urllib.error.URLError as exc:
        if isinstance(exc.reason, socket.timeout):
            raise ScriptError(waited) from None
        raise ScriptError(f"DOWNLOAD: cannot fetch {shown(url)}: {exc.reason}") from None
    except (OSError, http.client.HTTPException, ValueError) as exc:
        raise ScriptError(f"DOWNLOAD: cannot fetch {shown(url)}: {type(exc).__name__}: {exc}") from None
    write_file(path, bytes(body))
    return len(body)

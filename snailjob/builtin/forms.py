"""The forms of the console's built-in executors, as the console stores them.

A job that runs a built-in executor keeps the console's form as JSON in its
arguments (``argsStr``).  These build that text for jobs created as code
(``snailjob.openapi.JobSpec``): the same keys in the same order as the
console, so a job created here opens in the console's form as if made there.
"""

from __future__ import annotations

import json
from typing import Mapping, Optional

HTTP_METHODS = ("GET", "POST", "PUT", "DELETE")
SCRIPT_METHODS = ("LOCAL_SCRIPT", "SCRIPT_CODE", "DOWNLOAD")


def http_form(url: str, method: str = "POST", *, body: str = "", headers: Optional[Mapping[str, str]] = None,
              media_type: str = "application/json", timeout: int = 60) -> str:
    """The form of ``snailJobHttpExecutor``: ``method`` (GET, POST, PUT or
    DELETE; the console offers these), ``url``, ``body`` (text, sent for
    POST, PUT and DELETE), ``headers``, ``media_type`` (the Content-Type of
    the body) and ``timeout`` (seconds, connect and read)."""
    if method.upper() not in HTTP_METHODS:
        raise ValueError(f"method must be one of {', '.join(HTTP_METHODS)}, not {method!r}")
    if not isinstance(url, str) or not url.strip():
        raise ValueError("url must be a non-blank string")
    if not isinstance(timeout, int) or timeout < 1:
        raise ValueError(f"timeout must be whole seconds, at least 1, not {timeout!r}")
    return json.dumps({"method": method.upper(), "url": url, "headers": dict(headers or {}), "body": body,
                       "mediaType": media_type, "timeout": timeout}, ensure_ascii=False)


def script_form(script: str, method: str = "SCRIPT_CODE", *, charset: str = "") -> str:
    """The form of the script executors (Shell, CMD, PowerShell): ``script``
    is the code (``SCRIPT_CODE``), a path on the node (``LOCAL_SCRIPT``) or
    an http(s) URL (``DOWNLOAD``); ``charset`` of the code and of the output
    (empty: UTF-8)."""
    if method not in SCRIPT_METHODS:
        raise ValueError(f"method must be one of {', '.join(SCRIPT_METHODS)}, not {method!r}")
    if not isinstance(script, str) or not script.strip():
        raise ValueError("script must be a non-blank string")
    return json.dumps({"method": method, "scriptParams": script, "charset": charset}, ensure_ascii=False)

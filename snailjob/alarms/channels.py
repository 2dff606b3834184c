"""The channels an alarm goes out on, as the console's notify recipients
name them (``notifyType``) and as each receiver expects its message:

- 1 DingTalk robot: ``{"msgtype":"markdown","markdown":{"title","text"},"at":{...}}``,
  answer ``errcode`` 0;
- 2 email: SMTP (``SNAIL_MAIL_*``) to the recipient's ``tos``;
- 3 WeCom robot: ``{"msgtype":"markdown","markdown":{"content"}}`` (at most
  4096 bytes), answer ``errcode`` 0;
- 4 Lark robot: an ``interactive`` card with a red header and one markdown
  element, answer ``code`` 0 when it says;
- 5 webhook: ``{"title","text"}`` with the recipient's content type (1 JSON,
  2 form; the body is JSON either way, as the Java server and client send it)
  and its ``secret`` header.

Each recipient's settings (``notifyAttribute``) are a JSON text; robot URLs
carry their access token, so a URL is only ever shown through
``redact_url``.  HTTP goes through urllib, mail through smtplib (standard
library), each call with a timeout.
"""

from __future__ import annotations

import json
import smtplib
import ssl
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from typing import Any, Dict, List, Optional, Tuple

DINGTALK, EMAIL, WECOM, LARK, WEBHOOK = 1, 2, 3, 4, 5
CHANNEL_NAMES = {DINGTALK: "DingTalk", EMAIL: "email", WECOM: "WeCom", LARK: "Lark", WEBHOOK: "webhook"}
_CONTENT_TYPES = {1: "application/json", 2: "application/x-www-form-urlencoded"}
_MAX_ANSWER = 64 * 1024  # bytes of a receiver's answer read


class ChannelError(Exception):
    """A message that did not go out; the text names why (no secret in it)."""


@dataclass(frozen=True)
class MailSettings:
    """The SMTP server of email recipients (``SNAIL_MAIL_*``)."""

    host: str
    port: int
    user: Optional[str] = None
    password: Optional[str] = None
    sender: Optional[str] = None
    ssl: bool = False
    starttls: bool = False


@dataclass(frozen=True)
class Message:
    title: str
    text: str  # markdown-ish lines


def redact_url(url: str) -> str:
    """``url`` fit for a log: scheme, host and port, the path with long
    segments (tokens) masked, and no query values or user info."""
    try:
        parts = urllib.parse.urlsplit(url)
        port = parts.port
    except ValueError:
        return "<unparsable URL>"
    if not parts.scheme or not parts.hostname:
        return "<not a URL>"
    host = parts.hostname if ":" not in parts.hostname else f"[{parts.hostname}]"
    segments = ["***" if len(seg) >= 16 else seg for seg in parts.path.split("/")]
    query = "&".join(f"{key}=***" for key, _ in urllib.parse.parse_qsl(parts.query, keep_blank_values=True))
    return (f"{parts.scheme}://{host}{f':{port}' if port else ''}{'/'.join(segments)}"
            f"{'?' + query if query else ''}")


def attribute_of(text: str) -> Dict[str, Any]:
    """A recipient's settings; ``ChannelError`` when they are not a JSON object."""
    try:
        value = json.loads(text)
    except ValueError:
        raise ChannelError("the recipient's settings are not JSON") from None
    if not isinstance(value, dict):
        raise ChannelError(f"the recipient's settings are a JSON {type(value).__name__}, not an object")
    return value


def target_of(notify_type: int, attribute: Dict[str, Any]) -> str:
    """Where a recipient's messages go, fit for a log."""
    if notify_type == EMAIL:
        tos = attribute.get("tos")
        return ", ".join(str(t) for t in tos) if isinstance(tos, list) else "<no tos>"
    url = attribute.get("webhookUrl")
    return redact_url(url) if isinstance(url, str) else "<no webhookUrl>"


def _ats(attribute: Dict[str, Any]) -> List[str]:
    ats = attribute.get("ats")
    return [str(a) for a in ats if str(a).strip()] if isinstance(ats, list) else []


def _url(attribute: Dict[str, Any]) -> str:
    url = attribute.get("webhookUrl")
    if not isinstance(url, str) or not url.strip():
        raise ChannelError("the recipient has no webhookUrl")
    if urllib.parse.urlsplit(url.strip()).scheme.lower() not in ("http", "https"):
        raise ChannelError(f"the recipient's webhookUrl is not http(s): {redact_url(url)}")
    return url.strip()


def _cut_bytes(text: str, limit: int) -> str:
    """``text`` cut to at most ``limit`` UTF-8 bytes, on a character boundary."""
    data = text.encode("utf-8")
    return text if len(data) <= limit else data[:limit].decode("utf-8", "ignore")


def build_payload(notify_type: int, attribute: Dict[str, Any],
                  message: Message) -> Tuple[str, bytes, Dict[str, str]]:
    """``(url, body, headers)`` of an HTTP channel's message."""
    url = _url(attribute)
    ats = _ats(attribute)
    everyone = any(a.lower() == "all" for a in ats)
    headers = {"Content-Type": "application/json; charset=utf-8"}
    if notify_type == DINGTALK:
        text = message.text + ("\n\n" + " ".join(f"@{a}" for a in ats if a.lower() != "all") if ats else "")
        body: Dict[str, Any] = {"msgtype": "markdown", "markdown": {"title": message.title, "text": text[:4000]},
                                "at": {"atMobiles": [a for a in ats if a.lower() != "all"], "isAtAll": everyone}}
    elif notify_type == WECOM:
        mentions = "".join(f"<@{a}>" for a in ats)
        text = message.text + ("\n" + mentions if mentions else "")
        body = {"msgtype": "markdown", "markdown": {"content": _cut_bytes(text, 4096)}}
    elif notify_type == LARK:
        mentions = "<at id=all></at>" if everyone else "".join(f"<at id={a}></at>" for a in ats)
        body = {"msg_type": "interactive", "card": {
            "header": {"template": "red", "title": {"tag": "plain_text", "content": message.title}},
            "elements": [{"tag": "markdown", "content": message.text + (mentions and "\n" + mentions)}]}}
    elif notify_type == WEBHOOK:
        content_type = attribute.get("contentType")
        headers = {"Content-Type": _CONTENT_TYPES.get(content_type if isinstance(content_type, int) else 1,
                                                      "application/json") + "; charset=utf-8"}
        secret = attribute.get("secret")
        if isinstance(secret, str) and secret:
            headers["secret"] = secret
        body = {"title": message.title, "text": message.text}
    else:
        raise ChannelError(f"notify type {notify_type} is not an HTTP channel")
    return url, json.dumps(body, ensure_ascii=False).encode("utf-8"), headers


def post(url: str, body: bytes, headers: Dict[str, str], timeout: float) -> Tuple[int, bytes]:
    """POST ``body``; ``(status, answer)``, ``ChannelError`` when nothing came back."""
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as answer:  # noqa: S310 (http(s) checked)
            return answer.status, answer.read(_MAX_ANSWER)
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read(_MAX_ANSWER) if exc.fp is not None else b""
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        raise ChannelError(f"{redact_url(url)}: {type(reason).__name__}: {_scrub(str(reason), url)}") from None


def _scrub(text: str, url: str) -> str:
    """An error text with the URL (and its query) taken out."""
    return text.replace(url, redact_url(url))[:300]


def _answer_error(notify_type: int, status: int, answer: bytes) -> Optional[str]:
    """Why the receiver did not take the message, or None."""
    if not 200 <= status < 300:
        return f"HTTP {status}"
    if notify_type in (DINGTALK, WECOM, LARK):
        try:
            value = json.loads(answer or b"{}")
        except ValueError:
            return None if notify_type == LARK else "the answer is not JSON"
        if not isinstance(value, dict):
            return None
        code = value.get("errcode", value.get("code", value.get("StatusCode", 0)))
        if code not in (0, None):
            why = value.get("errmsg", value.get("msg", value.get("StatusMessage", "")))
            return f"the receiver answered code {code}: {str(why)[:200]}"
    return None


def send_http(notify_type: int, attribute: Dict[str, Any], message: Message, timeout: float) -> None:
    """Send over an HTTP channel; ``ChannelError`` unless the receiver took it."""
    url, body, headers = build_payload(notify_type, attribute, message)
    status, answer = post(url, body, headers, timeout)
    problem = _answer_error(notify_type, status, answer)
    if problem is not None:
        raise ChannelError(f"{redact_url(url)}: {problem}")


def send_mail(attribute: Dict[str, Any], message: Message, mail: Optional[MailSettings], timeout: float) -> None:
    """Send an email alarm to the recipient's ``tos``; ``ChannelError`` otherwise."""
    if mail is None:
        raise ChannelError("no SMTP server: set SNAIL_MAIL_HOST (and SNAIL_MAIL_FROM ...) for email recipients")
    tos = attribute.get("tos")
    if not isinstance(tos, list) or not any(isinstance(t, str) and "@" in t for t in tos):
        raise ChannelError("the recipient has no address in tos")
    email = EmailMessage()
    email["Subject"] = message.title
    email["From"] = mail.sender or mail.user or f"snailjob@{mail.host}"
    email["To"] = ", ".join(t for t in tos if isinstance(t, str) and "@" in t)
    email["Date"] = formatdate(localtime=True)
    email["Message-ID"] = make_msgid(domain="snailjob")
    email.set_content(message.text.replace("**", ""))
    try:
        if mail.ssl:
            server: smtplib.SMTP = smtplib.SMTP_SSL(mail.host, mail.port, timeout=timeout,
                                                    context=ssl.create_default_context())
        else:
            server = smtplib.SMTP(mail.host, mail.port, timeout=timeout)
        with server:
            if mail.starttls:
                server.starttls(context=ssl.create_default_context())
            if mail.user and mail.password:
                server.login(mail.user, mail.password)
            server.send_message(email)
    except (smtplib.SMTPException, OSError) as exc:
        raise ChannelError(f"SMTP {mail.host}:{mail.port}: {type(exc).__name__}: {str(exc)[:200]}") from None


def send(notify_type: int, attribute_text: str, message: Message, mail: Optional[MailSettings],
         timeout: float) -> None:
    """Send one message to one recipient; ``ChannelError`` naming why not."""
    attribute = attribute_of(attribute_text)
    if notify_type == EMAIL:
        send_mail(attribute, message, mail, timeout)
    elif notify_type in CHANNEL_NAMES:
        send_http(notify_type, attribute, message, timeout)
    else:
        raise ChannelError(f"unknown notify type {notify_type} (1 DingTalk, 2 email, 3 WeCom, 4 Lark, 5 webhook)")

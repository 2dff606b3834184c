"""``Alarms``: the client-side alarms of one node.

``raise_alarm(scene, problem)`` never blocks: it looks up the scene's
recipients in the group config (``ConfigCache``), applies the rate limit
(at most ``SNAIL_ALARM_RATE_LIMIT`` alarms a minute per scene and recipient;
the ones held back are counted and named in the next alarm that goes out),
and puts one message per recipient in a bounded queue (``SNAIL_ALARM_QUEUE_MAX``;
beyond it alarms are dropped and counted).  One thread, ``snailjob-alarms``,
sends them, each with a timeout (``SNAIL_ALARM_TIMEOUT``).

A message carries the namespace, the group, the node (host id and address),
the time and what failed; never the group's token nor a recipient's secret
(both are scrubbed from the text, and URLs are shown redacted).
"""

from __future__ import annotations

import collections
import logging
import queue
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Deque, Dict, List, Optional, Tuple

from snailjob.config_sync import ClientScene, ConfigCache, Recipient

if TYPE_CHECKING:
    from snailjob.alarms.channels import MailSettings, Message

logger = logging.getLogger(__name__)

TITLES = {
    ClientScene.JOB_CLIENT_ERROR: "job result not delivered",
    ClientScene.CLIENT_REPORT_ERROR: "retry report not delivered",
    ClientScene.CLIENT_COMPONENT_ERROR: "client component error",
}
WINDOW = 60.0  # seconds of the rate limit
MIN_SECRET = 4  # shorter values are not scrubbed from texts (they would garble them, and hide nothing)
_STOP = object()


@dataclass(frozen=True)
class Identity:
    """Who raises the alarms: the facts every message carries."""

    namespace: str
    group: str
    host_id: str
    address: str
    secrets: Tuple[str, ...] = ()
    """Texts never to send (the group token): replaced by ``***``."""


@dataclass(frozen=True)
class AlarmDelivery:
    """What became of one test alarm (``Client.send_test_alarm``)."""

    scene: str
    channel: str
    target: str
    """Where it went, redacted (no token, no secret)."""
    ok: bool
    error: str = ""


class Alarms:
    """The alarm queue, its sender thread and the rate limit of one node."""

    def __init__(self, cache: ConfigCache, identity: Identity, *, enabled: bool = True, rate_limit: int = 5,
                 queue_max: int = 100, timeout: float = 10.0, mail: Optional[MailSettings] = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._cache = cache
        self.identity = identity
        self.enabled = enabled
        self._rate_limit = rate_limit
        self._timeout = timeout
        self._mail = mail
        self._clock = clock
        self._queue: queue.Queue = queue.Queue(maxsize=queue_max)
        self._lock = threading.Lock()
        self._sent_at: Dict[Tuple[ClientScene, Recipient], Deque[float]] = {}
        self._held_back: Dict[Tuple[ClientScene, Recipient], int] = {}
        self._thread: Optional[threading.Thread] = None
        self._closed = False
        self.raised = 0
        """Alarms raised (before the rate limit; one per failure, not per recipient)."""
        self.sent = 0
        """Messages a receiver took."""
        self.failed = 0
        """Messages that did not go out (receiver down, refused, bad recipient settings)."""
        self.dropped = 0
        """Messages dropped: the queue was full, or the node stopped first."""
        self.limited = 0
        """Messages held back by the rate limit."""
        self._failure_logged: Dict[Tuple[ClientScene, Recipient], str] = {}

    # --- raising ------------------------------------------------------------

    def raise_alarm(self, scene: ClientScene, problem: str) -> None:
        """Alarm ``scene`` with ``problem`` (what failed) to the scene's
        recipients; returns at once.  Without recipients nothing happens."""
        if not self.enabled or self._closed:
            return
        recipients = self._cache.recipients(scene)
        if not recipients:
            return
        now = self._clock()
        wall = time.time()
        with self._lock:
            self.raised += 1
            for recipient in recipients:
                key = (scene, recipient)
                if not self._take(key, now):
                    self.limited += 1
                    self._held_back[key] = self._held_back.get(key, 0) + 1
                    continue
                held = self._held_back.pop(key, 0)
                try:
                    self._queue.put_nowait((scene, recipient, problem, wall, held))
                except queue.Full:
                    self.dropped += 1
                    continue
                self._start_locked()

    def _take(self, key: Tuple[ClientScene, Recipient], now: float) -> bool:
        """Whether one more message may go to ``key`` now (caller holds the lock)."""
        if self._rate_limit <= 0:
            return True
        sent = self._sent_at.setdefault(key, collections.deque())
        while sent and now - sent[0] >= WINDOW:
            sent.popleft()
        if len(sent) >= self._rate_limit:
            return False
        sent.append(now)
        return True

    def _start_locked(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="snailjob-alarms", daemon=True)
            self._thread.start()

    # --- sending --------------------------------------------------------------

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is _STOP:
                return
            scene, recipient, problem, wall, held = item
            error = self._deliver(recipient, self.message(scene, problem, wall, held))
            with self._lock:
                if error is None:
                    self.sent += 1
                else:
                    self.failed += 1
            self._log_outcome(scene, recipient, error)

    def _deliver(self, recipient: Recipient, message: Message) -> Optional[str]:
        """Send one message; None, or why it did not go out."""
        from snailjob.alarms.channels import ChannelError, send  # urllib and smtplib: when an alarm is sent

        try:
            send(recipient.notify_type, recipient.attribute, message, self._mail, self._timeout)
        except ChannelError as exc:
            return self._scrub(str(exc), recipient)
        except Exception as exc:  # a sender must survive anything
            return self._scrub(f"{type(exc).__name__}: {exc}", recipient)
        return None

    def _log_outcome(self, scene: ClientScene, recipient: Recipient, error: Optional[str]) -> None:
        """A failed channel is logged when its failure changes (not at every alarm)."""
        from snailjob.alarms.channels import CHANNEL_NAMES

        key = (scene, recipient)
        channel = CHANNEL_NAMES.get(recipient.notify_type, str(recipient.notify_type))
        if error is None:
            if self._failure_logged.pop(key, None) is not None:
                logger.info("%s alarm channel of %s works again", channel, scene.value)
            logger.debug("sent a %s alarm (%s)", scene.value, channel)
        elif self._failure_logged.get(key) != error:
            self._failure_logged[key] = error
            logger.warning("could not send a %s alarm (%s): %s", scene.value, channel, error)

    def _scrub(self, text: str, recipient: Recipient) -> str:
        """``text`` without the group token or any value of the recipient's settings
        that could be a secret."""
        from snailjob.alarms.channels import ChannelError, attribute_of

        secrets = list(self.identity.secrets)
        try:
            attribute = attribute_of(recipient.attribute)
            secrets += [str(attribute[k]) for k in ("secret", "webhookUrl") if attribute.get(k)]
        except ChannelError:
            pass
        for secret in secrets:
            if len(secret) >= MIN_SECRET:
                text = text.replace(secret, "***")
        return text

    def message(self, scene: ClientScene, problem: str, wall: float, held: int = 0) -> Message:
        """The title and text of an alarm (markdown lines)."""
        from snailjob.alarms.channels import Message

        me = self.identity
        stamp = time.strftime("%Y-%m-%d %H:%M:%S %z", time.localtime(wall))
        title = f"SnailJob client alarm: {TITLES[scene]} [{me.group}]"
        lines = [f"**{title}**", "",
                 f"> scene: {scene.value}", f"> namespace: {me.namespace}", f"> group: {me.group}",
                 f"> node: {me.host_id} ({me.address})", f"> time: {stamp}", f"> problem: {problem}"]
        if held:
            lines.append(f"> also: {held} more alarm(s) of this scene held back by the rate limit")
        text = "\n".join(lines)
        for secret in me.secrets:
            if len(secret) >= MIN_SECRET:
                text = text.replace(secret, "***")
                title = title.replace(secret, "***")
        return Message(title, text)

    # --- test and lifecycle ------------------------------------------------------

    def test(self) -> List[AlarmDelivery]:
        """Send a test alarm to every recipient of every client scene now,
        on the calling thread (no queue, no rate limit); one entry each."""
        from snailjob.alarms.channels import CHANNEL_NAMES, ChannelError, attribute_of, target_of

        results = []
        for scene in ClientScene:
            for recipient in self._cache.recipients(scene):
                try:
                    target = target_of(recipient.notify_type, attribute_of(recipient.attribute))
                except ChannelError:
                    target = "<bad settings>"
                problem = "a test alarm sent on request (snailjob alarm-test / Client.send_test_alarm); nothing failed"
                error = self._deliver(recipient, self.message(scene, problem, time.time()))
                results.append(AlarmDelivery(scene.value, CHANNEL_NAMES.get(recipient.notify_type,
                                                                            f"type {recipient.notify_type}"),
                                             target, error is None, error or ""))
        return results

    def stats(self) -> Dict[str, int]:
        return {"alarms_raised": self.raised, "alarms_sent": self.sent, "alarms_failed": self.failed,
                "alarms_dropped": self.dropped, "alarms_rate_limited": self.limited}

    def close(self, timeout: float) -> None:
        """Send what is queued, for up to ``timeout`` seconds, then stop; the rest is dropped and counted."""
        with self._lock:
            self._closed = True
            thread = self._thread
        if thread is None:
            return
        deadline = time.monotonic() + timeout
        while not self._queue.empty() and time.monotonic() < deadline:
            time.sleep(0.02)
        left = 0
        while True:
            try:
                self._queue.get_nowait()
                left += 1
            except queue.Empty:
                break
        with self._lock:
            self.dropped += left
        try:
            self._queue.put(_STOP, timeout=1.0)
        except queue.Full:  # an alarm raised while closing: the daemon thread ends with the process
            pass
        thread.join(max(0.0, deadline - time.monotonic()) + 0.1)
        if left:
            logger.warning("%d alarm(s) not sent before shutdown", left)

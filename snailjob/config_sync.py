"""The group's config from the server: pulled every ``SNAIL_CONFIG_SYNC_INTERVAL``
seconds (``/sync/version``, as the Java client's ``SyncRemoteConfig`` does
every minute) and taken when the server pushes it to the node's own
``/sync/version`` after a change in the console.

The config (``ConfigRequest``) holds the group's config version, each retry
scene's call-chain deadline (``ddl``, ms) and who is told of each client-side
alarm scene (``notifyList``).  ``ConfigCache`` keeps the last good one: a
config that does not parse is logged, naming the problem, and the previous
one stays.  ``scene_ddl(scene)`` answers the deadline of a retry scene
(60 000 ms until the server said otherwise, as the Java client's
``GroupVersionCache.getDdl``).

Which notify entries name which client scene follows the numbers of the Java
enums (``JobNotifySceneEnum``, ``RetryNotifySceneEnum``): ``jobNotifyScene``
2 is JOB_CLIENT_ERROR, ``retryNotifyScene`` 3 CLIENT_REPORT_ERROR and 4
CLIENT_COMPONENT_ERROR.  The server lists every enabled notify config of the
group and has no other field to tell them apart; entries naming no client
scene (``jobNotifyScene`` 0) are ignored.
"""

from __future__ import annotations

import enum
import logging
import threading
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Tuple

from pydantic import ValidationError

from snailjob.errors import TransportError
from snailjob.transport import Reply, Transport
from snailjob.wire import enums
from snailjob.wire.codec import BodyError, clean, decode_body, first_object, summarize
from snailjob.wire.models import ConfigRequest

logger = logging.getLogger(__name__)

DEFAULT_DDL_MS = 60_000
"""A retry scene's call-chain deadline when the server gave none (Java's ``DEFAULT_DDL``)."""


class ClientScene(str, enum.Enum):
    """The alarm scenes a client raises itself (node type CLIENT in the Java enums)."""

    JOB_CLIENT_ERROR = "JOB_CLIENT_ERROR"
    """A job result or map report the node could not deliver (``jobNotifyScene`` 2)."""
    CLIENT_REPORT_ERROR = "CLIENT_REPORT_ERROR"
    """A retry report the node could not deliver (``retryNotifyScene`` 3)."""
    CLIENT_COMPONENT_ERROR = "CLIENT_COMPONENT_ERROR"
    """An internal error of the client (``retryNotifyScene`` 4)."""


# (field of ConfigRequest.Notify, number) of each client scene
SCENE_NUMBERS: Dict[ClientScene, Tuple[str, int]] = {
    ClientScene.JOB_CLIENT_ERROR: ("jobNotifyScene", 2),
    ClientScene.CLIENT_REPORT_ERROR: ("retryNotifyScene", 3),
    ClientScene.CLIENT_COMPONENT_ERROR: ("retryNotifyScene", 4),
}


@dataclass(frozen=True)
class Recipient:
    """One channel of a notify entry: ``notify_type`` (1 DingTalk, 2 email,
    3 WeCom, 4 Lark, 5 webhook) and its settings as the server sent them
    (a JSON text; it may hold secrets: never logged)."""

    notify_type: int
    attribute: str


@dataclass(frozen=True)
class GroupConfig:
    """One parsed ``ConfigRequest``."""

    version: int = 0
    ddl: Dict[str, int] = field(default_factory=dict)
    recipients: Dict[ClientScene, Tuple[Recipient, ...]] = field(default_factory=dict)
    thresholds: Dict[ClientScene, int] = field(default_factory=dict)

    def describe(self) -> str:
        """A log line's worth, without any recipient's settings."""
        scenes = ", ".join(f"{scene.value} ({len(r)} recipient(s))" for scene, r in self.recipients.items())
        return (f"version {self.version}, {len(self.ddl)} retry scene(s), "
                f"alarms: {scenes or 'none for client scenes'}")


class ConfigError(ValueError):
    """A config from the server that cannot be used; the message names the problem."""


def parse_config(data: Any) -> GroupConfig:
    """A ``GroupConfig`` from the JSON of a ``ConfigRequest``; ``ConfigError`` otherwise."""
    if not isinstance(data, dict):
        raise ConfigError(f"expected a JSON object, got {type(data).__name__}")
    try:
        request = ConfigRequest.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(summarize(exc)) from None
    ddl = {scene.sceneName: scene.ddl for scene in request.sceneList or ()}
    recipients: Dict[ClientScene, List[Recipient]] = {}
    thresholds: Dict[ClientScene, int] = {}
    for notify in request.notifyList or ():
        for scene, (name, number) in SCENE_NUMBERS.items():
            if getattr(notify, name) != number:
                continue
            found = recipients.setdefault(scene, [])
            for entry in notify.recipients or ():
                if entry.notifyType is None or not entry.notifyAttribute:
                    continue  # nothing to send to: skipped here, as the Java client's factory finds no channel
                recipient = Recipient(entry.notifyType, entry.notifyAttribute)
                if recipient not in found:
                    found.append(recipient)
            if notify.notifyThreshold is not None:
                thresholds.setdefault(scene, notify.notifyThreshold)
    return GroupConfig(version=request.version or 0, ddl=ddl,
                       recipients={scene: tuple(r) for scene, r in recipients.items() if r},
                       thresholds=thresholds)


class ConfigCache:
    """The last good group config of one node (thread-safe; reads take no lock)."""

    def __init__(self) -> None:
        self._config: Optional[GroupConfig] = None
        self._lock = threading.Lock()
        self.updates = 0
        """Configs taken (pulled or pushed)."""
        self.rejected = 0
        """Configs that did not parse (the previous one was kept)."""
        self.listeners: List[Callable[[GroupConfig], None]] = []

    @property
    def config(self) -> Optional[GroupConfig]:
        """The current config, or ``None`` before the first one arrived."""
        return self._config

    @property
    def version(self) -> int:
        config = self._config
        return config.version if config is not None else 0

    def scene_ddl(self, scene: str) -> int:
        """The call-chain deadline of retry scene ``scene`` in milliseconds
        (``DEFAULT_DDL_MS`` when the server named no such scene)."""
        config = self._config
        if config is None:
            return DEFAULT_DDL_MS
        return config.ddl.get(scene, DEFAULT_DDL_MS)

    def recipients(self, scene: ClientScene) -> Tuple[Recipient, ...]:
        config = self._config
        return config.recipients.get(scene, ()) if config is not None else ()

    def reject(self, source: str, problem: str) -> None:
        """Count and log a config that cannot be used; the current one stays."""
        with self._lock:
            self.rejected += 1
            kept = self._config
        logger.warning("ignored the group config in %s: %s; %s", source, problem,
                       f"keeping version {kept.version}" if kept is not None else "no config yet")

    def update(self, data: Any, source: str) -> bool:
        """Take a config's JSON from ``source`` ("the server's reply", "a push");
        False (logged, previous config kept) when it does not parse."""
        try:
            config = parse_config(data)
        except ConfigError as exc:
            self.reject(source, str(exc))
            return False
        with self._lock:
            previous, self._config = self._config, config
            self.updates += 1
        if previous != config:
            logger.info("group config from %s: %s", source, config.describe())
            for listener in list(self.listeners):
                listener(config)
        return True


class ConfigSync:
    """Pulls the group config on the ``snailjob-config`` thread (when the
    heartbeat connects, then every ``interval`` seconds) and takes the
    server's pushes."""

    def __init__(self, cache: ConfigCache, interval: float, rpc_timeout: float,
                 redact: Callable[[str], str] = lambda text: text) -> None:
        self.cache = cache
        self._redact = redact  # the token out of the server's texts (it echoes it in refusals)
        self._interval = interval
        self._rpc_timeout = rpc_timeout
        self._transport: Optional[Transport] = None
        self._stopping = threading.Event()
        self._wake = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self.pulls = 0
        """Pulls the server answered."""
        self._last_problem = ""

    def start(self, transport: Transport) -> None:
        self._transport = transport
        self._thread = threading.Thread(target=self._loop, name="snailjob-config", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        self._wake.set()

    def pull_soon(self) -> None:
        """Pull now (the heartbeat connected): the first pull waits for it,
        and a reconnection after an outage pulls again."""
        self._wake.set()

    def join(self, timeout: float) -> None:
        if self._thread is not None:
            self._thread.join(timeout)

    def _loop(self) -> None:
        self._wake.wait()  # the first heartbeat the server answered
        while not self._stopping.is_set():
            self._wake.clear()
            try:
                self.pull_once()
            except Exception:  # the loop must survive anything
                logger.exception("config sync failed unexpectedly")
            self._wake.wait(self._interval)

    def pull_once(self) -> bool:
        """Ask the server for the group config now; True when a config was taken."""
        transport = self._transport
        if transport is None:
            return False
        try:
            reply = transport.call(enums.URI_SYNC_VERSION, "[]", self._rpc_timeout)
        except TransportError as exc:
            self._problem(f"could not pull the group config: {clean(self._redact(str(exc)))}")
            return False
        if not reply.ok:
            self._problem(f"the server refused the config pull: "
                          f"{clean(self._redact(reply.message)) or 'no reason given'}")
            return False
        self.pulls += 1
        self._last_problem = ""
        if reply.data is None:  # as the Java client: nothing to take
            logger.debug("the server answered the config pull with null")
            return False
        return self.cache.update(reply.data, "the server's reply")

    def _problem(self, text: str) -> None:
        """Logged at debug (the heartbeat reports an unreachable server), at
        info when it changes."""
        if text != self._last_problem:
            self._last_problem = text
            logger.info("%s", text)
        else:
            logger.debug("%s", text)

    def accept_push(self, body: str) -> Reply:
        """The server's push (``[ConfigRequest]``): taken, or ignored (logged,
        the reason in the answer's message).  Answered with status 1 either
        way, as every call of the server is (it only logs the answer)."""
        try:
            data = first_object(decode_body(body), "config")
        except BodyError as exc:
            self.cache.reject("the server's push", str(exc))
            return Reply(1, f"config ignored: {exc}", None)
        if not self.cache.update(data, "the server's push"):
            return Reply(1, "config ignored (see the client's log)", None)
        return Reply(1, "", None)

"""Client settings, read from ``SNAIL_*`` environment variables and ``.env``.

The names are those of snail-job-python 0.1.3, plus the new ones documented
in CONFIGURATION.md.  Nothing is read at import: ``Settings.load()`` reads the
environment (and ``.env``) when a client is built, and a bad value raises
``ConfigurationError`` naming the variable.

The sources are those pydantic-settings' ``BaseSettings`` gave (keyword
arguments, then the environment, case-insensitively, then the ``.env``
file, then the defaults), read here so that a client does not load
pydantic-settings and its source providers.

Which ``.env``: ``Settings.load()`` uses the nearest file named ``.env`` in
the working directory or one of its parents (``find_env_file``), as
python-dotenv's ``find_dotenv`` does, but it stops at the user's home
directory when the working directory is inside it (a ``.env`` above home is
not the project's).  ``Settings.env_file_used`` tells which file was read;
``env_file_message`` says it in words for the client's start-up log.
"""

from __future__ import annotations

import json
import os
import typing
from pathlib import Path
from typing import Any, Dict, FrozenSet, List, Optional, Tuple, Union

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, ValidationInfo, field_validator

from snailjob._version import __version__
from snailjob.errors import ConfigurationError

DEFAULT_NAMESPACE = "764d604ec6fc45f68cd92514c40e9e1a"
DEFAULT_TOKEN = "SJ_Wyz3dmsdbDOkDujOTSSoBjGQP1BMsVnj"
BUILTIN_KINDS = ("http", "shell", "cmd", "powershell")  # SNAIL_BUILTIN_EXECUTORS, in this order
_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
ENV_FILE_NAME = ".env"
_SECRET_SETTINGS = ("SNAIL_TOKEN", "SNAIL_MAIL_PASSWORD")  # their values never go into an error message
_CHOICES = {"snail_when_busy": ("queue", "refuse"), "snail_transport": ("grpc", "native"),
            "snail_inbound": ("grpc", "native")}  # case-insensitive


class Settings(BaseModel):
    """Every setting of the client; see CONFIGURATION.md for each one."""

    model_config = ConfigDict(extra="ignore", validate_default=True, frozen=True, defer_build=True)

    # --- server and this node (0.1.3 names) ---
    snail_server_host: str = "127.0.0.1"
    snail_server_port: int = Field(17888, ge=1, le=65535)
    # None: the source address of the route to the server (snailjob.address)
    snail_host_ip: Optional[str] = None
    snail_host_port: int = Field(17889, ge=0, le=65535)
    snail_namespace: str = DEFAULT_NAMESPACE
    snail_group_name: str = "snail_job_demo_group"
    snail_token: str = Field(DEFAULT_TOKEN, repr=False)
    snail_labels: str = "env:dev,app:demo"

    # --- logging (0.1.3 names) ---
    snail_log_level: str = "INFO"
    snail_log_format: str = "%(asctime)s | %(name)-22s | %(levelname)-8s | %(message)s"
    snail_log_remote_interval: float = Field(5.0, gt=0)
    snail_log_remote_buffer_size: int = Field(50, gt=0)
    snail_log_local_filename: Optional[str] = None
    snail_log_local_backup_count: int = Field(60, ge=0)

    # --- new in this client ---
    snail_host_id: Optional[str] = None
    # None: "0.0.0.0", or "::" when the advertised address is IPv6
    snail_bind_host: Optional[str] = None
    snail_heartbeat_interval: float = Field(10.0, gt=0, le=25)
    snail_rpc_timeout: float = Field(5.0, gt=0)
    snail_report_retry_seconds: float = Field(300.0, ge=0)
    snail_report_margin: float = Field(30.0, ge=0)
    snail_outbox_path: Optional[str] = None
    snail_result_queue_max: int = Field(100_000, ge=1)
    snail_map_batch_size: int = Field(200, ge=1, le=5000)
    snail_map_report_timeout: float = Field(60.0, gt=0)
    snail_inbound_workers: int = Field(16, ge=2, le=512)
    snail_inbound_acceptors: int = Field(16, ge=0, le=256)  # 0: grpcio's one request at a time
    snail_transport: str = "native"  # the client's calls to the server: native (snailjob.http2) or grpc (grpcio)
    snail_inbound: str = "native"  # the port the server calls: native (snailjob.http2) or grpc (grpcio)
    snail_log_remote_max_buffer: int = Field(10000, ge=1)
    snail_shutdown_grace: float = Field(30.0, ge=0)
    snail_interrupt_delay: float = Field(1.0, ge=0)
    snail_max_running: int = Field(512, ge=0)  # 0: no cap
    snail_max_queued: int = Field(100_000, ge=0)  # 0: no limit
    snail_max_queued_bytes: int = Field(256 * 1024 * 1024, ge=0)  # arguments of waiting tasks; 0: no limit
    snail_when_busy: str = "queue"
    snail_retry_report_interval: float = Field(1.0, gt=0)
    snail_retry_report_max_buffer: int = Field(10000, ge=1)

    # --- jobs in worker processes (snailjob.processes) ---
    snail_isolation: str = "thread"
    snail_process_pool_size: Optional[int] = Field(None, ge=1, le=1024)  # None: the CPU count
    snail_process_max_tasks: int = Field(0, ge=0)  # 0: never recycle by count
    snail_process_max_rss_mb: Optional[int] = Field(None, ge=1)
    snail_process_memory_limit_mb: Optional[int] = Field(None, ge=16)
    snail_process_kill_grace: float = Field(3.0, ge=0)

    @field_validator(*_CHOICES)
    @classmethod
    def _one_of(cls, value: str, info: ValidationInfo) -> str:
        value = value.strip().lower()
        allowed = _CHOICES[str(info.field_name)]
        if value not in allowed:
            raise ValueError(f"must be {' or '.join(repr(a) for a in allowed)}, not {value!r}")
        return value

    @field_validator("snail_isolation")
    @classmethod
    def _isolation(cls, value: str) -> str:
        if value.strip().lower() not in ("thread", "process"):
            raise ValueError("must be thread or process")
        return value.strip().lower()

    # --- the console's built-in executors (snailjob.builtin) ---
    # comma-separated: http, shell, cmd, powershell, or all; empty: none (they run what the server sends)
    snail_builtin_executors: str = ""
    snail_builtin_workspace: Optional[str] = None  # None: ~/.snailjob/workspace
    snail_http_response_code: Optional[int] = None  # None: HTTP status 200 is the only check
    snail_http_response_field: str = "code"
    snail_http_response_type: str = "json"
    snail_script_kill_grace: float = Field(5.0, ge=0)
    snail_script_download_max_bytes: int = Field(1024 * 1024, ge=1)
    snail_script_download_timeout: float = Field(300.0, gt=0)
    snail_map_sentinel: bool = True

    @field_validator("snail_builtin_executors")
    @classmethod
    def _builtin_executors(cls, value: str) -> str:
        kinds = [k.strip().lower() for k in value.split(",") if k.strip()]
        unknown = [k for k in kinds if k not in BUILTIN_KINDS and k != "all"]
        if unknown:
            raise ValueError(f"unknown built-in executor(s) {', '.join(map(repr, unknown))}; "
                             f"known: {', '.join(BUILTIN_KINDS)}, or all")
        return ",".join(BUILTIN_KINDS if "all" in kinds else [k for k in BUILTIN_KINDS if k in kinds])

    @field_validator("snail_http_response_type")
    @classmethod
    def _http_response_type(cls, value: str) -> str:
        if value.strip().lower() not in ("json", "text"):
            raise ValueError("must be json or text")
        return value.strip().lower()

    @property
    def builtin_kinds(self) -> FrozenSet[str]:
        """The built-in executors this node runs (``SNAIL_BUILTIN_EXECUTORS``)."""
        return frozenset(k for k in self.snail_builtin_executors.split(",") if k)

    # --- operations (served by client_main() and `snailjob run`, snailjob.ops) ---
    snail_health_port: Optional[int] = Field(None, ge=0, le=65535)
    snail_health_host: str = "0.0.0.0"

    # --- OpenAPI client (snailjob.openapi; HTTP to the server's web port) ---
    # None: http://<first host of SNAIL_SERVER_HOST>:8080/snail-job
    snail_openapi_url: Optional[str] = None
    snail_openapi_timeout: float = Field(10.0, gt=0)

    @field_validator("snail_openapi_url")
    @classmethod
    def _openapi_url(cls, value: Optional[str]) -> Optional[str]:
        if value is None or not value.strip():
            return None
        value = value.strip()
        scheme, _, rest = value.partition("://")
        if scheme.lower() not in ("http", "https") or not rest.split("/", 1)[0]:
            raise ValueError("must look like http://host:8080/snail-job")
        return value
    # --- end of the OpenAPI client block ---

    # --- group config sync and client alarms (snailjob.config_sync, snailjob.alarms) ---
    snail_alarms: bool = True
    snail_config_sync_interval: float = Field(60.0, gt=0)
    snail_alarm_rate_limit: int = Field(5, ge=0)  # per minute, scene and recipient; 0: no limit
    snail_alarm_queue_max: int = Field(100, ge=1)
    snail_alarm_timeout: float = Field(10.0, gt=0)
    snail_mail_host: Optional[str] = None  # None: email recipients get nothing
    snail_mail_port: Optional[int] = Field(None, ge=1, le=65535)  # None: 465 with SSL, else 25
    snail_mail_user: Optional[str] = None
    snail_mail_password: Optional[str] = Field(None, repr=False)
    snail_mail_from: Optional[str] = None
    snail_mail_ssl: bool = False
    snail_mail_starttls: bool = False
    # --- end of the alarms block ---

    @field_validator("snail_log_level")
    @classmethod
    def _level(cls, value: str) -> str:
        if value.upper() not in _LEVELS:
            raise ValueError(f"must be one of {', '.join(_LEVELS)}")
        return value.upper()

    @field_validator("snail_labels")
    @classmethod
    def _labels(cls, value: str) -> str:
        for item in filter(None, (part.strip() for part in value.split(","))):
            if ":" not in item:
                raise ValueError(f"label {item!r} is not key:value")
        return value

    @field_validator("snail_host_id")
    @classmethod
    def _host_id(cls, value: Optional[str]) -> Optional[str]:
        if value is not None and ("@" in value or not value.strip()):
            raise ValueError("must be non-blank and must not contain '@'")
        return value

    @field_validator("snail_server_host")
    @classmethod
    def _servers(cls, value: str) -> str:
        for entry in (part.strip() for part in value.split(",")):
            if not entry:
                raise ValueError("empty entry in the server list")
            port = _split_server(entry)[1]
            if port is not None and not (0 < port < 65536):
                raise ValueError(f"port of {entry!r} is out of range")
        return value

    @field_validator("snail_server_host", "snail_namespace", "snail_group_name", "snail_token")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be blank")
        return value.strip()

    @field_validator("snail_host_ip", "snail_bind_host")
    @classmethod
    def _address(cls, value: Optional[str]) -> Optional[str]:
        """Blank means "choose for me"; brackets around an IPv6 literal are dropped."""
        if value is None or not value.strip():
            return None
        value = value.strip()
        if value.startswith("[") and value.endswith("]"):
            value = value[1:-1]
        if not value or any(c in value for c in " /,") or value.count(":") == 1:
            raise ValueError("must be a host name or an IP address (no port)")
        return value

    # which .env was read (absolute path), and where the search for it started
    _env_file_used: Optional[str] = PrivateAttr(default=None)
    _env_file_wanted: Optional[str] = PrivateAttr(default=None)
    _env_file_searched_from: Optional[str] = PrivateAttr(default=None)

    def __init__(self, _env_file: Union[str, os.PathLike[str], None] = None,
                 _env_file_encoding: Optional[str] = None, **values: Any) -> None:
        """``values`` (field names), then ``SNAIL_*`` environment variables
        (any case), then ``_env_file`` if it exists, then the defaults."""
        super().__init__(**{**_read_sources(type(self), _env_file, _env_file_encoding), **values})
        if _env_file is not None:
            path = Path(_env_file).expanduser()
            self._env_file_wanted = str(path)
            if path.is_file():
                self._env_file_used = str(path.resolve())

    @classmethod
    def load(cls, env_file: Union[str, os.PathLike[str], None] = ENV_FILE_NAME, **overrides: Any) -> Settings:
        """Build settings from the environment, ``env_file`` and ``overrides``.

        ``env_file``: a bare file name (the default, ``".env"``) is looked for
        in the working directory and then in each parent (``find_env_file``);
        a path with a directory part (``"./.env"``, ``"/etc/app/.env"``) is
        read as given; ``None`` reads no file.  Environment variables win over
        the file.  Overrides take precedence and use the field names
        (``snail_server_port=17888``).  Raises ``ConfigurationError`` whose
        message names each offending ``SNAIL_*`` variable.
        """
        searched_from: Optional[str] = None
        if env_file is not None and os.path.basename(os.fspath(env_file)) == os.fspath(env_file):
            searched_from = os.getcwd()
            found = find_env_file(os.fspath(env_file), searched_from)
            env_file = found if found is not None else None
        try:
            settings = cls(_env_file=env_file, **overrides)
        except ValidationError as exc:
            problems = []
            for err in exc.errors():
                name = str(err["loc"][0]).upper() if err["loc"] else "?"
                problems.append(f"{name}={err.get('input')!r}: {err['msg']}"
                                if name not in _SECRET_SETTINGS else f"{name}: {err['msg']}")
            raise ConfigurationError("invalid settings: " + "; ".join(problems)) from None
        settings._env_file_searched_from = searched_from
        return settings

    @property
    def env_file_used(self) -> Optional[str]:
        """The absolute path of the ``.env`` file these settings read, or
        ``None`` when none was read (see ``env_file_message``)."""
        return self._env_file_used

    @property
    def env_file_searched_from(self) -> Optional[str]:
        """The directory the search for ``.env`` started from (``load()``
        with a bare file name), else ``None``."""
        return self._env_file_searched_from

    @property
    def label_dict(self) -> Dict[str, str]:
        """Labels as a dict, always with ``state=up`` (the server routes only to
        nodes whose labels contain it)."""
        labels: Dict[str, str] = {}
        for item in filter(None, (part.strip() for part in self.snail_labels.split(","))):
            key, value = item.split(":", 1)
            labels[key.strip()] = value.strip()
        labels.setdefault("state", "up")
        return labels

    @property
    def label_json(self) -> str:
        return json.dumps(self.label_dict, separators=(",", ":"))

    @property
    def server_targets(self) -> List[str]:
        """``host:port`` of every server in ``SNAIL_SERVER_HOST`` (a comma
        separated list; an entry without a port uses ``SNAIL_SERVER_PORT``)."""
        targets = []
        for entry in filter(None, (part.strip() for part in self.snail_server_host.split(","))):
            host, port = _split_server(entry)
            if ":" in host and not host.startswith("["):
                host = f"[{host}]"  # a bare IPv6 literal
            targets.append(f"{host}:{port if port is not None else self.snail_server_port}")
        return targets

    @property
    def server_target(self) -> str:
        """The servers as one display string."""
        return ",".join(self.server_targets)

    # 0.1.3 exposed these as settings attributes.
    @property
    def root_map(self) -> str:
        return "ROOT_MAP"

    @property
    def snail_version(self) -> str:
        return __version__


def find_env_file(name: str = ENV_FILE_NAME, start: Union[str, os.PathLike[str], None] = None) -> Optional[str]:
    """The nearest file called ``name`` in ``start`` (default: the working
    directory) or one of its parents, as an absolute path, or ``None``.

    The search stops at the filesystem root, or, when ``start`` is inside
    the user's home directory, at the home directory (included): a ``.env``
    above home belongs to no project of the user.  A file in a *parent*
    directory that another local user could have planted is skipped (owned
    by neither this user nor root, writable by group or others, or in a
    directory others can write, such as ``/tmp``): it would point the node
    at a server of that user's choosing.
    """
    here = Path(start if start is not None else os.getcwd()).resolve()
    try:
        home: Optional[Path] = Path.home().resolve()
    except (KeyError, RuntimeError):  # no home directory (a service account without one)
        home = None
    for directory in (here, *here.parents):
        candidate = directory / name
        if candidate.is_file() and (directory == here or _nobody_else_wrote(candidate)):
            return str(candidate)
        if home is not None and directory == home:
            break
    return None


def _nobody_else_wrote(path: Path) -> bool:
    """True when only this user or root can have written ``path`` (POSIX)."""
    if not hasattr(os, "geteuid"):
        return True
    owners = (os.geteuid(), 0)
    try:
        file, folder = path.stat(), path.parent.stat()
    except OSError:
        return False
    return (file.st_uid in owners and folder.st_uid in owners
            and not file.st_mode & 0o022 and not folder.st_mode & 0o002)


def env_file_message(settings: Settings) -> str:
    """Where ``settings`` came from, for the client's start-up log:
    ``settings from /abs/path/.env`` or ``no .env found (looked upward from /cwd)``."""
    if settings.env_file_used is not None:
        return f"settings from {settings.env_file_used} (environment variables win over it)"
    if settings.env_file_searched_from is not None:
        return (f"no {ENV_FILE_NAME} found (looked upward from {settings.env_file_searched_from}): "
                "settings from the environment and the defaults")
    if settings._env_file_wanted is not None:
        return (f"no .env read: {settings._env_file_wanted} is not a file; "
                "settings from the environment and the defaults")
    return "no .env read (none asked for): settings from the environment, the defaults and the program"


def _split_server(entry: str) -> Tuple[str, Optional[int]]:
    """``host:port`` → ``(host, port)``; a bare host (or IPv6 literal) has no port."""
    host, sep, port = entry.rpartition(":")
    if sep and port.isdigit() and (host.endswith("]") or ":" not in host):
        return host, int(port)
    return entry, None


def _read_sources(model: Any, env_file: Union[str, os.PathLike[str], None],
                  encoding: Optional[str]) -> Dict[str, Any]:
    """The values of ``model``'s fields found in the environment (names in
    any case) and, below them, in ``env_file`` (when it is a file)."""
    fields = set(model.model_fields)
    found: Dict[str, Any] = {}
    if env_file is not None and Path(env_file).expanduser().is_file():
        from dotenv import dotenv_values  # only when there is a file to read

        for key, value in dotenv_values(Path(env_file).expanduser(), encoding=encoding).items():
            if value is not None and key.lower() in fields:
                found[key.lower()] = value
    for key, value in os.environ.items():
        if key.lower() in fields:
            found[key.lower()] = value
    for name, value in found.items():  # lists, dicts, models: JSON text, as pydantic-settings read them
        if _is_complex(model.model_fields[name].annotation):
            try:
                found[name] = json.loads(value)
            except ValueError:
                pass  # left as text: validation names the variable
    return found


def _is_complex(annotation: Any) -> bool:
    origin = typing.get_origin(annotation)
    if origin is not None and origin not in (list, dict, set, frozenset, tuple):  # Optional[...], Union
        return any(_is_complex(arg) for arg in typing.get_args(annotation) if arg is not type(None))
    return origin is not None or annotation in (list, dict, set, frozenset, tuple) or (
        isinstance(annotation, type) and issubclass(annotation, BaseModel))


def new_host_id() -> str:
    """A random node id, ``py-`` followed by 12 hex digits."""
    return "py-" + os.urandom(6).hex()

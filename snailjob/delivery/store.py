"""The outbox file (``SNAIL_OUTBOX_PATH``): undelivered task results and
retry reports in SQLite, re-sent after a restart under the client's own token.

Whatever is in that file is sent to the server, so the file is trusted only
as far as it can be shown to be this user's own, and its rows only as far as
they look like what this client writes:

- The directory is created 0700 (only the levels that did not exist), the
  file, its ``-wal`` / ``-shm`` side files and the lock file 0600, whatever
  the umask.  An existing file of ours that others can read is tightened to 0600.
- The file, its side files, the lock file and the directory must belong to
  the current user and not be writable by group or others; the file, side
  files and lock file must not be symlinks.  A world-writable directory is
  refused even with the sticky bit: others could create the side files or the
  lock file before us.  Only the file's own directory is checked, not its
  parents; a symlinked directory is judged by its target.
- An exclusive ``flock`` on ``<path>.lock`` (left in place on close) makes a
  second store on the same file, in this process or another, fail at once:
  two clients would deliver the same results twice.
- The file must hold only the two tables this module creates, and pass
  SQLite's ``quick_check``; otherwise it is refused as corrupt or foreign.
- Restored rows whose URI is not in ``STORED_URIS`` or whose fields are
  malformed are not sent: they are deleted, with one warning per load.

Every problem is an ``OutboxError`` (a ``ConfigurationError``) raised by the
constructor, which leaves nothing open behind it.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import stat
import threading
from typing import TYPE_CHECKING, Any, Callable, List, Optional, Sequence, Tuple

from snailjob.errors import OutboxError
from snailjob.wire import enums

if TYPE_CHECKING:
    import sqlite3

logger = logging.getLogger("snailjob.outbox_store")  # the name its warnings have always had

SETTING = "SNAIL_OUTBOX_PATH"

# The only URIs kept in (and restored from) the file: those ResultOutbox.offer
# is given, through Client.put_report: a task's result (client.py) and the
# result of a retry replay or callback (retry_endpoint.py).  Map reports are
# never queued (sent once, see call_with_retry); retry reports have their own
# table and always go to URI_RETRY_REPORT.
STORED_URIS = frozenset((enums.URI_REPORT_RESULT, enums.URI_RETRY_RESULT, enums.URI_RETRY_CALLBACK_RESULT))

_SCHEMA = {
    "results": "CREATE TABLE IF NOT EXISTS results (id INTEGER PRIMARY KEY AUTOINCREMENT, "
               "batch_id INTEGER, uri TEXT NOT NULL, body TEXT NOT NULL, "
               "expires REAL NOT NULL, describe TEXT NOT NULL)",
    "retry_reports": "CREATE TABLE IF NOT EXISTS retry_reports (id INTEGER PRIMARY KEY AUTOINCREMENT, "
                     "entry TEXT NOT NULL)",
}
_COLUMNS = {
    "results": [("id", "INTEGER"), ("batch_id", "INTEGER"), ("uri", "TEXT"), ("body", "TEXT"),
                ("expires", "REAL"), ("describe", "TEXT")],
    "retry_reports": [("id", "INTEGER"), ("entry", "TEXT")],
}
_SIDE_FILES = ("-wal", "-shm")
_SHOWN = 60  # characters of text taken from the file that a message quotes

Row = Tuple[int, Any, str, str, float, str]


def _quote(value: Any) -> str:
    """``repr`` of a value read from the file, cut short."""
    text = repr(value)
    return text if len(text) <= _SHOWN else text[:_SHOWN] + "..."


def _json_reason(text: Any, want: type, what: str) -> Tuple[Any, Optional[str]]:
    """``text`` parsed as JSON of type ``want``, or why it is not."""
    if not isinstance(text, str):
        return None, f"{what} is {type(text).__name__}, not text"
    try:
        value = json.loads(text)
    except (ValueError, RecursionError):
        return None, f"{what} is not JSON: {_quote(text)}"
    if not isinstance(value, want):
        return None, f"{what} is not a JSON {'array' if want is list else 'object'}: {_quote(text)}"
    return value, None


def result_row_problem(row: Sequence[Any]) -> Optional[str]:
    """Why a ``results`` row is not one this client writes, or None."""
    _, batch_id, uri, body, expires, describe = row
    if not isinstance(uri, str) or uri not in STORED_URIS:
        return f"URI {_quote(uri)} is not one this client reports"
    if batch_id is not None and (isinstance(batch_id, bool) or not isinstance(batch_id, (int, str))):
        return f"batch id is {type(batch_id).__name__}"
    if isinstance(expires, bool) or not isinstance(expires, (int, float)):
        return f"expiry {_quote(expires)} is not a number"
    if not isinstance(describe, str):
        return f"description is {type(describe).__name__}, not text"
    value, problem = _json_reason(body, list, "body")
    if problem is None and (len(value) != 1 or not isinstance(value[0], dict)):
        problem = f"body is not a one-object JSON array: {_quote(body)}"
    return problem


def report_row_problem(row: Sequence[Any]) -> Optional[str]:
    """Why a ``retry_reports`` row is not one this client writes, or None."""
    value, problem = _json_reason(row[1], dict, "entry")
    if problem is None and not isinstance(value.get("sceneName"), str):
        problem = f"entry has no scene name: {_quote(row[1])}"
    return problem


class OutboxStore:
    """Undelivered results in a local SQLite file (WAL), so that a result
    survives the process being killed.  Rows are written before the result is
    queued and deleted once it is delivered, refused, expired or discarded.
    Durable against a killed process; against power loss only as far as
    SQLite's ``synchronous=NORMAL`` in WAL mode goes.

    The constructor checks the file as the module's docstring says and
    raises ``OutboxError`` when it cannot be used; it holds the file's lock
    until ``close()``.  ``load()`` and ``load_reports()`` return only rows
    this client could have written: the others (a URI outside
    ``STORED_URIS``, a field of the wrong type, a body that is not the JSON
    this client sends) are deleted from the file, never sent, and counted in
    one warning per call that quotes the first reasons."""

    def __init__(self, path: str) -> None:
        import sqlite3  # only when an outbox file is configured (about 1 MB of RSS)

        self.path = os.path.abspath(path)
        self._lock = threading.Lock()
        self._closed = False
        self._lock_fd: Optional[int] = None
        self._db: Optional[sqlite3.Connection] = None
        try:
            directory = os.path.dirname(self.path)
            self._make_directory(directory)
            self._check(directory, "its directory", directory=True)
            self._lock_fd = self._take_lock(self.path + ".lock")
            self._create_file()
            for suffix in _SIDE_FILES:
                self._check_existing(self.path + suffix)
            self._db = self._open(sqlite3)
            for suffix in _SIDE_FILES:  # SQLite gives them the file's mode; make sure of it
                if os.path.lexists(self.path + suffix):
                    os.chmod(self.path + suffix, 0o600)
        except BaseException:
            self._release()
            raise

    # --- the checks -------------------------------------------------------

    def _error(self, problem: str, todo: str) -> OutboxError:
        return OutboxError(f"{SETTING}={self.path}: {problem}; {todo}")

    def _make_directory(self, directory: str) -> None:
        """Create the missing levels of ``directory``, each 0700."""
        missing: List[str] = []
        level = directory
        while not os.path.lexists(level):
            missing.append(level)
            parent = os.path.dirname(level)
            if parent == level:
                break
            level = parent
        for level in reversed(missing):
            try:
                os.mkdir(level, 0o700)
                os.chmod(level, 0o700)  # mkdir's mode is cut by the umask
            except FileExistsError:
                pass  # created meanwhile: checked below like any existing directory
            except OSError as exc:
                raise self._error(f"cannot create the directory {level}: {exc.strerror or exc}",
                                  "create it yourself (mode 0700) or choose another path") from None

    def _check(self, path: str, what: str, st: Optional[os.stat_result] = None,
               directory: bool = False) -> os.stat_result:
        """Refuse ``path`` unless it belongs to this user and only this user
        can write it (``what`` names it in the message).  Without ``st``, it
        is ``stat``-ed (a directory through symlinks, a file not)."""
        if st is None:
            try:
                st = os.stat(path) if directory else os.lstat(path)
            except OSError as exc:
                raise self._error(f"cannot examine {what} {path}: {exc.strerror or exc}",
                                  "check the path and its permissions") from None
        euid = os.geteuid()
        mode = stat.S_IMODE(st.st_mode)
        if stat.S_ISLNK(st.st_mode):
            raise self._error(f"{what} {path} is a symlink", f"use the real path, or remove {path}")
        if directory and not stat.S_ISDIR(st.st_mode):
            raise self._error(f"{what} {path} is not a directory", "choose another path")
        if not directory and not stat.S_ISREG(st.st_mode):
            raise self._error(f"{what} {path} is not a regular file", "choose another path")
        if st.st_uid != euid:
            raise self._error(f"{what} {path} belongs to uid {st.st_uid}, not to this user (uid {euid})",
                              "use a directory of your own" if directory else
                              f"move it aside; if its content is yours, chown it to uid {euid}")
        if mode & 0o022:
            raise self._error(f"{what} {path} is writable by group or others (mode {mode:04o})",
                              f"chmod 700 {path}, or use a directory of your own (a shared directory is refused "
                              "even with the sticky bit)" if directory else
                              f"if its content is yours, chmod 600 {path}; else move it aside")
        return st

    def _check_existing(self, path: str) -> None:
        """Check a side file, if there is one, and tighten it to 0600."""
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            return
        except OSError as exc:
            raise self._error(f"cannot examine {path}: {exc.strerror or exc}", "check its permissions") from None
        self._check(path, "the side file", st)
        if stat.S_IMODE(st.st_mode) != 0o600:
            os.chmod(path, 0o600)

    def _open_file(self, path: str, what: str) -> int:
        """Open (creating it 0600) a file that must not be a symlink."""
        try:
            return os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise self._error(f"{what} {path} is a symlink", f"use the real path, or remove {path}") from None
            if exc.errno == errno.EISDIR:
                raise self._error(f"{what} {path} is a directory", "choose a file name") from None
            raise self._error(f"cannot open {what} {path} for writing: {exc.strerror or exc}",
                              f"make it yours and writable (chmod 600 {path}) in a directory of your own") from None

    def _settle(self, fd: int, path: str, what: str) -> None:
        """Check an open file and tighten it to 0600 (others must not read results)."""
        st = self._check(path, what, os.fstat(fd))
        if stat.S_IMODE(st.st_mode) != 0o600:
            os.fchmod(fd, 0o600)

    def _take_lock(self, lock_path: str) -> int:
        import fcntl

        fd = self._open_file(lock_path, "the lock file")
        try:
            self._settle(fd, lock_path, "the lock file")
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise self._error(f"another SnailJob client holds this outbox (its lock {lock_path} is taken)",
                                  f"give each client its own {SETTING}, or stop the other client first") from None
        except BaseException:
            os.close(fd)
            raise
        return fd

    def _create_file(self) -> None:
        """Create the file 0600 before SQLite opens it, or check the existing
        one.  Nothing else of this process has it open (we hold the lock), so
        closing this descriptor drops no SQLite lock."""
        fd = self._open_file(self.path, "the file")
        try:
            self._settle(fd, self.path, "the file")
        finally:
            os.close(fd)

    def _open(self, sqlite: Any) -> sqlite3.Connection:
        db = sqlite.connect(self.path, check_same_thread=False, isolation_level=None)
        try:
            try:
                db.execute("PRAGMA trusted_schema=OFF")  # SQLite >= 3.31; older ones ignore it
                db.execute("PRAGMA journal_mode=WAL")
                db.execute("PRAGMA synchronous=NORMAL")
                self._check_schema(db)
                problems = [r[0] for r in db.execute("PRAGMA quick_check(5)")]
                if problems != ["ok"]:
                    raise self._error(f"not a SnailJob outbox or corrupt: {_quote('; '.join(problems))}",
                                      "move it aside (its undelivered results are lost) and start again")
                for create in _SCHEMA.values():
                    db.execute(create)
            except sqlite.OperationalError as exc:
                raise self._error(f"cannot be read or written: {exc}",
                                  f"check that it is yours and writable (chmod 600 {self.path}), on a writable "
                                  "file system, or move it aside") from None
            except sqlite.DatabaseError as exc:
                raise self._error(f"not a SnailJob outbox or corrupt: {exc}",
                                  "move it aside (its undelivered results are lost) and start again") from None
        except BaseException:
            db.close()
            raise
        return db

    def _check_schema(self, db: sqlite3.Connection) -> None:
        """Only our tables (and SQLite's own), with our columns: no triggers,
        views or indexes that would run or change anything."""
        for kind, name in db.execute("SELECT type, name FROM sqlite_master"):
            if kind != "table" or (name not in _SCHEMA and name != "sqlite_sequence"):
                raise self._error(f"not a SnailJob outbox: it holds {kind} {_quote(name)}",
                                  "move it aside, or choose another path")
        for name, columns in _COLUMNS.items():
            found = [(r[1], r[2]) for r in db.execute(f"PRAGMA table_info({name})")]
            if found and found != columns:
                raise self._error(f"not a SnailJob outbox: table {name} has columns {_quote(found)}",
                                  "move it aside, or choose another path")

    def _release(self) -> None:
        """Close what the constructor or ``close()`` has open; the lock goes with its descriptor."""
        try:
            if self._db is not None:
                self._db.close()
        finally:
            self._db = None
            if self._lock_fd is not None:
                os.close(self._lock_fd)
                self._lock_fd = None

    # --- rows -----------------------------------------------------------------

    @property
    def _conn(self) -> sqlite3.Connection:
        if self._db is None:
            raise ValueError(f"the outbox {self.path} is closed")
        return self._db

    def add(self, batch_id: Any, uri: str, body: str, expires: float, describe: str) -> int:
        if uri not in STORED_URIS:  # it would be dropped as foreign at the next start
            raise ValueError(f"{uri!r} is not a URI the outbox keeps; add it to snailjob.delivery.store.STORED_URIS")
        with self._lock:
            cur = self._conn.execute("INSERT INTO results (batch_id, uri, body, expires, describe) "
                                     "VALUES (?, ?, ?, ?, ?)", (batch_id, uri, body, expires, describe))
            return int(cur.lastrowid or 0)

    def remove(self, row: int) -> None:
        with self._lock:
            self._conn.execute("DELETE FROM results WHERE id = ?", (row,))

    def load(self) -> List[Row]:
        """The stored results this client could have written, oldest first."""
        rows = self._load("results", "SELECT id, batch_id, uri, body, expires, describe FROM results ORDER BY id",
                          result_row_problem, "result(s)")
        return [(int(r[0]), r[1], r[2], r[3], float(r[4]), r[5]) for r in rows]

    def count(self) -> int:
        with self._lock:
            return int(self._conn.execute("SELECT COUNT(*) FROM results").fetchone()[0])

    # calls handed to the retry server, not yet accepted (RetryReporter)

    def add_report(self, entry: str) -> int:
        with self._lock:
            return int(self._conn.execute("INSERT INTO retry_reports (entry) VALUES (?)", (entry,)).lastrowid or 0)

    def remove_reports(self, rows: List[int]) -> None:
        with self._lock:
            self._conn.executemany("DELETE FROM retry_reports WHERE id = ?", [(r,) for r in rows])

    def load_reports(self) -> List[Tuple[int, str]]:
        """The stored retry reports this client could have written (their JSON text), oldest first."""
        rows = self._load("retry_reports", "SELECT id, entry FROM retry_reports ORDER BY id",
                          report_row_problem, "retry report(s)")
        return [(int(r[0]), r[1]) for r in rows]

    def _load(self, table: str, query: str, problem_of: Callable[[Sequence[Any]], Optional[str]],
              what: str) -> List[Tuple[Any, ...]]:
        """The rows of ``query`` that pass ``problem_of``; the others are deleted and logged."""
        import sqlite3

        good: List[Tuple[Any, ...]] = []
        bad: List[Tuple[int, str]] = []
        try:
            with self._lock:
                for row in self._conn.execute(query):
                    problem = problem_of(row)
                    if problem is None:
                        good.append(tuple(row))
                    else:
                        bad.append((row[0], problem))
                if bad:
                    self._conn.executemany(f"DELETE FROM {table} WHERE id = ?", [(r,) for r, _ in bad])
        except sqlite3.DatabaseError as exc:
            raise self._error(f"cannot be read: {exc}", "move it aside (its undelivered results are lost) "
                              "and start again") from None
        if bad:
            reasons = "; ".join(f"row {row}: {problem}" for row, problem in bad[:3])
            logger.warning("%s=%s: %d stored %s not sent and deleted, as this client does not write such "
                           "rows (%s%s)", SETTING, self.path, len(bad), what, reasons, "; ..." if len(bad) > 3 else "")
        return good

    def close(self) -> None:
        """Close the file and release its lock (again: nothing)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._release()

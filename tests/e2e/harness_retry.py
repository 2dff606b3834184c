# mypy: allow-untyped-defs
"""The retry side of the real server, for ``RealServer``: scenes, retries and their
attempts, RETRY logs (a mixin; ``harness.RealServer`` inherits it).

Web API, the same paths in 1.4.0, 1.10.1 and 2.0.2: POST /scene-config (SceneConfigRequestVO;
answers only true), GET /scene-config/page/list, GET /retry/list, GET /retry/{id} (1.4.0
requires ?groupName=, 2.x ignores it), GET /retry-task/list. The state is read from the
tables, named alike in all three: sj_retry (one row per reported retry, and one more per
callback: task_type 2 with parent_id = the retry), sj_retry_task (one row per attempt) and
sj_retry_task_log_message (RETRY logs; only 1.4.0 serves them over REST,
/retry-task/message/list; 2.x streams them over a WebSocket). 2.x adds group_id, scene_id and
serializer_name to sj_retry; the queries select every column, so they come along.
"""

from __future__ import annotations

import json
import time

from tests.e2e.provision import HarnessError, vtuple


def _sql_str(text):
    """Text for a single-quoted SQL literal."""
    return str(text).replace("'", "''")


class RetryStatus:
    """``sj_retry.retry_status`` (RetryStatusEnum): a retry as a whole."""
    RUNNING = 0
    FINISH = 1
    MAX_COUNT = 2
    SUSPEND = 3
    FINAL = (1, 2)
    NAMES = {0: "RUNNING", 1: "FINISH", 2: "MAX_COUNT", 3: "SUSPEND"}


class RetryTaskStatus:
    """``sj_retry_task.task_status`` (RetryTaskStatusEnum): one attempt of a retry or callback."""
    WAITING = 1
    RUNNING = 2
    SUCCESS = 3
    FAIL = 4
    STOP = 5
    CANCEL = 6
    FINAL = (3, 4, 5, 6)
    NAMES = {1: "WAITING", 2: "RUNNING", 3: "SUCCESS", 4: "FAIL", 5: "STOP", 6: "CANCEL"}


class RetryTaskType:
    """``sj_retry.task_type``: the callback of a retry is a row of its own (``parent_id`` = the retry)."""
    RETRY = 1
    CALLBACK = 2


class BackOff:
    """Back-off strategy of a retry scene (``backOff`` and ``cbTriggerType``; WaitStrategyEnum)."""
    DELAY_LEVEL = 1  # 10 s, 15 s, 30 s, ... by attempt; no interval
    FIXED = 2  # every triggerInterval seconds
    CRON = 3
    RANDOM = 4


# Smallest interval (seconds) the web API accepts for a FIXED or RANDOM back-off, and smallest
# period of a CRON one, for retries and callbacks alike (SceneConfigServiceImpl.checkExecuteInterval,
# the same in 1.4.0, 1.10.1 and 2.0.2). The retry scanner also runs every 10 s.
MIN_RETRY_INTERVAL = 10


class RetryHelpers:
    """Retry helpers of ``RealServer`` (uses its ``api``, ``pg``, ``DB``, ``group``, ``version``)."""

    def retry_scene_body(self, name, max_retry_count=3, back_off=BackOff.FIXED,
                         trigger_interval=MIN_RETRY_INTERVAL, executor_timeout=5, callback=True,
                         cb_trigger_type=BackOff.FIXED, cb_max_count=3, cb_trigger_interval=MIN_RETRY_INTERVAL,
                         route_key=4, description="", block_strategy=1, scene_status=1,
                         deadline_request=60000, group=None, **extra):
        """Body of POST /scene-config. Intervals are seconds (a CRON back-off takes an expression);
        the server refuses FIXED/RANDOM intervals below MIN_RETRY_INTERVAL and ignores them for
        DELAY_LEVEL. executorTimeout 1..60 s; deadlineRequest 100..60000 ms (1.x and 2.x)."""
        body = {
            "groupName": group or self.group, "sceneName": name, "sceneStatus": scene_status,
            "maxRetryCount": max_retry_count, "backOff": back_off,
            "triggerInterval": "" if trigger_interval is None else str(trigger_interval),
            "routeKey": route_key, "blockStrategy": block_strategy, "executorTimeout": executor_timeout,
            "deadlineRequest": deadline_request, "description": description, "notifyIds": [],
            "cbStatus": 1 if callback else 0, "cbTriggerType": cb_trigger_type, "cbMaxCount": cb_max_count,
            "cbTriggerInterval": "" if cb_trigger_interval is None else str(cb_trigger_interval),
        }
        if vtuple(self.version) >= (1, 10):
            body["labels"] = ""  # routing labels of the scene (1.10+); empty = any node
        body.update(extra)
        return body

    def create_retry_scene(self, name, **kw):
        """Create a retry scene (enabled); returns its id. Defaults: FIXED back-off every 10 s (the
        smallest the server accepts), 3 attempts, executorTimeout 5 s, callback on (FIXED 10 s, 3
        attempts), route ROUND. A scene must exist before the first report unless the group has
        initScene on (create_group's default), which creates a DELAY_LEVEL scene with 21 attempts
        and no callback instead."""
        body = self.retry_scene_body(name, **kw)
        self.api("POST", "/scene-config", body)
        row = self.retry_scene(name, body["groupName"])
        if not row:
            raise HarnessError(f"retry scene {name} not found after create")
        return int(row["id"])

    def retry_scene(self, name, group=None):
        """The scene as the web API lists it (backOff, triggerInterval, cbStatus, ...), or None."""
        group = group or self.group
        rows = self.api("GET", "/scene-config/page/list", params={"sceneName": name, "groupName": group,
                                                                 "page": 1, "size": 20}) or []
        rows = [r for r in rows if r.get("sceneName") == name and r.get("groupName", group) == group]
        return rows[0] if rows else None

    def _retry_where(self, group, scene=None, idempotent_id=None, task_type=None):
        where = [f"group_name = '{_sql_str(group or self.group)}'"]
        if scene is not None:
            where.append(f"scene_name = '{_sql_str(scene)}'")
        if idempotent_id is not None:
            where.append(f"idempotent_id = '{_sql_str(idempotent_id)}'")
        if task_type is not None:
            where.append(f"task_type = {int(task_type)}")
        return " AND ".join(where)

    def retries(self, scene=None, idempotent_id=None, task_type=None, group=None):
        """sj_retry rows of the group (retries and callbacks; every column: id, scene_name,
        idempotent_id, biz_no, executor_name, args_str, retry_count, retry_status, task_type,
        parent_id, next_trigger_at (epoch ms), deleted, ...), oldest first."""
        where = self._retry_where(group, scene, idempotent_id, task_type)
        return self.pg.query_json(f"SELECT * FROM sj_retry WHERE {where} ORDER BY id", db=self.DB)

    def retry(self, retry_id):
        """One sj_retry row, or None."""
        rows = self.pg.query_json(f"SELECT * FROM sj_retry WHERE id = {int(retry_id)}", db=self.DB)
        return rows[0] if rows else None

    def find_retry(self, idempotent_id, scene=None, task_type=RetryTaskType.RETRY, group=None):
        """The newest retry (or callback) row with this idempotent id, or None."""
        rows = self.retries(scene, idempotent_id, task_type, group)
        return rows[-1] if rows else None

    def callbacks(self, retry_id):
        """The callback rows of a retry (task_type 2); the server makes one when the retry ends
        FINISH or MAX_COUNT and its scene has the callback on."""
        return self.pg.query_json(
            f"SELECT * FROM sj_retry WHERE parent_id = {int(retry_id)} AND task_type = {RetryTaskType.CALLBACK} "
            f"ORDER BY id", db=self.DB)

    def retry_detail(self, retry_id, group=None):
        """A retry as the web API shows it (retryStatus, retryCount, nextTriggerAt, ...)."""
        return self.api("GET", f"/retry/{int(retry_id)}", params={"groupName": group or self.group})

    def retry_page(self, scene=None, retry_status=None, group=None, size=50):
        params = {"groupName": group or self.group, "page": 1, "size": size}
        if scene is not None:
            params["sceneName"] = scene
        if retry_status is not None:
            params["retryStatus"] = retry_status
        return self.api("GET", "/retry/list", params=params) or []

    def retry_tasks(self, retry_id):
        """sj_retry_task rows (one per attempt: task_status, operation_reason, client_info
        'hostId@ip:port', task_type, create_dt, ...) of a retry or callback id, oldest first."""
        return self.pg.query_json(f"SELECT * FROM sj_retry_task WHERE retry_id = {int(retry_id)} ORDER BY id",
                                  db=self.DB)

    def retry_task_page(self, retry_id, group=None):
        """The attempts as the web API lists them (taskStatus, operationReason, clientInfo)."""
        return self.api("GET", "/retry-task/list", params={"retryId": int(retry_id), "groupName": group or self.group,
                                                           "page": 1, "size": 100}) or []

    def wait_retry(self, retry, timeout=60, statuses=RetryStatus.FINAL, scene=None, poll=0.5):
        """Wait for a retry. ``retry`` is an id: until its retry_status is in ``statuses``, returns
        the row. Or a predicate: called with retries(scene) until it returns something truthy,
        which is returned. Raises HarnessError on timeout."""
        deadline = time.monotonic() + timeout
        while True:
            if callable(retry):
                last = self.retries(scene)
                found = retry(last)
                if found:
                    return found
            else:
                last = self.retry(retry)
                if last and int(last["retry_status"]) in statuses:
                    return last
            if time.monotonic() > deadline:
                raise HarnessError(f"retry {retry if not callable(retry) else '(predicate)'} not as wanted "
                                   f"after {timeout}s: {json.dumps(last, default=str)[:1500]}")
            time.sleep(poll)

    def wait_retry_tasks(self, retry_id, predicate=lambda rows: bool(rows), timeout=60, poll=0.5):
        """Poll retry_tasks(retry_id) until predicate(rows); returns the rows (also on timeout)."""
        deadline = time.monotonic() + timeout
        while True:
            rows = self.retry_tasks(retry_id)
            if predicate(rows) or time.monotonic() > deadline:
                return rows
            time.sleep(poll)

    def retry_logs(self, retry_id=None, retry_task_id=None):
        """RETRY log entries stored in sj_retry_task_log_message for a retry and/or one attempt:
        dicts (time_stamp, level, message, location, host, port, ...; null fields are dropped by
        the server) each with retry_id, retry_task_id and real_time of its row added. The server
        writes one row per retryTaskId and report call, asynchronously: poll if needed."""
        where = []
        if retry_id is not None:
            where.append(f"retry_id = {int(retry_id)}")
        if retry_task_id is not None:
            where.append(f"retry_task_id = {int(retry_task_id)}")
        if not where:
            raise ValueError("retry_logs needs retry_id or retry_task_id")
        rows = self.pg.query_json(f"SELECT id, retry_id, retry_task_id, message, log_num, real_time "
                                  f"FROM sj_retry_task_log_message WHERE {' AND '.join(where)} ORDER BY id",
                                  db=self.DB)
        lines = []
        for r in rows:
            try:
                msgs = json.loads(r["message"])
            except (TypeError, ValueError):
                msgs = [{"message": r["message"]}]
            for m in msgs if isinstance(msgs, list) else [msgs]:
                m = dict(m) if isinstance(m, dict) else {"message": m}
                m.update(retry_id=r["retry_id"], retry_task_id=r["retry_task_id"], real_time=r["real_time"])
                lines.append(m)
        return lines

    def wait_retry_logs(self, predicate=lambda lines: bool(lines), timeout=30, retry_id=None,
                        retry_task_id=None):
        deadline = time.monotonic() + timeout
        while True:
            lines = self.retry_logs(retry_id, retry_task_id)
            if predicate(lines) or time.monotonic() > deadline:
                return lines
            time.sleep(0.5)


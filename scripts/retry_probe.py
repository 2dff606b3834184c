#!/usr/bin/env python3
# mypy: allow-untyped-defs
"""Probe the retry module of the real SnailJob server with a minimal stand-in retry client.

    .venv/bin/python scripts/retry_probe.py --version 2.0.2 [--out /tmp/retry_probe_result.json]

It starts one server (tests/e2e/harness.py: the server from ../shared, private PostgreSQL), creates retry
scenes through the web API and plays a retry client with the package's low-level pieces only
(snailjob.transport.GrpcTransport outbound with the standard headers, a /beat loop, and
snailjob.transport.InboundServer for the server's calls). Every call the server makes is
recorded with its headers and body. Scenes (FIXED back-off, 10 s, the smallest accepted):

- ``probe_main``: callback on. 1st dispatch -> one RETRY log entry + report FAIL (4);
  2nd -> log + SUCCESS (3); the callback is answered and reported SUCCESS.
- ``probe_refuse``: callback off. The 1st dispatch is answered status=0/data=false; later ones
  are reported SUCCESS.
- ``probe_silent``: 1 attempt, callback on. Dispatches are accepted and never reported: the
  server's executor timeout decides.
- ``probe_ok``: callback off, reported SUCCESS at once; used once the server has been up for a
  while, to time report -> first dispatch in the steady state (a fresh server scans for retries
  only ~30 s after it started).

Also: a report for a scene that does not exist (in a group with initScene on, and in one with
it off), a duplicate report while the retry runs and one after it finished. The result (JSON)
goes to stdout and to --out: calls in both directions, timings, state transitions seen in the
database, and what the harness' query methods return. The server is stopped at the end.
"""

import argparse
import json
import os
import signal
import sys
import threading
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from snailjob import __version__  # noqa: E402
from snailjob.inbound import InboundServer  # noqa: E402
from snailjob.transport import GrpcTransport, Reply  # noqa: E402
from snailjob.wire.codec import encode_body  # noqa: E402
from tests.e2e import harness  # noqa: E402

URI_BEAT = "/beat"
URI_REPORT = "/batch/report"
URI_RESULT = "/report/retry/dispatch/result"
URI_CB_RESULT = "/report/retry/callback/result"
URI_LOG = "/batch/server/report/log"
URI_DISPATCH = "/retry/dispatch/v1"
URI_CALLBACK = "/retry/callback/v1"

SCENE_MAIN = "probe_main"
SCENE_REFUSE = "probe_refuse"
SCENE_SILENT = "probe_silent"
SCENE_OK = "probe_ok"
EXECUTOR = "probeRetryExecutor"
ARGS_STR = '[1, "x"]'


def _interrupt(signum, frame):
    raise KeyboardInterrupt()


class ProbeNode:
    """A stand-in retry client: beats, records every inbound call, behaves per scene."""

    def __init__(self, srv, group, token, host_id="py-retry-probe", t0=None):
        self.srv = srv
        self.group = group
        self.host_id = host_id
        self.port = harness.free_port()
        self.t0 = t0 or time.time()
        self.headers = {
            "host-id": host_id, "host-ip": "127.0.0.1", "host-port": str(self.port),
            "namespace": srv.namespace, "group-name": group, "token": token,
            "executor-type": "2", "system-version": __version__, "label": json.dumps({"state": "up"}),
        }
        self.transport = GrpcTransport(f"127.0.0.1:{srv.grpc_port}", lambda: self.headers)
        self.inbound = InboundServer("127.0.0.1", self.port, self._handle)
        self.inbound_calls = []
        self.outbound_calls = []
        self.beats = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._beat_thread = None
        self._workers = []

    @property
    def address(self):
        return f"127.0.0.1:{self.port}"

    def rel(self, t=None):
        return round((t if t is not None else time.time()) - self.t0, 3)

    # -- outbound ------------------------------------------------------------

    def call(self, uri, *args, tag=None):
        body = encode_body(*args)
        t = time.time()
        rec = {"t": self.rel(t), "uri": uri, "tag": tag, "body": json.loads(body)}
        try:
            reply = self.transport.call(uri, body, timeout=15)
            rec["reply"] = {"status": reply.status, "message": reply.message, "data": reply.data}
        except Exception as exc:  # record, never crash the probe
            rec["error"] = f"{type(exc).__name__}: {exc}"
            reply = None
        rec["took_s"] = round(time.time() - t, 3)
        with self._lock:
            self.outbound_calls.append(rec)
        return rec

    def _beat_loop(self):
        while not self._stop.is_set():
            try:
                reply = self.transport.call(URI_BEAT, encode_body("PING"), timeout=5)
                self.beats.append({"t": self.rel(), "status": reply.status, "message": reply.message,
                                   "data": reply.data})
            except Exception as exc:
                self.beats.append({"t": self.rel(), "error": str(exc)})
            self._stop.wait(3)

    def start(self):
        self.inbound.start()
        self._beat_thread = threading.Thread(target=self._beat_loop, name="probe-beat", daemon=True)
        self._beat_thread.start()
        return self

    def stop(self):
        self._stop.set()
        for w in self._workers:
            w.join(5)
        if self._beat_thread:
            self._beat_thread.join(6)
        self.inbound.stop(0)
        self.transport.close()

    def later(self, delay, fn, *args):
        def run():
            time.sleep(delay)
            try:
                fn(*args)
            except Exception:
                traceback.print_exc()
        w = threading.Thread(target=run, daemon=True)
        self._workers.append(w)
        w.start()

    # -- inbound -------------------------------------------------------------

    def _handle(self, uri, headers, body):
        rec = {"t": self.rel(), "uri": uri, "headers": dict(headers), "body_raw": body}
        try:
            rec["body"] = json.loads(body)
        except ValueError:
            rec["body"] = None
        with self._lock:
            self.inbound_calls.append(rec)
        try:
            if uri == URI_DISPATCH:
                reply = self.on_dispatch(rec)
            elif uri == URI_CALLBACK:
                reply = self.on_callback(rec)
            else:  # /retry/stop/v1, /sync/version, anything else
                reply = Reply(1, "", True)
        except Exception as exc:
            traceback.print_exc()
            reply = Reply(0, f"probe error: {exc}", None)
        rec["answer"] = {"status": reply.status, "message": reply.message, "data": reply.data}
        return reply

    def dispatches(self, retry_id=None, scene=None, uri=URI_DISPATCH):
        out = []
        with self._lock:
            calls = list(self.inbound_calls)
        for c in calls:
            if c["uri"] != uri or not c.get("body"):
                continue
            req = c["body"][0]
            if retry_id is not None and req.get("retryId") != retry_id:
                continue
            if scene is not None and req.get("sceneName") != scene:
                continue
            out.append(c)
        return out

    def on_dispatch(self, rec):
        req = rec["body"][0]
        n = len(self.dispatches(retry_id=req["retryId"])) - 1  # earlier dispatches of this retry
        scene = req["sceneName"]
        if scene == SCENE_SILENT:
            return Reply(1, "", True)
        if scene == SCENE_REFUSE and n == 0:
            return Reply(0, "probe refuses this dispatch", False)
        status = 4 if (scene == SCENE_MAIN and n == 0) else 3
        self.later(0.3, self.finish_attempt, req, status, n)
        return Reply(1, "", True)

    def finish_attempt(self, req, status, n):
        now_ms = int(time.time() * 1000)
        entry = {
            "logType": "RETRY", "namespaceId": req.get("namespaceId"), "groupName": req.get("groupName"),
            "retryTaskId": req["retryTaskId"], "retryId": req["retryId"], "realTime": now_ms,
            "clientInfo": f"{self.host_id}@{self.address}",
            "fieldList": [
                {"name": "time_stamp", "value": str(now_ms)}, {"name": "level", "value": "INFO"},
                {"name": "thread", "value": "probe-retry"},
                {"name": "message", "value": f"probe attempt {n + 1} of retry {req['retryId']} -> {status}"},
                {"name": "location", "value": "retry_probe:finish_attempt:0"},
                {"name": "throwable", "value": None},
                {"name": "host", "value": "127.0.0.1"}, {"name": "port", "value": str(self.port)},
            ],
        }
        self.call(URI_LOG, [entry], tag=f"log retry {req['retryId']} attempt {n + 1}")
        result = {
            "namespaceId": req.get("namespaceId"), "groupName": req.get("groupName"),
            "sceneName": req["sceneName"], "retryId": req["retryId"], "retryTaskId": req["retryTaskId"],
            "taskStatus": status,
        }
        if status == 3:
            result["result"] = "probe ok"
        else:
            result["exceptionMsg"] = f"ValueError: probe failure {n + 1}"
        self.call(URI_RESULT, result, tag=f"result retry {req['retryId']} attempt {n + 1} -> {status}")

    def on_callback(self, rec):
        req = rec["body"][0]
        self.later(0.3, self.finish_callback, req)
        return Reply(1, "", True)

    def finish_callback(self, req):
        result = {
            "namespaceId": req.get("namespaceId"), "groupName": req.get("groupName"),
            "sceneName": req["sceneName"], "retryId": req["retryId"], "retryTaskId": req["retryTaskId"],
            "taskStatus": 3,
        }
        self.call(URI_CB_RESULT, result, tag=f"callback result {req['retryId']} -> 3")


class Watcher:
    """Polls sj_retry and sj_retry_task and records every change (the state transitions)."""

    def __init__(self, srv, node):
        self.srv = srv
        self.node = node
        self.changes = []
        self._last = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _snapshot(self):
        rows = self.srv.pg.query_json(
            "SELECT r.id, r.scene_name, r.task_type, r.parent_id, r.retry_status, r.retry_count, "
            "r.next_trigger_at, coalesce((SELECT json_agg(json_build_array(t.id, t.task_status, t.operation_reason) "
            "ORDER BY t.id) FROM sj_retry_task t WHERE t.retry_id = r.id), '[]'::json) AS tasks "
            "FROM sj_retry r ORDER BY r.id", db=self.srv.DB)
        return {r["id"]: r for r in rows}

    def _run(self):
        while not self._stop.is_set():
            try:
                snap = self._snapshot()
            except Exception as exc:
                self.changes.append({"t": self.node.rel(), "error": str(exc)})
                snap = self._last
            now_ms = int(time.time() * 1000)
            for rid, row in snap.items():
                if self._last.get(rid) != row:
                    ch = dict(row)
                    ch["t"] = self.node.rel()
                    ch["next_trigger_in_s"] = round((int(row["next_trigger_at"]) - now_ms) / 1000, 1)
                    self.changes.append(ch)
            self._last = snap
            self._stop.wait(0.25)

    def start(self):
        self._thread.start()
        return self

    def stop(self):
        self._stop.set()
        self._thread.join(5)


def gap(a, b):
    return None if a is None or b is None else round(b - a, 2)


def first_t(calls):
    return calls[0]["t"] if calls else None


def report_body(group, scene, idem, executor=EXECUTOR):
    return [{"groupName": group, "sceneName": scene, "idempotentId": idem, "executorName": executor,
             "bizNo": "", "argsStr": ARGS_STR, "extAttrs": "", "serializerName": "jackson"}]


def run_probe(args):
    out = {"version": args.version, "notes": []}
    with harness.RealServer(args.version, group=args.group) as srv:
        node = None
        watcher = None
        try:
            out["timings_server"] = srv.timings
            stamp = str(int(time.time()))
            # -- scenes (web API) --
            scenes = {}
            bodies = {
                SCENE_MAIN: srv.retry_scene_body(SCENE_MAIN),
                SCENE_REFUSE: srv.retry_scene_body(SCENE_REFUSE, callback=False),
                SCENE_SILENT: srv.retry_scene_body(SCENE_SILENT, max_retry_count=1),
            }
            out["scene_bodies"] = bodies
            scenes[SCENE_MAIN] = srv.create_retry_scene(SCENE_MAIN)
            scenes[SCENE_REFUSE] = srv.create_retry_scene(SCENE_REFUSE, callback=False)
            scenes[SCENE_SILENT] = srv.create_retry_scene(SCENE_SILENT, max_retry_count=1)
            scenes[SCENE_OK] = srv.create_retry_scene(SCENE_OK, callback=False)
            out["scene_ids"] = scenes
            out["scene_rows"] = {n: srv.retry_scene(n) for n in scenes}
            # intervals the server refuses
            refused = {}
            for label, kw in {"trigger_interval_9": {"trigger_interval": 9},
                              "cb_trigger_interval_2": {"cb_trigger_interval": 2},
                              "executor_timeout_0": {"executor_timeout": 0},
                              "delay_level_no_interval": {"back_off": harness.BackOff.DELAY_LEVEL,
                                                          "trigger_interval": None}}.items():
                reply = srv.request("POST", "/scene-config", srv.retry_scene_body(f"probe_chk_{label}", **kw))
                refused[label] = {"status": reply.get("status"), "message": reply.get("message"),
                                  "data": reply.get("data")}
            out["scene_validation"] = refused

            group2, token2 = "py_e2e_noinit", "SJ_noinit_" + stamp
            srv.create_group(group2, token2, init_scene=False)

            # -- the node --
            t0 = time.time()
            node = ProbeNode(srv, srv.group, srv.group_token, t0=t0).start()
            srv.wait_node_online(node.address, timeout=60)
            out["online_after_s"] = node.rel()
            out["first_beat"] = node.beats[:1]
            watcher = Watcher(srv, node).start()

            # -- reports --
            idem = {s: f"{s}-{stamp}" for s in (SCENE_MAIN, SCENE_REFUSE, SCENE_SILENT)}
            rep = {}
            for s in (SCENE_MAIN, SCENE_REFUSE, SCENE_SILENT):
                rep[s] = node.call(URI_REPORT, report_body(srv.group, s, idem[s]), tag=f"report {s}")
            ids = {}
            for s in idem:
                row = srv.find_retry(idem[s], s)
                ids[s] = int(row["id"]) if row else None
            out["retry_ids"] = ids
            out["retry_rows_after_report"] = {s: srv.retry(i) for s, i in ids.items() if i}
            out["retry_tasks_after_report"] = {s: srv.retry_tasks(i) for s, i in ids.items() if i}

            dup = node.call(URI_REPORT, report_body(srv.group, SCENE_MAIN, idem[SCENE_MAIN]),
                            tag="duplicate report while running")
            out["duplicate_while_running"] = {
                "reply": dup.get("reply"), "rows": len(srv.retries(SCENE_MAIN, idem[SCENE_MAIN]))}

            unknown = f"probe_unknown_{stamp}"
            r_unknown = node.call(URI_REPORT, report_body(srv.group, unknown, f"unk-{stamp}"),
                                  tag="report unknown scene (initScene on)")
            out["unknown_scene_init_on"] = {"reply": r_unknown.get("reply"),
                                            "scene": srv.retry_scene(unknown),
                                            "rows": srv.retries(unknown)}
            node2 = ProbeNode(srv, group2, token2, host_id="py-retry-probe-2", t0=t0)
            try:
                body2 = report_body(group2, f"probe_unknown2_{stamp}", f"unk2-{stamp}")
                r2 = node2.call(URI_REPORT, body2, tag="report unknown scene (initScene off)")
                out["unknown_scene_init_off"] = {"reply": r2.get("reply"),
                                                 "rows": srv.retries(group=group2)}
                # body group differs from the header group
                r3 = node2.call(URI_REPORT, report_body(srv.group, SCENE_REFUSE, f"cross-{stamp}"),
                                tag="report with body groupName != header group-name")
                out["cross_group_report"] = {"reply": r3.get("reply"),
                                             "rows_main_group": srv.retries(SCENE_REFUSE, f"cross-{stamp}"),
                                             "rows_group2": srv.retries(SCENE_REFUSE, f"cross-{stamp}",
                                                                        group=group2)}
            finally:
                node2.transport.close()
                out["outbound_calls_group2"] = node2.outbound_calls

            # -- wait for the flows --
            main_id, refuse_id, silent_id = ids[SCENE_MAIN], ids[SCENE_REFUSE], ids[SCENE_SILENT]
            final = {}
            for s, rid in ids.items():
                try:
                    final[s] = srv.wait_retry(rid, timeout=args.timeout)
                except harness.HarnessError as exc:
                    final[s] = f"TIMEOUT: {exc}"
            out["final_retry_rows"] = final

            def callbacks_done(rid):
                def pred(_rows):
                    cbs = srv.callbacks(rid)
                    return cbs if cbs and all(int(c["retry_status"]) in harness.RetryStatus.FINAL
                                              for c in cbs) else None
                return pred

            for s, rid in ((SCENE_MAIN, main_id), (SCENE_SILENT, silent_id)):
                try:
                    out[f"callback_rows_{s}"] = srv.wait_retry(callbacks_done(rid), timeout=args.timeout)
                except harness.HarnessError as exc:
                    out[f"callback_rows_{s}"] = f"TIMEOUT: {exc}; rows {srv.callbacks(rid)}"

            dup2 = node.call(URI_REPORT, report_body(srv.group, SCENE_MAIN, idem[SCENE_MAIN]),
                             tag="duplicate report after FINISH")
            out["duplicate_after_finish"] = {"reply": dup2.get("reply"),
                                             "rows": srv.retries(SCENE_MAIN, idem[SCENE_MAIN])}

            # -- steady state: report -> first dispatch on a server that has been scanning a while --
            ok_idem = f"{SCENE_OK}-{stamp}"
            rep[SCENE_OK] = node.call(URI_REPORT, report_body(srv.group, SCENE_OK, ok_idem), tag=f"report {SCENE_OK}")
            ok_row = srv.find_retry(ok_idem, SCENE_OK)
            ids[SCENE_OK] = int(ok_row["id"]) if ok_row else None
            try:
                final[SCENE_OK] = srv.wait_retry(ids[SCENE_OK], timeout=args.timeout)
            except harness.HarnessError as exc:
                final[SCENE_OK] = f"TIMEOUT: {exc}"
            time.sleep(2)

            # -- harness query methods --
            q = {}
            for s, rid in ids.items():
                cbs = srv.callbacks(rid)
                q[s] = {
                    "retry": srv.retry(rid),
                    "retry_detail_web": _try(srv.retry_detail, rid),
                    "retry_tasks": srv.retry_tasks(rid),
                    "retry_task_page_web": _try(srv.retry_task_page, rid),
                    "callbacks": cbs,
                    "callback_tasks": {c["id"]: srv.retry_tasks(c["id"]) for c in cbs},
                    "retry_logs": srv.wait_retry_logs(retry_id=rid, timeout=5),
                }
            q["retry_page_web"] = _try(srv.retry_page)
            q["all_retries"] = srv.retries()
            out["queries"] = q

            # -- timings --
            tm = {}
            d_main = node.dispatches(main_id)
            res_main = [c for c in node.outbound_calls if c["uri"] == URI_RESULT
                        and c["body"][0]["retryId"] == main_id]
            cb_main = [c for c in node.inbound_calls if c["uri"] == URI_CALLBACK]
            tm["main_report_to_dispatch1_s"] = gap(rep[SCENE_MAIN]["t"], first_t(d_main))
            if len(d_main) > 1 and res_main:
                tm["main_fail_report_to_dispatch2_s"] = gap(res_main[0]["t"], d_main[1]["t"])
                tm["main_dispatch1_to_dispatch2_s"] = gap(d_main[0]["t"], d_main[1]["t"])
            if len(res_main) > 1:
                main_cbs = [c for c in cb_main if c["body"][0]["sceneName"] == SCENE_MAIN]
                tm["main_success_report_to_callback_s"] = gap(res_main[1]["t"], first_t(main_cbs))
            d_ref = node.dispatches(refuse_id)
            tm["refuse_report_to_dispatch1_s"] = gap(rep[SCENE_REFUSE]["t"], first_t(d_ref))
            if len(d_ref) > 1:
                tm["refuse_dispatch1_to_dispatch2_s"] = gap(d_ref[0]["t"], d_ref[1]["t"])
            d_sil = node.dispatches(silent_id)
            stops = [c for c in node.inbound_calls if c["uri"] == "/retry/stop/v1"]
            sil_cbs = [c for c in cb_main if c["body"][0]["sceneName"] == SCENE_SILENT]
            tm["silent_dispatch_to_stop_s"] = gap(first_t(d_sil), first_t(stops))
            tm["silent_dispatch_to_callback_s"] = gap(first_t(d_sil), first_t(sil_cbs))
            tm["ok_report_to_dispatch1_s"] = gap(rep[SCENE_OK]["t"], first_t(node.dispatches(ids[SCENE_OK])))
            out["timings"] = tm
        except Exception:
            out["error"] = traceback.format_exc()
            srv.mark_failed()
        finally:
            if watcher:
                watcher.stop()
                out["transitions"] = watcher.changes
            if node:
                node.stop()
                out["inbound_calls"] = node.inbound_calls
                out["outbound_calls"] = node.outbound_calls
                out["beats"] = {"count": len(node.beats), "bad": [b for b in node.beats if b.get("status") != 1]}
            out["server_log_retry_lines"] = [
                ln for ln in srv.server_log_text().splitlines()
                if ("retry" in ln.lower() or "Retry" in ln) and ("ERROR" in ln or "WARN" in ln)][-40:]
    return out


def _try(fn, *a):
    try:
        return fn(*a)
    except Exception as exc:
        return f"ERROR {exc}"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--version", default=os.environ.get("SNAILJOB_VERSION", "1.4.0"))
    ap.add_argument("--group", default="py_e2e_group")
    ap.add_argument("--timeout", type=float, default=90, help="seconds to wait for each retry to end")
    ap.add_argument("--out", default="/tmp/retry_probe_result.json")
    args = ap.parse_args()
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGINT, _interrupt)
    try:
        out = run_probe(args)
    except harness.HarnessError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        sys.exit(130)
    text = json.dumps(out, indent=1, ensure_ascii=False, default=str)
    Path(args.out).write_text(text)
    print(text, flush=True)
    print(f"written to {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()

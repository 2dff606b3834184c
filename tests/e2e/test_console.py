# mypy: allow-untyped-defs
"""The web console, in a real browser: what a user looks at after running the client.

Headless Chromium (Debian's ``chromium`` and ``chromium-driver``, installed by
provision.py when missing) driven with Selenium through the console that ships
with the server (``/snail-job/``, admin/admin, English UI): log in, find the
Python nodes online with their labels, open a finished cluster batch and its
task, open the task's log view and read the lines the client shipped, and see
a failed task's reason in the result view.  Screenshots of each page are kept
in ``<SNAILJOB_LOG_DIR>/console-<version>/`` (printed at the end of the test).

The browser runs in the server's time zone (Asia/Shanghai): the console shows
batch times as the server formats them and log times in the browser's zone, so
one zone makes the two agree on screen.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import time
import zoneinfo

import pytest

import snailjob
from tests.e2e import provision
from tests.e2e.harness import BatchStatus, TaskType
from tests.e2e.test_real_server import run_job, uid

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]

ZONE = "Asia/Shanghai"


@pytest.fixture(scope="module")
def browser():
    chromium, driver_path = provision.ensure_browser()
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        pytest.fail("the console test needs Selenium: pip install -e '.[e2e]'")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    # the flags a closed network needs (no background connections) and a root user needs (no sandbox)
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic",
                 "--no-first-run", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--window-size=1600,1000", "--lang=en-US"):
        options.add_argument(flag)
    service = Service(executable_path=driver_path, env={**os.environ, "TZ": ZONE})
    driver = webdriver.Chrome(service=service, options=options)
    driver.implicitly_wait(0)
    try:
        yield driver
    finally:
        driver.quit()


class Console:
    """The console of one server, seen through the browser."""

    def __init__(self, driver, srv):
        from selenium.webdriver.common.by import By
        from selenium.webdriver.support.ui import WebDriverWait

        self.d, self.srv, self.By = driver, srv, By
        self.wait = WebDriverWait(driver, 30)
        self.shots = provision.log_root() / f"console-{srv.version}"
        self.shots.mkdir(parents=True, exist_ok=True)

    def css(self, selector, within=None):
        return (within or self.d).find_elements(self.By.CSS_SELECTOR, selector)

    def until(self, what, predicate):
        try:
            return self.wait.until(lambda _: predicate())
        except Exception as exc:
            self.shot(f"failed-{re.sub(r'[^a-z]+', '-', what.lower())}")
            raise AssertionError(f"console: {what} (screenshot in {self.shots})") from exc

    def shot(self, name):
        self.d.save_screenshot(str(self.shots / f"{name}.png"))

    def button(self, text, within=None):
        found = [b for b in self.css("button, a", within) if b.text.strip() == text]
        assert found, f"no button {text!r} on {self.d.current_url}"
        return found[0]

    def login(self):
        self.d.get(self.srv.base_url + "/#/login")
        self.d.execute_script("localStorage.clear(); localStorage.setItem('lang', JSON.stringify('en-US'))")
        self.d.refresh()
        self.until("login form", lambda: len(self.css("input.n-input__input-el")) >= 2)
        user, password = self.css("input.n-input__input-el")[:2]
        user.send_keys("admin")
        password.send_keys("admin")
        self.button("Login").click()
        self.until("logged in", lambda: "login" not in self.d.current_url)

    def open(self, route, ready_selector, what):
        """Load a route afresh (a hash change alone keeps the page's old state)."""
        self.d.get(f"{self.srv.base_url}/#/{route}")
        self.d.refresh()
        return self.until(what, lambda: self.css(ready_selector))

    def cells(self, row):
        return {td.get_attribute("data-col-key"): td.text.strip() for td in self.css("td", row)}

    def batch_row(self, job_id, batch_id):
        """The row of one batch in the batch list (other pages stay in the DOM as tabs)."""
        self.open(f"job/batch?jobId={job_id}", "td[data-col-key=taskBatchStatus]", "batch list")
        return self.until(f"batch {batch_id} listed", lambda: next(
            (r for r in self.css("tbody tr") if self.cells(r).get("id") == str(batch_id)), None))


def shanghai(ms):
    return dt.datetime.fromtimestamp(ms / 1000, zoneinfo.ZoneInfo(ZONE))


def shown_time(text):
    """A log time as the console prints it: ``YYYY-MM-DD HH:mm:ss.<ms>``, the milliseconds unpadded."""
    m = re.fullmatch(r"(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d)\.(\d{1,3})", text)
    assert m, f"log time {text!r} is not 'YYYY-MM-DD HH:mm:ss.ms'"
    stamp = dt.datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S").replace(tzinfo=zoneinfo.ZoneInfo(ZONE))
    return stamp + dt.timedelta(milliseconds=int(m.group(2)))


def test_console_shows_the_python_nodes_batches_and_logs(run, srv, nodes, browser):
    tag = f"console-{uid()}"
    started = dt.datetime.now(zoneinfo.ZoneInfo(ZONE))
    log_job, log_batch, _ = run_job(srv, "console-log", "e2eLog", TaskType.CLUSTER, args_str=tag)
    fail_job, fail_batch, _ = run_job(srv, "console-fail", "e2eFail", TaskType.CLUSTER, args_str=tag,
                                      expect=BatchStatus.FAIL)
    ended = dt.datetime.now(zoneinfo.ZoneInfo(ZONE))
    (task,) = srv.tasks(log_batch)
    (failed_task,) = srv.tasks(fail_batch)
    srv.wait_logs(log_batch, lambda lines: sum(tag in (ln.get("message") or "") for ln in lines) >= 3)
    console = Console(browser, srv)
    console.login()

    # the nodes: online in their group, as Python clients of this version, with their labels
    console.open("pods", "td[data-col-key=hostIp]", "node list")
    addresses = {n.address for n in nodes}
    rows = console.until("both Python nodes listed", lambda: [
        r for r in console.css("tbody tr") if console.cells(r).get("hostIp") in addresses] or None)
    console.shot("1-nodes")
    assert len(rows) == 2, [console.cells(r) for r in rows]
    for row in rows:
        cells = console.cells(row)
        assert cells["nodeType"] == "Client" and cells["groupName"] == srv.group, cells
        assert cells["executorType"] == "Python" and cells["systemVersion"] == snailjob.__version__, cells
        assert cells["nodeStatus"] == "up", cells
        # SNAIL_LABELS defaults to env:dev,app:demo: the first label as a tag, "+1" for the other
        assert cells["labels"].split() == ["env:dev", "+1"], cells

    # the finished cluster batch, and its task in the batch's drawer
    row = console.batch_row(log_job, log_batch)
    cells = console.cells(row)
    assert cells["taskBatchStatus"] == "Success" and cells["taskType"] == "Cluster", cells
    console.button("Log", row).click()
    task_row = console.until("the batch's task", lambda: console.css(f"tr#job-task-{task['id']}"))[0]
    console.shot("2-batch")
    assert "Success" in task_row.text and any(a in task_row.text.replace("\n", "") for a in addresses), task_row.text

    # the failed task's reason in the result view (it shows only JSON)
    console.button("Log", console.batch_row(fail_job, fail_batch)).click()
    failed_row = console.until("the failed task", lambda: console.css(f"tr#job-task-{failed_task['id']}"))[0]
    result_button = [b for b in console.css("button", failed_row)
                     if b.text.replace("\n", "") in ("查看结果", "View Result")]
    assert result_button, failed_row.text
    result_button[0].click()
    code = console.until("the failed task's result", lambda: [
        e for e in console.css(f"tr#job-task-result-{failed_task['id']} pre") if e.text.startswith("{")])
    console.shot("3-failure-result")
    shown = json.loads(code[0].text)
    assert shown["exception"] == "ValueError" and shown["message"] == f"deliberate e2e failure ({tag})", shown
    assert re.fullmatch(r"e2e_client\.failing\(e2e_client\.py:\d+\)", shown["location"]), shown

    # the task's log view: our lines, with times, levels the console colours, locations, the exception
    console.open(f"log?type=job&taskBatchId={log_batch}&jobId={log_job}&taskId={task['id']}",
                 ".log-hljs-time", "log view")
    entries = console.until("three log lines", lambda: [
        e for e in console.css(".snail-log pre") if tag in e.text] if len(
            [e for e in console.css(".snail-log pre") if tag in e.text]) >= 3 else None)
    caught_entry = next(e for e in entries if f"log probe caught {tag}" in e.text)
    headers = console.css(".n-collapse-item__header", caught_entry)
    assert headers, caught_entry.text
    headers[0].click()  # open the throwable
    time.sleep(0.5)
    console.shot("4-task-log")
    seen = {}
    for entry in entries:
        level = console.css("[class^=log-hljs-level-]", entry)[0]
        message = next(line for line in entry.text.splitlines() if tag in line)
        seen[message.split()[3]] = {
            "level": level.text, "class": level.get_attribute("class").split(),
            "colour": level.value_of_css_property("color"),
            "time": shown_time(console.css(".log-hljs-time", entry)[0].text),
            "location": console.css(".log-hljs-location", entry)[0].text,
            "text": entry.text,
        }
    assert {k: v["level"] for k, v in seen.items()} == {"info": "INFO", "warning": "WARN", "caught": "ERROR"}
    for line in seen.values():
        # a level the console colours (it leaves names it does not know in its text colour, #333639)
        assert f"log-hljs-level-{line['level']}" in line["class"], line
        assert line["colour"] not in ("rgba(51, 54, 57, 1)", "rgb(51, 54, 57)"), line
        assert started - dt.timedelta(seconds=5) <= line["time"] <= ended + dt.timedelta(seconds=5), (
            line, started, ended)
        assert re.fullmatch(r"e2e_client\.log_job\(e2e_client\.py:\d+\):", line["location"].strip()), line
    caught = seen["caught"]["text"]
    assert f"ValueError: log probe failure {tag}" in caught and "Traceback (most recent call last)" in caught, caught
    # the stored time_stamp is what the console printed (in the browser's zone)
    stored = {ln["message"].split()[2]: int(ln["time_stamp"]) for ln in srv.job_logs(log_batch)
              if tag in (ln.get("message") or "")}
    for name, line in seen.items():
        assert line["time"] == shanghai(stored[name]), (name, line, stored)
    run.note(f"console screenshots in {console.shots}")

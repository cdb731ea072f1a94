"""The playground in a real browser: headless Chromium (Debian's `chromium` + `chromium-driver`, which
`.ci/run` installs) driven by Selenium, against the real service (uvicorn in a thread) with the embedded
model on the demo database. Small budgets (n=2, 48 generated tokens, 32 reasoning tokens) keep the one
real plan to about a minute on a shared CPU.

The tests run in file order and share one browser and one server: plan a question and see the candidates and
the chosen SQL (1280 px, then phone width), post feedback and find it in the store, readable errors and
keyboard use, switch a checkpoint, open an eval report and compare two runs. Screenshots (PNG) are saved
in each test's tmp folder. They skip, saying why, only when no Chromium/chromedriver (or Selenium) is found.
"""

from __future__ import annotations

import os
import shutil
import socket
import threading
import time
from pathlib import Path

import pytest

Q = "What are the names of all singers?"  # the embedded 135M model answers this one with seed 0; both outcomes are checked
PLAN_TIMEOUT_S = 600  # the plan itself takes about a minute on a loaded 2-core machine; this only bounds a hang


def _find(names: tuple[str, ...], env: str) -> str | None:
    if os.environ.get(env):
        return os.environ[env]
    for n in names:
        p = shutil.which(n)
        if p:
            return p
    for p in (f"/usr/bin/{n}" for n in names):
        if os.path.exists(p):
            return p
    return None


@pytest.fixture(scope="module")
def browser():
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        pytest.skip("selenium is not installed (pip install -e '.[test]')")
    chrome = _find(("chromium", "chromium-browser", "google-chrome"), "CHROME_BIN")
    driver_path = _find(("chromedriver", "chromium-driver"), "CHROMEDRIVER")
    if not chrome or not driver_path:
        pytest.skip("no headless Chromium: install Debian's chromium and chromium-driver "
                    "(`apt-get install chromium chromium-driver`; .ci/run does), or set CHROME_BIN and CHROMEDRIVER")
    opts = webdriver.ChromeOptions()
    opts.binary_location = chrome
    for a in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--window-size=1280,900",
              "--disable-extensions", "--no-first-run", "--force-device-scale-factor=1"):
        opts.add_argument(a)
    try:
        drv = webdriver.Chrome(service=Service(executable_path=driver_path), options=opts)
    except Exception as e:  # a browser that cannot start is a skip with the reason, not an error
        pytest.skip(f"headless Chromium ({chrome}, driver {driver_path}) did not start: {type(e).__name__}: {str(e).splitlines()[0][:300]}")
    drv.set_page_load_timeout(60)
    yield drv
    drv.quit()


@pytest.fixture(scope="module")
def server(tmp_path_factory, module_eval_runs):
    import uvicorn

    from api.app import create_app
    from core.runtime.embedded import embedded_checkpoint
    from planner.config import config_from_dict

    tmp = tmp_path_factory.mktemp("ui-server")
    broken = tmp / "not-a-checkpoint"
    broken.mkdir()
    (broken / "config.json").write_text("{}")
    cfg = config_from_dict({
        "generators": {"embedded": {"backend": "embedded"}},
        "discriminators": {"embedded": {"backend": "embedded"},
                           "alt": {"backend": "cot", "path": str(embedded_checkpoint())},
                           "broken": {"backend": "cot", "path": str(broken)}},
        "pairs": {"embedded": {"generator": "embedded", "discriminator": "embedded"}},
        "defaults": {"n": 2, "max_tokens": 48, "reasoning_budget": 32},
        "limits": {"concurrency": 1, "queue_size": 4, "deadline_s": 900, "max_deadline_s": 900},
        "store_url": f"sqlite:///{tmp / 'store.db'}", "runs_dir": str(module_eval_runs),
    }, env={})
    app = create_app(cfg)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    t = threading.Thread(target=srv.run, name="ui-server", daemon=True)
    t.start()
    deadline = time.monotonic() + 60
    while not srv.started:
        if time.monotonic() > deadline or not t.is_alive():
            pytest.fail("the service did not start")
        time.sleep(0.05)
    yield {"url": f"http://127.0.0.1:{port}", "app": app}
    srv.should_exit = True
    t.join(30)


# ---------------------------------------------------------------------------------------------- helpers


def wait(drv, cond, timeout=30.0, what="condition"):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(drv, timeout, poll_frequency=0.1).until(lambda d: cond(d), message=f"timed out waiting for {what}")


def by_id(drv, id_):
    from selenium.webdriver.common.by import By

    return drv.find_element(By.ID, id_)


def css(drv, sel):
    from selenium.webdriver.common.by import By

    return drv.find_elements(By.CSS_SELECTOR, sel)


def shot(drv, path: Path) -> Path:
    """A full-page PNG: the window grows to the page's height for the capture, then returns to its size."""
    drv.execute_script("window.scrollTo(0, 0)")
    size = drv.get_window_size()
    h = drv.execute_script("return Math.max(document.body.scrollHeight, document.documentElement.scrollHeight)")
    drv.set_window_size(size["width"], min(max(h + 100, size["height"]), 6000))
    drv.save_screenshot(str(path))
    drv.set_window_size(size["width"], size["height"])
    assert path.read_bytes()[:4] == b"\x89PNG"
    print(f"screenshot: {path}")
    return path


def open_page(drv, server, hash_=""):
    drv.get(server["url"] + "/ui/" + hash_)
    wait(drv, lambda d: d.find_element("tag name", "body").get_attribute("data-ready") in ("1", "error"), 60, "the page")
    assert not by_id(drv, "banner").is_displayed(), by_id(drv, "banner-text").text


def no_horizontal_overflow(drv) -> bool:
    return drv.execute_script("return document.documentElement.scrollWidth <= window.innerWidth + 1")


def assert_fits(drv, what: str) -> None:
    """Nothing sticks out of the window sideways (wide tables scroll inside their own region)."""
    from selenium.common.exceptions import TimeoutException

    try:
        wait(drv, no_horizontal_overflow, 5, what)
    except TimeoutException:
        wide = drv.execute_script(
            "return [...document.querySelectorAll('body *')].filter(e => !e.closest('.scroll') && "
            "e.getBoundingClientRect().right > window.innerWidth + 1).slice(0, 8)"
            ".map(e => e.tagName + '#' + e.id + '.' + e.className + ' ' + Math.round(e.getBoundingClientRect().right))")
        pytest.fail(f"{what}: the page is wider than the window ({drv.get_window_size()}): {wide}")


def banner(drv) -> str:
    return by_id(drv, "banner-text").text if by_id(drv, "banner").is_displayed() else ""


# ---------------------------------------------------------------------------------------------- tests


def test_plan_a_question_see_candidates_and_the_chosen_sql(browser, server, tmp_path):
    from selenium.webdriver.support.ui import Select

    drv = browser
    drv.set_window_size(1280, 900)
    open_page(drv, server)
    assert drv.title == "sqlarbiter playground"
    assert Select(by_id(drv, "db")).first_selected_option.get_attribute("value") == "demo"
    assert by_id(drv, "n").get_attribute("value") == "2"
    # the schema browser shows the demo database's tables
    by_id(drv, "schema").find_element("tag name", "summary").click()
    wait(drv, lambda d: "singer" in by_id(d, "schema-body").text, 30, "the schema")

    q = by_id(drv, "question")
    q.clear()
    q.send_keys(Q)
    t0 = time.monotonic()
    by_id(drv, "plan-btn").click()
    # progress: stages appear while the plan runs
    wait(drv, lambda d: css(d, '#stages li[data-stage="generate"]'), 120, "the generate stage")
    wait(drv, lambda d: by_id(d, "result").is_displayed() or by_id(d, "plan-error").is_displayed(),
         PLAN_TIMEOUT_S, "the plan")
    print(f"plan in the browser: {time.monotonic() - t0:.1f}s")
    assert not by_id(drv, "plan-error").is_displayed(), by_id(drv, "plan-error").text
    done = [li.get_attribute("data-stage") for li in css(drv, "#stages li.done")]
    assert {"route", "generate", "normalize", "execute", "discriminate", "select"} <= set(done)

    plan_id = by_id(drv, "r-id").text
    plan = server["app"].state.store.get(plan_id)  # the plan the page shows is the stored one
    rows = css(drv, "#candidates > tbody > tr")
    assert len(rows) == len(plan.candidates) >= 1
    assert "SELECT" in rows[0].text.upper() and css(drv, "#candidates pre.sql .tok-keyword")
    assert by_id(drv, "r-status").text == plan.status
    for stage in ("route", "generate", "execute", "select", "total"):
        assert stage in by_id(drv, "waterfall").text
    usage = by_id(drv, "usage").text
    for u in plan.usage:  # the discriminator appears when something executed (check-rerank judges only those)
        assert f"{u.model} {u.role} {u.calls} {u.prompt_tokens} {u.completion_tokens}" in usage
    if plan.chosen is not None:
        chosen = css(drv, "#candidates > tbody > tr.is-chosen")
        assert len(chosen) == 1 and "chosen" in chosen[0].text
        assert rows.index(chosen[0]) == plan.chosen
        assert plan.chosen_sql.split()[0].upper() in by_id(drv, "r-chosen").text.upper()
        assert by_id(drv, "r-reason").text.startswith("Why:")
    else:  # the 135M model may produce nothing executable: the page says so and lists the errors
        assert "No candidate was chosen" in by_id(drv, "r-chosen").text and css(drv, "#r-errors li")
    assert_fits(drv, "the plan page at 1280 px")
    shot(drv, tmp_path / "plan-1280.png")

    # the same finished plan at phone width: nothing overflows the page (wide tables scroll in place)
    drv.set_window_size(390, 844)
    assert_fits(drv, "the plan page at phone width")
    assert by_id(drv, "plan-btn").is_displayed() and by_id(drv, "candidates").is_displayed()
    shot(drv, tmp_path / "plan-phone.png")
    drv.set_window_size(1280, 900)
    server["plan_id"] = plan_id


def test_feedback_is_stored(browser, server, tmp_path):
    drv = browser
    plan_id = server.get("plan_id") or pytest.skip("needs the plan of the previous test")
    store = server["app"].state.store
    by_id(drv, "fb-correct").click()
    wait(drv, lambda d: "Stored as feedback #" in by_id(d, "fb-status").text, 30, "the feedback receipt")
    assert "correct" in by_id(drv, "fb-status").text
    fb = store.feedback_for(plan_id)
    assert [f.correct for f in fb] == [True]
    assert f"#{fb[0].id}" in by_id(drv, "fb-status").text

    # a corrected SQL that does not execute is refused, with the reason on the page
    sql = by_id(drv, "fb-sql")
    sql.clear()
    sql.send_keys("SELECT nope FROM singer")
    by_id(drv, "fb-send-sql").click()
    wait(drv, lambda d: "not stored" in by_id(d, "fb-status").text, 30, "the refusal")
    assert "422" in by_id(drv, "fb-status").text and "does not execute" in by_id(drv, "fb-status").text
    sql.clear()
    sql.send_keys("SELECT count(*) FROM singer WHERE age > 30")
    by_id(drv, "fb-send-sql").click()
    wait(drv, lambda d: "with corrected SQL" in by_id(d, "fb-status").text, 30, "the corrected SQL receipt")
    fb = store.feedback_for(plan_id)
    assert len(fb) == 2 and fb[-1].corrected_sql == "SELECT count(*) FROM singer WHERE age > 30"
    shot(drv, tmp_path / "feedback.png")


def test_errors_are_readable_and_keyboard_works(browser, server, tmp_path):
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import Select

    drv = browser
    open_page(drv, server)
    # every form control has a label the browser associates with it
    unlabelled = drv.execute_script(
        "return [...document.querySelectorAll('input,select,textarea')].filter(e => !e.labels || !e.labels.length)"
        ".map(e => e.id)")
    assert unlabelled == []
    # keyboard: the skip link comes first, then the controls in reading order; Tab reaches the question and Plan
    body = drv.find_element("tag name", "body")
    body.send_keys(Keys.TAB)
    assert drv.switch_to.active_element.get_attribute("class") == "skip"
    seen = []
    for _ in range(30):
        drv.switch_to.active_element.send_keys(Keys.TAB)
        seen.append(drv.switch_to.active_element.get_attribute("id"))
    assert seen.index("question") < seen.index("db") < seen.index("plan-btn")

    # empty question: a message, no request
    by_id(drv, "question").clear()
    by_id(drv, "plan-btn").click()
    wait(drv, lambda d: "Type a question first." in banner(d), 5, "the empty-question message")
    # n out of range, caught in the page
    by_id(drv, "question").send_keys(Q)
    n = by_id(drv, "n")
    n.clear()
    n.send_keys("999")
    by_id(drv, "plan-btn").click()
    wait(drv, lambda d: "n must be a whole number between 1 and 16" in banner(d), 5, "the n message")
    n.clear()
    n.send_keys("1")
    # a router this configuration cannot use: the request check (Planner.validate) answers 422 before the stream
    # starts, and the page shows it as text with no stage left running
    Select(by_id(drv, "route-kind")).select_by_value("router")
    Select(by_id(drv, "route")).select_by_value("carrot")
    by_id(drv, "question").send_keys(Keys.CONTROL, Keys.ENTER)  # Ctrl+Enter plans from the question box
    wait(drv, lambda d: by_id(d, "plan-error").is_displayed(), 60, "the plan error")
    text = by_id(drv, "plan-error").text
    assert "422" in text and "carrot" in text
    assert not css(drv, "#stages li.running")
    shot(drv, tmp_path / "error.png")


def test_switch_a_checkpoint(browser, server, tmp_path):
    from selenium.webdriver.support.ui import Select

    drv = browser
    open_page(drv, server, "#models")
    wait(drv, lambda d: by_id(d, "disc-active").text == "embedded", 30, "the models panel")
    assert by_id(drv, "page-models").is_displayed() and not by_id(drv, "page-plan").is_displayed()
    Select(by_id(drv, "disc-select")).select_by_value("broken")
    by_id(drv, "disc-switch").click()
    wait(drv, lambda d: "Switch failed" in by_id(d, "disc-status").text, 120, "the failed switch")
    assert "503" in by_id(drv, "disc-status").text and "previous one stays active" in by_id(drv, "disc-status").text
    assert by_id(drv, "disc-active").text == "embedded"

    Select(by_id(drv, "disc-select")).select_by_value("alt")
    by_id(drv, "disc-switch").click()
    wait(drv, lambda d: by_id(d, "disc-status").text == "Active: alt.", 300, "the switch to alt")
    assert by_id(drv, "disc-active").text == "alt"
    assert server["app"].state.planner.discriminators.active == "alt"
    shot(drv, tmp_path / "models.png")


def test_open_an_eval_report_and_compare_runs(browser, server, tmp_path):
    from selenium.webdriver.support.ui import Select

    drv = browser
    drv.set_window_size(1280, 900)
    open_page(drv, server, "#runs")
    wait(drv, lambda d: len(css(d, "#runs tbody tr")) == 3, 30, "the runs list")
    assert "spider-replay-a" in by_id(drv, "runs").text
    btn = next(b for b in css(drv, "button.open-run") if b.get_attribute("data-run") == "eval/spider-replay-a")
    btn.click()
    wait(drv, lambda d: "EX by difficulty" in by_id(d, "report-body").text, 30, "the report")
    assert css(drv, "#report-body table")
    wait(drv, lambda d: d.execute_script(
        "const i = document.querySelector('#report-body img'); return !!i && i.complete && i.naturalWidth > 0"),
        30, "the plot")
    Select(by_id(drv, "cmp-a")).select_by_value("eval/spider-replay-a")
    Select(by_id(drv, "cmp-b")).select_by_value("eval/spider-replay-b")
    by_id(drv, "cmp-btn").click()
    wait(drv, lambda d: "common questions" in by_id(d, "compare-out").text, 30, "the comparison")
    out = by_id(drv, "compare-out").text
    assert "12 common questions" in out and "Delta" in out and "fixed in B" in out
    assert_fits(drv, "the runs page at 1280 px")
    shot(drv, tmp_path / "runs-1280.png")
    drv.set_window_size(390, 844)
    assert_fits(drv, "the runs page at phone width")
    shot(drv, tmp_path / "runs-phone.png")
    drv.set_window_size(1280, 900)

    # an unknown run is a readable message, not a blank page
    drv.execute_script("openRun('eval/nope')")
    wait(drv, lambda d: "Could not open the report" in by_id(d, "report-body").text, 10, "the unknown-run message")
    assert "404" in by_id(drv, "report-body").text


def test_step_routers_show_their_steps_and_subtasks(browser, server, tmp_path):
    """A plan of the trim router (prose steps, one handed off) and one of the r2 router (two subtasks on two
    tiers), as the pipeline records them in route.details, shown by the page's own showPlan: which pair wrote each
    step, the hand-off and its discarded draft, each subtask with its tier, step, tokens and process reward."""
    plan_id = server.get("plan_id") or pytest.skip("needs the plan of the first test")
    base = server["app"].state.store.get(plan_id).model_dump(mode="json")
    if not base["candidates"]:
        pytest.skip("the first test's plan has no candidate to attach the steps to")
    drv = browser
    drv.set_window_size(1280, 900)
    open_page(drv, server)
    trim = {"step_kind": "prose", "strong_pair": "strong", "handoffs": 1, "fallback": None, "steps": [
        {"pair": "cheap", "handed_off": False, "text": "Step 1: every singer.", "tokens": 6, "draft": None,
         "reward": {"score": 0.81}},
        {"pair": "strong", "handed_off": True, "text": "```sql\nSELECT name FROM singer\n```", "tokens": 9,
         "draft": {"text": "```sql\nSELECT nme FROM singers\n```", "tokens": 9, "reward": {"score": 0.0}},
         "reward": {"score": 0.77}}]}
    p = {**base, "route": {**base["route"], "details": {**base["route"]["details"], "trim": trim}}}
    p["candidates"] = [{**base["candidates"][0], "candidate": {**base["candidates"][0]["candidate"],
                                                               "source": "trim:cheap+strong"}}]
    p["chosen"] = 0
    drv.execute_script("showPlan(arguments[0], 0)", p)
    view = wait(drv, lambda d: css(d, "#candidates details.trim-steps"), 10, "the steps view")[0]
    text = view.text
    assert "2 prose step(s), 1 handed off to strong" in text and "strong (handed off)" in text
    assert "cheap draft's reward 0.000" in text and "Step 1: every singer." in text

    r2 = {"allocation": ["cheap", "strong"], "fallback": None, "decomposition": {"confidence": 0.74, "subtasks": [
        {"index": 1, "text": "the singers older than 30", "needs": [], "tables": ["singer"]},
        {"index": 2, "text": "how many there are", "needs": [1], "tables": []}]},
        "steps": [{"pair": "cheap", "text": "-- the singers older than 30\nWITH s1 AS (SELECT * FROM singer WHERE "
                   "age > 30)", "tokens": 12, "reward": {"score": 0.9}},
                  {"pair": "strong", "text": "-- how many there are\nSELECT count(*) FROM s1", "tokens": 7,
                   "reward": {"score": 0.85}}]}
    p["route"] = {**base["route"], "details": {**base["route"]["details"], "r2": r2}}
    p["candidates"] = [{**base["candidates"][0], "candidate": {**base["candidates"][0]["candidate"],
                                                               "source": "r2:cheap+strong"}}]
    drv.execute_script("showPlan(arguments[0], 0)", p)
    view = wait(drv, lambda d: css(d, "#candidates details.r2-subtasks"), 10, "the subtasks view")[0]
    items = view.find_elements("css selector", "li")
    assert len(items) == 2 and "decomposer confidence 0.740" in view.text
    assert items[0].text.startswith("cheap the singers older than 30") and "reward 0.900" in items[0].text
    assert items[1].text.startswith("strong how many there are") and "needs step 1" in items[1].text
    assert "SELECT count(*) FROM s1" in items[1].text
    assert_fits(drv, "the subtasks view at 1280 px")
    shot(drv, tmp_path / "r2-subtasks.png")
    refused = {"decomposition": {"refused": "unknown_table", "reason": "step 1 names singers, not a table",
                                 "raw": "1. singers [tables: singers]"}}
    p["route"] = {**base["route"], "details": {**base["route"]["details"], "r2": refused}}
    drv.execute_script("showPlan(arguments[0], 0)", p)
    wait(drv, lambda d: "decomposition refused (unknown_table)" in by_id(d, "candidates").text, 10, "the refusal")

"""The dashboard in a real browser: draw digits with the mouse, predict, store, give feedback, explore.

MNIST test digits (writers the model never saw) are reduced to their centre lines and drawn
as mouse strokes on the canvas; the test reads the "Prediction" metric, finds the rows in
Cassandra, answers "Was this right?", checks the History page and /api/stats follow, uploads
a picture, calls the REST API, and repeats a drawing on a 390 px wide phone screen.
Screenshots of each page with data go to docs/ for the README.
"""

from __future__ import annotations

import datetime
import io
import json
import os
import statistics
import time
import urllib.request

import numpy as np
import pytest
from PIL import Image

from evaluation.drawings import redraw
from harness.stored_rows import day_slots
from harness.strokes import ANSWER_TIMER_SCRIPT, digit_strokes, draw_strokes
from tests.e2e.conftest import get_json
from tests.conftest import REPOSITORY_ROOT

pytestmark = [pytest.mark.e2e, pytest.mark.cassandra, pytest.mark.slow]

DOCS = REPOSITORY_ROOT / "docs"
DESKTOP = {"width": 1280, "height": 900}
PHONE = {"width": 390, "height": 844}
# MNIST test images drawn in the main flow (the first ten test digits cover 0-9 but 8).
DRAWN_TEST_INDICES = list(range(10))
MINIMUM_CORRECT = 8  # of 10: the CLI reads these digits' canvas redraws with the same model
# Predict click to answer on screen, median over the drawings. The target is 1 s; on a shared
# 2-core machine that is also training a model, set MNIST_E2E_ANSWER_LIMIT higher.
ANSWER_LIMIT_SECONDS = float(os.environ.get("MNIST_E2E_ANSWER_LIMIT", "1.0"))
ANSWER_HARD_LIMIT_SECONDS = 3 * ANSWER_LIMIT_SECONDS  # no single answer may take longer
PAGE_TIMEOUT_MS = 60_000
HAND_TO_BUTTON_SECONDS = 0.5
CANVAS_MOUNT_SECONDS = 1.0
TIMINGS_FILE = REPOSITORY_ROOT / "test-results" / "e2e-timings.json"


def wait_until_idle(page) -> None:
    """Streamlit marks its root with the script state; wait until no rerun is in progress."""
    page.wait_for_selector('[data-testid="stApp"][data-test-script-state="notRunning"]', timeout=PAGE_TIMEOUT_MS)


def open_app(browser, base_url: str, viewport: dict, path: str = ""):
    context = browser.new_context(viewport=viewport, device_scale_factor=1)
    page = context.new_page()
    page.goto(f"{base_url}/{path}", wait_until="domcontentloaded")
    page.get_by_test_id("stApp").wait_for(timeout=PAGE_TIMEOUT_MS)
    wait_until_idle(page)
    return context, page


def canvas_box(page) -> dict:
    canvas = page.locator("canvas").last
    canvas.wait_for(state="visible", timeout=PAGE_TIMEOUT_MS)
    return canvas.bounding_box()


def clear_canvas(page) -> None:
    page.get_by_role("button", name="Clear").click()
    page.get_by_test_id("stMetric").wait_for(state="detached", timeout=PAGE_TIMEOUT_MS)
    wait_until_idle(page)
    # Clear gives the canvas a new key: let the new one mount before the mouse goes down, or the
    # first stroke lands on the old one (the first time after opening the page this is slowest).
    time.sleep(CANVAS_MOUNT_SECONDS)


def draw_and_predict(page, image: np.ndarray) -> tuple[str, float]:
    """Draw one digit, move to Predict as a person would (the app is idle), click; the answer and its delay.

    The delay is measured in the page, from the click event to the "Prediction" metric in the DOM.
    """
    draw_strokes(page, canvas_box(page), digit_strokes(image))
    # A hand takes this long to reach the button; the canvas sends its picture 200 ms after mouse-up.
    time.sleep(HAND_TO_BUTTON_SECONDS)
    wait_until_idle(page)
    page.evaluate(ANSWER_TIMER_SCRIPT)
    page.get_by_role("button", name="Predict").click()
    value = page.get_by_test_id("stMetricValue").first
    try:
        value.wait_for(timeout=PAGE_TIMEOUT_MS)
    except Exception:
        TIMINGS_FILE.parent.mkdir(exist_ok=True)
        page.screenshot(path=str(TIMINGS_FILE.parent / "e2e-no-answer.png"))
        raise
    page.wait_for_function("() => window.__answerShownAt !== null", timeout=PAGE_TIMEOUT_MS)
    elapsed = page.evaluate("() => (window.__answerShownAt - window.__predictClickedAt) / 1000")
    text = value.inner_text()
    wait_until_idle(page)
    return text, elapsed


def metric_value(page, label: str) -> str:
    metric = page.get_by_test_id("stMetric").filter(has=page.get_by_test_id("stMetricLabel").get_by_text(label, exact=True))
    return metric.get_by_test_id("stMetricValue").inner_text()


PAGE_HEADINGS = {"Draw": "Draw a digit", "History": "History", "Model": "Model"}


def go_to(page, title: str) -> None:
    """Follow the sidebar link and wait for the page's own heading."""
    page.get_by_test_id("stSidebarNav").get_by_role("link", name=title).click()
    page.get_by_role("heading", name=PAGE_HEADINGS[title], exact=True).wait_for(timeout=PAGE_TIMEOUT_MS)
    wait_until_idle(page)


DRAIN_TIMEOUT_SECONDS = 30.0


def today_rows(app_server: str, raw_session, keyspace: str) -> list:
    """Rows of today and yesterday (UTC), read once the app's writer has sent everything queued.

    A Predict is stored in the outbox and sent to Cassandra by the writer thread a moment later,
    so a read straight after "Saved." (or after an earlier test's last click) could miss a row
    that is about to land and see it only in a later read. A run may cross midnight between
    drawing and checking, hence yesterday too.
    """
    deadline = time.monotonic() + DRAIN_TIMEOUT_SECONDS
    while True:
        _, health = get_json(f"{app_server}/api/health")
        storage = health.get("storage", {})
        if storage.get("state") == "connected" and storage.get("pending") == 0:
            break
        assert time.monotonic() < deadline, f"the app's outbox did not drain within {DRAIN_TIMEOUT_SECONDS:.0f} s: {health}"
        time.sleep(0.2)
    today = datetime.datetime.now(datetime.timezone.utc).date()
    return [row for day in (today - datetime.timedelta(days=1), today) for row in raw_session.execute(
        f"SELECT id, digit, source, true_label, model_input FROM {keyspace}.predictions_by_slot WHERE slot_start IN %s", (day_slots(day),)
    )]


def png_of(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


def test_draw_predict_store_feedback_and_history(browser, app_server, mnist, raw_session, module_keyspace):
    context, page = open_app(browser, app_server, DESKTOP, "history")
    assert page.get_by_text("No predictions between").is_visible(), "a fresh keyspace starts with the empty state"
    go_to(page, "Draw")

    results = []
    for index in DRAWN_TEST_INDICES:
        clear_canvas(page)
        label = int(mnist.test_labels[index])
        text, elapsed = draw_and_predict(page, mnist.test_images[index])
        results.append({"index": index, "label": label, "read": text, "seconds": round(elapsed, 3)})
    page.screenshot(path=str(DOCS / "screenshot-draw.png"))

    correct = sum(result["read"].startswith(str(result["label"])) for result in results)
    timings = [result["seconds"] for result in results]
    TIMINGS_FILE.parent.mkdir(exist_ok=True)
    TIMINGS_FILE.write_text(json.dumps({"drawings": results, "median_seconds": statistics.median(timings)}, indent=2))
    assert correct >= MINIMUM_CORRECT, results
    assert statistics.median(timings) < ANSWER_LIMIT_SECONDS, results
    assert max(timings) < ANSWER_HARD_LIMIT_SECONDS, results

    rows = today_rows(app_server, raw_session, module_keyspace)
    canvas_rows = [row for row in rows if row.source == "canvas"]
    assert len(canvas_rows) == len(DRAWN_TEST_INDICES), "one stored row per Predict"
    assert sorted(row.digit for row in canvas_rows) == sorted(int(result["read"].split()[0][0]) for result in results)
    assert all(len(row.model_input) == 784 for row in canvas_rows)

    # Feedback on the last drawing, truthfully, as a user would.
    last = results[-1]
    if last["read"].startswith(str(last["label"])):
        page.get_by_test_id("stRadio").get_by_text("Yes", exact=True).click()
    else:
        page.get_by_test_id("stRadio").get_by_text("No", exact=True).click()
        page.get_by_test_id("stButtonGroup").get_by_role("button", name=str(last["label"]), exact=True).click()
    page.get_by_text("Thanks! Recorded").wait_for(timeout=PAGE_TIMEOUT_MS)
    newest = max(today_rows(app_server, raw_session, module_keyspace), key=lambda row: row.id.time)
    assert newest.true_label == last["label"]

    go_to(page, "History")
    page.get_by_role("button", name="Refresh").click()
    wait_until_idle(page)
    assert metric_value(page, "Predictions") == str(len(DRAWN_TEST_INDICES))
    assert metric_value(page, "Accuracy from feedback") in ("100.0%", "0.0%")
    assert page.get_by_test_id("stVegaLiteChart").count() >= 4, "counts, over time, confidence and feedback charts"
    status, stats = get_json(f"{app_server}/api/stats")
    assert status == 200 and stats["total"] == len(DRAWN_TEST_INDICES)
    expected_counts = {str(digit): 0 for digit in range(10)}
    for row in canvas_rows:
        expected_counts[str(row.digit)] += 1
    assert stats["counts"] == expected_counts
    page.screenshot(path=str(DOCS / "screenshot-history.png"), full_page=True)

    go_to(page, "Model")
    page.get_by_text("MNIST test accuracy").wait_for(timeout=PAGE_TIMEOUT_MS)
    page.get_by_test_id("stVegaLiteChart").first.wait_for(timeout=PAGE_TIMEOUT_MS)
    time.sleep(1.0)  # let Vega finish drawing before the picture
    page.screenshot(path=str(DOCS / "screenshot-model.png"), full_page=True)
    context.close()


def test_upload_is_read_and_stored(browser, app_server, mnist, raw_session, module_keyspace):
    picture = redraw(mnist.test_images[11], "natural", np.random.default_rng(3))
    label = int(mnist.test_labels[11])
    before = sum(row.source == "upload" for row in today_rows(app_server, raw_session, module_keyspace))
    context, page = open_app(browser, app_server, DESKTOP)

    page.get_by_test_id("stFileUploaderDropzoneInput").set_input_files(
        files=[{"name": "digit.png", "mimeType": "image/png", "buffer": png_of(picture)}]
    )
    value = page.get_by_test_id("stMetricValue").first
    value.wait_for(timeout=PAGE_TIMEOUT_MS)
    assert value.inner_text().startswith(str(label))
    wait_until_idle(page)
    after = sum(row.source == "upload" for row in today_rows(app_server, raw_session, module_keyspace))
    assert after == before + 1
    context.close()


def test_rest_api_on_the_running_server(app_server, mnist):
    status, health = get_json(f"{app_server}/api/health")
    assert status == 200 and health["model_loaded"] and health["storage"]["state"] == "connected"
    _, before = get_json(f"{app_server}/api/stats")

    picture = redraw(mnist.test_images[12], "fill", np.random.default_rng(5))
    request = urllib.request.Request(
        f"{app_server}/api/predict", data=png_of(picture), headers={"Content-Type": "image/png"}, method="POST"
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        answer = json.loads(response.read())
    assert answer["digit"] == int(mnist.test_labels[12])
    assert set(answer) >= {"id", "digit", "number", "confidence", "probabilities"}

    deadline = time.monotonic() + 10
    while True:
        _, after = get_json(f"{app_server}/api/stats")
        if after["total"] == before["total"] + 1 or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert after["total"] == before["total"] + 1


def test_phone_width_draw_and_predict(browser, app_server, mnist):
    context, page = open_app(browser, app_server, PHONE)
    box = canvas_box(page)
    assert box["x"] >= 0 and box["x"] + box["width"] <= PHONE["width"], "the canvas fits a 390 px screen"
    label = int(mnist.test_labels[1])
    text, _ = draw_and_predict(page, mnist.test_images[1])
    assert text.startswith(str(label))
    page.get_by_test_id("stMetric").scroll_into_view_if_needed()
    page.screenshot(path=str(DOCS / "screenshot-draw-phone.png"))
    context.close()


def test_digits_drawn_over_each_other_are_read_stroke_by_stroke(browser, app_server):
    """A 1 drawn through the left side of a 0, with the real canvas: its scene (the strokes, in order)
    reaches the page, which reads "10"; the same ink as a picture alone is one blob, not a number."""
    context, page = open_app(browser, app_server, DESKTOP)
    angles = np.linspace(0, 2 * np.pi, 40)
    ring = [(120 + 55 * np.cos(angle), 140 + 55 * np.sin(angle)) for angle in angles]
    stem = [(80.0, 50.0 + step * 12.0) for step in range(16)]
    draw_strokes(page, canvas_box(page), [stem, ring])
    time.sleep(HAND_TO_BUTTON_SECONDS)
    wait_until_idle(page)
    page.get_by_role("button", name="Predict").click()
    value = page.get_by_test_id("stMetricValue").first
    value.wait_for(timeout=PAGE_TIMEOUT_MS)
    assert value.inner_text().startswith("10 "), value.inner_text()
    # Stay until the reading is stored: a later test counts the rows this one leaves.
    page.get_by_text("Saved.").wait_for(timeout=PAGE_TIMEOUT_MS)
    context.close()


def test_a_click_right_after_the_last_stroke_stores_the_whole_drawing_once(browser, app_server, raw_session, module_keyspace):
    """The canvas sends its picture 200 ms after the pen lifts; a click before that is answered at once
    and the late picture then replaces the answer before anything is stored: one row, the whole drawing."""
    known = {row.id for row in today_rows(app_server, raw_session, module_keyspace)}
    context, page = open_app(browser, app_server, DESKTOP)
    box = canvas_box(page)
    angles = np.linspace(0, 2 * np.pi, 40)
    ring = [(180 + 48 * np.cos(angle), 140 + 70 * np.sin(angle)) for angle in angles]
    stem = [(75.0, 70.0 + step * 10.0) for step in range(15)]
    draw_strokes(page, box, [ring])
    time.sleep(HAND_TO_BUTTON_SECONDS)
    wait_until_idle(page)
    draw_strokes(page, box, [stem])
    page.get_by_role("button", name="Predict").click()  # at once: the stem's picture is still on its way
    page.get_by_test_id("stMetricValue").first.wait_for(timeout=PAGE_TIMEOUT_MS)
    page.get_by_text("Saved.").wait_for(timeout=PAGE_TIMEOUT_MS)
    wait_until_idle(page)
    assert metric_value(page, "Prediction").startswith("10 ")
    new_rows = [row for row in today_rows(app_server, raw_session, module_keyspace) if row.id not in known]
    assert [(row.digit, row.source) for row in new_rows] == [(1, "canvas")]
    context.close()

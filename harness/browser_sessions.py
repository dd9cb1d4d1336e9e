"""A browser session on the Draw page: one Chromium context drawing and predicting, again and again.

The hardening run's browser load (bench/hardening/) and the replicas-behind-nginx test
(tests/test_cluster.py) both drive the app with it. What a session reads from the page (the
prediction id, the canvas generation, whether ink shows) comes from the small JavaScript
snippets below, evaluated in the page.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time

from playwright.async_api import Error as PlaywrightError

from harness.strokes import ANSWER_TIMER_SCRIPT

DESKTOP = {"width": 1280, "height": 900}
PAGE_TIMEOUT_MS = 60_000
SESSION_STAGGER_SECONDS = 0.4  # sessions start their loops this far apart
HAND_TO_BUTTON_SECONDS = 0.5  # mouse-up to Predict, as in the browser tests
INK_WAIT_SECONDS = 3.0  # after the last stroke, how long the canvas may take to show it
DRAWING_TRIES = 3  # a drawing that does not show on the canvas is cleared and drawn again
CANVAS_MOUNT_SECONDS = 1.0  # Clear gives the canvas a new key; let it mount before drawing
ANSWER_POLL_MS = 200


# What the page shows after Predict: the prediction id (the "Was this right?" radio has the key
# draw_right_<id>, which Streamlit puts in the class st-key-draw_right_<id>), the blank message,
# or a Python exception.
ANSWER_OUTCOME_SCRIPT = """() => {
  const radio = document.querySelector('[class*="st-key-draw_right_"]');
  if (radio) {
    const match = radio.className.match(/st-key-draw_right_([0-9a-f-]{36})/);
    const value = document.querySelector('[data-testid="stMetricValue"]');
    if (match && value) return {id: match[1], text: value.innerText};
  }
  const exception = document.querySelector('[data-testid="stException"]');
  if (exception) return {exception: exception.innerText.slice(0, 300)};
  if (document.body.innerText.includes('Draw a digit first.')) return {blank: true};
  return null;
}"""

IDLE_SELECTOR = '[data-testid="stApp"][data-test-script-state="notRunning"]'
# Clear gives the canvas a new key, draw_canvas_<generation>; Streamlit puts it in the class st-key-<key>.
CANVAS_GENERATION_SCRIPT = """() => {
  for (const element of document.querySelectorAll('[class*="st-key-draw_canvas_"]')) {
    const match = element.className.match(/st-key-draw_canvas_(\\d+)/);
    if (match) return Number(match[1]);
  }
  return null;
}"""
# Whether the canvas shows ink (the component's Fabric canvas renders strokes on canvas.dc-canvas.lower-canvas).
CANVAS_HAS_INK_SCRIPT = """(canvas) => {
  const pixels = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data;
  for (let index = 3; index < pixels.length; index += 4) { if (pixels[index] > 0) return true; }
  return false;
}"""


@dataclasses.dataclass
class BrowserAttempt:
    session: int
    phase: str
    label: int
    clicked_at: float | None = None  # monotonic
    answer_seconds: float | None = None  # in the page: Predict click to the metric in the DOM
    prediction_id: str | None = None
    answer_text: str | None = None
    error: str | None = None
    predict_clicked: bool = False


class BrowserSession:
    """One browser context on the Draw page: clear, draw, Predict, wait for the answer; again."""

    def __init__(self, index: int, *, browser, base_url: str, drawings: list[tuple[list, int]],
                 answer_timeout_seconds: float, dashboard_password: str | None = None,
                 cookies: list[dict] | None = None) -> None:
        self.index = index
        self.cookies = cookies or []  # set before the first page load (a balancer's route cookie)
        self.dashboard_password = dashboard_password
        self.browser = browser
        self.base_url = base_url
        self.drawings = drawings
        self.answer_timeout_ms = int(answer_timeout_seconds * 1000)
        self.attempts: list[BrowserAttempt] = []
        self.page_errors: list[str] = []
        self.reloads = 0
        self.websocket_opens: list[float] = []  # monotonic times the page opened its Streamlit websocket
        self.canvas_misses = 0  # drawings that did not show on the canvas (drawn again; not a prediction)
        self.usable = False  # the page is open on the Draw page
        self.context = None
        self.page = None
        self._next_drawing = index * 7

    async def open(self) -> None:
        self.context = await self.browser.new_context(viewport=DESKTOP, device_scale_factor=1)
        if self.cookies:
            await self.context.add_cookies(self.cookies)
        self.page = await self.context.new_page()
        self.page.on("websocket", lambda _: self.websocket_opens.append(time.monotonic()))
        self.page.set_default_timeout(PAGE_TIMEOUT_MS)
        self.page.on("pageerror", lambda error: self.page_errors.append(str(error)[:300]))
        self.page.on("crash", lambda _: self.page_errors.append("page crashed"))
        await self._load()
        self.usable = True

    async def _load(self) -> None:
        await self.page.goto(self.base_url + "/", wait_until="domcontentloaded")
        if self.dashboard_password is not None:
            # A new Streamlit session (a reload too) signs in first.
            await self.page.get_by_role("heading", name="Sign in", exact=True).wait_for()
            await self.page.get_by_label("Password", exact=True).fill(self.dashboard_password)
            await self.page.get_by_role("button", name="Sign in", exact=True).click()
        await self.page.get_by_role("button", name="Predict", exact=True).wait_for()
        await self.page.wait_for_selector(IDLE_SELECTOR)

    async def recover(self) -> None:
        """After a failed attempt: reload the page (a new Streamlit session), or open a new context."""
        self.reloads += 1
        self.usable = False
        try:
            await self._load()
            self.usable = True
        except PlaywrightError:
            await self.context.close()
            await self.open()

    async def predict_once(self, phase: str) -> BrowserAttempt:
        strokes, label = self.drawings[self._next_drawing % len(self.drawings)]
        self._next_drawing += 1
        attempt = BrowserAttempt(session=self.index, phase=phase, label=label)
        self.attempts.append(attempt)
        page = self.page
        step = "clear"
        try:
            for _ in range(DRAWING_TRIES):
                step = "clear"
                generation = await self._clear_canvas()
                step = "draw"
                if await self._draw(generation, strokes):
                    break
                self.canvas_misses += 1
            else:
                attempt.error = f"the strokes did not reach the canvas in {DRAWING_TRIES} tries"
                return attempt
            await asyncio.sleep(HAND_TO_BUTTON_SECONDS)
            await page.wait_for_selector(IDLE_SELECTOR)
            step = "predict"
            await page.evaluate(ANSWER_TIMER_SCRIPT)
            attempt.clicked_at = time.monotonic()
            await page.get_by_role("button", name="Predict", exact=True).click()
            attempt.predict_clicked = True
            step = "answer"
            handle = await page.wait_for_function(ANSWER_OUTCOME_SCRIPT, polling=ANSWER_POLL_MS,
                                                  timeout=self.answer_timeout_ms)
            outcome = await handle.json_value()
        except PlaywrightError as error:
            kind = "no answer within the timeout" if step == "answer" else f"stuck at {step}"
            attempt.error = f"{kind}: {error.message.splitlines()[0][:120]}"
            return attempt
        if "id" in outcome:
            attempt.prediction_id = outcome["id"]
            attempt.answer_text = outcome["text"]
            shown = await page.evaluate(
                "() => window.__answerShownAt === null ? null : (window.__answerShownAt - window.__predictClickedAt) / 1000")
            attempt.answer_seconds = shown if shown is not None else time.monotonic() - attempt.clicked_at
        elif "exception" in outcome:
            attempt.error = f"exception in the page: {outcome['exception'][:200]}"
        else:
            attempt.error = "blank answer ('Draw a digit first.')"
        return attempt

    async def _clear_canvas(self) -> int:
        """Click Clear and wait for the new, empty canvas; returns its generation."""
        page = self.page
        generation = (await page.evaluate(CANVAS_GENERATION_SCRIPT) or 0) + 1
        await page.get_by_role("button", name="Clear", exact=True).click()
        await page.get_by_test_id("stMetric").wait_for(state="detached")
        await page.wait_for_selector(IDLE_SELECTOR)
        # The new canvas must be mounted before the mouse goes down, or the strokes land on the old one.
        await page.locator(f".st-key-draw_canvas_{generation} canvas").last.wait_for(state="visible")
        await asyncio.sleep(CANVAS_MOUNT_SECONDS)
        return generation

    async def _draw(self, generation: int, strokes: list) -> bool:
        """Draw the strokes with the mouse; whether they show on the canvas afterwards."""
        page = self.page
        box = await page.locator(f".st-key-draw_canvas_{generation} canvas").last.bounding_box()
        if box is None:
            return False  # the canvas went away meanwhile (the page is reconnecting): drawn again
        for stroke in strokes:
            x, y = stroke[0]
            await page.mouse.move(box["x"] + x, box["y"] + y)
            await page.mouse.down()
            for x, y in stroke[1:]:
                await page.mouse.move(box["x"] + x, box["y"] + y)
            await page.mouse.up()
        return await self._canvas_shows_ink(generation)

    async def _canvas_shows_ink(self, generation: int) -> bool:
        """Whether the drawn strokes show on the canvas (polled briefly: a busy page may render them late)."""
        layer = self.page.locator(f".st-key-draw_canvas_{generation} canvas.dc-canvas.lower-canvas")
        deadline = time.monotonic() + INK_WAIT_SECONDS
        while True:
            try:
                if await layer.evaluate(CANVAS_HAS_INK_SCRIPT, timeout=1000):
                    return True
            except PlaywrightError:
                pass  # the canvas is not (or no longer) there
            if time.monotonic() > deadline:
                return False
            await asyncio.sleep(0.2)

    async def run_until(self, stop_at: float) -> None:
        await asyncio.sleep(self.index * SESSION_STAGGER_SECONDS)
        while self.usable and time.monotonic() < stop_at:
            attempt = await self.predict_once("load")
            if attempt.error is not None:
                try:
                    await self.recover()
                except PlaywrightError as error:
                    self.page_errors.append(f"could not reopen the page: {error.message[:200]}")
                    return

    async def close(self) -> None:
        if self.context is not None:
            await self.context.close()

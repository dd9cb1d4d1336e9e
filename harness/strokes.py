"""Mouse strokes that redraw an MNIST digit on the canvas, as a person with a mouse would.

``evaluation.drawings.centre_line`` reduces a digit to its one-pixel centre line; this module
walks that line into ordered polylines (each one a press, moves and a release), so the browser
tests and the benchmarks that drive Chromium draw real handwriting shapes instead of pasting
pixels. ``ANSWER_TIMER_SCRIPT`` times a Predict click inside the page.
"""

from __future__ import annotations

import numpy as np

from evaluation.drawings import CANVAS_SIDE, centre_line

NEIGHBOUR_STEPS = [(-1, -1), (-1, 0), (-1, 1), (0, -1), (0, 1), (1, -1), (1, 0), (1, 1)]
POINT_SPACING = 4
MINIMUM_STROKE_POINTS = 3


def _neighbours(pixels: set[tuple[int, int]], point: tuple[int, int]) -> list[tuple[int, int]]:
    row, column = point
    return [(row + step_row, column + step_column) for step_row, step_column in NEIGHBOUR_STEPS
            if (row + step_row, column + step_column) in pixels]


def skeleton_strokes(skeleton: np.ndarray) -> list[list[tuple[int, int]]]:
    """Ordered (row, column) polylines covering the skeleton, starting from line ends where possible."""
    remaining = {tuple(point) for point in np.argwhere(skeleton)}
    strokes = []
    while remaining:
        ends = [point for point in remaining if len(_neighbours(remaining, point)) <= 1]
        start = min(ends or remaining)
        stroke, current = [start], start
        remaining.discard(start)
        while True:
            options = _neighbours(remaining, current)
            if not options:
                break
            # Prefer straight (4-connected) steps so the walk follows the line rather than cutting corners.
            current = min(options, key=lambda point: abs(point[0] - current[0]) + abs(point[1] - current[1]))
            remaining.discard(current)
            stroke.append(current)
        if len(stroke) >= MINIMUM_STROKE_POINTS:
            strokes.append(stroke[::POINT_SPACING] + [stroke[-1]])
    return strokes


def digit_strokes(image: np.ndarray, *, height: int = 200) -> list[list[tuple[float, float]]]:
    """(x, y) canvas polylines for a 28x28 MNIST image, centred on the 280x280 canvas."""
    skeleton = centre_line(image, height)
    top = (CANVAS_SIDE - skeleton.shape[0]) // 2
    left = (CANVAS_SIDE - skeleton.shape[1]) // 2
    return [[(left + column + 0.5, top + row + 0.5) for row, column in stroke] for stroke in skeleton_strokes(skeleton)]


def draw_strokes(page, canvas_box: dict, strokes: list[list[tuple[float, float]]]) -> None:
    """Replay polylines with the mouse inside the canvas whose bounding box is given."""
    for stroke in strokes:
        x, y = stroke[0]
        page.mouse.move(canvas_box["x"] + x, canvas_box["y"] + y)
        page.mouse.down()
        for x, y in stroke[1:]:
            page.mouse.move(canvas_box["x"] + x, canvas_box["y"] + y, steps=2)
        page.mouse.up()


# Installed in the page before a Predict click (browser tests, bench/hardening/, bench/predict_latency.py): measures,
# inside the page, from the Predict click event to the "Prediction" metric appearing in the DOM.
ANSWER_TIMER_SCRIPT = """() => {
  window.__predictClickedAt = null;
  window.__answerShownAt = null;
  const button = Array.from(document.querySelectorAll('button')).find((item) => item.innerText.trim() === 'Predict');
  button.addEventListener('click', () => { window.__predictClickedAt = performance.now(); }, {once: true, capture: true});
  const observer = new MutationObserver(() => {
    if (window.__predictClickedAt !== null && document.querySelector('[data-testid="stMetricValue"]')) {
      window.__answerShownAt = performance.now();
      observer.disconnect();
    }
  });
  observer.observe(document.body, {childList: true, subtree: true, characterData: true});
}"""

"""Drawings that are not digits, for measuring the "not a digit" answer.

Three kinds, each seeded: random *scribbles* (one to four wandering pen strokes), *letters*
(capital letters that do not look like a digit, drawn stroke by stroke from templates with
a wobbling hand) and *doodles* (stars, hearts, spirals, smileys, ticks, crosses, boxes and
waves). All are painted onto the 280x280 canvas with a 12-18 px round pen at a random size
and place, as a person would draw them. Training never sees these generators.
"""

from __future__ import annotations

import numpy as np

from mnist_core.strokes import CANVAS_SIDE, canvas_picture

NON_DIGIT_KINDS = ("scribbles", "letters", "doodles")
# The Draw page shows an answer at or above this confidence as sure.
CONFIDENT = 0.6

# Capital letters as strokes in a unit box (x right, y down). Letters a digit could
# honestly be read as (O, I, L, S, Z, B, G, Q, J, D...) are left out.
LETTERS: dict[str, list[list[tuple[float, float]]]] = {
    "A": [[(0.0, 1.0), (0.5, 0.0), (1.0, 1.0)], [(0.22, 0.6), (0.78, 0.6)]],
    "E": [[(0.9, 0.0), (0.1, 0.0), (0.1, 1.0), (0.9, 1.0)], [(0.1, 0.5), (0.7, 0.5)]],
    "F": [[(0.9, 0.0), (0.1, 0.0), (0.1, 1.0)], [(0.1, 0.5), (0.7, 0.5)]],
    "H": [[(0.1, 0.0), (0.1, 1.0)], [(0.9, 0.0), (0.9, 1.0)], [(0.1, 0.5), (0.9, 0.5)]],
    "K": [[(0.15, 0.0), (0.15, 1.0)], [(0.9, 0.0), (0.15, 0.6)], [(0.4, 0.4), (0.9, 1.0)]],
    "M": [[(0.0, 1.0), (0.1, 0.0), (0.5, 0.7), (0.9, 0.0), (1.0, 1.0)]],
    "N": [[(0.1, 1.0), (0.1, 0.0), (0.9, 1.0), (0.9, 0.0)]],
    "R": [[(0.15, 1.0), (0.15, 0.0), (0.7, 0.02), (0.85, 0.15), (0.85, 0.35), (0.7, 0.48),
           (0.15, 0.5)], [(0.45, 0.5), (0.9, 1.0)]],
    "T": [[(0.0, 0.0), (1.0, 0.0)], [(0.5, 0.0), (0.5, 1.0)]],
    "V": [[(0.0, 0.0), (0.5, 1.0), (1.0, 0.0)]],
    "W": [[(0.0, 0.0), (0.25, 1.0), (0.5, 0.35), (0.75, 1.0), (1.0, 0.0)]],
    "X": [[(0.0, 0.0), (1.0, 1.0)], [(1.0, 0.0), (0.0, 1.0)]],
    "Y": [[(0.0, 0.0), (0.5, 0.5), (1.0, 0.0)], [(0.5, 0.5), (0.5, 1.0)]],
    "P_": [[(0.1, 0.0), (0.9, 0.0), (0.9, 1.0), (0.1, 1.0), (0.1, 0.0)],
           [(0.1, 0.0), (0.9, 1.0)]],  # a box with a diagonal
    "#": [[(0.3, 0.0), (0.2, 1.0)], [(0.75, 0.0), (0.65, 1.0)], [(0.0, 0.33), (1.0, 0.33)],
          [(0.0, 0.7), (1.0, 0.7)]],
}


def _resampled(points: np.ndarray, spacing: float = 0.02) -> np.ndarray:
    """A polyline with points about `spacing` apart, so a wobble bends it smoothly."""
    steps = np.linalg.norm(np.diff(points, axis=0), axis=1)
    along = np.concatenate([[0.0], np.cumsum(steps)])
    count = max(int(along[-1] / spacing), 2)
    targets = np.linspace(0.0, along[-1], count)
    return np.stack([np.interp(targets, along, points[:, 0]),
                     np.interp(targets, along, points[:, 1])], axis=1)


def _smooth_noise(count: int, random: np.random.Generator, amount: float) -> np.ndarray:
    """Low-frequency wobble of a hand: noise smoothed over about a tenth of the stroke."""
    noise = random.normal(0.0, 1.0, (count + 20, 2))
    kernel = np.hanning(21)
    kernel /= kernel.sum()
    smooth = np.stack([np.convolve(noise[:, axis], kernel, mode="valid") for axis in (0, 1)],
                      axis=1)[:count]
    return smooth * amount / max(float(np.abs(smooth).max()), 1e-9)


def _on_canvas(strokes: list[np.ndarray], random: np.random.Generator) -> np.ndarray:
    """Scale unit-box strokes to a random size and place, slant them, paint them."""
    pen_width = float(random.uniform(12.0, 18.0))
    size = float(random.uniform(90.0, 230.0))
    aspect = float(random.uniform(0.7, 1.2))
    slant = np.tan(np.radians(float(random.uniform(-15.0, 15.0))))
    placed = []
    for stroke in strokes:
        points = stroke.copy()
        points[:, 0] = (points[:, 0] - slant * (points[:, 1] - 0.5)) * size * aspect
        points[:, 1] = points[:, 1] * size
        placed.append(points)
    everything = np.concatenate(placed)
    low, high = everything.min(axis=0), everything.max(axis=0)
    margin = pen_width + 4
    room = CANVAS_SIDE - 2 * margin
    fit = min(1.0, room / max(float((high - low).max()), 1.0))
    free = np.maximum(room - (high - low) * fit, 0.0)
    offset = margin + random.uniform(0.0, 1.0, 2) * free
    return canvas_picture([(points - low) * fit + offset for points in placed],
                          pen_width=pen_width)


def scribble(random: np.random.Generator) -> np.ndarray:
    """One to four strokes that wander: a smooth random walk each."""
    strokes = []
    for _ in range(int(random.integers(1, 5))):
        count = int(random.integers(40, 160))
        heading = float(random.uniform(0, 2 * np.pi))
        turning = np.cumsum(random.normal(0.0, 0.25, count))
        angles = heading + np.convolve(turning, np.ones(5) / 5, mode="same")
        steps = np.stack([np.cos(angles), np.sin(angles)], axis=1) * 0.02
        start = random.uniform(0.0, 1.0, 2)
        strokes.append(start + np.cumsum(steps, axis=0))
    return _on_canvas(strokes, random)


def draw_letter(name: str, random: np.random.Generator) -> np.ndarray:
    """One template letter (a key of LETTERS) drawn by a wobbling hand."""
    strokes = []
    for stroke in LETTERS[name]:
        points = _resampled(np.asarray(stroke, dtype=np.float64))
        strokes.append(points + _smooth_noise(len(points), random, 0.04))
    return _on_canvas(strokes, random)


def letter(random: np.random.Generator) -> np.ndarray:
    names = sorted(LETTERS)
    return draw_letter(names[int(random.integers(len(names)))], random)


def _circle(centre, radius, start=0.0, turn=2 * np.pi, count=60):
    angles = start + np.linspace(0.0, turn, count)
    return np.stack([centre[0] + radius * np.cos(angles),
                     centre[1] + radius * np.sin(angles)], axis=1)


def doodle(random: np.random.Generator) -> np.ndarray:
    kind = int(random.integers(8))
    if kind == 0:  # a five-pointed star in one stroke
        angles = -np.pi / 2 + np.arange(6) * 4 * np.pi / 5
        strokes = [np.stack([0.5 + 0.5 * np.cos(angles), 0.5 + 0.5 * np.sin(angles)], axis=1)]
    elif kind == 1:  # a heart
        t = np.linspace(0, 2 * np.pi, 80)
        x = 16 * np.sin(t) ** 3
        y = -(13 * np.cos(t) - 5 * np.cos(2 * t) - 2 * np.cos(3 * t) - np.cos(4 * t))
        strokes = [np.stack([(x + 17) / 34, (y + 17) / 34], axis=1)]
    elif kind == 2:  # a spiral of two and a half turns
        t = np.linspace(0, 5 * np.pi, 150)
        strokes = [np.stack([0.5 + 0.05 * t * np.cos(t) / np.pi * 1.2,
                             0.5 + 0.05 * t * np.sin(t) / np.pi * 1.2], axis=1)]
    elif kind == 3:  # a smiley
        strokes = [_circle((0.5, 0.5), 0.5), _circle((0.5, 0.55), 0.28, 0.3, 2.5, 30),
                   _circle((0.33, 0.35), 0.04, count=12), _circle((0.67, 0.35), 0.04, count=12)]
    elif kind == 4:  # a tick and a cross side by side
        strokes = [np.array([[0.0, 0.6], [0.2, 0.9], [0.45, 0.2]]),
                   np.array([[0.55, 0.3], [1.0, 0.8]]), np.array([[1.0, 0.3], [0.55, 0.8]])]
    elif kind == 5:  # a wave
        t = np.linspace(0, 1, 100)
        strokes = [np.stack([t, 0.5 + 0.25 * np.sin(t * 2 * np.pi * random.uniform(2, 4))],
                            axis=1)]
    elif kind == 6:  # a house
        strokes = [np.array([[0.1, 1.0], [0.1, 0.45], [0.5, 0.0], [0.9, 0.45], [0.9, 1.0],
                             [0.1, 1.0]]), np.array([[0.4, 1.0], [0.4, 0.7], [0.6, 0.7],
                                                     [0.6, 1.0]])]
    else:  # a grid of dots and dashes
        strokes = [np.array([[0.1 + 0.3 * column, 0.2 + 0.3 * row],
                             [0.25 + 0.3 * column, 0.2 + 0.3 * row]])
                   for row in range(3) for column in range(3)]
    wobbly = []
    for stroke in strokes:
        points = _resampled(np.asarray(stroke, dtype=np.float64))
        wobbly.append(points + _smooth_noise(len(points), random, 0.03))
    return _on_canvas(wobbly, random)


def non_digit_pictures(kind: str, count: int, *, seed: int) -> list[np.ndarray]:
    """`count` RGBA canvas pictures of one kind, the same for the same seed."""
    makers = {"scribbles": scribble, "letters": letter, "doodles": doodle}
    if kind not in makers:
        raise ValueError(f"Unknown kind {kind!r}; choose one of {', '.join(NON_DIGIT_KINDS)}.")
    random = np.random.default_rng([seed, NON_DIGIT_KINDS.index(kind)])
    return [makers[kind](random) for _ in range(count)]


def non_digit_figures(recognizer, per_kind: int) -> dict:
    """Per kind, the share of seeded non-digits shown as a digit at CONFIDENT or above, and refused."""
    figures = {}
    for kind in NON_DIGIT_KINDS:
        readings = [recognizer.read(picture) for picture in non_digit_pictures(kind, per_kind, seed=31)]
        # What the Draw page would show: the whole answer's confidence (a number's is the
        # product of its digits').
        shown = [reading.has_digits and reading.overall_confidence >= CONFIDENT
                 for reading in readings]
        figures[kind] = {"shown_as_digit_confident": float(np.mean(shown)),
                         "refused": float(np.mean([reading.is_not_a_digit
                                                   for reading in readings])),
                         "count": len(readings)}
    return figures

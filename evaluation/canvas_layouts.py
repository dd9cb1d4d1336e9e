"""Putting pen-drawn digits on the 280x280 canvas: one digit two ways, or a whole number.

*fit* scales a digit's own bounding box to fill the canvas less a margin; *box* maps the
writer's whole 500x500 tablet box onto the canvas, so the digit keeps the size and place its
writer gave it. Numbers are composed from one writer's digits the way people write them:
close together, sometimes touching, slanted, with bars and tails reaching over a neighbour.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from evaluation.unipen import TABLET_SIDE, PenDigit
from mnist_core.strokes import CANVAS_SIDE, canvas_picture

PLACEMENTS = ("fit", "box")
PEN_WIDTH = 18.0
FIT_MARGIN = 28.0


def _bounds(strokes: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    points = np.concatenate(strokes)
    return points.min(axis=0), points.max(axis=0)


def place(digit: PenDigit, placement: str) -> list[np.ndarray]:
    """The digit's strokes in canvas pixels for one placement."""
    if placement == "box":
        scale = CANVAS_SIDE / TABLET_SIDE
        return [stroke * scale for stroke in digit.strokes]
    if placement != "fit":
        raise ValueError(f"Unknown placement {placement!r}; choose one of {', '.join(PLACEMENTS)}.")
    low, high = _bounds(digit.strokes)
    extent = np.maximum(high - low, 1.0)
    scale = (CANVAS_SIDE - 2 * FIT_MARGIN) / extent.max()
    offset = (CANVAS_SIDE - extent * scale) / 2
    return [(stroke - low) * scale + offset for stroke in digit.strokes]


def draw_digit(digit: PenDigit, placement: str, pen_width: float = PEN_WIDTH) -> np.ndarray:
    """The RGBA canvas picture of one digit."""
    return canvas_picture(place(digit, placement), pen_width=pen_width)


@dataclasses.dataclass(frozen=True)
class ComposedNumber:
    text: str
    picture: np.ndarray
    pen_width: float
    gaps: tuple[float, ...]
    # Each digit's strokes in canvas pixels, as painted: which ink belongs to which digit.
    digit_strokes: tuple[tuple[np.ndarray, ...], ...] = ()

    @property
    def strokes(self) -> list[np.ndarray]:
        """Every stroke in drawing order (digit by digit), as the Draw page's canvas reports them."""
        return [stroke for digit in self.digit_strokes for stroke in digit]


def compose_number(digits: Sequence[PenDigit], random: np.random.Generator) -> ComposedNumber:
    """One writer's digits written side by side on the canvas as a person writes a number.

    Each digit is scaled to a common height (with a little wobble) and placed after the one
    before it with a gap drawn from the three ways people leave space: a clear gap of 0 to
    20 px, ink that touches, or boxes that overlap so a bar or tail reaches over the
    neighbour. The whole number is slanted a little and shrunk to fit the canvas.
    """
    pen_width = float(random.uniform(12.0, 18.0))
    extents = [np.maximum(np.subtract(*_bounds(digit.strokes)[::-1]), 1.0) for digit in digits]
    # A person writes a long number smaller, so that it fits, without thinning the pen.
    room = CANVAS_SIDE - 2 * (pen_width + 6)
    widths_per_height = sum(extent[0] / extent[1] for extent in extents) + 0.05 * len(digits)
    height = min(float(random.uniform(70.0, 130.0)), room / widths_per_height, room)
    placed: list[list[np.ndarray]] = []
    gaps: list[float] = []
    cursor = 0.0
    previous_width = 0.0
    for index, digit in enumerate(digits):
        low, high = _bounds(digit.strokes)
        extent = np.maximum(high - low, 1.0)
        scale = height * float(random.uniform(0.9, 1.1)) / extent[1]
        width = extent[0] * scale
        if index:
            kind = random.random()
            if kind < 0.5:
                gap = float(random.uniform(0.0, 20.0))
            elif kind < 0.8:
                # Strokes' edges meet: the boxes overlap by up to one pen width.
                gap = -float(random.uniform(0.0, pen_width))
            else:
                gap = -float(random.uniform(0.1, 0.25)) * min(width, previous_width)
            gaps.append(gap)
            cursor += gap
        baseline_shift = float(random.normal(0.0, 0.05 * height))
        placed.append([(stroke - low) * scale + np.array([cursor, baseline_shift])
                       for stroke in digit.strokes])
        cursor += width
        previous_width = width
    # Slant the whole number (positive leans right) about its vertical middle.
    slant = np.tan(np.radians(float(random.uniform(-12.0, 12.0))))
    everything = [stroke.copy() for digit_strokes in placed for stroke in digit_strokes]
    for stroke in everything:
        stroke[:, 0] -= slant * (stroke[:, 1] - height / 2)
    low, high = _bounds(everything)
    extent = np.maximum(high - low, 1.0)
    fit = min(1.0, room / extent.max())
    offset = (CANVAS_SIDE - extent * fit) / 2
    strokes = [(stroke - low) * fit + offset for stroke in everything]
    counts = np.cumsum([0, *(len(digit_strokes) for digit_strokes in placed)])
    return ComposedNumber(text="".join(str(digit.label) for digit in digits),
                          picture=canvas_picture(strokes, pen_width=pen_width),
                          pen_width=pen_width, gaps=tuple(gaps),
                          digit_strokes=tuple(tuple(strokes[start:stop]) for start, stop
                                              in zip(counts[:-1], counts[1:])))


def numbers_from_writers(digits: Sequence[PenDigit], lengths: Sequence[int], per_length: int,
                         seed: int = 5) -> list[ComposedNumber]:
    """`per_length` composed numbers of each length, each from one writer's own digits."""
    random = np.random.default_rng(seed)
    by_writer: dict[int, list[PenDigit]] = {}
    for digit in digits:
        by_writer.setdefault(digit.writer, []).append(digit)
    writers = sorted(by_writer)
    numbers = []
    for length in lengths:
        for _ in range(per_length):
            pool = by_writer[writers[int(random.integers(len(writers)))]]
            chosen = [pool[int(index)] for index in random.integers(len(pool), size=length)]
            numbers.append(compose_number(chosen, random))
    return numbers

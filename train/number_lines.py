"""Training lines for the number reader: whole numbers composed from MNIST training digits.

Each number is written the way `train/number_candidates.py` writes one (one to six redrawn
MNIST digits in the canvas styles, close together, touching or overlapping, slanted), painted
on the half-size canvas as the preprocessing sees a drawing, and made into the sequence
model's input by the product's own `mnist_core.number_line.line_input`. The label is the
digits' text. A share of the lines are drawings that are no digits at all (scribbles, curves,
dashes, letters, digits on their side, from `train/canvas_rendering.py`) with an empty label,
so the reader learns to read nothing in them rather than a number. Seeded per line and
generated in worker processes.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from mnist_core.number_line import LINE_HEIGHT, LINE_WIDTH, line_input
from mnist_core.preprocess import ink_map
from train.canvas_rendering import map_in_processes, non_digit_picture
from train.number_candidates import SETTINGS, NumberSettings, compose, paint_number

MAX_LENGTH = 6
# Lone digits and long numbers are rarer than the 2 to 4 digits people mostly write.
LENGTH_WEIGHTS = {1: 0.12, 2: 0.22, 3: 0.22, 4: 0.2, 5: 0.12, 6: 0.12}
LINE_SETTINGS = dataclasses.replace(SETTINGS, lengths=tuple(LENGTH_WEIGHTS))
NON_DIGIT_SHARE = 0.1


@dataclasses.dataclass(frozen=True)
class NumberLines:
    """Lines (N, LINE_HEIGHT, LINE_WIDTH) uint8, labels (N, MAX_LENGTH) padded with -1, and
    lengths (0 for a line that holds no digit)."""

    lines: np.ndarray
    labels: np.ndarray
    lengths: np.ndarray


def number_line(images: np.ndarray, labels: np.ndarray, random: np.random.Generator,
                settings: NumberSettings = LINE_SETTINGS) -> tuple[np.ndarray, np.ndarray] | None:
    """One composed number's line input and its digits, or None when a digit had no centre line."""
    lengths = np.array(settings.lengths)
    weights = np.array([LENGTH_WEIGHTS[length] for length in settings.lengths], dtype=np.float64)
    length = int(random.choice(lengths, p=weights / weights.sum()))
    indices = random.integers(len(images), size=length)
    composed = compose(images, labels, indices, random, settings)
    if composed is None:
        return None
    digits, pen = composed
    picture = paint_number(digits, pen)
    return line_input(ink_map(picture)), labels[indices].astype(np.int64)


def _work(task):
    start, stop, seed, images, labels = task
    lines = np.zeros((stop - start, LINE_HEIGHT, LINE_WIDTH), np.uint8)
    targets = np.full((stop - start, MAX_LENGTH), -1, np.int64)
    lengths = np.zeros(stop - start, np.int64)
    made_any = np.zeros(stop - start, bool)
    for row, index in enumerate(range(start, stop)):
        random = np.random.default_rng([seed, index])
        if random.random() < NON_DIGIT_SHARE:
            picture = non_digit_picture(images, labels, random, run_together=False)
            lines[row] = np.rint(line_input(ink_map(picture)) * 255)
            made_any[row] = True
            continue
        made = number_line(images, labels, random)
        if made is None:
            continue
        line, digits = made
        lines[row] = np.rint(line * 255)
        targets[row, :len(digits)] = digits
        lengths[row] = len(digits)
        made_any[row] = True
    return lines, targets, lengths, made_any


def generate_number_lines(count: int, images: np.ndarray, labels: np.ndarray, *, seed: int,
                          processes: int | None = None) -> NumberLines:
    """`count` lines, numbers and non-digits (numbers whose digits all had centre lines)."""
    chunk = 500
    tasks = [(start, min(start + chunk, count), seed, images, labels)
             for start in range(0, count, chunk)]
    parts = map_in_processes(_work, tasks, processes)
    lines = np.concatenate([part[0] for part in parts])
    targets = np.concatenate([part[1] for part in parts])
    lengths = np.concatenate([part[2] for part in parts])
    kept = np.concatenate([part[3] for part in parts])
    return NumberLines(lines=lines[kept], labels=targets[kept], lengths=lengths[kept])

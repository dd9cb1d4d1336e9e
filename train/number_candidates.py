"""Training pictures cut from whole numbers, exactly as the segmentation cuts a drawn number.

A number is read by cutting its ink into pieces, making every run of neighbouring pieces a
candidate digit and letting the model say which candidates are digits (see
`mnist_core.segmentation`). Trained on lone digits only, the model has never seen what those
candidates look like: a digit that lost the edge of a stroke where it touched its
neighbour, or kept a bit of the neighbour's bar; two touching digits taken as one; half a 0.
So numbers are composed from MNIST training digits redrawn on the canvas (each digit painted
on its own as well, so we know whose ink every pixel is), segmented by the product's own
code, and each candidate is labelled by the ink it holds:
- mostly one digit's ink, most of that digit and little of any other: that digit;
- a large part of two digits, or a small part of one: not a digit;
- anything in between is left out (neither answer would be honest).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from mnist_core.preprocess import INK_MASK_LEVEL, ink_map
from mnist_core.segmentation import segment
from mnist_core.strokes import CANVAS_SIDE, canvas_picture
from train.canvas_rendering import NOT_A_DIGIT, centre_points, map_in_processes, warp, with_style

# Working at half the canvas's resolution, as canvas_rendering.paint does (the preprocessing
# halves a 280 px canvas before it looks at the ink).
SIDE = CANVAS_SIDE // 2


@dataclasses.dataclass(frozen=True)
class NumberSettings:
    # A lone digit too: its cuts are fragments, which are not digits.
    lengths: tuple[int, ...] = (1, 2, 3, 4, 5)
    # Canvas pixels.
    pen_range: tuple[float, float] = (9.0, 20.0)
    height_range: tuple[float, float] = (45.0, 140.0)
    height_wobble: float = 0.12
    baseline_wobble: float = 0.06
    slant_degrees: float = 15.0
    # How neighbours sit, between their centre lines: a clear gap, ink that touches or
    # runs together, or boxes that overlap (a bar or tail reaching over the neighbour).
    clear_share: float = 0.3
    touching_share: float = 0.4
    clear_gap_range: tuple[float, float] = (0.0, 22.0)
    overlap_range: tuple[float, float] = (0.05, 0.3)
    # Labels (see the module docstring): shares of the candidate's ink and of a digit's ink.
    digit_share: float = 0.8
    digit_coverage: float = 0.7
    # ... and no more than this of any other digit (a thin 1 beside a 5 is a small share).
    foreign_coverage: float = 0.2
    merged_coverage: float = 0.3
    fragment_coverage: float = 0.4
    negatives_per_digit: float = 0.8


SETTINGS = NumberSettings()


def _digit_parts(image: np.ndarray, label: int, random: np.random.Generator) -> list[np.ndarray]:
    """One digit's centre line and style strokes, warped, scaled to a height of 1, y down."""
    points = centre_points(image)
    if len(points) < 3:
        return []
    parts = warp(with_style(points, label, random), random)
    everything = np.concatenate(parts)
    low, high = everything.min(axis=0), everything.max(axis=0)
    height = max(float(high[1] - low[1]), 1e-3)
    return [(part - low) / height for part in parts]


def compose(images: np.ndarray, labels: np.ndarray, indices: np.ndarray,
            random: np.random.Generator, settings: NumberSettings = SETTINGS):
    """The strokes of each digit of one number on the half-size canvas, and the pen width."""
    pen = float(random.uniform(*settings.pen_range))
    # Never shorter than three pen widths: a blob is not a digit.
    height = max(float(random.uniform(*settings.height_range)), 3.0 * pen)
    digits = []
    cursor, previous_width = 0.0, 0.0
    for position, index in enumerate(indices):
        parts = _digit_parts(images[index], int(labels[index]), random)
        if not parts:
            return None
        scale = height * float(random.uniform(1 - settings.height_wobble,
                                              1 + settings.height_wobble))
        width = float(np.concatenate(parts)[:, 0].max()) * scale
        if position:
            kind = random.random()
            if kind < settings.clear_share:
                gap = pen + float(random.uniform(*settings.clear_gap_range))
            elif kind < settings.clear_share + settings.touching_share:
                gap = float(random.uniform(-0.3, 1.0)) * pen
            else:
                gap = -float(random.uniform(*settings.overlap_range)) * min(width, previous_width)
            cursor += gap
        shift = np.array([cursor, float(random.normal(0.0, settings.baseline_wobble)) * height])
        digits.append([part * scale + shift for part in parts])
        cursor += width
        previous_width = width
    slant = np.tan(np.radians(float(random.uniform(-1, 1)) * settings.slant_degrees))
    for parts in digits:
        for part in parts:
            part[:, 0] -= slant * (part[:, 1] - height / 2)
    everything = np.concatenate([part for parts in digits for part in parts])
    low, high = everything.min(axis=0), everything.max(axis=0)
    margin = pen / 2 + 3
    room = CANVAS_SIDE - 2 * margin
    fit = min(1.0, room / float(max(high - low)))
    free = np.maximum(room - (high - low) * fit, 0.0)
    offset = margin + random.uniform(0.0, 1.0, 2) * free
    half = [[((part - low) * fit + offset) / 2 for part in parts] for parts in digits]
    return half, pen / 2


def paint_digit(parts: list[np.ndarray], pen: float) -> np.ndarray:
    """One digit of a composed number as an RGBA picture of the half-size canvas.

    The first part is a centre line's pixels, each painted as a dot; the rest are strokes.
    """
    strokes = [*parts[0][:, None, :], *parts[1:]]
    return canvas_picture(strokes, pen_width=pen, side=SIDE)


def paint_number(digits: list[list[np.ndarray]], pen: float) -> np.ndarray:
    """A composed number (`compose`'s digits) as one RGBA picture of the half-size canvas."""
    return np.max(np.stack([paint_digit(parts, pen) for parts in digits]), axis=0)


def number_candidates(images: np.ndarray, labels: np.ndarray, random: np.random.Generator,
                      settings: NumberSettings = SETTINGS) -> tuple[np.ndarray, np.ndarray]:
    """Labelled model inputs (K, 28, 28) cut from one composed number, and their labels."""
    length = int(random.choice(settings.lengths))
    indices = random.integers(len(images), size=length)
    composed = compose(images, labels, indices, random, settings)
    if composed is None:
        return np.zeros((0, 28, 28), np.float32), np.zeros(0, np.int64)
    digits, pen = composed
    return labelled_candidates([paint_digit(parts, pen) for parts in digits], labels[indices],
                               random, settings)


def labelled_candidates(pictures: list[np.ndarray], digit_labels: np.ndarray,
                        random: np.random.Generator, settings: NumberSettings = SETTINGS
                        ) -> tuple[np.ndarray, np.ndarray]:
    """The segmentation's candidates of the digits' pictures painted together, labelled.

    `pictures` are RGBA pictures of the same size, one digit each, left to right.
    """
    empty = (np.zeros((0, 28, 28), np.float32), np.zeros(0, np.int64))
    picture = np.max(np.stack(pictures), axis=0)
    segmentation = segment(picture)
    if segmentation.is_blank:
        return empty
    owners = np.stack([ink_map(own) >= INK_MASK_LEVEL for own in pictures])
    owner_sizes = np.maximum(owners.reshape(len(owners), -1).sum(axis=1), 1)
    positives, negatives = [], []
    for index in range(len(segmentation.spans)):
        if segmentation.dots[index]:
            continue
        group = segmentation.group(index)
        held = owners[:, group.top:group.bottom, group.left:group.right] & group.mask
        counts = held.reshape(len(owners), -1).sum(axis=1).astype(np.float64)
        share = counts / max(float(group.mask.sum()), 1.0)
        coverage = counts / owner_sizes
        second_coverage = np.sort(coverage)[-2] if len(coverage) > 1 else 0.0
        top = int(np.argmax(share))
        foreign = np.delete(coverage, top)
        if (share[top] >= settings.digit_share and coverage[top] >= settings.digit_coverage
                and (foreign.size == 0 or foreign.max() <= settings.foreign_coverage)):
            positives.append((index, int(digit_labels[top])))
        elif (second_coverage >= settings.merged_coverage
              or coverage.max() < settings.fragment_coverage):
            negatives.append(index)
    keep = int(round(settings.negatives_per_digit * len(pictures)))
    if len(negatives) > keep:
        negatives = [negatives[int(position)] for position in
                     random.choice(len(negatives), size=keep, replace=False)]
    chosen = [index for index, _ in positives] + negatives
    if not chosen:
        return empty
    chosen_labels = [label for _, label in positives] + [NOT_A_DIGIT] * len(negatives)
    return (segmentation.candidate_inputs(chosen).astype(np.float32),
            np.asarray(chosen_labels, dtype=np.int64))


def _work(task):
    start, stop, seed, images, labels = task
    inputs, outputs = [], []
    for index in range(start, stop):
        candidates, candidate_labels = number_candidates(
            images, labels, np.random.default_rng([seed, index]))
        inputs.append(candidates)
        outputs.append(candidate_labels)
    return np.concatenate(inputs), np.concatenate(outputs)


def generate_number_candidates(count: int, images: np.ndarray, labels: np.ndarray, *, seed: int,
                               processes: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Candidates cut from `count` composed numbers, seeded per number: (inputs, labels)."""
    chunk = 500
    tasks = [(start, min(start + chunk, count), seed, images, labels)
             for start in range(0, count, chunk)]
    if not tasks:
        return np.zeros((0, 28, 28), np.float32), np.zeros(0, np.int64)
    parts = map_in_processes(_work, tasks, processes)
    return np.concatenate([inputs for inputs, _ in parts]), np.concatenate(
        [outputs for _, outputs in parts])

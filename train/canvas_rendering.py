"""Training pictures made the way the app makes its inputs: drawn on the canvas, then preprocessed.

The model must read what `mnist_core.preprocess` produces from a canvas, so every training
image is such a product:
- MNIST images themselves, sent through the preprocessing as the CLI would read a 28x28 scan;
- MNIST digits redrawn with a round pen on the 280x280 canvas: each digit is reduced to its
  centre line, warped (rotation, shear, width), given a style many people use and MNIST's
  writers rarely did (a crossbar and a serif on 7; a flag, long or short, and a foot on 1;
  a curved tail, or a stem bending into a foot far to the left, on 9; an open top or a
  one-stroke rounded form on 4), and painted at any size from a small corner digit to one
  filling the canvas, with a pen 9 to 22 px wide;
- drawings that are *not* digits, the eleventh class: wandering pen strokes, dashes, smooth
  random curves, two digits run together (so a merged pair is never read as one digit),
  letters from Pillow's bundled font, and digits turned on their side.
Generation is seeded per example, so a re-run makes the same pictures, and it runs in worker
processes (it is a few minutes of NumPy and Pillow work).
"""

from __future__ import annotations

import dataclasses
import functools
import multiprocessing
import os

import numpy as np
from PIL import Image, ImageFont

from mnist_core.preprocess import ink_map, normalise_digit
from mnist_core.strokes import CANVAS_SIDE, canvas_picture

NOT_A_DIGIT = 10
# Letters that cannot honestly be told from a digit are left out of the non-digit class.
NON_DIGIT_LETTERS = "AEFHKMNPRTVWXYefkmnprtvwx"
SIDEWAYS_DIGITS = (3, 4, 5)


@dataclasses.dataclass(frozen=True)
class StyleSettings:
    crossbar_seven: float = 0.45
    flag_one: float = 0.6
    foot_one: float = 0.35
    tail_nine: float = 0.3
    # Of the tailed 9s, the share whose stem bends into a long foot to the left (like a "g").
    hooked_nine: float = 0.5
    open_four: float = 0.3
    # 7s whose top bar starts with a short stroke down (a serif), as many Europeans write them.
    serif_seven: float = 0.3
    # 4s written in one stroke like a Cyrillic "ch": the arm curves down into the bar.
    rounded_four: float = 0.25
    rotation_degrees: float = 12.0
    shear_degrees: float = 18.0
    width_range: tuple[float, float] = (0.7, 1.3)
    height_range: tuple[float, float] = (40.0, 240.0)
    # A digit is never drawn shorter than this many pen widths (a blob is not a digit).
    minimum_height_in_pens: float = 2.8
    pen_range: tuple[float, float] = (9.0, 22.0)


STYLE = StyleSettings()


# ---------------------------------------------------------------------------------------
# Centre lines
# ---------------------------------------------------------------------------------------

def centre_points(image: np.ndarray, upscale: int = 4) -> np.ndarray:
    """The centre line of a grey digit as (x, y) points in 0..1 of its own height, y down."""
    from skimage.morphology import skeletonize

    image = np.asarray(image, dtype=np.float32)
    image = image / max(float(image.max()), 1e-6)
    rows = np.flatnonzero(image.max(axis=1) > 0.2)
    columns = np.flatnonzero(image.max(axis=0) > 0.2)
    if rows.size == 0:
        return np.zeros((0, 2))
    cropped = np.pad(image[rows[0]:rows[-1] + 1, columns[0]:columns[-1] + 1], 1)
    size = (cropped.shape[1] * upscale, cropped.shape[0] * upscale)
    smooth = np.asarray(Image.fromarray(cropped, "F").resize(size, Image.Resampling.BICUBIC))
    skeleton = skeletonize(smooth > 0.45)
    ys, xs = np.nonzero(skeleton)
    if ys.size == 0:
        return np.zeros((0, 2))
    points = np.stack([xs, ys], axis=1).astype(np.float64)
    low, high = points.min(axis=0), points.max(axis=0)
    return (points - low) / max(float(high[1] - low[1]), 1.0)


def _line(start, end, count: int = 24) -> np.ndarray:
    return np.linspace(np.asarray(start, float), np.asarray(end, float), count)


def _arc(centre, radius: float, start: float, end: float, count: int = 24) -> np.ndarray:
    angles = np.linspace(start, end, count)
    return np.stack([centre[0] + radius * np.cos(angles),
                     centre[1] + radius * np.sin(angles)], axis=1)


# ---------------------------------------------------------------------------------------
# Styles MNIST's writers rarely used
# ---------------------------------------------------------------------------------------

def with_style(points: np.ndarray, label: int, random: np.random.Generator,
               style: StyleSettings = STYLE) -> list[np.ndarray]:
    """The digit's centre points plus any strokes a style adds (heights are 1, y down)."""
    extra: list[np.ndarray] = []
    width = float(points[:, 0].max())
    if label == 7:
        if random.random() < style.crossbar_seven:
            # A crossbar through the stem, a little below the middle.
            level = float(random.uniform(0.4, 0.68))
            band = points[np.abs(points[:, 1] - level) < 0.06]
            if len(band):
                centre = float(np.median(band[:, 0])) + float(random.uniform(-0.05, 0.05))
                half = float(random.uniform(0.12, 0.35))
                tilt = float(random.uniform(-0.08, 0.08))
                extra.append(_line((centre - half, level + tilt), (centre + half, level - tilt)))
        if random.random() < style.serif_seven:
            # The top bar starts with a short stroke down at its left end.
            top = points[points[:, 1] < 0.15]
            if len(top):
                start = top[top[:, 0].argmin()]
                length = float(random.uniform(0.08, 0.25))
                extra.append(_line(start, (start[0] + float(random.uniform(-0.06, 0.03)),
                                           start[1] + length)))
    elif label == 1:
        top = points[points[:, 1].argmin()]
        bottom = points[points[:, 1].argmax()]
        if random.random() < style.flag_one:
            # From a short steep serif to a long flag only a little below level, as many
            # European writers draw it (easily taken for a 7 if never seen in training).
            length = float(random.uniform(0.2, 0.75))
            angle = np.radians(float(random.uniform(8.0, 70.0)))
            extra.append(_line(top, (top[0] - length * np.cos(angle),
                                     top[1] + length * np.sin(angle))))
        if random.random() < style.foot_one:
            half = float(random.uniform(0.15, 0.3))
            extra.append(_line((bottom[0] - half, bottom[1]), (bottom[0] + half, bottom[1])))
    elif label == 9 and random.random() < style.tail_nine:
        bottom = points[points[:, 1].argmax()]
        if random.random() < style.hooked_nine:
            # The stem bends down and to the left, like a "g" or a "J": a bend that turns
            # a quarter to nearly a half circle, then a foot on in the same direction.
            cut = float(random.uniform(0.1, 0.3))
            keep = points[points[:, 1] < bottom[1] - cut]
            if len(keep) > 10:
                end = keep[keep[:, 1].argmax()]
                turn = float(random.uniform(0.5, 0.95)) * np.pi
                bend = _arc((end[0] - cut, end[1]), cut, 0.0, turn)
                # A bend that already turns back up gets only a short foot (else it closes a loop).
                length = float(random.uniform(0.1, 0.5) if turn < 0.75 * np.pi
                               else random.uniform(0.0, 0.15))
                tip = bend[-1]
                foot = _line(tip, tip + length * np.array([-np.sin(turn), np.cos(turn)]))
                extra.append(np.concatenate([bend, foot[1:]]))
                points = keep
        else:
            # The stem's end curls to the left.
            radius = float(random.uniform(0.1, 0.2)) * max(width, 0.5)
            keep = points[points[:, 1] < bottom[1] - radius]
            extra.append(_arc((bottom[0] - radius, bottom[1] - radius), radius, 0.0,
                              float(random.uniform(0.6, 1.0)) * np.pi))
            points = keep if len(keep) > 10 else points
    elif label == 4 and random.random() < style.rounded_four:
        points, arm = _rounded_four(random)
        extra.append(arm)
    elif label == 4 and random.random() < style.open_four:
        # An open 4: the left arm stops short of the stem.
        right = points[:, 0] > 0.6 * width
        stem_x = float(np.median(points[right, 0])) if right.any() else width
        gap = float(random.uniform(0.04, 0.12))
        points = points[(points[:, 0] > stem_x - 0.05) | (points[:, 1] > 0.5)
                        | (points[:, 0] < stem_x - 0.05 - gap)]
    return [points, *extra]


def _rounded_four(random: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A 4 drawn like a "ch": the stem as dense points, and the arm that curves into the bar.

    MNIST's 4s nearly all have a sharp corner; this shape is drawn from scratch, since no
    edit of their centre lines gives the round, open-topped form.
    """
    stem_x = float(random.uniform(0.45, 0.75))
    stem_top = float(random.uniform(0.0, 0.2))
    lean = float(random.uniform(-0.08, 0.08))
    stem = _line((stem_x + lean, stem_top), (stem_x, 1.0), 120)
    bar_y = float(random.uniform(0.45, 0.72))
    arm_x = float(random.uniform(0.0, 0.12))
    arm_top = float(random.uniform(0.0, 0.2))
    # From a small rounded corner to a "U" whose bottom runs straight into the stem.
    radius = float(random.uniform(0.06, 1.0)) * min(stem_x - arm_x, bar_y - arm_top - 0.05)
    down = _line((arm_x + float(random.uniform(-0.06, 0.06)), arm_top), (arm_x, bar_y - radius))
    corner = _arc((arm_x + radius, bar_y - radius), radius, np.pi, np.pi / 2)
    rise = float(random.uniform(0.0, 0.12))
    reach = stem_x + float(random.uniform(-0.02, 0.12))
    bar = _line(corner[-1], (reach, bar_y - rise))
    return stem, np.concatenate([down, corner[1:], bar[1:]])


# ---------------------------------------------------------------------------------------
# Painting on the canvas
# ---------------------------------------------------------------------------------------

def warp(parts: list[np.ndarray], random: np.random.Generator,
          style: StyleSettings = STYLE) -> list[np.ndarray]:
    angle = np.radians(float(random.uniform(-1, 1)) * style.rotation_degrees)
    shear = np.tan(np.radians(float(random.uniform(-1, 1)) * style.shear_degrees))
    stretch = float(random.uniform(*style.width_range))
    matrix = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]]) @ (
        np.array([[stretch, shear], [0.0, 1.0]]))
    return [part @ matrix.T for part in parts]


def paint(parts: list[np.ndarray], random: np.random.Generator, *, dotted_first: bool = True,
          height: float | None = None, pen_width: float | None = None,
          style: StyleSettings = STYLE) -> np.ndarray:
    """Scale point sets to a size, place them anywhere on the canvas and paint them.

    With `dotted_first`, the first set is a centre line's pixels, each painted as a dot
    (they lie close enough to join); the others are strokes, painted as lines.
    """
    pen_width = pen_width or float(random.uniform(*style.pen_range))
    everything = np.concatenate(parts)
    low, high = everything.min(axis=0), everything.max(axis=0)
    extent = np.maximum(high - low, 1e-3)
    margin = pen_width / 2 + 3
    room = CANVAS_SIDE - 2 * margin
    if height is None:
        # Log-uniform: small digits drawn in a corner are as common as ones filling the canvas.
        height = float(np.exp(random.uniform(*np.log(style.height_range))))
    height = max(height, style.minimum_height_in_pens * pen_width)
    scale = min(height / extent[1], room / extent.max())
    free = np.maximum(room - extent * scale, 0.0)
    offset = margin + random.uniform(0.0, 1.0, 2) * free
    strokes: list[np.ndarray] = []
    for part in parts:
        placed = (part - low) * scale + offset
        if dotted_first and not strokes:
            strokes.extend(placed[:, None, :])
        else:
            strokes.append(placed)
    # Painted at half the canvas's resolution: the preprocessing halves a 280 px canvas
    # before it looks at the ink, so the model input is the same, for a quarter of the work.
    return canvas_picture([stroke / 2 for stroke in strokes], pen_width=pen_width / 2,
                          side=CANVAS_SIDE // 2)


def model_input(picture: np.ndarray) -> np.ndarray:
    """The 28x28 image the app's preprocessing makes of a picture holding one digit."""
    return normalise_digit(ink_map(picture))


# ---------------------------------------------------------------------------------------
# The examples
# ---------------------------------------------------------------------------------------

def redrawn_digit(image: np.ndarray, label: int, random: np.random.Generator) -> np.ndarray:
    points = centre_points(image)
    if len(points) < 3:
        return model_input(image)
    return model_input(paint(warp(with_style(points, label, random), random), random))


@functools.lru_cache(maxsize=1)
def _letter_font() -> ImageFont.FreeTypeFont:
    """Pillow's bundled font, loaded once per process rather than for every letter drawn."""
    return ImageFont.load_default(size=60)


def _letter_points(letter: str) -> np.ndarray:
    from PIL import ImageDraw

    font = _letter_font()
    canvas = Image.new("L", (90, 90), 0)
    ImageDraw.Draw(canvas).text((15, 5), letter, font=font, fill=255)
    return centre_points(np.asarray(canvas, dtype=np.float32) / 255.0, upscale=1)


def _squiggle(random: np.random.Generator) -> np.ndarray:
    """A smooth curve through five to nine random points: rarely anything like a digit."""
    from scipy.interpolate import CubicSpline

    knots = random.uniform(0.0, 1.0, (int(random.integers(5, 10)), 2))
    along = np.linspace(0.0, 1.0, len(knots))
    return CubicSpline(along, knots)(np.linspace(0.0, 1.0, 25 * len(knots)))


def _wander(random: np.random.Generator) -> np.ndarray:
    """A pen left to wander: a path whose heading drifts, and now and then turns sharply.

    Paths nearly as long end to end as along the way are drawn again: those are lines, and
    a lone line may well be a 1.
    """
    steps = int(random.integers(30, 140))
    turns = random.normal(0.0, float(random.uniform(0.1, 0.5)), steps)
    sharp = random.random(steps) < 0.04
    turns[sharp] += random.choice([-1.0, 1.0], int(sharp.sum())) * random.uniform(1.5, 3.0, int(
        sharp.sum()))
    heading = float(random.uniform(0, 2 * np.pi)) + np.cumsum(turns)
    path = np.cumsum(np.stack([np.cos(heading), np.sin(heading)], axis=1), axis=0)
    if np.linalg.norm(path[-1] - path[0]) > 0.6 * steps:
        return _wander(random)
    return path


def non_digit(mnist_images: np.ndarray, mnist_labels: np.ndarray,
              random: np.random.Generator) -> np.ndarray:
    """The model input of one drawing that is not a digit (see non_digit_picture)."""
    return model_input(non_digit_picture(mnist_images, mnist_labels, random))


def non_digit_picture(mnist_images: np.ndarray, mnist_labels: np.ndarray,
                      random: np.random.Generator, *, run_together: bool = True) -> np.ndarray:
    """A half-size canvas picture of something that is not one digit.

    Without `run_together`, never two digits run together (the number reader is to read
    those as the two digits they are).
    """
    kind = random.random()
    if kind < 0.15:
        # One to four wandering strokes.
        parts = [_wander(random) for _ in range(int(random.integers(1, 5)))]
        for part in parts[1:]:
            part += random.uniform(-20.0, 20.0, 2)
        return paint(parts, random, dotted_first=False, height=float(random.uniform(50, 240)))
    kind = (kind - 0.15) / 0.85
    if kind < 0.08:
        # A dash: a bar or flag on its own is no digit (nor is a minus sign).
        angle = np.radians(float(random.uniform(-25.0, 25.0)))
        half = np.array([np.cos(angle), np.sin(angle)]) * 0.5
        return paint([_line(0.5 - half, 0.5 + half)], random, dotted_first=False,
                     height=float(random.uniform(40, 200)))
    if kind < 0.3:
        # Smooth random curves, one or two strokes.
        parts = [_squiggle(random) for _ in range(int(random.integers(1, 3)))]
        return paint(parts, random, dotted_first=False, height=float(random.uniform(60, 240)))
    if kind < 0.6:
        if not run_together:
            return non_digit_picture(mnist_images, mnist_labels, random, run_together=False)
        # Two digits run together: touching or overlapping, as one blob.
        first, second = random.integers(len(mnist_images), size=2)
        left = centre_points(mnist_images[first])
        right = centre_points(mnist_images[second])
        if len(left) < 3 or len(right) < 3:
            return non_digit_picture(mnist_images, mnist_labels, random,
                                     run_together=run_together)
        shift = float(left[:, 0].max()) - float(random.uniform(0.0, 0.25))
        parts = warp([np.concatenate([left, right + np.array([shift, 0.0])])], random)
        return paint(parts, random)
    if kind < 0.85:
        points = _letter_points(NON_DIGIT_LETTERS[int(random.integers(len(NON_DIGIT_LETTERS)))])
        if len(points) < 3:
            return non_digit_picture(mnist_images, mnist_labels, random,
                                     run_together=run_together)
        return paint(warp([points], random), random)
    # A digit turned on its side.
    choices = np.flatnonzero(np.isin(mnist_labels, SIDEWAYS_DIGITS))
    image = np.rot90(mnist_images[int(choices[int(random.integers(len(choices)))])],
                     k=1 if random.random() < 0.5 else 3)
    points = centre_points(image)
    if len(points) < 3:
        return non_digit_picture(mnist_images, mnist_labels, random,
                                 run_together=run_together)
    return paint(warp([points], random), random)


def _work(task):
    kind, start, stop, seed, images, labels = task
    outputs = np.zeros((stop - start, 28, 28), dtype=np.float32)
    for offset, index in enumerate(range(start, stop)):
        random = np.random.default_rng([seed, index])
        if kind == "mnist":
            outputs[offset] = model_input(images[index])
        elif kind == "redrawn":
            outputs[offset] = redrawn_digit(images[index % len(images)],
                                            int(labels[index % len(labels)]), random)
        else:
            outputs[offset] = non_digit(images, labels, random)
    return outputs


def generate(kind: str, count: int, images: np.ndarray, labels: np.ndarray, *, seed: int,
             processes: int | None = None) -> np.ndarray:
    """`count` model inputs (count, 28, 28) float32 of one kind: mnist, redrawn or non_digit.

    For *redrawn*, example i redraws image i modulo the number of images, so several passes
    over MNIST give each digit several drawings.
    """
    chunk = 2_000
    tasks = [(kind, start, min(start + chunk, count), seed, images, labels)
             for start in range(0, count, chunk)]
    parts = map_in_processes(_work, tasks, processes)
    return np.concatenate(parts) if parts else np.zeros((0, 28, 28), np.float32)


def map_in_processes(work, tasks: list, processes: int | None = None) -> list:
    """`work` over `tasks` in forked worker processes (all cores by default), results in order.

    Forked, so the workers share the parent's MNIST arrays instead of receiving copies.
    """
    with multiprocessing.get_context("fork").Pool(processes or os.cpu_count() or 1) as pool:
        return pool.map(work, tasks)

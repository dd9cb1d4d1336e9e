"""Digits re-drawn as canvas strokes: our stand-in for people drawing in the browser.

Real users draw with a round pen of fixed width (the canvas default is about 18 px on a
280x280 canvas), either filling the canvas or at a natural size somewhere on it. We take
digits from writers the model never trained on (scikit-learn's bundled optdigits, 43
writers, and the MNIST test writers), reduce each to its centre line, and redraw that line
with such a pen, in both layouts. The model is never tuned on these.

Evaluation material, not training: the tests, the browser strokes (harness/strokes.py) and the
benchmarks draw with it; training renders its own canvas pictures (train/canvas_rendering.py).
"""

from __future__ import annotations

import dataclasses

import numpy as np
from PIL import Image
from scipy import ndimage

CANVAS_SIDE = 280
PEN_WIDTH = 18.0
LAYOUTS = ("fill", "natural")


@dataclasses.dataclass(frozen=True)
class DrawnDigits:
    """RGBA canvas images (N, 280, 280, 4) uint8, white ink on transparent, with labels."""

    canvases: np.ndarray
    labels: np.ndarray
    layout: str
    source: str


def centre_line(image: np.ndarray, target_height: int) -> np.ndarray:
    """The one-pixel skeleton of a grey digit image rescaled to `target_height` pixels tall."""
    from skimage.morphology import skeletonize

    image = np.asarray(image, dtype=np.float32)
    image = image / max(float(image.max()), 1e-6)
    rows = np.flatnonzero(image.max(axis=1) > 0.2)
    columns = np.flatnonzero(image.max(axis=0) > 0.2)
    cropped = image[rows[0]:rows[-1] + 1, columns[0]:columns[-1] + 1]
    scale = target_height / cropped.shape[0]
    # Cap the width so very wide digits still fit the canvas.
    scale = min(scale, (CANVAS_SIDE - PEN_WIDTH - 4) / cropped.shape[1])
    size = (max(1, round(cropped.shape[1] * scale)), max(1, round(cropped.shape[0] * scale)))
    smooth = np.asarray(Image.fromarray(cropped, "F").resize(size, Image.Resampling.BICUBIC))
    return skeletonize(smooth > 0.45)


def draw_on_canvas(skeleton: np.ndarray, top: int, left: int,
                   pen_width: float = PEN_WIDTH) -> np.ndarray:
    """Paint the skeleton with a round pen, anti-aliased, as an RGBA canvas image."""
    placed = np.zeros((CANVAS_SIDE, CANVAS_SIDE), dtype=bool)
    height, width = skeleton.shape
    placed[top:top + height, left:left + width] = skeleton
    distance = ndimage.distance_transform_edt(~placed)
    alpha = np.clip(pen_width / 2 + 0.5 - distance, 0.0, 1.0)
    canvas = np.zeros((CANVAS_SIDE, CANVAS_SIDE, 4), dtype=np.uint8)
    canvas[..., :3] = 255
    canvas[..., 3] = np.rint(alpha * 255).astype(np.uint8)
    return canvas


def redraw(image: np.ndarray, layout: str, random: np.random.Generator) -> np.ndarray:
    """One canvas drawing of a digit image in the given layout."""
    margin = int(PEN_WIDTH)
    if layout == "fill":
        skeleton = centre_line(image, CANVAS_SIDE - 2 * margin - 8)
    elif layout == "natural":
        skeleton = centre_line(image, int(random.integers(90, 181)))
    else:
        raise ValueError(f"Unknown layout {layout!r}; choose one of {', '.join(LAYOUTS)}.")
    height, width = skeleton.shape
    free_rows = max(0, CANVAS_SIDE - 2 * margin - height)
    free_columns = max(0, CANVAS_SIDE - 2 * margin - width)
    if layout == "fill":
        top, left = margin + free_rows // 2, margin + free_columns // 2
    else:
        top = margin + int(random.integers(0, free_rows + 1))
        left = margin + int(random.integers(0, free_columns + 1))
    return draw_on_canvas(skeleton, top, left)


def optdigits_source() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    return bunch.images.astype(np.float32) / 16.0, bunch.target.astype(np.int64)


def drawn_digits(images: np.ndarray, labels: np.ndarray, layout: str, *, source: str,
                 seed: int = 0) -> DrawnDigits:
    random = np.random.default_rng(seed)
    canvases = np.stack([redraw(image, layout, random) for image in images])
    return DrawnDigits(canvases=canvases, labels=np.asarray(labels), layout=layout,
                       source=source)

"""Pen strokes (ordered point lists) painted the way a browser canvas paints them.

The Draw page's canvas reports the strokes a person drew as well as the picture, and the
evaluation and training code turn pen trajectories into canvas pictures. Both need one
pen: round, of a fixed width, anti-aliased over about one pixel at its edge.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw

CANVAS_SIDE = 280

Stroke = np.ndarray  # (N, 2) float x, y in canvas pixels, y pointing down


SUPERSAMPLING = 4


def paint_strokes(strokes: Sequence[np.ndarray], *, pen_width: float,
                  side: int = CANVAS_SIDE, height: int | None = None) -> np.ndarray:
    """Alpha (height, side) float32 in 0..1 of `strokes` painted with a round pen.

    Pillow draws the strokes four times larger (lines, plus a disc at every point for round
    joins and caps) and box-reduces the result, which anti-aliases the edge over about one
    canvas pixel, as a browser does.
    """
    height = side if height is None else height
    large = Image.new("L", (side * SUPERSAMPLING, height * SUPERSAMPLING), 0)
    draw = ImageDraw.Draw(large)
    radius = pen_width * SUPERSAMPLING / 2
    for stroke in strokes:
        points = np.asarray(stroke, dtype=np.float64).reshape(-1, 2) * SUPERSAMPLING
        if len(points) == 0:
            continue
        if len(points) > 1:
            draw.line([tuple(point) for point in points], fill=255,
                      width=max(1, int(round(2 * radius))))
        for x, y in points:
            draw.ellipse((x - radius, y - radius, x + radius, y + radius), fill=255)
    reduced = large.reduce(SUPERSAMPLING)
    return np.asarray(reduced, dtype=np.float32) / np.float32(255.0)


def canvas_picture(strokes: Sequence[np.ndarray], *, pen_width: float,
                   side: int = CANVAS_SIDE, height: int | None = None) -> np.ndarray:
    """An RGBA uint8 canvas picture (white ink on transparent), as the Draw page sends."""
    alpha = paint_strokes(strokes, pen_width=pen_width, side=side, height=height)
    picture = np.zeros(alpha.shape + (4,), dtype=np.uint8)
    picture[..., :3] = 255
    picture[..., 3] = np.rint(alpha * 255).astype(np.uint8)
    return picture


def strokes_from_canvas_json(json_data, *, picture_width: int,
                             canvas_width: int = CANVAS_SIDE) -> list[np.ndarray]:
    """The pen paths of a drawable-canvas JSON scene, in drawing order, in picture pixels.

    The canvas (fabric.js) keeps each free-hand stroke as a path object whose commands
    (``M x y``, ``Q cx cy x y``, ``L x y``) hold absolute canvas coordinates; its picture may
    be larger than the canvas on high-density screens, hence the scale. Anything that is not
    a plain, untransformed path is skipped; an unusable scene gives no strokes, and the
    drawing is then read from its pixels alone.
    """
    if not isinstance(json_data, dict) or not isinstance(json_data.get("objects"), list):
        return []
    scale = picture_width / canvas_width if canvas_width else 1.0
    strokes = []
    for item in json_data["objects"]:
        if not isinstance(item, dict) or item.get("type") not in ("path", "Path"):
            continue
        if any(item.get(key, 1) != 1 for key in ("scaleX", "scaleY")) or item.get("angle", 0) != 0:
            continue
        points = []
        for command in item.get("path") or []:
            if not isinstance(command, (list, tuple)) or len(command) < 3:
                continue
            numbers = [value for value in command[1:] if isinstance(value, (int, float))]
            points.extend(zip(numbers[0::2], numbers[1::2]))
        if points:
            stroke = np.asarray(points, dtype=np.float64) * scale
            if np.all(np.isfinite(stroke)):
                strokes.append(stroke)
    return strokes

"""A drawing as one line of writing: the input of the sequence model that reads whole numbers.

Cutting touching or overlapping digits apart is where whole numbers go wrong (see
`mnist_core.segmentation`): a 7's bar over the next digit cannot be cut off with a vertical
line. The sequence model (`train/number_reader.py`) reads the whole line instead, left to
right, so it needs the drawing scaled to a fixed height the way a line of text is. Training
and serving both make their inputs with `line_input`, so they see the same pictures.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from PIL import Image

from mnist_core.preprocess import CROP_LEVEL

LINE_HEIGHT = 24
LINE_WIDTH = 120
# The ink is scaled to this height, leaving a margin above and below.
INK_HEIGHT = 20
SIDE_MARGIN = 2
# The model reads the line in columns of this many pixels (its pooling), one step each.
STEP_WIDTH = 4
STEPS = LINE_WIDTH // STEP_WIDTH


@dataclasses.dataclass(frozen=True)
class LinePlacement:
    """Where the ink went in its line, so a column the number reader points at (a step
    between two digits) can be found again in the drawing."""

    ink_left: int  # the ink's first column in the ink map
    line_left: int  # the line column that column landed on
    scale: float

    def ink_column(self, line_column: float) -> float:
        return self.ink_left + (line_column - self.line_left) / self.scale


def line_input(ink: np.ndarray) -> np.ndarray:
    """The ink (an `ink_map`, any size) as a (LINE_HEIGHT, LINE_WIDTH) float32 line in 0..1.

    The ink's box is scaled to INK_HEIGHT keeping its aspect, or narrower still when a long
    number would not fit the width, and centred. An empty map gives an empty line.
    """
    return placed_line(ink)[0]


def placed_line(ink: np.ndarray) -> tuple[np.ndarray, LinePlacement | None]:
    """`line_input` and where the ink sits in it (None for an empty line)."""
    line = np.zeros((LINE_HEIGHT, LINE_WIDTH), dtype=np.float32)
    rows = np.flatnonzero(ink.max(axis=1) > CROP_LEVEL)
    if rows.size == 0:
        return line, None
    columns = np.flatnonzero(ink.max(axis=0) > CROP_LEVEL)
    cropped = np.ascontiguousarray(ink[rows[0]:rows[-1] + 1, columns[0]:columns[-1] + 1],
                                   dtype=np.float32)
    height, width = cropped.shape
    scale = min(INK_HEIGHT / height, (LINE_WIDTH - 2 * SIDE_MARGIN) / width)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    # Box filtering (area averaging) when shrinking, as the ink is always shrunk a lot here.
    resized = np.asarray(Image.fromarray(cropped, "F").resize(size, Image.Resampling.BOX))
    peak = float(resized.max())
    if peak <= 0:
        return line, None
    top = (LINE_HEIGHT - size[1]) // 2
    left = (LINE_WIDTH - size[0]) // 2
    line[top:top + size[1], left:left + size[0]] = np.minimum(resized / peak, 1.0)
    return line, LinePlacement(ink_left=int(columns[0]), line_left=left, scale=size[0] / width)

"""Reading pen-drawn digits stored in the UNIPEN text format.

The real-handwriting development set (`../shared/data/pen-digits-dev/`) is kept in this
format: `.PEN_DOWN` blocks are strokes, numbered over the whole file; `.SEGMENT DIGIT a-b`
names the strokes of one digit and its label; `.COMMENT label writer sample` says who wrote
it. Coordinates are tablet units in a 500x500 box with y pointing up.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import numpy as np

DEFAULT_PATH = (Path(__file__).resolve().parents[2] / "shared" / "data" / "pen-digits-dev"
                / "pen-digits-train-writers.unipen")
TABLET_SIDE = 500.0

_SEGMENT = re.compile(r'\.SEGMENT\s+DIGIT\s+(\d+)(?:-(\d+))?\s+\S+\s+"(\d)"')


class DevelopmentSetMissing(FileNotFoundError):
    """The real-handwriting file is not where we were told to look."""


@dataclasses.dataclass(frozen=True)
class PenDigit:
    """One digit as a person drew it: strokes of (x, y) points, y pointing down."""

    label: int
    writer: int
    strokes: tuple[np.ndarray, ...]


def read_unipen(path: str | Path = DEFAULT_PATH) -> list[PenDigit]:
    """Every digit in the file, in file order, with y flipped to point down."""
    path = Path(path)
    if not path.is_file():
        raise DevelopmentSetMissing(
            f"The real-handwriting set is not at {path}. Pass its path (the file "
            f"pen-digits-train-writers.unipen from ../shared/data/pen-digits-dev/).")
    strokes: list[np.ndarray] = []
    segments: list[tuple[int, int, int, int]] = []
    current: list[tuple[float, float]] | None = None
    pending_segment: tuple[int, int, int] | None = None
    for line in path.read_text().splitlines():
        if line.startswith(".PEN_DOWN"):
            current = []
        elif line.startswith(".PEN_UP"):
            if current is not None:
                strokes.append(np.asarray(current, dtype=np.float64).reshape(-1, 2))
            current = None
        elif current is not None and line.strip():
            x, y = line.split()[:2]
            current.append((float(x), TABLET_SIDE - float(y)))
        elif line.startswith(".SEGMENT"):
            match = _SEGMENT.match(line)
            if match:
                first = int(match.group(1))
                last = int(match.group(2)) if match.group(2) else first
                pending_segment = (first, last, int(match.group(3)))
        elif line.startswith(".COMMENT") and pending_segment is not None:
            writer = int(line.split()[2])
            segments.append((*pending_segment, writer))
            pending_segment = None
    return [PenDigit(label=label, writer=writer,
                     strokes=tuple(strokes[index] for index in range(first, last + 1)))
            for first, last, label, writer in segments]

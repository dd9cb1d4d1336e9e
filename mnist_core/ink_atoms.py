"""Cutting a drawing's ink into *atoms*: the pieces its candidate digits are made of.

The atoms are the ink's connected pieces, and pieces wide enough to hold two digits are cut
again at candidate columns (where the outline dips, the thinnest places in the ink, and even
divisions); given the pen's strokes, they are the ink of each stroke, in drawing order
(`stroke_atoms`). `mnist_core.segmentation` makes runs of neighbouring atoms into candidate
digits and chooses among them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np
from scipy import ndimage

# A run of more atoms than this is never one digit.
MAX_ATOMS_PER_DIGIT = 4
# Pictures with more pieces than this are scribbles or noise: their smallest neighbours are
# joined first so the search stays bounded.
MAX_ATOMS = 28
# Pieces smaller than this share of the largest are specks.
SPECK_SHARE = 0.04
# A piece is considered for cutting when it is wider than this many times the line height.
# Two digits written close together are often no wider than tall (a 7 over a 4, a 1 against
# a 9), so even a piece that looks like one digit is cut; the whole piece stays a candidate,
# and the model, trained on such cuts (train/number_candidates.py), says which it is.
CUTTABLE_WIDTH = 0.45
# A cut at an outline dip needs the dip and rise to reach this many line heights; a piece
# narrower than NARROW_PIECE_WIDTH line heights is cut at such dips only, NARROW_PIECE_CUTS at most.
CUT_DEPTH = 0.1
NARROW_PIECE_WIDTH = 1.0
NARROW_PIECE_CUTS = 2
# The width of a typical digit, in line heights, for even divisions of a wide piece.
TYPICAL_DIGIT_WIDTH = 0.62
MAX_CUTS_PER_PIECE = 6
# A piece narrower than this many line heights may be one wide digit: it is cut into at
# most MAX_ATOMS_PER_DIGIT atoms, so the whole piece stays a candidate.
SINGLE_DIGIT_WIDTH = 1.6
# Strokes (see stroke_atoms): ink within this many pixels of a second stroke's path, beyond
# its distance to the nearest, belongs to both; if more than this share of the ink is far
# from every stroke, the strokes are not the picture's and the ink is cut as usual.
STROKE_SHARED_DISTANCE = 1.5
UNEXPLAINED_INK_SHARE = 0.02


@dataclasses.dataclass(frozen=True)
class Atom:
    """One piece of ink (or part of one, between two cuts), in working-image pixels."""

    mask: np.ndarray  # bool, within the atom's box
    top: int
    left: int
    bottom: int
    right: int
    # Which connected piece of ink it comes from: neighbouring atoms of one piece were cut.
    piece: int = 0

    @property
    def centre_column(self) -> float:
        columns = np.nonzero(self.mask)[1]
        return self.left + float(columns.mean()) if columns.size else float(self.left)


def _ink_box(mask: np.ndarray) -> tuple[slice, slice] | None:
    """The rows and columns that hold ink: the rest of the picture changes nothing below."""
    rows = np.flatnonzero(mask.any(axis=1))
    if rows.size == 0:
        return None
    columns = np.flatnonzero(mask.any(axis=0))
    return slice(int(rows[0]), int(rows[-1]) + 1), slice(int(columns[0]), int(columns[-1]) + 1)


def _pieces(mask: np.ndarray) -> list[Atom]:
    box = _ink_box(mask)
    if box is None:
        return []
    # Labelled within the ink's box only (a small digit fills little of the canvas).
    labels, count = ndimage.label(mask[box], structure=np.ones((3, 3), dtype=bool))
    top, left = box[0].start, box[1].start
    boxes = ndimage.find_objects(labels)
    areas = np.bincount(labels.ravel(), minlength=count + 1)[1:]
    largest = float(areas.max())
    pieces = []
    for index, (rows, columns) in enumerate(boxes):
        if areas[index] < SPECK_SHARE * largest:
            continue
        pieces.append(Atom(mask=labels[rows, columns] == index + 1, top=top + rows.start,
                           left=left + columns.start, bottom=top + rows.stop,
                           right=left + columns.stop, piece=index))
    return pieces


def lone_piece(mask: np.ndarray) -> Atom | None:
    """The ink as one atom when it is a single connected piece, else None."""
    box = _ink_box(mask)
    if box is None:
        return None
    labels, count = ndimage.label(mask[box], structure=np.ones((3, 3), dtype=bool))
    if count != 1:
        return None
    return Atom(mask=labels == 1, top=box[0].start, left=box[1].start, bottom=box[0].stop,
                right=box[1].stop)


def _cut_columns(piece: Atom, line_height: int, pen_width: float) -> list[int]:
    """Candidate cut columns (relative to the piece) for a piece that may hold two digits.

    Where two digits touch, the ink's upper outline dips and its lower outline rises
    between them (two 0s touching look like a figure of eight lying down), so the best
    candidates are the columns where both are deepest; then the thinnest columns, then
    even divisions by a typical digit width.
    """
    width = piece.right - piece.left
    if width < CUTTABLE_WIDTH * line_height:
        return []
    mask = piece.mask
    filled = mask.any(axis=0)
    height = mask.shape[0]
    top = np.where(filled, mask.argmax(axis=0), height).astype(np.float64)
    bottom = np.where(filled, height - 1 - mask[::-1].argmax(axis=0), 0).astype(np.float64)
    highest_left = np.minimum.accumulate(top)
    highest_right = np.minimum.accumulate(top[::-1])[::-1]
    lowest_left = np.maximum.accumulate(bottom)
    lowest_right = np.maximum.accumulate(bottom[::-1])[::-1]
    dip = top - np.maximum(highest_left, highest_right)
    rise = np.minimum(lowest_left, lowest_right) - bottom
    depth = ndimage.uniform_filter1d(np.where(filled, dip + rise, height), size=3)
    profile = ndimage.uniform_filter1d(mask.sum(axis=0).astype(np.float64),
                                       size=max(3, int(pen_width / 2)))
    # A cut leaves at least most of a pen width on each side: a 1 is no wider than its pen.
    margin = max(int(min(0.2 * line_height, 0.8 * pen_width)), 2)
    # A piece no wider than a digit is cut only where two digits plainly meet (a deep dip and
    # rise): most such pieces are one digit, and each cut adds candidates to read.
    narrow = width < NARROW_PIECE_WIDTH * line_height
    cuts: list[int] = []
    for values, wanted in ((depth, 1.0), (profile, -1.0)):
        if narrow and wanted < 0:
            continue
        inner = wanted * values[margin:width - margin]
        if inner.size <= 2:
            continue
        peaks = np.flatnonzero((inner[1:-1] >= inner[:-2]) & (inner[1:-1] >= inner[2:])) + 1
        if wanted > 0:
            peaks = peaks[inner[peaks] >= CUT_DEPTH * line_height]
        cuts.extend(int(position + margin) for position in peaks[np.argsort(-inner[peaks],
                                                                              kind="stable")])
    if not narrow:
        digits = max(2, int(round(width / (TYPICAL_DIGIT_WIDTH * line_height))))
        cuts.extend(int(round(width * part / digits)) for part in range(1, digits))
    spacing = max(int(0.18 * line_height), 2)
    limit = (NARROW_PIECE_CUTS if narrow else MAX_ATOMS_PER_DIGIT - 1
             if width < SINGLE_DIGIT_WIDTH * line_height else MAX_CUTS_PER_PIECE)
    chosen: list[int] = []
    for cut in cuts:
        if margin <= cut <= width - margin and all(abs(cut - other) >= spacing
                                                    for other in chosen):
            chosen.append(cut)
        if len(chosen) >= limit:
            break
    return sorted(chosen)


def _split(piece: Atom, cuts: list[int]) -> list[Atom]:
    parts = []
    for start, stop in zip([0, *cuts], [*cuts, piece.right - piece.left]):
        part = np.zeros_like(piece.mask)
        part[:, start:stop] = piece.mask[:, start:stop]
        rows = np.flatnonzero(part.any(axis=1))
        if rows.size == 0:
            continue
        parts.append(Atom(mask=part[rows[0]:rows[-1] + 1, start:stop],
                          top=piece.top + int(rows[0]), left=piece.left + start,
                          bottom=piece.top + int(rows[-1]) + 1, right=piece.left + stop,
                          piece=piece.piece))
    return parts


def _pen_width(mask: np.ndarray) -> float:
    """Area over half the perimeter: the width of a long stroke."""
    box = _ink_box(mask)
    mask = mask[box] if box is not None else mask
    area = float(mask.sum())
    # The pixels whose four neighbours are all ink (a 3x3-cross erosion, by slicing: cheaper
    # than ndimage for one small mask per drawing).
    padded = np.pad(mask, 1)
    inner = (padded[1:-1, 1:-1] & padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2]
             & padded[1:-1, 2:])
    perimeter = area - float(inner.sum())
    return area / max(perimeter / 2.0, 1.0)


def is_dot(mask: np.ndarray) -> bool:
    """A tap of the pen: a mark no longer than a pen's width and a third.

    The pen's reach is the largest distance from the edge inside the mark, so a small
    digit drawn with a broad pen (a little 0) is still longer than its pen is wide.
    """
    if mask.sum() == 0:
        return True
    if max(mask.shape) >= 1.35 * min(mask.shape):
        # Longer than wide: the pen's reach is at most half the width, so not a tap.
        return False
    if max(mask.shape) >= 1.35 * 2 * np.sqrt(mask.sum() / np.pi):
        # No disc inside the mark can be larger than a disc of the mark's whole area.
        return False
    radius = float(ndimage.distance_transform_edt(np.pad(mask, 1)).max())
    return max(mask.shape) < 1.35 * 2 * radius


def atoms(mask: np.ndarray) -> list[Atom]:
    pieces = _pieces(mask)
    if not pieces:
        return []
    rows = np.flatnonzero(mask.any(axis=1))
    line_height = int(rows[-1] - rows[0] + 1)
    atoms: list[Atom] = []
    pen_width = None
    for piece in pieces:
        if piece.right - piece.left < CUTTABLE_WIDTH * line_height:
            atoms.append(piece)
            continue
        pen_width = _pen_width(mask) if pen_width is None else pen_width
        atoms.extend(_split(piece, _cut_columns(piece, line_height, pen_width)))
    atoms.sort(key=lambda atom: atom.centre_column)
    if len(atoms) > MAX_ATOMS:
        # Noise or a scribble of many pieces: neighbours (left to right) are joined into
        # MAX_ATOMS runs of about equal count, in one pass whatever the number of pieces.
        runs = np.array_split(np.arange(len(atoms)), MAX_ATOMS)
        atoms = [union([atoms[index] for index in run]) for run in runs]
    return atoms


def union(atoms: list[Atom]) -> Atom:
    top = min(atom.top for atom in atoms)
    left = min(atom.left for atom in atoms)
    bottom = max(atom.bottom for atom in atoms)
    right = max(atom.right for atom in atoms)
    mask = np.zeros((bottom - top, right - left), dtype=bool)
    for atom in atoms:
        mask[atom.top - top:atom.bottom - top, atom.left - left:atom.right - left] |= atom.mask
    return Atom(mask=mask, top=top, left=left, bottom=bottom, right=right, piece=atoms[0].piece)


def stroke_atoms(mask: np.ndarray, strokes: Sequence[np.ndarray],
                  scale: float) -> list[Atom] | None:
    """The ink of each stroke (runs of strokes when there are very many), in drawing order.

    Every ink pixel goes to the stroke whose path passes nearest, and to any other passing
    within STROKE_SHARED_DISTANCE of that, so where two strokes cross both keep the crossing.
    None when there is no ink, or the strokes leave ink unexplained (they are not this
    picture's).
    """
    if not mask.any():
        return None
    paths = [np.asarray(stroke, dtype=np.float64).reshape(-1, 2) / max(scale, 1e-9)
             for stroke in strokes]
    paths = [path for path in paths if len(path) and np.all(np.isfinite(path))]
    if not paths:
        return None
    runs = np.array_split(np.arange(len(paths)), min(len(paths), MAX_ATOMS))
    height, width = mask.shape
    distances = []
    for run in runs:
        line = np.zeros(mask.shape, dtype=bool)
        for index in run:
            points = _densified(paths[index])
            columns = np.clip(np.rint(points[:, 0]).astype(np.int64), 0, width - 1)
            rows = np.clip(np.rint(points[:, 1]).astype(np.int64), 0, height - 1)
            line[rows, columns] = True
        distances.append(ndimage.distance_transform_edt(~line))
    distances = np.stack(distances)
    nearest = distances.min(axis=0)
    reach = _pen_width(mask) / 2 + STROKE_SHARED_DISTANCE + 1.0
    if (nearest[mask] > reach).mean() > UNEXPLAINED_INK_SHARE:
        return None
    atoms = []
    for index, distance in enumerate(distances):
        own = mask & (distance <= nearest + STROKE_SHARED_DISTANCE)
        rows, columns = np.flatnonzero(own.any(axis=1)), np.flatnonzero(own.any(axis=0))
        if rows.size == 0:
            continue
        atoms.append(Atom(mask=own[rows[0]:rows[-1] + 1, columns[0]:columns[-1] + 1],
                          top=int(rows[0]), left=int(columns[0]), bottom=int(rows[-1]) + 1,
                          right=int(columns[-1]) + 1, piece=index))
    return atoms


def _densified(points: np.ndarray, spacing: float = 0.5) -> np.ndarray:
    """A polyline's points with more in between, none further than `spacing` apart."""
    if len(points) < 2:
        return points
    steps = np.maximum(np.ceil(np.linalg.norm(np.diff(points, axis=0), axis=1) / spacing), 1)
    pieces = [np.linspace(start, end, int(count), endpoint=False)
              for start, end, count in zip(points[:-1], points[1:], steps)]
    return np.concatenate([*pieces, points[-1:]])

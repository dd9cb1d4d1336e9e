"""Splitting a drawing into digits when digits touch, overlap or come in several strokes.

People write numbers close together: neighbouring digits touch, a 7's bar or a 9's tail
reaches over the next digit, a 4 or a 5 is drawn in two strokes. No rule on the pieces of
ink alone gets all of these right, so the picture is *over-segmented* and the classifier
decides:
1. the ink is cut into *atoms* (`mnist_core.ink_atoms`): its connected pieces, and pieces
   wide enough to hold two digits are cut again at candidate columns (where the outline
   dips, the thinnest places in the ink, and even divisions);
2. every run of up to four neighbouring atoms (left to right) is a *candidate* digit, made
   into a 28x28 model input exactly as a lone digit would be;
3. the model scores every candidate, and the grouping of all atoms into digits with the
   best total (log-probability that each group is a digit, plus shape priors: a digit is
   not a sliver of the others' height, and two pieces stacked in the same columns are one
   digit) is the reading.
Callers without a model (`preprocess.preprocess`) get the grouping the priors alone prefer.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence

import numpy as np
from scipy import ndimage

from mnist_core import ink_atoms
from mnist_core.ink_atoms import MAX_ATOMS_PER_DIGIT, Atom
from mnist_core.number_line import LinePlacement, placed_line
from mnist_core.preprocess import (INK_MASK_LEVEL, MAX_DIGITS, MODEL_SIDE, DigitBox,
                                   decoded_image, ink_map, normalise_digit)

# Log-prior penalties.
SLIVER_HEIGHT = 0.42
SLIVER_PENALTY = 4.0
STACKED_OVERLAP = 0.6
STACKED_PENALTY = 3.0
CUT_PENALTY = 0.3
# Every digit costs this much, so a split must be clearly likelier than one digit.
DIGIT_COST = 0.5
WIDE_WIDTH = 1.3
# A drawing cut into more atoms than one candidate may hold is a candidate as a whole too,
# unless it is more than this many times as wide as tall (MNIST's widest digits reach 2.0; on
# 10,000 MNIST training digits read through the product, 1.6 left 39 split in two, 2.0 left 8).
WHOLE_CANDIDATE_MAX_ASPECT = 2.0
# Without a model, a wide candidate costs more than two digits saved (DIGIT_COST + 1.0 each), so
# three separate pieces side by side stay three digits, but less than one cut (each also pays
# MODEL_FREE_CUT_PENALTY), so a wide digit cut in two is joined again.
WIDE_PENALTY = 3.2
MODEL_FREE_CUT_PENALTY = 2.0


@dataclasses.dataclass(frozen=True)
class Segmentation:
    """Every candidate digit of one picture and how to choose among them.

    `spans[k]` is the run of atoms [start, stop) that candidate k covers; `boxes[k]` is where
    it sits in the original picture; `candidate_inputs([k, ...])` are their 28x28 model inputs,
    made on first use (a lone digit the model is sure of as a whole needs no other; see
    `whole_is_certain`), and `candidates` all of them.
    """

    spans: tuple[tuple[int, int], ...]
    boxes: tuple[DigitBox, ...]
    priors: np.ndarray
    atom_count: int
    # Column extents (left, right) of each candidate, for the pairwise prior.
    extents: tuple[tuple[int, int], ...]
    dots: tuple[bool, ...]
    # Candidates wider than a digit could be: what a caller without a model avoids.
    wide: tuple[bool, ...]
    # Row extents (top, bottom) of each candidate.
    heights: tuple[tuple[int, int], ...]
    # The atoms themselves (masks in the working picture, the ink map's pixels), left to right
    # (or in drawing order, see by_strokes).
    atoms: tuple[Atom, ...] = ()
    # Atoms are the person's strokes in the order drawn (see segment), not pieces left to right.
    by_strokes: bool = False
    # The ink map (None when blank) and the factor from its pixels back to the picture's: the
    # number reader's line is made from it, and cut_at cuts it where the reader saw digits end.
    ink: np.ndarray | None = None
    scale_back: float = 1.0
    # The ink's mask (found once with the ink), each candidate's ink (its atoms joined), and
    # the model inputs made from them so far.
    mask: np.ndarray | None = None
    groups: tuple[Atom, ...] = ()
    _inputs: dict[int, np.ndarray] = dataclasses.field(default_factory=dict, init=False, repr=False,
                                                       compare=False)

    @property
    def is_blank(self) -> bool:
        return self.atom_count == 0

    @property
    def candidate_count(self) -> int:
        return len(self.spans)

    def candidate_inputs(self, indices: Sequence[int]) -> np.ndarray:
        """The model inputs (len(indices), 28, 28) of these candidates, each made once."""
        if len(indices) and self.ink is not None:
            for index in indices:
                if index not in self._inputs:
                    self._inputs[index] = _model_input(self.ink, self.mask, self.groups[index])
        if not len(indices):
            return np.zeros((0, MODEL_SIDE, MODEL_SIDE), np.float32)
        return np.stack([self._inputs[index] for index in indices])

    @property
    def candidates(self) -> np.ndarray:
        """Every candidate's model input, (K, 28, 28)."""
        return self.candidate_inputs(range(self.candidate_count))

    @property
    def whole_candidate(self) -> int | None:
        """The candidate that is all of the ink as one digit, if there is one."""
        try:
            return self.spans.index((0, self.atom_count))
        except ValueError:
            return None

    def whole_is_certain(self, digit_log_probability: float) -> bool:
        """Whether the whole ink, as one digit this likely, is the best grouping whatever the
        other candidates score.

        Any grouping into two digits or more scores at most ``-2 * DIGIT_COST``: every prior
        and log-probability is at most 0, and boundaries only subtract. The whole ink as one
        digit scores ``prior - DIGIT_COST + log p``; above that bound, the others need not be
        made or scored, and the reading is the same.
        """
        whole = self.whole_candidate
        return whole is not None and (
            float(self.priors[whole]) - DIGIT_COST + digit_log_probability > -2 * DIGIT_COST + 1e-9)

    @functools.cached_property
    def _placed_line(self) -> tuple[np.ndarray | None, LinePlacement | None]:
        # Made on first use: most drawings are lone digits the number reader is never asked about.
        return placed_line(self.ink) if self.ink is not None else (None, None)

    @property
    def line(self) -> np.ndarray | None:
        """The whole drawing as one line of writing, for the number reader (mnist_core.number_line)."""
        return self._placed_line[0]

    @property
    def line_placement(self) -> LinePlacement | None:
        """Where the ink sits in `line`."""
        return self._placed_line[1]

    @property
    def ink_aspect(self) -> float:
        """How many times wider than tall all the ink is."""
        if not self.atoms:
            return 0.0
        width = max(atom.right for atom in self.atoms) - min(atom.left for atom in self.atoms)
        height = max(atom.bottom for atom in self.atoms) - min(atom.top for atom in self.atoms)
        return width / max(height, 1)

    def cut_at(self, line_columns: Sequence[float]) -> tuple[np.ndarray, tuple[DigitBox, ...]] | None:
        """Model inputs and boxes of the ink cut with vertical lines at these columns of the
        line (left to right), one per stretch between them; None when a stretch has no ink.

        For a number the number reader read as more digits than the atoms can be grouped
        into (two digits in one piece the cuts missed): its digits still need what each
        looked like and where it was, as every stored reading does.
        """
        if self.line_placement is None:
            return None
        mask = self.ink >= INK_MASK_LEVEL
        edges = [0, *(int(round(self.line_placement.ink_column(column)))
                      for column in line_columns), mask.shape[1]]
        candidates, boxes = [], []
        for left, right in zip(edges[:-1], edges[1:]):
            left, right = max(left, 0), min(right, mask.shape[1])
            part = np.zeros_like(mask)
            if right > left:
                part[:, left:right] = mask[:, left:right]
            rows, columns = np.nonzero(part)
            if rows.size == 0:
                return None
            top, bottom = int(rows.min()), int(rows.max()) + 1
            start, stop = int(columns.min()), int(columns.max()) + 1
            piece = Atom(mask=part[top:bottom, start:stop], top=top, left=start, bottom=bottom,
                         right=stop)
            candidates.append(_model_input(self.ink, mask, piece))
            boxes.append(DigitBox(left=int(start * self.scale_back), top=int(top * self.scale_back),
                                  right=int(stop * self.scale_back),
                                  bottom=int(bottom * self.scale_back)))
        return np.stack(candidates).astype(np.float32), tuple(boxes)

    def group(self, index: int) -> Atom:
        """The ink of candidate `index`: its atoms joined (training labels it by whose ink it is)."""
        start, stop = self.spans[index]
        return ink_atoms.union(list(self.atoms[start:stop]))

    def choose(self, digit_log_probabilities: np.ndarray | None = None) -> list[int]:
        """The candidates (left to right) of the best grouping of all atoms into digits.

        `digit_log_probabilities[k]` is the log-probability that candidate k is a digit;
        without it only the priors decide.
        """
        return self.best_grouping(digit_log_probabilities)[0]

    def best_grouping(self, digit_log_probabilities: np.ndarray | None = None,
                      digit_count: int | None = None) -> tuple[list[int], float]:
        """`choose`'s candidates and the grouping's total score (comparable between two
        segmentations of the same picture, as both group all of its ink).

        With `digit_count`, the best grouping into exactly that many digits (what the number
        reader counted, see `mnist_core.inference`), or ([], -inf) when there is none.
        """
        if self.atom_count == 0:
            return [], 0.0
        scores = self.priors - DIGIT_COST
        if digit_log_probabilities is not None:
            scores = scores + np.asarray(digit_log_probabilities, dtype=np.float64)
        else:
            # Without a model: as few digits as the shapes allow.
            scores = scores - 1.0 - WIDE_PENALTY * np.asarray(self.wide, dtype=np.float64)
        index_of = {span: index for index, span in enumerate(self.spans)}
        counted = digit_count is not None
        # best[k][n]: the best total of a grouping of atoms [0, stop of k) into n digits (n is
        # always 0 when the count is free) that ends with k, and the state before it.
        best: dict[int, dict[int, tuple[float, tuple[int, int] | None]]] = {}
        for index, (start, stop) in sorted(enumerate(self.spans), key=lambda item: item[1][1]):
            if start == 0:
                best[index] = {1 if counted else 0: (scores[index], None)}
                continue
            options: dict[int, tuple[float, tuple[int, int] | None]] = {}
            for previous_start in range(max(0, start - MAX_ATOMS_PER_DIGIT), start):
                previous = index_of.get((previous_start, start))
                if previous is None or previous not in best:
                    continue
                step = scores[index] - self._boundary_penalty(
                    previous, index, with_model=digit_log_probabilities is not None)
                for count, (total, _) in best[previous].items():
                    count_here = count + 1 if counted else 0
                    if counted and count_here > digit_count:
                        continue
                    if count_here not in options or total + step > options[count_here][0]:
                        options[count_here] = (total + step, (previous, count))
            if options:
                best[index] = options
        wanted = digit_count if counted else 0
        endings = [index for index, (_, stop) in enumerate(self.spans)
                   if stop == self.atom_count and wanted in best.get(index, {})]
        if not endings:
            return [], float("-inf")
        current = max(endings, key=lambda index: best[index][wanted][0])
        total = float(best[current][wanted][0])
        chosen: list[int] = []
        state: tuple[int, int] | None = (current, wanted)
        while state is not None:
            chosen.append(state[0])
            state = best[state[0]][state[1]][1]
        chosen.reverse()
        if self.by_strokes:
            # Atoms came in drawing order; digits are read left to right.
            chosen.sort(key=lambda index: sum(self.extents[index]))
        return [index for index in chosen if not self.dots[index]][:MAX_DIGITS], total

    def _boundary_penalty(self, first: int, second: int, *, with_model: bool = True) -> float:
        """What it costs to end one digit at candidate `first` and start the next at `second`.

        Pieces that share columns with one above the other, or that share most columns, are
        one digit (the lifted-pen bar of a 5, the two strokes of a 4); and cutting one piece
        of ink in two is less likely than a boundary between pieces, since most neighbouring
        digits do not touch.
        """
        penalty = 0.0
        left_a, right_a = self.extents[first]
        left_b, right_b = self.extents[second]
        overlap = min(right_a, right_b) - max(left_a, left_b)
        narrower = max(min(right_a - left_a, right_b - left_b), 1)
        if overlap >= STACKED_OVERLAP * narrower and not self.by_strokes:
            # (Strokes in the same columns may be two digits written over each other; the
            # model judges those. Pieces of ink there are one digit drawn in two strokes.)
            penalty += STACKED_PENALTY
        elif overlap > 0:
            top_a, bottom_a = self.heights[first]
            top_b, bottom_b = self.heights[second]
            shared_rows = min(bottom_a, bottom_b) - max(top_a, top_b)
            if shared_rows <= 0.5 * min(bottom_a - top_a, bottom_b - top_b):
                penalty += STACKED_PENALTY
        start = self.spans[second][0]
        if self.atoms[start - 1].piece == self.atoms[start].piece:
            # Without a model to say both halves are digits, a cut is taken only for very wide ink.
            penalty += CUT_PENALTY if with_model else MODEL_FREE_CUT_PENALTY
        return penalty


def segment(image, strokes: Sequence[np.ndarray] | None = None) -> Segmentation:
    """All candidate digits of a picture (array, PIL image, bytes or path).

    With `strokes` that account for the picture's ink, the segmentation stroke by stroke
    (see `segmentations`); otherwise the one from the ink's pieces.
    """
    return segmentations(image, strokes)[-1]


@dataclasses.dataclass(frozen=True)
class DrawingInk:
    """A picture's ink at working size, its mask, and the factor from its pixels back to the picture's."""

    ink: np.ndarray
    mask: np.ndarray
    scale_back: float


def drawing_ink(image) -> DrawingInk:
    """The ink of a picture (array, PIL image, bytes or path), found once for every segmentation of it."""
    from PIL import Image

    if isinstance(image, (str, bytes, bytearray, memoryview)) or hasattr(image, "__fspath__"):
        # Decoded within the process's decode budget; only the ink at working size is kept.
        with decoded_image(image) as picture:
            original_height = picture.size[1]
            ink = ink_map(picture)
        del picture
    else:
        if isinstance(image, Image.Image):
            original_height = image.size[1]
        else:
            image = np.asarray(image)
            original_height = image.shape[0] if image.ndim >= 2 else 0
        ink = ink_map(image)
    scale_back = original_height / ink.shape[0] if ink.shape[0] else 1.0
    return DrawingInk(ink=ink, mask=ink >= INK_MASK_LEVEL, scale_back=scale_back)


def segmentations(image, strokes: Sequence[np.ndarray] | None = None) -> list[Segmentation]:
    """The picture's segmentation from its ink's pieces, and from its strokes when given.

    `strokes` are the pen's paths in the order drawn, in the picture's pixels, as the Draw
    page's canvas reports them: then the atoms are the strokes themselves, so digits whose ink
    overlaps are still told apart (each digit is a run of consecutive strokes). Strokes that
    do not account for the picture's ink are ignored.
    """
    return segmentations_of(drawing_ink(image), strokes)


def segmentations_of(drawing: DrawingInk, strokes: Sequence[np.ndarray] | None = None) -> list[Segmentation]:
    """`segmentations` of ink already found."""
    ink, mask, scale_back = drawing.ink, drawing.mask, drawing.scale_back
    found = [_segmentation(ink, mask, ink_atoms.atoms(mask), scale_back)]
    stroke_atoms = ink_atoms.stroke_atoms(mask, strokes, scale_back) if strokes else None
    if stroke_atoms is not None:
        found.append(_segmentation(ink, mask, stroke_atoms, scale_back, by_strokes=True))
    return found


def lone_piece(drawing: DrawingInk) -> Segmentation | None:
    """The ink as one candidate digit, when it is one connected piece (not even a speck
    beside it) no wider than a digit may be; else None.

    Most drawings are such a lone digit. `segmentations_of` always has this very candidate
    (same model input, box and prior) among those of such ink, cut or not, so when the model
    is sure of it (`Segmentation.whole_is_certain`) it is the reading, and the piece need not
    be cut at all.
    """
    piece = ink_atoms.lone_piece(drawing.mask)
    if piece is None or piece.right - piece.left > WHOLE_CANDIDATE_MAX_ASPECT * (piece.bottom - piece.top):
        return None
    return _segmentation(drawing.ink, drawing.mask, [piece], drawing.scale_back)


def _segmentation(ink: np.ndarray, mask: np.ndarray, atoms: list[Atom], scale_back: float,
                  by_strokes: bool = False) -> Segmentation:
    """Every candidate of these atoms, as model inputs, with what the grouping needs."""
    if not atoms:
        return Segmentation(spans=(), boxes=(), priors=np.zeros(0), atom_count=0, extents=(),
                            dots=(), wide=(), heights=())
    rows = np.flatnonzero(mask.any(axis=1))
    line_height = float(rows[-1] - rows[0] + 1)
    runs = [(start, stop) for start in range(len(atoms))
            for stop in range(start + 1, min(start + MAX_ATOMS_PER_DIGIT, len(atoms)) + 1)]
    columns = np.flatnonzero(mask.any(axis=0)) if len(atoms) > MAX_ATOMS_PER_DIGIT else None
    if columns is not None and columns[-1] - columns[0] + 1 <= WHOLE_CANDIDATE_MAX_ASPECT * line_height:
        # A drawing cut into many atoms that is not wide enough to be several digits: the whole
        # of it is a candidate too, so the model can say it is one digit (see Segmentation.choose).
        runs.append((0, len(atoms)))
    groups, spans, boxes, priors, extents, dots, wide, heights = [], [], [], [], [], [], [], []
    for start, stop in runs:
        group = ink_atoms.union(atoms[start:stop])
        groups.append(group)
        spans.append((start, stop))
        boxes.append(DigitBox(left=int(group.left * scale_back),
                              top=int(group.top * scale_back),
                              right=int(group.right * scale_back),
                              bottom=int(group.bottom * scale_back)))
        height = group.bottom - group.top
        sliver = len(atoms) > 1 and height < SLIVER_HEIGHT * line_height
        priors.append(-SLIVER_PENALTY if sliver else 0.0)
        extents.append((group.left, group.right))
        heights.append((group.top, group.bottom))
        dots.append(ink_atoms.is_dot(group.mask))
        wide.append(group.right - group.left > WIDE_WIDTH * max(height, 0.6 * line_height))
    return Segmentation(spans=tuple(spans), boxes=tuple(boxes), priors=np.asarray(priors),
                        atom_count=len(atoms), extents=tuple(extents), dots=tuple(dots),
                        wide=tuple(wide), heights=tuple(heights), atoms=tuple(atoms),
                        by_strokes=by_strokes, ink=ink, scale_back=scale_back, mask=mask,
                        groups=tuple(groups))


# Neighbours' ink is grown by two pixels (a 4-neighbour step twice) before it is left out, so
# its anti-aliased fringe goes with it; one pass with the diamond is cheaper than two iterations.
_TWO_PIXEL_DIAMOND = ndimage.iterate_structure(ndimage.generate_binary_structure(2, 1), 2)


def _model_input(ink: np.ndarray, mask: np.ndarray, group: Atom) -> np.ndarray:
    """The group's own ink, its anti-aliased fringe included and its neighbours' left out."""
    height, width = mask.shape
    top, left = max(group.top - 2, 0), max(group.left - 2, 0)
    bottom, right = min(group.bottom + 2, height), min(group.right + 2, width)
    own = np.zeros((bottom - top, right - left), dtype=bool)
    own[group.top - top:group.bottom - top, group.left - left:group.right - left] = group.mask
    others = mask[top:bottom, left:right] & ~own
    if others.any():
        others = ndimage.binary_dilation(others, structure=_TWO_PIXEL_DIAMOND) & ~own
    return normalise_digit(np.where(others, 0.0, ink[top:bottom, left:right]))

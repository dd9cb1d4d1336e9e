"""Over-segmentation and the choice among candidate digits, without a model and with one."""

from __future__ import annotations

import numpy as np
import pytest

from mnist_core.preprocess import preprocess
from mnist_core.segmentation import segment
from mnist_core.strokes import canvas_picture


def _circle(centre_x, centre_y, radius, count=60):
    angles = np.linspace(0, 2 * np.pi, count)
    return np.stack([centre_x + radius * np.cos(angles), centre_y + radius * np.sin(angles)], axis=1)


def test_a_digit_in_two_strokes_that_share_columns_stays_one():
    # A lifted-pen 4: the open angle, then the stem crossing its bar.
    picture = canvas_picture([np.array([[110, 50], [80, 160], [190, 160]]),
                              np.array([[160, 70], [160, 240]])], pen_width=16)
    assert preprocess(picture).digit_count == 1


def test_digits_with_a_clear_gap_are_separate_and_in_order():
    picture = canvas_picture([np.array([[60, 80], [60, 200]]), _circle(190, 140, 50)],
                             pen_width=14)
    result = preprocess(picture)
    assert result.digit_count == 2
    assert result.boxes[0].right < result.boxes[1].left


def test_touching_digits_are_cut_into_candidates():
    # Two rings that touch: one piece of ink, wider than a digit.
    picture = canvas_picture([_circle(95, 140, 45), _circle(185, 140, 45)], pen_width=14)
    segmentation = segment(picture)
    assert segmentation.atom_count >= 2
    # One candidate is exactly each ring: a cut was made where they touch.
    rings = [box for box in segmentation.boxes
             if abs(box.left - 43) <= 4 and abs(box.right - 140) <= 4
             or abs(box.left - 140) <= 4 and abs(box.right - 237) <= 4]
    assert len(rings) == 2
    # A model sure of each ring and unsure of the pair chooses the pair of rings.
    scores = np.full(len(segmentation.spans), np.log(0.05))
    for index, (start, stop) in enumerate(segmentation.spans):
        box = segmentation.boxes[index]
        if (box.right <= 150 or box.left >= 130) and 60 <= box.right - box.left <= 120:
            scores[index] = np.log(0.99)
    chosen = segmentation.choose(scores)
    assert [segmentation.boxes[index] for index in chosen] == sorted(rings, key=lambda box: box.left)


def test_a_tap_is_not_a_digit_but_a_small_zero_is_one():
    assert segment(canvas_picture([np.array([[140.0, 140.0]])], pen_width=18)).choose() == []
    small_zero = canvas_picture([_circle(140, 140, 14)], pen_width=18)
    assert len(segment(small_zero).choose()) == 1


def test_blank_pictures_have_no_candidates():
    segmentation = segment(np.zeros((280, 280, 4), np.uint8))
    assert segmentation.is_blank and segmentation.choose() == []
    assert segmentation.candidates.shape == (0, 28, 28)


@pytest.mark.parametrize("count", [30, 200])
def test_many_pieces_keep_the_search_bounded(count):
    random = np.random.default_rng(count)
    points = random.uniform(10, 270, (count, 2))
    picture = canvas_picture([point[None, :] + [[0, 0], [3, 3]] for point in points], pen_width=6)
    segmentation = segment(picture)
    assert segmentation.atom_count <= 28
    assert len(segmentation.candidates) <= 28 * 4


def test_a_digit_cut_into_many_atoms_is_also_a_candidate_whole(mnist, recognizer, monkeypatch):
    """Wide MNIST digits (a 5 with a long flag, a 7 with a foot) are cut into more atoms than one
    candidate may hold; the whole drawing is then a candidate too and the model reads one digit."""
    many_atoms = [index for index in range(len(mnist.test_images)) if segment(mnist.test_images[index]).atom_count > 4]
    assert len(many_atoms) >= 10, "too few test digits cut into many atoms to say anything"
    readings = recognizer.read_segmented([segment(mnist.test_images[index]) for index in many_atoms])
    one_digit = [reading for reading in readings if len(reading.digits) == 1]
    split = [reading for reading in readings if len(reading.digits) > 1]
    # (A refusal as "not a digit" is the model's error, counted by the model-quality tests.)
    assert len(split) <= 0.03 * len(readings), f"{len(split)} of {len(readings)} split"
    right = sum(reading.digit == mnist.test_labels[index] for index, reading in zip(many_atoms, readings)
                if len(reading.digits) == 1)
    # The digit read is the right one nearly always; over all 38 or so hard digits, refusals
    # (the model's errors) included, most are read right (the 2026-12-08 model: 34 of 38).
    assert right >= 0.9 * len(one_digit)
    assert right >= 0.85 * len(readings)
    # Without the whole candidate, the same digits are read as several far more often.
    from mnist_core import segmentation

    monkeypatch.setattr(segmentation, "WHOLE_CANDIDATE_MAX_ASPECT", 0.0)
    without = recognizer.read_segmented([segment(mnist.test_images[index]) for index in many_atoms])
    assert sum(len(reading.digits) == 1 for reading in without) < len(one_digit) - 5
    wide_and_split = segment(np.hstack([mnist.test_images[0], mnist.test_images[1], mnist.test_images[2]]))
    assert (0, wide_and_split.atom_count) not in wide_and_split.spans or wide_and_split.atom_count <= 4, \
        "three digits side by side are too wide to be one candidate"


def test_two_touching_digits_no_wider_than_tall_are_cut():
    # A 1 leaning on a 0, written close: the ink is one piece, taller than wide.
    stem = np.array([[72, 50], [72, 230]])
    ring = _circle(138, 140, 52)
    picture = canvas_picture([stem, ring], pen_width=16)
    mask = picture[..., 3] > 128
    columns, rows = np.flatnonzero(mask.any(axis=0)), np.flatnonzero(mask.any(axis=1))
    assert columns[-1] - columns[0] < rows[-1] - rows[0]
    segmentation = segment(picture)
    assert segmentation.atom_count >= 2
    # Some candidate holds the stem alone and another the ring alone, so a model can choose "10".
    lefts = [box for box in segmentation.boxes if box.right <= 95]
    rights = [box for box in segmentation.boxes if box.left >= 70 and box.right >= 180]
    assert lefts and rights
    scores = np.full(len(segmentation.spans), np.log(0.05))
    for index, box in enumerate(segmentation.boxes):
        if box in lefts or (box in rights and box.left <= 86):
            scores[index] = np.log(0.99)
    chosen = segmentation.choose(scores)
    assert len(chosen) == 2 and segmentation.boxes[chosen[0]].right <= 95


def test_strokes_tell_apart_digits_whose_ink_overlaps():
    # A 1 drawn through the left side of a 0: one piece of ink no cut can divide.
    stem = np.array([[80.0, 50.0], [80.0, 230.0]])
    ring = _circle(135, 140, 55)
    picture = canvas_picture([stem, ring], pen_width=16)
    assert not segment(picture).by_strokes
    from_strokes = segment(picture, [stem, ring])
    assert from_strokes.by_strokes and from_strokes.atom_count == 2
    stem_box, ring_box = (from_strokes.boxes[from_strokes.spans.index(span)] for span in [(0, 1), (1, 2)])
    assert stem_box.right <= 100 and ring_box.left <= 85 and ring_box.right >= 185
    # A model sure of each alone reads two digits, left to right, even when drawn right to left.
    backwards = segment(picture, [ring, stem])
    scores = np.array([np.log(0.99) if stop - start == 1 else np.log(0.05) for start, stop in backwards.spans])
    chosen = backwards.choose(scores)
    assert [backwards.boxes[index].right <= 100 for index in chosen] == [True, False]


def test_strokes_that_are_not_the_pictures_are_ignored():
    picture = canvas_picture([_circle(140, 140, 60)], pen_width=16)
    elsewhere = [np.array([[20.0, 20.0], [60.0, 30.0]])]
    assert not segment(picture, elsewhere).by_strokes
    assert segment(picture, []).by_strokes is False

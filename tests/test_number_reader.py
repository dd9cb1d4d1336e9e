"""The number reader: its line input, its decoding, and what it changes in a reading."""

from __future__ import annotations

import numpy as np
import pytest

from mnist_core.number_line import INK_HEIGHT, LINE_HEIGHT, LINE_WIDTH, STEPS, line_input
from mnist_core.number_reading import BLANK, CLASSES, greedy_decode
from mnist_core.segmentation import segment
from mnist_core.strokes import canvas_picture


def _logits_for(path: list[int], sureness: float = 8.0) -> np.ndarray:
    logits = np.zeros((len(path), CLASSES))
    logits[np.arange(len(path)), path] = sureness
    return logits


def test_a_best_path_collapses_runs_and_drops_blanks():
    path = [BLANK, 3, 3, BLANK, 3, BLANK, BLANK, 7, 7, 0] + [BLANK] * (STEPS - 10)
    reading = greedy_decode(_logits_for(path))
    assert reading.text == "3370"
    assert [(digit.first_step, digit.last_step) for digit in reading.digits] == [
        (1, 2), (4, 4), (7, 8), (9, 9)]
    assert all(digit.confidence > 0.99 for digit in reading.digits)
    assert 0.0 < reading.path_probability <= 1.0


def test_a_digit_s_confidence_leaves_the_blank_out_and_doubt_lowers_the_path():
    logits = np.zeros((STEPS, CLASSES))
    logits[:, BLANK] = 5.0
    # One step unsure between 1 and 7, with the blank a close third.
    logits[10, [1, 7, BLANK]] = [6.0, 5.5, 5.0]
    reading = greedy_decode(logits)
    assert reading.text == "1"
    digit = reading.digits[0]
    assert digit.confidence == pytest.approx(np.exp(0.5) / (np.exp(0.5) + 1 + 8 * np.exp(-5.5)),
                                             rel=1e-3)
    assert sum(digit.probabilities) == pytest.approx(1.0)
    assert reading.path_probability < greedy_decode(_logits_for([BLANK] * 10 + [1] + [BLANK] * (
        STEPS - 11))).path_probability


def test_only_blanks_read_as_no_digits():
    assert greedy_decode(_logits_for([BLANK] * STEPS)).text == ""


def test_the_line_keeps_the_ink_s_aspect_at_a_fixed_height_and_centres_it():
    ink = np.zeros((140, 140), np.float32)
    ink[40:80, 20:100] = 1.0  # twice as wide as tall
    line = line_input(ink)
    assert line.shape == (LINE_HEIGHT, LINE_WIDTH) and line.dtype == np.float32
    rows = np.flatnonzero(line.max(axis=1) > 0.2)
    columns = np.flatnonzero(line.max(axis=0) > 0.2)
    assert len(rows) == INK_HEIGHT
    assert len(columns) == 2 * INK_HEIGHT
    assert abs((columns[0] + columns[-1]) / 2 - (LINE_WIDTH - 1) / 2) <= 1
    assert line.max() == pytest.approx(1.0)


def test_a_long_number_is_shrunk_to_fit_the_width_and_an_empty_map_gives_an_empty_line():
    ink = np.zeros((60, 2000), np.float32)
    ink[10:50, 5:1995] = 1.0
    columns = np.flatnonzero(line_input(ink).max(axis=0) > 0.2)
    assert columns[0] >= 1 and columns[-1] <= LINE_WIDTH - 2
    assert not line_input(np.zeros((50, 50), np.float32)).any()


def test_a_grouping_can_be_asked_for_a_number_of_digits():
    # Three strokes far apart, each too narrow to be cut: three atoms.
    picture = canvas_picture([np.array([[x, 80], [x, 200]]) for x in (60, 140, 220)],
                             pen_width=12)
    segmentation = segment(picture)
    assert segmentation.atom_count == 3
    three, _ = segmentation.best_grouping(digit_count=3)
    assert sorted(segmentation.spans[index] for index in three) == [(0, 1), (1, 2), (2, 3)]
    two, two_score = segmentation.best_grouping(digit_count=2)
    assert len(two) == 2
    covered = sorted(segmentation.spans[index] for index in two)
    assert covered[0][0] == 0 and covered[-1][1] == 3 and covered[0][1] == covered[1][0]
    none, none_score = segmentation.best_grouping(digit_count=4)
    assert none == [] and none_score == float("-inf") < two_score
    assert segmentation.line is not None and segmentation.line.shape == (LINE_HEIGHT, LINE_WIDTH)
    assert segmentation.ink_aspect == pytest.approx((160 + 12) / (120 + 12), abs=0.05)



def test_one_piece_of_ink_is_cut_where_the_line_says_and_boxes_land_on_the_picture():
    # Two upright bars joined by a long horizontal bar: one piece, as touching digits are.
    picture = canvas_picture([np.array([[60, 80], [60, 200], [220, 200], [220, 80]])],
                             pen_width=12)
    segmentation = segment(picture)
    placement = segmentation.line_placement
    line_middle = placement.line_left + placement.scale * (
        140 / segmentation.scale_back - placement.ink_left)
    assert placement.ink_column(line_middle) == pytest.approx(140 / segmentation.scale_back)
    candidates, boxes = segmentation.cut_at([line_middle])
    assert candidates.shape == (2, 28, 28) and candidates.max(axis=(1, 2)).min() > 0.5
    left, right = boxes
    # Split at x = 140 in the picture's pixels (the ink map is smaller), each keeping one bar.
    assert left.left <= 60 - 6 + 4 and abs(left.right - 140) <= 4
    assert abs(right.left - 140) <= 4 and right.right >= 220 + 6 - 4
    assert left.bottom == pytest.approx(206, abs=4)
    # A cut past the ink's end leaves a stretch with no ink: no digits from it.
    assert segmentation.cut_at([line_middle, 119.0]) is None


# ---------------------------------------------------------------------------------------
# The shipped number reader, in the product's reading
# ---------------------------------------------------------------------------------------

def _composed_test_numbers(mnist, count: int, seed: int = 11):
    """Numbers of 2 to 4 MNIST *test* digits written close together, touching or overlapping,
    as training composes them (training never sees the test digits): (picture, text) pairs."""
    import dataclasses as dataclasses_module

    from train.number_candidates import SETTINGS, compose, paint_number

    settings = dataclasses_module.replace(SETTINGS, lengths=(2, 3, 4))
    random = np.random.default_rng(seed)
    numbers = []
    while len(numbers) < count:
        length = int(random.choice(settings.lengths))
        indices = random.integers(len(mnist.test_images), size=length)
        composed = compose(mnist.test_images, mnist.test_labels, indices, random, settings)
        if composed is None:
            continue
        digits, pen = composed
        picture = paint_number(digits, pen)
        numbers.append((picture, "".join(str(int(mnist.test_labels[index])) for index in indices)))
    return numbers


@pytest.fixture(scope="module")
def digit_model_alone(recognizer):
    from mnist_core.inference import Recognizer

    assert recognizer.number_reader is not None, "the number reader ships next to the model"
    return Recognizer(recognizer.network, model_version="digit-model-alone")


def test_the_number_reader_reads_touching_numbers_the_cuts_get_wrong(mnist, recognizer,
                                                                     digit_model_alone):
    numbers = _composed_test_numbers(mnist, 240)
    with_reader = [recognizer.read(picture) for picture, _ in numbers]
    alone = [digit_model_alone.read(picture) for picture, _ in numbers]
    exact_with = np.mean([reading.text == text for reading, (_, text) in zip(with_reader, numbers)])
    exact_alone = np.mean([reading.text == text for reading, (_, text) in zip(alone, numbers)])
    assert exact_with >= exact_alone + 0.05, (exact_with, exact_alone)
    changed = [reading for reading in with_reader if reading.read_by_number_reader]
    assert changed
    for reading in changed:
        # Each digit it read has a model input and a box, as every stored reading needs.
        assert len(reading.model_inputs) == len(reading.digits) == len(reading.boxes)
        assert reading.number == reading.text


def test_lone_digits_and_non_digits_stay_the_digit_model_s(mnist, recognizer, digit_model_alone):
    from evaluation.non_digits import non_digit_pictures

    pictures = [*mnist.test_images[:300], *non_digit_pictures("scribbles", 100, seed=3)]
    for picture in pictures:
        with_reader, alone = recognizer.read(picture), digit_model_alone.read(picture)
        if len(alone.digits) < 2 and with_reader.read_by_number_reader:
            assert len(with_reader.digits) >= 2
        if alone.is_not_a_digit or alone.is_blank:
            assert (with_reader.is_not_a_digit, with_reader.text) == (alone.is_not_a_digit, "")
    assert recognizer.model_version.endswith("+" + recognizer.number_reader.model_version)


def test_a_file_that_is_not_a_number_reader_is_refused_when_loaded():
    from mnist_core.networks import ModelFileError
    from mnist_core.number_reading import NumberReader

    with pytest.raises(ModelFileError, match="does not take"):
        NumberReader.from_path("models/mnist_cnn.tflite")


def _reader_that_always_reads(path: list[int]):
    """A number reader whose network gives every line the same steps (for the takeover rule)."""
    from mnist_core.number_reading import NumberReader

    logits = _logits_for(path).astype(np.float32)
    return NumberReader(lambda lines: np.repeat(logits[None], len(lines), axis=0),
                        model_version="fixed-path")


def test_the_reader_takes_over_with_two_digits_or_more_never_with_one(mnist, recognizer):
    from mnist_core.inference import Recognizer

    # Two MNIST test digits far apart: the digit model reads them as two digits.
    picture = np.zeros((28, 84), np.float32)
    picture[:, :28], picture[:, 56:] = mnist.test_images[0], mnist.test_images[1]
    alone = Recognizer(recognizer.network).read(picture)
    assert len(alone.digits) == 2
    other = [digit for digit in range(10) if digit not in {d.digit for d in alone.digits}][:2]
    one_digit = [other[0]] * 4 + [BLANK] * (STEPS - 4)
    two_digits = [other[0]] * 4 + [BLANK] * 4 + [other[1]] * 4 + [BLANK] * (STEPS - 12)
    read_one = Recognizer(recognizer.network,
                          number_reader=_reader_that_always_reads(one_digit)).read(picture)
    read_two = Recognizer(recognizer.network,
                          number_reader=_reader_that_always_reads(two_digits)).read(picture)
    # A sure reading of one digit leaves the digit model's two; a sure reading of two replaces it.
    assert (read_one.text, read_one.read_by_number_reader) == (alone.text, False)
    assert (read_two.text, read_two.read_by_number_reader) == (f"{other[0]}{other[1]}", True)
    assert len(read_two.model_inputs) == len(read_two.boxes) == 2

"""Reading pen trajectories in the UNIPEN text format, and the benchmark's word when the set is absent."""

from __future__ import annotations

import numpy as np
import pytest

from evaluation.unipen import DevelopmentSetMissing, read_unipen

SAMPLE = """.INCLUDE        dene.doc
.LEXICON "0" "1"
.HIERARCHY      DIGIT

.SEGMENT DIGIT    0 ? "7"
.COMMENT 7 3  12
.PEN_DOWN
 100  400
 300  400
 200  100
.PEN_UP

.DT 100
.SEGMENT DIGIT    1-2 ? "4"
.COMMENT 4 5  1
.PEN_DOWN
 100  400
 100  250
 250  250
.PEN_UP
.PEN_DOWN
 220  400
 220  100
.PEN_UP
"""


def test_segments_strokes_labels_and_writers(tmp_path):
    path = tmp_path / "sample.unipen"
    path.write_text(SAMPLE)
    seven, four = read_unipen(path)
    assert (seven.label, seven.writer, len(seven.strokes)) == (7, 3, 1)
    assert (four.label, four.writer, len(four.strokes)) == (4, 5, 2)
    # y points up on the tablet and down on a canvas.
    np.testing.assert_array_equal(seven.strokes[0], [[100, 100], [300, 100], [200, 400]])
    np.testing.assert_array_equal(four.strokes[1][:, 1], [100, 400])


def test_a_missing_file_says_where_to_find_it(tmp_path):
    with pytest.raises(DevelopmentSetMissing, match="pen-digits-dev"):
        read_unipen(tmp_path / "absent.unipen")


def test_the_benchmark_says_plainly_when_the_set_is_absent(tmp_path, capsys):
    from bench.drawn_digits import main

    assert main(["--data", str(tmp_path / "absent.unipen")]) == 2
    assert "not at" in capsys.readouterr().err


def test_a_composed_number_keeps_each_digits_strokes_in_drawing_order():
    from evaluation.canvas_layouts import compose_number
    from evaluation.unipen import PenDigit
    from mnist_core.strokes import canvas_picture

    seven = PenDigit(label=7, writer=1, strokes=(np.array([[0.0, 0.0], [200.0, 0.0], [80.0, 400.0]]),
                                                 np.array([[40.0, 200.0], [180.0, 200.0]])))
    one = PenDigit(label=1, writer=1, strokes=(np.array([[100.0, 0.0], [100.0, 400.0]]),))
    number = compose_number([seven, one, seven], np.random.default_rng(2))
    assert number.text == "717"
    assert [len(strokes) for strokes in number.digit_strokes] == [2, 1, 2]
    # Painting every digit's strokes, in order, makes exactly the number's picture.
    np.testing.assert_array_equal(canvas_picture(number.strokes, pen_width=number.pen_width), number.picture)
    # Left to right: each digit's middle lies right of the one before it.
    middles = [np.mean([(stroke[:, 0].min() + stroke[:, 0].max()) / 2 for stroke in digit])
               for digit in number.digit_strokes]
    assert middles == sorted(middles)

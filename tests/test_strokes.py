"""The canvas pen (round, of the width asked for, anti-aliased at its edge) and the canvas's strokes."""

from __future__ import annotations

import numpy as np
import pytest

from mnist_core.strokes import canvas_picture, paint_strokes, strokes_from_canvas_json
from tests.conftest import fabric_scene


@pytest.mark.parametrize("pen_width", [6.0, 12.0, 18.0])
def test_a_straight_stroke_is_as_wide_as_the_pen(pen_width):
    alpha = paint_strokes([np.array([[40.0, 140.0], [240.0, 140.0]])], pen_width=pen_width)
    # Summed across the stroke, coverage is the pen's width (the edge is shared by two pixels).
    assert alpha[:, 140].sum() == pytest.approx(pen_width, abs=0.6)
    # Round caps: the stroke reaches half a pen beyond its end points, no further.
    row = alpha[140]
    assert row[int(40 - pen_width / 2) - 2] == 0 and row[int(240 + pen_width / 2) + 2] == 0
    assert row[40] == pytest.approx(1.0) and row[240] == pytest.approx(1.0)


def test_a_tap_is_a_disc_with_a_soft_edge():
    alpha = paint_strokes([np.array([[100.0, 100.0]])], pen_width=18.0)
    assert alpha.sum() == pytest.approx(np.pi * 9 ** 2, rel=0.05)
    edge = alpha[(alpha > 0) & (alpha < 1)]
    assert edge.size > 20, "the edge is anti-aliased"


def test_canvas_picture_is_white_ink_on_transparent():
    picture = canvas_picture([np.array([[20.0, 20.0], [60.0, 80.0]])], pen_width=10.0)
    assert picture.shape == (280, 280, 4) and picture.dtype == np.uint8
    assert np.all(picture[..., :3] == 255)
    assert picture[..., 3].max() == 255 and picture[0, 279, 3] == 0


def test_strokes_off_the_canvas_are_clipped_not_an_error():
    alpha = paint_strokes([np.array([[-50.0, -50.0], [-10.0, -10.0]]),
                           np.array([[270.0, 140.0], [400.0, 140.0]])], pen_width=12.0)
    assert alpha[:, :10].max() == 0 or alpha[:5, :5].max() <= 1
    assert alpha[140, 275] == pytest.approx(1.0)


def test_canvas_json_gives_the_strokes_in_order_scaled_to_the_picture():
    first = [(10.0, 20.0), (30.0, 40.0), (50.0, 40.0)]
    second = [(100.0, 100.0), (120.0, 150.0)]
    scene = fabric_scene([first, second])
    scene["objects"].insert(1, {"type": "rect", "left": 5})
    strokes = strokes_from_canvas_json(scene, picture_width=560)
    assert len(strokes) == 2
    # Every command's points, doubled for a picture twice the canvas's size.
    assert strokes[0][0].tolist() == [20.0, 40.0] and strokes[0][-1].tolist() == [100.0, 80.0]
    assert strokes[1].min(axis=0).tolist() == [200.0, 200.0]
    assert strokes[1].max(axis=0).tolist() == [240.0, 300.0]


@pytest.mark.parametrize("scene", [None, {}, {"objects": "x"}, {"objects": [None, 3, {"type": "path"}]},
                                   {"objects": [{"type": "path", "path": [["M", "a", 1], ["L"]]}]},
                                   {"objects": [{"type": "path", "scaleX": 2, "path": [["M", 1, 1]]}]},
                                   {"objects": [{"type": "path", "path": [["M", float("nan"), 1]]}]}])
def test_unusable_canvas_json_gives_no_strokes(scene):
    assert strokes_from_canvas_json(scene, picture_width=280) == []

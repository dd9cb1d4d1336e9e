"""Preprocessing invariants: the same digit gives the same 28x28 however it is presented."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from evaluation.drawings import CANVAS_SIDE, centre_line, draw_on_canvas
from mnist_core.preprocess import (ImageDecodeError, MODEL_SIDE, ink_map, load_image,
                                   preprocess)


def canvas_drawing(digit_image: np.ndarray, *, height: int = 200, top: int = 30,
                   left: int = 60, pen_width: float = 18.0) -> np.ndarray:
    return draw_on_canvas(centre_line(digit_image, height), top, left, pen_width)


@pytest.fixture(scope="module")
def seven(mnist) -> np.ndarray:
    return mnist.test_images[0].astype(np.float32) / 255


def only_digit(image) -> np.ndarray:
    result = preprocess(image)
    assert result.digit_count == 1
    return result.digits[0]


def assert_close(first: np.ndarray, second: np.ndarray, tolerance: float = 0.06) -> None:
    assert first.shape == second.shape == (MODEL_SIDE, MODEL_SIDE)
    difference = float(np.abs(first - second).mean())
    assert difference < tolerance, f"mean absolute difference {difference:.3f}"


def test_output_is_mnist_like(seven):
    digit = only_digit(canvas_drawing(seven))
    assert digit.dtype == np.float32 and digit.max() == pytest.approx(1.0)
    rows = np.flatnonzero(digit.max(axis=1) > 0.05)
    columns = np.flatnonzero(digit.max(axis=0) > 0.05)
    # Fitted into the 20x20 box (plus a pixel of anti-aliasing), mass in the middle.
    assert max(rows[-1] - rows[0], columns[-1] - columns[0]) + 1 <= 22
    weights = digit[digit > 0]
    centre = (np.array(np.nonzero(digit)).T * weights[:, None]).sum(axis=0) / weights.sum()
    assert np.all(np.abs(centre - 14.0) <= 0.75)


def test_shifted_digit_gives_the_same_input(seven):
    reference = only_digit(canvas_drawing(seven, top=10, left=10))
    assert_close(only_digit(canvas_drawing(seven, top=60, left=80)), reference)


def test_scaled_digit_gives_the_same_input(seven):
    # The pen keeps its width relative to the digit, as when the whole drawing is zoomed.
    large = only_digit(canvas_drawing(seven, height=240, top=10, left=10, pen_width=20))
    small = only_digit(canvas_drawing(seven, height=120, top=60, left=60, pen_width=10))
    assert_close(large, small)


def test_polarity_colour_and_transparency_do_not_matter(seven):
    canvas = canvas_drawing(seven)
    reference = only_digit(canvas)
    alpha = canvas[..., 3].astype(np.float32) / 255
    white_on_black = np.rint(alpha * 255).astype(np.uint8)
    black_on_white = 255 - white_on_black
    paper, pen = np.array([250, 240, 200]), np.array([20, 40, 160])
    coloured = np.rint(paper + (pen - paper) * alpha[..., None]).astype(np.uint8)
    for variant in (white_on_black, black_on_white, coloured,
                    np.dstack([black_on_white] * 3), Image.fromarray(black_on_white)):
        assert_close(only_digit(variant), reference, tolerance=0.03)


def test_encoded_files_read_like_arrays(seven, tmp_path):
    canvas = canvas_drawing(seven)
    reference = only_digit(canvas)
    for suffix, image in ((".png", Image.fromarray(canvas, "RGBA")),
                          (".jpg", Image.fromarray(255 - canvas[..., 3]).convert("RGB")),
                          (".png", Image.fromarray(canvas[..., 3]).convert("P"))):
        path = tmp_path / f"digit{suffix}"
        image.save(path, quality=90)
        assert_close(only_digit(path), reference, tolerance=0.04)
        assert_close(only_digit(path.read_bytes()), reference, tolerance=0.04)


def test_sixteen_bit_and_cmyk_images_are_read(seven):
    canvas = canvas_drawing(seven)
    reference = only_digit(canvas)
    sixteen_bit = Image.fromarray(canvas[..., 3].astype(np.uint16) * 257)
    cmyk = Image.fromarray(255 - canvas[..., 3]).convert("CMYK")
    for image in (sixteen_bit, cmyk):
        buffer = io.BytesIO()
        image.save(buffer, format="TIFF" if image.mode == "CMYK" else "PNG")
        assert_close(only_digit(buffer.getvalue()), reference, tolerance=0.04)


def test_mnist_images_are_left_almost_unchanged(mnist):
    images = mnist.test_images[:200].astype(np.float32) / 255
    differences = [np.abs(only_digit(image) - image).mean() for image in images]
    assert np.median(differences) < 0.02


@pytest.mark.parametrize("image", [
    np.zeros((280, 280, 4), np.uint8),
    np.full((280, 280, 3), 255, np.uint8),
    np.random.default_rng(1).integers(0, 12, (280, 280)).astype(np.uint8),
], ids=["transparent", "white", "faint-noise"])
def test_blank_input_reads_as_nothing_drawn(image):
    result = preprocess(image)
    assert result.is_blank and result.digits.shape == (0, 28, 28)


def test_a_single_dot_is_not_a_digit():
    canvas = draw_on_canvas(np.pad(np.ones((1, 1), bool), 0), 140, 140)
    assert preprocess(canvas).is_blank


def test_specks_beside_a_digit_are_ignored(seven):
    canvas = canvas_drawing(seven, left=40)
    canvas[250:253, 250:253, 3] = 255
    assert preprocess(canvas).digit_count == 1


def test_a_row_of_digits_is_split_and_kept_in_order(mnist):
    indices = [1, 2, 3, 4]  # test-set digits 2, 1, 0, 4
    singles = [only_digit(canvas_drawing(mnist.test_images[index] / 255, height=150))
               for index in indices]
    strip = np.zeros((240, 4 * 180, 4), np.uint8)
    for position, index in enumerate(indices):
        drawing = canvas_drawing(mnist.test_images[index] / 255, height=150, top=40, left=40)
        strip[:, position * 180:position * 180 + 180] = drawing[20:260, 30:210]
    result = preprocess(strip)
    assert result.digit_count == 4
    assert [box.left for box in result.boxes] == sorted(box.left for box in result.boxes)
    for single, split in zip(singles, result.digits):
        assert_close(split, single, tolerance=0.05)


def test_a_digit_in_pieces_stays_one_digit():
    # A "5" drawn in two strokes: the top bar does not touch the body.
    canvas = np.zeros((CANVAS_SIDE, CANVAS_SIDE, 4), np.uint8)
    skeleton = np.zeros((200, 150), bool)
    skeleton[5, 40:140] = True               # top bar, lifted pen
    skeleton[20:90, 40] = True               # down stroke
    yy, xx = np.mgrid[0:200, 0:150]
    bowl = (np.abs(np.hypot(yy - 135, xx - 70) - 55) < 0.8) & (xx > 40)
    skeleton |= bowl
    canvas = draw_on_canvas(skeleton, 40, 60)
    assert preprocess(canvas).digit_count == 1


@pytest.mark.parametrize("payload, message", [
    (b"", "empty"),
    (b"this is not an image", "not a readable"),
])
def test_unreadable_bytes_raise_a_clear_error(payload, message):
    with pytest.raises(ImageDecodeError, match=message):
        load_image(payload)


def test_truncated_png_is_refused(seven):
    buffer = io.BytesIO()
    Image.fromarray(canvas_drawing(seven)).save(buffer, format="PNG")
    with pytest.raises(ImageDecodeError):
        preprocess(buffer.getvalue()[: len(buffer.getvalue()) // 2])


def test_decompression_bomb_is_refused():
    buffer = io.BytesIO()
    Image.new("1", (30000, 30000)).save(buffer, format="PNG")
    with pytest.raises(ImageDecodeError, match="limit|too large"):
        preprocess(buffer.getvalue())


@pytest.mark.parametrize("shape", [(1, 1), (1, 10000), (10000, 1), (3, 3, 4)])
def test_degenerate_shapes_do_not_crash(shape):
    preprocess(np.full(shape, 255, np.uint8))


def test_bad_arrays_are_refused():
    with pytest.raises(ImageDecodeError):
        ink_map(np.zeros((10, 10, 7), np.uint8))
    with pytest.raises(ImageDecodeError):
        ink_map(np.full((10, 10), np.nan, np.float32))

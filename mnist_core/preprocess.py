"""From whatever a person gives us to the 28x28 images the model reads.

MNIST digits were made by cropping the ink, scaling it into a 20x20 box with its aspect
ratio kept, anti-aliasing, and centring its centre of mass in a 28x28 field. A drawing
read any other way looks unlike anything the model saw, so every input (canvas strokes,
uploads, scans, photos) goes through the same steps here. A row of digits is split into
one such image per digit, read left to right.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from mnist_core.decode_budget import DECODE_BUDGET, PixelBudget

MODEL_SIDE = 28
DIGIT_BOX_SIDE = 20
# Ink is found at no more than this many pixels along the shorter side (by whole-number box
# reduction): ample detail for a 20-pixel digit, and the cost stays bounded for any input.
WORKING_SIDE_LIMIT = 160
# Refuse images whose decoded size could exhaust memory (decompression bombs).
MAX_INPUT_PIXELS = 40_000_000
# And whose longer side is absurd for a picture of digits: a 1 x 39,000,000 strip passes the
# pixel limit but took 5 s to reduce. Sixteen digits of 1,000 pixels each still fit.
MAX_INPUT_SIDE = 20_000
MAX_DIGITS = 16
# Decoded pictures above this many pixels are box-reduced by Pillow, in their own pixel type,
# before they become float32: a 36-megapixel RGBA PNG of a few hundred kB would otherwise
# take over 1 GB and seconds as floats. Their longer side is brought within room for
# MAX_DIGITS digits at working detail with wide gaps, so a 40,000,000 x 1 strip stays cheap.
PILLOW_REDUCTION_ABOVE_PIXELS = 2_000_000
WORKING_LONG_SIDE_LIMIT = WORKING_SIDE_LIMIT * MAX_DIGITS * 4

# Ink below this (on a 0..1 scale of the strongest ink) is anti-aliasing or noise.
INK_MASK_LEVEL = 0.35
CROP_LEVEL = 0.2
# The strongest ink must differ from the background by this much (0..1) to count.
MINIMUM_CONTRAST = 0.12


class ImageDecodeError(ValueError):
    """The input is not an image we can read."""


@dataclasses.dataclass(frozen=True)
class DigitBox:
    """Where one digit sits in the original image, in pixels: left, top, right, bottom."""

    left: int
    top: int
    right: int
    bottom: int


@dataclasses.dataclass(frozen=True)
class PreprocessedImage:
    """The model inputs of one picture: one (28, 28) float32 image per digit, left to right."""

    digits: np.ndarray
    boxes: tuple[DigitBox, ...]

    @property
    def is_blank(self) -> bool:
        return len(self.boxes) == 0

    @property
    def digit_count(self) -> int:
        return len(self.boxes)


def load_image(source: str | os.PathLike | bytes | Image.Image) -> Image.Image:
    """Decode a file path, encoded bytes or a PIL image, refusing oversized images."""
    if isinstance(source, Image.Image):
        return source
    with _decode_errors():
        return _decoded(_opened(source))


@contextlib.contextmanager
def decoded_image(source: str | os.PathLike | bytes | Image.Image,
                  budget: PixelBudget = DECODE_BUDGET) -> Iterator[Image.Image]:
    """`load_image` within the process's decode budget, held until the caller's block ends.

    The header gives the size before any pixel is decoded, so a picture waits for room in
    the budget first; the caller drops the full-size image (keeping only what it found at
    working size) before leaving the block.
    """
    if isinstance(source, Image.Image):
        yield source
        return
    with _decode_errors():
        image = _opened(source)
    width, height = image.size
    with budget.hold(width * height):
        with _decode_errors():
            image = _decoded(image)
        yield image


def _opened(source: str | os.PathLike | bytes) -> Image.Image:
    """The picture's header read and its size checked; no pixel decoded yet."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        if len(source) == 0:
            raise ImageDecodeError("The image is empty (0 bytes).")
        image = Image.open(io.BytesIO(bytes(source)))
    else:
        path = Path(source)
        if not path.is_file():
            raise ImageDecodeError(f"No such file: {path}.")
        image = Image.open(path)
    width, height = image.size
    if width * height > MAX_INPUT_PIXELS:
        raise ImageDecodeError(
            f"The image is {width}x{height} pixels; the limit is "
            f"{MAX_INPUT_PIXELS:,} pixels.")
    if max(width, height) > MAX_INPUT_SIDE:
        raise ImageDecodeError(
            f"The image is {width}x{height} pixels; neither side may be longer than "
            f"{MAX_INPUT_SIDE:,} pixels.")
    return image


def _decoded(image: Image.Image) -> Image.Image:
    if image.mode in ("P", "PA"):
        image = image.convert("RGBA")
    # Reading it here turns a truncated file into an error now, not later.
    image.load()
    # Photos from phones carry their rotation in EXIF.
    return ImageOps.exif_transpose(image)


@contextlib.contextmanager
def _decode_errors() -> Iterator[None]:
    """Pillow's many failures as one ImageDecodeError with a sentence."""
    try:
        yield
    except ImageDecodeError:
        raise
    except Image.DecompressionBombError as error:
        # Pillow's own, higher threshold stopped it before our check could: name our limit.
        raise ImageDecodeError(
            f"The image is too large to decode safely; the limit is {MAX_INPUT_PIXELS:,} pixels.") from error
    except Image.UnidentifiedImageError as error:
        raise ImageDecodeError(
            "This is not a readable PNG, JPEG or other image file.") from error
    except (OSError, ValueError, SyntaxError) as error:
        # Pillow's messages may name an in-memory buffer object; keep only the reason.
        reason = str(error).split(" <_io.")[0].strip() or error.__class__.__name__
        raise ImageDecodeError(
            f"This is not a readable PNG, JPEG or other image file ({reason}).") from error


def _image_to_array(image: Image.Image) -> np.ndarray:
    """A float32 array in 0..1 with 1 (grey), 2 (grey+alpha), 3 or 4 channels."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        values = np.asarray(image, dtype=np.float64)
        peak = 65535.0 if values.max() > 255 else 255.0
        return (values / peak).astype(np.float32)
    if image.mode == "F":
        values = np.asarray(image, dtype=np.float32)
        if not np.all(np.isfinite(values)):
            raise ImageDecodeError("The image holds NaN or infinite pixel values.")
        return values / max(float(values.max()), 1.0) if values.max() > 1 else values
    if image.mode == "1":
        image = image.convert("L")
    elif image.mode not in ("L", "LA", "RGB", "RGBA"):
        image = image.convert("RGBA" if "A" in image.getbands() else "RGB")
    return np.asarray(image, dtype=np.float32) / 255.0


def _reduced_in_pillow(image: Image.Image) -> Image.Image:
    """A large picture box-reduced by Pillow to the working size (see PILLOW_REDUCTION_ABOVE_PIXELS)."""
    width, height = image.size
    if width * height <= PILLOW_REDUCTION_ABOVE_PIXELS:
        return image
    factor = max(_reduction_factor(height, width), -(-max(width, height) // WORKING_LONG_SIDE_LIMIT))
    # Image.reduce averages whole blocks and the partial ones at the edges; it takes neither
    # 1-bit, palette nor 16-bit pictures.
    if image.mode == "1":
        image = image.convert("L")
    elif image.mode in ("P", "PA"):
        image = image.convert("RGBA")
    elif image.mode.startswith("I;16"):
        image = image.convert("I")
    return image.reduce(factor)


def _as_float_array(image) -> np.ndarray:
    if isinstance(image, Image.Image):
        return _image_to_array(_reduced_in_pillow(image))
    array = np.asarray(image)
    if array.dtype == np.uint8:
        return array.astype(np.float32) / 255.0
    if array.dtype == np.uint16:
        return array.astype(np.float32) / 65535.0
    if array.dtype == bool:
        return array.astype(np.float32)
    if not np.issubdtype(array.dtype, np.number):
        raise ImageDecodeError(f"An image array of {array.dtype} cannot be read.")
    array = array.astype(np.float32)
    if not np.all(np.isfinite(array)):
        raise ImageDecodeError("The image array holds NaN or infinite values.")
    peak = float(array.max()) if array.size else 0.0
    return array / 255.0 if peak > 1.0 else array


def _reduction_factor(height: int, width: int) -> int:
    # Judged on the shorter side, so a long strip of digits keeps each digit's detail.
    return max(1, -(-min(height, width) // WORKING_SIDE_LIMIT))


def _box_reduce(array: np.ndarray, factor: int) -> np.ndarray:
    """Average factor x factor blocks (the edge that does not fill a block is dropped)."""
    if factor == 1:
        return array
    # The factor never exceeds the shorter side (see _reduction_factor), so a block fits.
    height = array.shape[0] - array.shape[0] % factor
    width = array.shape[1] - array.shape[1] % factor
    return array[:height, :width].reshape(height // factor, factor, width // factor, factor,
                          *array.shape[2:]).mean(axis=(1, 3), dtype=np.float32)


def ink_map(image) -> np.ndarray:
    """Where the ink is, as a float32 (H, W) map in 0..1, whatever the polarity or colours.

    A picture with varying transparency (canvas strokes) has its ink in the alpha channel.
    Otherwise the background is the typical colour along the border, and ink is how far
    each pixel's colour lies from it, so dark-on-light, light-on-dark and coloured pens
    on coloured paper all come out alike.
    """
    if (isinstance(image, np.ndarray) and image.dtype == np.uint8 and image.ndim == 3
            and image.shape[2] == 4):
        # Canvas strokes: reduce only the alpha channel, the common case made cheap.
        alpha = image[..., 3]
        if int(alpha.max()) - int(alpha.min()) > MINIMUM_CONTRAST * 255:
            factor = _reduction_factor(*alpha.shape)
            reduced = Image.fromarray(np.ascontiguousarray(alpha)).reduce(factor)
            return _stretch(np.asarray(reduced, dtype=np.float32) / np.float32(255.0),
                            background_level=0.0)
    array = _as_float_array(image)
    if array.ndim == 2:
        array = array[..., None]
    if array.ndim != 3 or array.shape[2] not in (1, 2, 3, 4):
        raise ImageDecodeError(
            f"An image must be (height, width) or (height, width, 1-4 channels); got "
            f"shape {array.shape}.")
    if array.shape[0] < 1 or array.shape[1] < 1:
        raise ImageDecodeError("The image has no pixels.")
    array = _box_reduce(array, _reduction_factor(*array.shape[:2]))
    has_alpha = array.shape[2] in (2, 4)
    if has_alpha:
        alpha = array[..., -1]
        if float(alpha.max() - alpha.min()) > MINIMUM_CONTRAST:
            return _stretch(alpha, background_level=0.0)
        array = array[..., :-1]
    border = np.concatenate([array[:2].reshape(-1, array.shape[2]),
                             array[-2:].reshape(-1, array.shape[2]),
                             array[:, :2].reshape(-1, array.shape[2]),
                             array[:, -2:].reshape(-1, array.shape[2])])
    background = np.median(border, axis=0)
    distance = np.abs(array - background).max(axis=2)
    border_distance = np.abs(border - background).max(axis=1)
    noise = float(np.median(border_distance) + 3.0 * np.median(
        np.abs(border_distance - np.median(border_distance))))
    return _stretch(distance, background_level=noise)


def has_ink(image) -> bool:
    """Whether the picture holds ink that reading it would find, by the same ink map and level.

    The Draw page asks before reading, to tell a blank canvas (or one whose strokes have not
    arrived yet) from a drawing, so a picture it sends on is never one the reader calls blank
    for another reason than the reading itself.
    """
    return image is not None and float(ink_map(image).max()) >= INK_MASK_LEVEL


def _stretch(ink: np.ndarray, *, background_level: float) -> np.ndarray:
    """Map the background to 0 and the strongest ink to 1; all zeros when there is no ink."""
    peak = float(ink.max())
    if background_level > 0 and ink.size > 1000:
        # A few hot pixels in a photo must not set the scale.
        peak = float(np.percentile(ink, 99.9))
    if peak < MINIMUM_CONTRAST:
        return np.zeros(ink.shape, dtype=np.float32)
    floor = min(max(background_level, 0.1 * peak), 0.5 * peak)
    stretched = (ink - floor).astype(np.float32, copy=False)
    stretched /= peak - floor
    return np.clip(stretched, 0.0, 1.0, out=stretched)


def normalise_digit(ink: np.ndarray) -> np.ndarray:
    """Crop, fit into 20x20 keeping the aspect ratio, and centre the mass in 28x28."""
    # The box is taken where the ink is clear, so faint fringes (JPEG ringing, blur) do
    # not make the digit look smaller.
    rows = np.flatnonzero(ink.max(axis=1) > CROP_LEVEL)
    columns = np.flatnonzero(ink.max(axis=0) > CROP_LEVEL)
    if rows.size == 0:
        return np.zeros((MODEL_SIDE, MODEL_SIDE), dtype=np.float32)
    cropped = ink[rows[0]:rows[-1] + 1, columns[0]:columns[-1] + 1]
    height, width = cropped.shape
    scale = DIGIT_BOX_SIDE / max(height, width)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    resized = np.asarray(Image.fromarray(np.ascontiguousarray(cropped, dtype=np.float32),
                                         "F").resize(size, Image.Resampling.LANCZOS))
    resized = np.maximum(resized, 0.0)  # Lanczos overshoots below zero at edges
    peak = float(resized.max())
    if peak <= 0:
        return np.zeros((MODEL_SIDE, MODEL_SIDE), dtype=np.float32)
    resized = np.minimum(resized / peak, 1.0)
    total = float(resized.sum())
    centre_row = float(resized.sum(axis=1) @ np.arange(resized.shape[0])) / total
    centre_column = float(resized.sum(axis=0) @ np.arange(resized.shape[1])) / total
    # MNIST's centres of mass sit at (14, 14) in pixel-index coordinates, not at 13.5.
    middle = MODEL_SIDE / 2
    # Plain Python on scalars: np.clip costs more than everything else here but the resize.
    top = min(max(round(middle - centre_row), 0), MODEL_SIDE - resized.shape[0])
    left = min(max(round(middle - centre_column), 0), MODEL_SIDE - resized.shape[1])
    field = np.zeros((MODEL_SIDE, MODEL_SIDE), dtype=np.float32)
    field[top:top + resized.shape[0], left:left + resized.shape[1]] = resized
    return field


def preprocess(image) -> PreprocessedImage:
    """Model inputs for every digit in `image` (array, PIL image, bytes or path).

    Without a model to judge the candidates, pieces are grouped into as few digits as their
    shapes allow (see `segmentation`); `Recognizer.read` lets the model choose instead.
    """
    from mnist_core.segmentation import segment

    segmentation = segment(image)
    chosen = segmentation.choose()
    if not chosen:
        return PreprocessedImage(digits=np.zeros((0, MODEL_SIDE, MODEL_SIDE), np.float32),
                                 boxes=())
    return PreprocessedImage(digits=segmentation.candidate_inputs(chosen),
                             boxes=tuple(segmentation.boxes[index] for index in chosen))

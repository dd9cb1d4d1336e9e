"""Property-based fuzzing of the path from uploaded bytes to model inputs (``preprocess`` on bytes).

The Draw page's upload box, ``POST /api/predict`` and ``python -m mnist_core predict`` all
hand bytes to :func:`mnist_core.preprocess.preprocess` and catch only ``ImageDecodeError``.
So for any bytes at all, the one acceptable outcome besides model inputs is an
``ImageDecodeError`` with a sentence; any other exception would be a crash (a 500 from the
API, a traceback from the CLI), and a case that runs for seconds is a denial of service.

Inputs are random bytes, images of every mode Pillow writes (1-bit, grey, grey+alpha,
palette with and without transparency, RGB, RGBA, alpha-only RGBA, CMYK, 16-bit, 32-bit
integer, float with NaN and infinities, YCbCr, LAB) in PNG, JPEG, GIF, BMP, TIFF and WebP,
at ordinary and extreme shapes (1x1, 10000x1, 1x10000), then truncated or bit-flipped;
PNG headers written field by field; and decompression bombs. Hypothesis runs derandomized,
so CI sees the same cases every time; ``CaseLog`` counts the distinct inputs, so "at least
1,000" is checked, not claimed. The strategies are shared with ``tests/test_fuzz_rest_api.py``.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import functools
import hashlib
import io
import signal
import struct
import time
import tracemalloc
import zlib

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image, ImageDraw

from harness.bad_inputs import PNG_SIGNATURE, png_file
from mnist_core.preprocess import MAX_DIGITS, MAX_INPUT_PIXELS, MAX_INPUT_SIDE, MODEL_SIDE, ImageDecodeError, load_image, preprocess

# Damaged files make Pillow warn (corrupt EXIF, truncated TIFF tags, bomb-sized headers): expected here.
pytestmark = [pytest.mark.filterwarnings("ignore::UserWarning:PIL"),
              pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")]

# At least this many distinct inputs per fuzz test. Hypothesis also tries boundary values on
# purpose (a file cut after its first byte, say), so some generated inputs repeat; it is asked
# for 30% more, and the tests check the distinct count.
FUZZ_CASES = 1000
GENERATED_CASES = 1300
# Far above what any case needs (most take a few milliseconds); only a hang or a blow-up gets here.
CASE_TIME_LIMIT_SECONDS = 10.0
FUZZ_SETTINGS = settings(
    max_examples=GENERATED_CASES,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example],
)


# ---------------------------------------------------------------------------------------
# Counting the cases, and giving up on a case that hangs
# ---------------------------------------------------------------------------------------


@dataclasses.dataclass
class CaseLog:
    """How many cases a fuzz test really ran, how many were distinct, and what each gave."""

    runs: int = 0
    digests: set = dataclasses.field(default_factory=set)
    outcomes: collections.Counter = dataclasses.field(default_factory=collections.Counter)

    def reset(self) -> None:
        self.runs, self.digests, self.outcomes = 0, set(), collections.Counter()

    def record(self, data: bytes) -> None:
        self.runs += 1
        self.digests.add(hashlib.blake2b(data, digest_size=16).digest())

    @property
    def distinct(self) -> int:
        return len(self.digests)


class CaseTookTooLong(Exception):
    """One fuzz case ran past CASE_TIME_LIMIT_SECONDS (not an OSError, so no decoder swallows it)."""


@contextlib.contextmanager
def time_limit(seconds: float):
    """Interrupt the main thread after ``seconds`` (SIGALRM), so a hang fails the test instead of CI."""

    def give_up(signal_number, frame):
        raise CaseTookTooLong(f"one case ran for more than {seconds:.0f} s")

    previous = signal.signal(signal.SIGALRM, give_up)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


# ---------------------------------------------------------------------------------------
# Images of every mode and format, at ordinary and extreme shapes
# ---------------------------------------------------------------------------------------

# Which formats each kind of picture is written in (each pair was checked to round-trip in Pillow).
FORMATS_BY_KIND = {
    "1": ("PNG", "BMP", "TIFF", "GIF"),
    "L": ("PNG", "JPEG", "BMP", "TIFF", "GIF", "WEBP"),
    "LA": ("PNG", "TIFF", "WEBP"),
    "P": ("PNG", "GIF", "BMP", "TIFF"),
    "P with transparency": ("PNG", "GIF"),
    "RGB": ("PNG", "JPEG", "BMP", "TIFF", "WEBP"),
    "RGBA": ("PNG", "TIFF", "WEBP"),
    "RGBA alpha only": ("PNG", "TIFF", "WEBP"),
    "CMYK": ("JPEG", "TIFF"),
    "I;16": ("PNG", "TIFF"),
    "I": ("TIFF",),
    "F": ("TIFF",),
    "YCbCr": ("TIFF", "JPEG"),
    "LAB": ("TIFF",),
}
KIND_AND_FORMAT = [(kind, image_format) for kind, formats in FORMATS_BY_KIND.items() for image_format in formats]
EXTREME_SHAPES = [(1, 1), (10000, 1), (1, 10000), (2, 2), (3, 500), (500, 3)]
EXIF_ORIENTATION_TAG = 0x0112
CONTENTS = ("stroke", "noise", "flat", "dots")


def grey_picture(width: int, height: int, content: str, rng: np.random.Generator) -> np.ndarray:
    """A uint8 (height, width) picture: dark strokes on light paper, noise, one flat value, or specks."""
    if content == "noise":
        return rng.integers(0, 256, (height, width), dtype=np.uint8)
    if content == "flat":
        return np.full((height, width), int(rng.integers(0, 256)), dtype=np.uint8)
    paper = Image.new("L", (width, height), int(rng.integers(160, 256)))
    draw = ImageDraw.Draw(paper)
    if content == "dots":
        for _ in range(int(rng.integers(1, 6))):
            x, y = int(rng.integers(0, width)), int(rng.integers(0, height))
            draw.point((x, y), fill=int(rng.integers(0, 90)))
    else:
        pen = max(1, min(width, height) // int(rng.integers(4, 12)))
        for _ in range(int(rng.integers(1, 4))):
            points = [(int(rng.integers(0, width)), int(rng.integers(0, height))) for _ in range(3)]
            draw.line(points, fill=int(rng.integers(0, 90)), width=pen)
    return np.asarray(paper)


def picture_of_kind(kind: str, grey: np.ndarray, rng: np.random.Generator) -> Image.Image:
    """The grey picture turned into a Pillow image of the given kind, with ink where grey is dark."""
    ink = 1.0 - grey.astype(np.float32) / 255.0
    paper, pen = rng.integers(0, 256, 3), rng.integers(0, 256, 3)
    colour = np.rint(paper + (pen - paper) * ink[..., None]).astype(np.uint8)
    if kind == "1":
        return Image.fromarray(grey).convert("1")
    if kind == "L":
        return Image.fromarray(grey)
    if kind == "LA":
        alpha = np.rint(ink * 255).astype(np.uint8) if rng.random() < 0.5 else np.full_like(grey, 255)
        return Image.merge("LA", (Image.fromarray(grey), Image.fromarray(alpha)))
    if kind in ("P", "P with transparency"):
        image = Image.fromarray(colour).convert("P")
        if kind == "P with transparency":
            image.info["transparency"] = int(np.asarray(image).flat[0])
        return image
    if kind == "RGB":
        return Image.fromarray(colour)
    if kind == "RGBA":
        alpha = rng.integers(0, 256, grey.shape, dtype=np.uint8) if rng.random() < 0.3 else np.full_like(grey, 255)
        return Image.fromarray(np.dstack([colour, alpha]))
    if kind == "RGBA alpha only":
        alpha = np.rint(ink * 255).astype(np.uint8)
        return Image.fromarray(np.dstack([np.zeros_like(colour), alpha]))
    if kind == "CMYK":
        return Image.fromarray(colour).convert("CMYK")
    if kind == "I;16":
        scale = int(rng.choice([1, 3, 257]))
        return Image.fromarray(grey.astype(np.uint16) * np.uint16(scale))
    if kind == "I":
        scale, offset = int(rng.choice([1, 257, -1, 8_000_000])), int(rng.choice([0, -(2**31), 2**20]))
        values = np.clip(grey.astype(np.int64) * scale + offset, -(2**31), 2**31 - 1).astype(np.int32)
        return Image.fromarray(values)
    if kind == "F":
        values = grey.astype(np.float32) * np.float32(rng.choice([1.0, 1 / 255, 1e-30, 1e30, -1.0]))
        if rng.random() < 0.5:
            specials = rng.choice([np.nan, np.inf, -np.inf], size=grey.shape)
            values = np.where(rng.random(grey.shape) < 0.1, specials, values).astype(np.float32)
        return Image.fromarray(values)
    if kind == "YCbCr":
        return Image.fromarray(colour).convert("YCbCr")
    if kind == "LAB":
        return Image.fromarray(colour).convert("LAB")
    raise ValueError(f"Unknown kind of picture {kind!r}.")


def encode(image: Image.Image, image_format: str, *, orientation: int | None = None) -> bytes:
    """The image written in a format; an EXIF orientation where the format carries one."""
    options = {}
    if orientation is not None and image_format in ("PNG", "JPEG", "WEBP"):
        exif = Image.Exif()
        exif[EXIF_ORIENTATION_TAG] = orientation
        options["exif"] = exif
    buffer = io.BytesIO()
    image.save(buffer, format=image_format, **options)
    return buffer.getvalue()


@st.composite
def encoded_images(draw) -> bytes:
    """A valid image file: a kind of picture, a format for it, a shape (sometimes extreme) and content."""
    kind, image_format = draw(st.sampled_from(KIND_AND_FORMAT))
    width, height = draw(st.one_of(st.tuples(st.integers(1, 64), st.integers(1, 64)), st.sampled_from(EXTREME_SHAPES)))
    content = draw(st.sampled_from(CONTENTS))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    orientation = draw(st.one_of(st.none(), st.integers(1, 8)))
    return encode(picture_of_kind(kind, grey_picture(width, height, content, rng), rng), image_format, orientation=orientation)


@st.composite
def damaged(draw, files: st.SearchStrategy[bytes]) -> bytes:
    """A file left whole, cut short at any point, or with bits flipped (often in the header)."""
    data = draw(files)
    damage = draw(st.sampled_from(["none", "none", "truncated", "bit flips", "truncated and bit flips"]))
    if "truncated" in damage and len(data) > 1:
        data = data[: draw(st.integers(1, len(data) - 1))]
    if "bit flips" in damage and data:
        flipped = bytearray(data)
        header_positions = st.integers(0, min(len(data), 64) - 1)
        for position in draw(st.lists(st.one_of(header_positions, st.integers(0, len(data) - 1)), min_size=1, max_size=8)):
            flipped[position] ^= 1 << draw(st.integers(0, 7))
        data = bytes(flipped)
    return data


# ---------------------------------------------------------------------------------------
# Files written field by field: PNG headers of any size and depth, and decompression bombs
# ---------------------------------------------------------------------------------------


def blank_one_bit_rows(width: int, height: int) -> bytes:
    """The zlib stream of a whole 1-bit image of zeros, compressed row by row (never held in memory)."""
    compressor = zlib.compressobj(9)
    row = bytes(1 + (width + 7) // 8)  # filter byte, then the packed pixels
    return b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()


@functools.cache
def bomb(name: str) -> bytes:
    """Small files that declare huge images; built once, on first use."""
    if name == "png 30000x30000":
        # A complete, valid 1-bit PNG: about 110 kB that would decode to 900 million pixels.
        return png_file(30000, 30000, pixel_data=blank_one_bit_rows(30000, 30000))
    if name == "png 10000x10000":
        # Between Pillow's warning (89M) and error (179M) thresholds: our own limit must refuse it.
        return png_file(10000, 10000, pixel_data=blank_one_bit_rows(10000, 10000))
    if name == "png 7000x6000":
        # Just above our 40M limit and below Pillow's thresholds.
        return png_file(7000, 6000, pixel_data=blank_one_bit_rows(7000, 6000))
    if name == "png header 65535x65535":
        return png_file(65535, 65535, bit_depth=8, colour_type=6, pixel_data=zlib.compress(bytes(1000)))
    if name == "gif 65535x65535":
        screen = b"GIF89a" + struct.pack("<HHBBB", 65535, 65535, 0, 0, 0)
        frame = b"," + struct.pack("<HHHHB", 0, 0, 65535, 65535, 0) + b"\x02\x02\x4c\x01\x00"
        return screen + frame + b";"
    raise ValueError(f"Unknown bomb {name!r}.")


BOMBS = ("png 30000x30000", "png 10000x10000", "png 7000x6000", "png header 65535x65535", "gif 65535x65535")


@st.composite
def png_headers(draw) -> bytes:
    """PNGs whose header fields take any value, with a little (maybe wrong) pixel data."""
    width = draw(st.one_of(st.integers(0, 70), st.sampled_from([0, 1, 10000, 2**31 - 1, 2**32 - 1])))
    height = draw(st.one_of(st.integers(0, 70), st.sampled_from([0, 1, 10000, 2**31 - 1, 2**32 - 1])))
    bit_depth = draw(st.sampled_from([1, 2, 4, 8, 16, 0, 3, 255]))
    colour_type = draw(st.sampled_from([0, 2, 3, 4, 6, 1, 5, 7]))
    interlace = draw(st.sampled_from([0, 1, 2]))
    raw = draw(st.binary(max_size=512))
    pixel_data = draw(st.sampled_from(["zlib", "raw", "none"]))
    data = {"zlib": zlib.compress(raw), "raw": raw, "none": None}[pixel_data]
    return png_file(width, height, bit_depth=bit_depth, colour_type=colour_type, interlace=interlace, pixel_data=data)


MAGIC_PREFIXES = (PNG_SIGNATURE, b"\xff\xd8\xff\xe0", b"GIF89a", b"GIF87a", b"BM", b"II*\x00", b"MM\x00*",
                  b"RIFF\x00\x00\x00\x00WEBPVP8 ", b"\x00\x00\x01\x00", b"P5\n")


@st.composite
def image_inputs(draw) -> bytes:
    """Anything an uploader could send: mostly real or damaged images, some garbage (see also fixed_inputs)."""
    source = draw(st.sampled_from(["image"] * 12 + ["random bytes"] * 2 + ["magic prefix"] * 2 + ["png header"] * 2))
    if source == "image":
        return draw(damaged(encoded_images()))
    if source == "random bytes":
        return draw(st.binary(min_size=1, max_size=2048))
    if source == "magic prefix":
        return draw(st.sampled_from(MAGIC_PREFIXES)) + draw(st.binary(max_size=1024))
    return draw(png_headers())


def fixed_inputs() -> tuple[bytes, ...]:
    """The empty input and every bomb: each fuzz test runs these once, before the generated cases."""
    return (b"", *(bomb(name) for name in BOMBS))


# ---------------------------------------------------------------------------------------
# The property
# ---------------------------------------------------------------------------------------


def assert_model_inputs(result) -> None:
    """What the recognizer relies on: up to MAX_DIGITS finite 28x28 float32 images in [0, 1], one box each."""
    digits = result.digits
    assert isinstance(digits, np.ndarray) and digits.dtype == np.float32
    assert digits.ndim == 3 and digits.shape[1:] == (MODEL_SIDE, MODEL_SIDE)
    assert len(digits) == len(result.boxes) <= MAX_DIGITS
    assert np.all(np.isfinite(digits)), "model inputs hold NaN or infinite values"
    if digits.size:
        assert 0.0 <= float(digits.min()) and float(digits.max()) <= 1.0


PREPROCESS_LOG = CaseLog()


def read_or_refuse(data: bytes, log: CaseLog) -> str:
    """Preprocess one input; the result must be valid model inputs or an ImageDecodeError with a sentence."""
    log.record(data)
    try:
        with time_limit(CASE_TIME_LIMIT_SECONDS):
            result = preprocess(data)
    except ImageDecodeError as error:
        assert str(error).strip(), "an ImageDecodeError without a message"
        return "refused"
    except ValueError as error:
        raise AssertionError(
            f"a plain {type(error).__name__} escaped (callers catch only ImageDecodeError): {error}") from error
    assert_model_inputs(result)
    return "blank" if result.is_blank else "digits"


@FUZZ_SETTINGS
@given(data=image_inputs())
def preprocess_one_input(data: bytes) -> None:
    PREPROCESS_LOG.outcomes[read_or_refuse(data, PREPROCESS_LOG)] += 1


def test_any_bytes_give_model_inputs_or_a_clear_decode_error() -> None:
    log = PREPROCESS_LOG
    log.reset()
    started = time.perf_counter()
    for data in fixed_inputs():
        log.outcomes[read_or_refuse(data, log)] += 1
    preprocess_one_input()
    elapsed = time.perf_counter() - started

    assert log.distinct >= FUZZ_CASES, f"only {log.distinct} distinct inputs in {log.runs} cases"
    # The strategies must reach both sides of the property, not only one.
    assert log.outcomes["digits"] >= 50 and log.outcomes["refused"] >= 100, dict(log.outcomes)
    print(f"\n{log.runs} cases ({log.distinct} distinct) in {elapsed:.1f} s: {dict(log.outcomes)}")


# ---------------------------------------------------------------------------------------
# The cases the fuzzer must not leave to chance
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", BOMBS)
def test_a_decompression_bomb_is_refused_before_any_pixel_is_allocated(name: str) -> None:
    data = bomb(name)
    assert len(data) < 200_000, "a bomb must be small enough to pass the upload limit"
    allocations_before = Image.core.get_stats()["new_count"]
    started = time.perf_counter()
    with pytest.raises(ImageDecodeError) as refusal:
        load_image(data)
    assert time.perf_counter() - started < 2.0
    # Pillow counts every image memory it creates: none was made for the bomb.
    assert Image.core.get_stats()["new_count"] == allocations_before
    message = str(refusal.value)
    assert f"{MAX_INPUT_PIXELS:,} pixels" in message, message
    assert "<_io." not in message


@pytest.mark.parametrize(("width", "height"), [(1, 39_000_000), (39_000_000, 1), (MAX_INPUT_SIDE + 1, 2)])
def test_a_strip_under_the_pixel_limit_but_too_long_is_refused_before_decoding(width: int, height: int) -> None:
    """Such a strip passed the pixel limit and took seconds to reduce; now it is refused from its header."""
    assert width * height <= MAX_INPUT_PIXELS
    data = png_file(width, height, pixel_data=zlib.compress(bytes(1000)))
    allocations_before = Image.core.get_stats()["new_count"]
    with pytest.raises(ImageDecodeError) as refusal:
        load_image(data)
    assert Image.core.get_stats()["new_count"] == allocations_before
    assert f"{width}x{height}" in str(refusal.value)
    assert f"{MAX_INPUT_SIDE:,} pixels" in str(refusal.value)


@pytest.mark.parametrize(("width", "height"), [(1, 1), (10000, 1), (1, 10000), (MAX_INPUT_SIDE, 1)])
def test_extreme_shapes_are_read(width: int, height: int) -> None:
    pixels = np.full((height, width), 255, dtype=np.uint8)
    pixels[: max(1, height // 2), : max(1, width // 2)] = 0
    result = preprocess(encode(Image.fromarray(pixels), "PNG"))
    assert_model_inputs(result)


def test_a_large_image_is_reduced_before_it_becomes_floats() -> None:
    """A 6000x6000 RGBA PNG compresses to a few hundred kB but would be 576 MB as float32 RGBA."""
    side = 6000
    image = Image.new("RGBA", (side, side), (255, 255, 255, 255))
    ImageDraw.Draw(image).line([(2000, 1000), (3000, 5000)], fill=(0, 0, 0, 255), width=300)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=1)
    data = buffer.getvalue()
    del image, buffer
    tracemalloc.start()
    try:
        result = preprocess(data)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert result.digit_count == 1
    assert peak < 64 * 1024 * 1024, f"NumPy peaked at {peak / 2**20:.0f} MiB"

"""Inputs for driving the app: MNIST test digits as PNG bodies for the API and as mouse strokes for the browsers.

The hardening run's load and tests/test_cluster.py send these; the hardening run's bad-input
scenario starts from the same pictures (re-encoded, truncated, corrupted).
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from evaluation.drawings import redraw
from harness.strokes import digit_strokes


def png_bytes(image: Image.Image, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", **options)
    return buffer.getvalue()


def encoded(image: Image.Image, image_format: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=image_format, **options)
    return buffer.getvalue()


def digit_pictures(mnist, *, first: int, count: int, seed: int) -> list[tuple[Image.Image, int]]:
    """MNIST test digits redrawn as 18 px pen strokes: two in three as canvas RGBA, one as dark ink on paper."""
    generator = np.random.default_rng(seed)
    pictures = []
    for index in range(first, first + count):
        canvas = redraw(mnist.test_images[index], "fill" if index % 2 == 0 else "natural", generator)
        if index % 3 == 2:
            picture = Image.fromarray(255 - canvas[..., 3], "L")
        else:
            picture = Image.fromarray(canvas, "RGBA")
        pictures.append((picture, int(mnist.test_labels[index])))
    return pictures


def browser_drawings(mnist, *, first: int, count: int) -> list[tuple[list, int]]:
    """(mouse strokes, label) for MNIST test digits, as the browser tests draw them, with every second point.

    Each mouse move is a round trip to Chromium; points 8 px apart still draw the same digit
    with an 18 px pen, at half the cost to the machine the app shares.
    """
    drawings = []
    for index in range(first, first + count):
        strokes = [stroke[::2] + ([stroke[-1]] if len(stroke) % 2 == 0 else [])
                   for stroke in digit_strokes(mnist.test_images[index])]
        drawings.append((strokes, int(mnist.test_labels[index])))
    return drawings

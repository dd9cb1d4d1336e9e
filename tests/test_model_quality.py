"""The committed model, read through the product: MNIST test, canvas drawings, non-digits.

The real-handwriting figures come from `bench/drawn_digits.py` on the development set, which
the suite must not need; here the same paths are checked on material that ships or is made:
MNIST's test writers (never trained on) and generated non-digits.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from evaluation.drawings import redraw
from mnist_core.segmentation import segment

REPOSITORY_ROOT = Path(__file__).resolve().parents[1]
CARD = REPOSITORY_ROOT / "models" / "mnist_cnn.card.json"
# The numbers test measured 77.0% exact and 88.3% with the right digit count on the shipped
# model (75.3% / 88.3% with seed 24); the bars leave a margin for a re-trained model.
NUMBERS_EXACT = 0.72
NUMBERS_COUNTED = 0.84


@pytest.mark.slow
def test_committed_model_through_the_product_meets_its_card(recognizer, mnist):
    """All 10,000 test digits, each read as the CLI reads a 28x28 PNG."""
    readings = []
    for start in range(0, len(mnist.test_images), 500):
        readings.extend(recognizer.read_segmented(
            [segment(image) for image in mnist.test_images[start:start + 500]]))
    read = np.array([reading.digit if len(reading.digits) == 1 else -1 for reading in readings])
    accuracy = float((read == mnist.test_labels).mean())
    assert accuracy >= 0.99, f"MNIST test through the product: {accuracy:.4f}"
    card = json.loads(CARD.read_text())
    assert card["test_accuracy"] == pytest.approx(accuracy, abs=2e-4)


@pytest.mark.parametrize("layout", ["fill", "natural"])
def test_committed_model_reads_digits_redrawn_on_the_canvas(recognizer, mnist, layout):
    random = np.random.default_rng(11)
    chosen = random.choice(len(mnist.test_labels), size=500, replace=False)
    readings = [recognizer.read(redraw(mnist.test_images[index] / 255.0, layout, random))
                for index in chosen]
    read = np.array([reading.digit if len(reading.digits) == 1 else -1 for reading in readings])
    accuracy = float((read == mnist.test_labels[chosen]).mean())
    assert accuracy >= 0.97, f"{layout}: {accuracy:.3f}"
    refused = sum(reading.is_not_a_digit for reading in readings)
    assert refused <= 5, f"{refused} real digits refused as not a digit"


# Bars per kind, from the shipped model's figures (bench, seed 31): scribbles 10%, letters 20%,
# doodles 2%. Letters rose from 10% when a piece no wider than a digit began to be cut (an H
# reads as "14"), the price of reading touching 2-digit numbers (73% -> 85% exact).
@pytest.mark.parametrize("kind, bar", [("scribbles", 0.15), ("letters", 0.30), ("doodles", 0.10)])
def test_committed_model_does_not_show_non_digits_as_confident_digits(recognizer, kind, bar):
    from evaluation.non_digits import non_digit_pictures

    readings = [recognizer.read(picture) for picture in non_digit_pictures(kind, 150, seed=8)]
    confident = [reading.has_digits and reading.overall_confidence >= 0.6 for reading in readings]
    assert np.mean(confident) <= bar, f"{kind}: {np.mean(confident):.1%} shown as a confident digit"
    assert any(reading.is_not_a_digit for reading in readings)


def test_committed_model_reads_whole_numbers_of_unseen_writers(recognizer, mnist):
    """Numbers of 2-4 MNIST test digits (writers never trained on), touching, overlapping and
    slanted as train/number_candidates.py composes them, read from the picture alone."""
    from train.number_candidates import compose, paint_number

    random = np.random.default_rng(23)
    exact, counted, total = 0, 0, 0
    while total < 300:
        length = int(random.integers(2, 5))
        indices = random.integers(len(mnist.test_labels), size=length)
        composed = compose(mnist.test_images, mnist.test_labels, indices, random)
        if composed is None:
            continue
        digits, pen = composed
        picture = paint_number(digits, pen)
        reading = recognizer.read(picture)
        text = "".join(str(label) for label in mnist.test_labels[indices])
        exact += reading.text == text
        counted += len(reading.digits) == length
        total += 1
    assert exact / total >= NUMBERS_EXACT, f"{exact / total:.1%} of {total} numbers read exactly"
    assert counted / total >= NUMBERS_COUNTED, f"digit count right for {counted / total:.1%}"

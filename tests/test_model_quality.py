"""The committed model: MNIST test accuracy and accuracy on drawn digits."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from mnist_core.preprocess import preprocess

REPOSITORY_ROOT = Path(__file__).resolve().parents[1]


def test_committed_model_meets_mnist_accuracy(recognizer, mnist):
    probabilities = recognizer.probabilities(mnist.test_images.astype(np.float32) / 255)
    accuracy = float((probabilities.argmax(axis=1) == mnist.test_labels).mean())
    assert accuracy >= 0.995, f"MNIST test accuracy {accuracy:.4f}"
    card = json.loads((REPOSITORY_ROOT / "models" / "mnist_cnn.card.json").read_text())
    assert card["test_accuracy"] == pytest.approx(accuracy, abs=2e-4)


def test_committed_model_through_preprocessing(recognizer, mnist):
    """MNIST itself, sent through the app's preprocessing, is read as well as raw."""
    images = mnist.test_images[:2000]
    readings = recognizer.read_prepared([preprocess(image) for image in images])
    read = np.array([reading.digit for reading in readings])
    assert (read == mnist.test_labels[:2000]).mean() >= 0.99


@pytest.mark.parametrize("layout", ["fill", "natural"])
def test_committed_model_reads_drawn_digits(recognizer, layout):
    from bench.drawn_digits import accuracy_on_drawings, proxy_sources

    name, images, labels = next(proxy_sources(per_source=600))
    result = accuracy_on_drawings(recognizer, images, labels, layout)
    assert result["accuracy"] >= 0.96, f"{name} {layout}: {result}"

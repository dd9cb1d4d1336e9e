"""The recognizer: the fast NumPy path equals Keras, save/load keeps predictions, readings."""

from __future__ import annotations

import numpy as np
import pytest

from mnist_core.inference import Recognizer
from mnist_core.model import ARCHITECTURES, build_model, load_model
from train.drawings import centre_line, draw_on_canvas


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_fast_path_matches_keras(architecture, mnist):
    network = build_model(architecture)
    recognizer = Recognizer(network)
    assert recognizer.uses_fast_path
    images = mnist.test_images[:6].astype(np.float32) / 255
    expected = np.asarray(network(images[..., None], training=False))
    np.testing.assert_allclose(recognizer.probabilities(images), expected, atol=1e-5)
    np.testing.assert_allclose(recognizer.probabilities(np.tile(images, (10, 1, 1)))[:6],
                               expected, atol=1e-5)


def test_save_and_load_round_trip_keeps_predictions(tmp_path, mnist):
    network = build_model("default")
    # Move the batch-norm statistics away from their defaults so the check means something.
    for layer in network.layers:
        if layer.__class__.__name__ == "BatchNormalization":
            gamma, beta, mean, variance = layer.get_weights()
            layer.set_weights([gamma * 1.5, beta + 0.1, mean + 0.2, variance * 2.0])
    path = tmp_path / "model.keras"
    network.save(path)
    loaded = load_model(path)
    images = mnist.test_images[:32, ..., None].astype(np.float32) / 255
    np.testing.assert_allclose(np.asarray(loaded(images, training=False)),
                               np.asarray(network(images, training=False)), atol=1e-6)
    np.testing.assert_allclose(Recognizer(loaded).probabilities(images[:1]),
                               np.asarray(network(images[:1], training=False)), atol=1e-5)


def test_missing_model_file_says_how_to_make_one(tmp_path):
    with pytest.raises(FileNotFoundError, match="python -m train"):
        load_model(tmp_path / "absent.keras")


def test_shipped_model_reads_a_drawn_number(recognizer, mnist):
    labels = mnist.test_labels
    wanted = [2, 0, 2, 6]
    indices = [int(np.flatnonzero(labels == digit)[position])
               for position, digit in enumerate(wanted)]
    strip = np.zeros((260, 4 * 200, 4), np.uint8)
    for position, index in enumerate(indices):
        drawing = draw_on_canvas(centre_line(mnist.test_images[index] / 255, 170), 40, 40)
        strip[:, position * 200:(position + 1) * 200] = drawing[10:270, 40:240]
    reading = recognizer.read(strip)
    assert reading.number == "2026"
    assert reading.digit == 2 and len(reading.digits) == 4
    assert 0 < reading.overall_confidence <= min(item.confidence for item in reading.digits)
    assert reading.model_inputs.shape == (4, 28, 28)
    assert len(reading.model_input_bytes(3)) == 784


def test_blank_canvas_reads_as_nothing(recognizer):
    reading = recognizer.read(np.zeros((280, 280, 4), np.uint8))
    assert reading.is_blank and reading.digit is None and reading.number is None
    assert reading.confidence == 0.0


def test_batched_reading_equals_single_reading(recognizer, mnist):
    from mnist_core.segmentation import segment

    images = [mnist.test_images[index] for index in range(20)]
    batched = recognizer.read_segmented([segment(image) for image in images])
    for image, reading in zip(images, batched):
        single = recognizer.read(image)
        assert single.digit == reading.digit
        assert single.confidence == pytest.approx(reading.confidence, abs=1e-5)


def test_loading_the_recognizer_leaves_numpy_blas_on_one_thread(recognizer):
    """More BLAS threads only spin between the NumPy path's tiny matrix products (a core under load)."""
    import threadpoolctl

    blas_pools = [pool for pool in threadpoolctl.threadpool_info() if pool["user_api"] == "blas"]
    assert blas_pools, "NumPy's BLAS was not found"
    assert all(pool["num_threads"] == 1 for pool in blas_pools)

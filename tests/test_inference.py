"""The recognizer: LiteRT's export equals Keras, model files that cannot be run, readings."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from evaluation.drawings import centre_line, draw_on_canvas
from mnist_core.model import ARCHITECTURES, build_model
from mnist_core.networks import KerasNetwork, LiteRtNetwork, ModelFileError, load_network
from train.export import export_litert, file_digest
from tests.conftest import REPOSITORY_ROOT


def _varied_inputs(mnist, count: int) -> np.ndarray:
    """MNIST test digits, some shifted and inverted, and noise: inputs far apart from each other."""
    digits = mnist.test_images[:count // 2].astype(np.float32) / 255
    rng = np.random.default_rng(7)
    shifted = np.roll(digits[:count // 4], 5, axis=2)
    noise = rng.random((count - len(digits) - len(shifted), 28, 28), dtype=np.float32)
    return np.concatenate([digits, 1 - shifted, noise])


def test_the_shipped_litert_file_gives_the_probabilities_of_the_keras_file(mnist):
    images = _varied_inputs(mnist, 400)
    served = LiteRtNetwork(REPOSITORY_ROOT / "models" / "mnist_cnn.tflite")(images)
    expected = KerasNetwork(REPOSITORY_ROOT / "models" / "mnist_cnn.keras")(images)
    assert served.shape == (400, 11)
    np.testing.assert_allclose(served, expected, atol=1e-5)
    assert len(set(served.argmax(axis=1))) >= 10, "the inputs must not all look alike"


def test_the_model_card_names_the_files_that_are_shipped():
    import json

    card = json.loads((REPOSITORY_ROOT / "models" / "mnist_cnn.card.json").read_text())
    for name in ("mnist_cnn.keras", "mnist_cnn.tflite"):
        assert card["model_files"][name]["sha256"] == file_digest(REPOSITORY_ROOT / "models" / name)


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_an_export_reads_as_its_keras_model_one_image_or_many(architecture, tmp_path, mnist):
    network = build_model(architecture)
    # Move the batch-norm statistics away from their defaults so the check means something.
    for layer in network.layers:
        if layer.__class__.__name__ == "BatchNormalization":
            gamma, beta, mean, variance = layer.get_weights()
            layer.set_weights([gamma * 1.5, beta + 0.1, mean + 0.2, variance * 2.0])
    path = tmp_path / "model.keras"
    network.save(path)
    exported = load_network(export_litert(path))
    images = _varied_inputs(mnist, 40)
    expected = np.asarray(network(images[..., None], training=False))
    np.testing.assert_allclose(exported(images), expected, atol=1e-5)
    # Batch sizes change between calls (a digit, a number, a batch larger than one call).
    np.testing.assert_allclose(exported(images[:1]), expected[:1], atol=1e-5)
    np.testing.assert_allclose(exported(np.tile(images, (15, 1, 1)))[-40:], expected, atol=1e-5)
    assert exported(images[:0]).shape == (0, expected.shape[1])


def test_reading_from_many_threads_at_once_gives_each_its_own_answer(recognizer, mnist):
    images = mnist.test_images[:64].astype(np.float32) / 255
    expected = recognizer.probabilities(images)
    failures = []

    def read(offset: int) -> None:
        for round_number in range(30):
            index = (offset * 7 + round_number) % 64
            count = 1 + round_number % 4
            got = recognizer.probabilities(images[index:index + count])
            if not np.allclose(got, expected[index:index + count], atol=1e-6):
                failures.append(index)

    threads = [threading.Thread(target=read, args=(offset,)) for offset in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not failures


def test_model_files_that_cannot_be_run_are_refused_with_a_sentence(tmp_path):
    with pytest.raises(ModelFileError, match="python -m train"):
        load_network(tmp_path / "absent.tflite")
    with pytest.raises(ModelFileError, match="python -m train"):
        load_network(tmp_path / "absent.keras")
    (tmp_path / "garbage.tflite").write_bytes(b"not a flatbuffer at all" * 10)
    with pytest.raises(ModelFileError, match="not a LiteRT model"):
        load_network(tmp_path / "garbage.tflite")
    with pytest.raises(ModelFileError, match=".tflite"):
        load_network(tmp_path / "model.onnx")


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


def _every_candidate_scored(recognizer, picture):
    """The reading as it would be with every candidate made and scored (no shortcut)."""
    from mnist_core.segmentation import segment

    segmentation = segment(picture)
    probabilities = (recognizer.probabilities(segmentation.candidates) if segmentation.candidate_count
                     else np.zeros((0, 11), np.float32))
    reading = recognizer._reading(segmentation, probabilities, 0.0)
    return recognizer._checked_by_number_reader([(reading, probabilities)], [segmentation])[0]


def test_candidates_left_unscored_never_change_a_reading(recognizer, mnist):
    """A lone digit the model is sure of is read without cutting its ink, and other candidates
    are scored only when the whole ink as one digit could lose: the readings are the same as
    with every candidate scored, for digits, numbers and scribbles alike."""
    from evaluation.non_digits import non_digit_pictures
    from mnist_core.segmentation import drawing_ink, lone_piece

    digits = [mnist.test_images[index] for index in range(0, 3000, 15)]
    numbers = [np.hstack([mnist.test_images[index], mnist.test_images[index + 1]])
               for index in range(0, 300, 10)]
    scribbles = non_digit_pictures("scribbles", 30, seed=3) + non_digit_pictures("letters", 30, seed=3)
    shortcut = 0
    for picture in digits + numbers + scribbles:
        read, reference = recognizer.read(picture), _every_candidate_scored(recognizer, picture)
        assert read.text == reference.text
        assert read.is_not_a_digit == reference.is_not_a_digit
        assert read.boxes == reference.boxes
        assert read.grouping_score == pytest.approx(reference.grouping_score, abs=1e-5)
        assert [digit.confidence for digit in read.digits] == pytest.approx(
            [digit.confidence for digit in reference.digits], abs=1e-6)
        np.testing.assert_allclose(read.model_inputs, reference.model_inputs, atol=1e-6)
        lone = lone_piece(drawing_ink(picture))
        shortcut += lone is not None and len(read.digits) == 1 and lone.whole_is_certain(
            float(np.log(read.digits[0].confidence)))
    # Most MNIST digits are one piece read with certainty: the shortcut is really taken.
    assert shortcut >= 0.6 * len(digits)

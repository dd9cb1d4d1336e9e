"""A short training run end to end: the pipeline runs, is repeatable, and writes its card."""

from __future__ import annotations

import json

import numpy as np

from mnist_core.model import load_model
from train.pipeline import TrainingOptions, model_card_path, train

CARD_KEYS = {"architecture", "parameter_count", "test_accuracy", "per_class",
             "confusion_matrix", "history", "training_seconds", "seed", "data_sha256",
             "library_versions", "model_version"}


def smoke_options(tmp_path, name: str) -> TrainingOptions:
    # Scanned MNIST and a few non-digits only (the canvas drawings take minutes to make), in
    # batches small enough that batch normalisation's moving statistics settle in two epochs.
    return TrainingOptions(epochs=2, train_subset=3000, validation_subset=1000,
                           output=tmp_path / name / "model.keras",
                           data_source="hub", verbose=0, seed=5, canvas_passes=0, mnist_passes=1,
                           batch_size=16, numbers=40)


def test_smoke_training_writes_model_and_card(tmp_path, mnist):
    card = train(smoke_options(tmp_path, "first"), data=mnist)
    output = tmp_path / "first" / "model.keras"
    assert output.exists() and output.stat().st_size < 5 * 1024 * 1024
    saved_card = json.loads(model_card_path(output).read_text())
    assert CARD_KEYS <= set(saved_card)
    assert saved_card == json.loads(json.dumps(card))
    matrix = np.array(card["confusion_matrix"])
    assert matrix.shape == (10, 10) and matrix.sum() == len(mnist.test_labels)
    # Through the product a split or refused digit is an error even where the likeliest
    # digit (the matrix) was right.
    assert card["test_accuracy"] <= np.trace(matrix) / matrix.sum()
    # Two epochs on 3,000 images already read far better than chance.
    assert card["test_accuracy"] > 0.5
    assert len(card["history"]["val_accuracy"]) == 2
    assert card["validation_examples"] == 1000 and card["test_examples"] == len(mnist.test_labels)

    repeat = train(smoke_options(tmp_path, "second"), data=mnist)
    first, second = load_model(output), load_model(tmp_path / "second" / "model.keras")
    for one, other in zip(first.get_weights(), second.get_weights()):
        np.testing.assert_array_equal(one, other)
    assert repeat["test_accuracy"] == card["test_accuracy"]


def test_smoke_training_of_the_number_reader_writes_a_model_litert_reads_alike(tmp_path, mnist):
    from mnist_core.number_reading import NumberReader
    from train.number_reader import ReaderOptions, build_reader, train_reader
    from train.number_lines import generate_number_lines

    output = tmp_path / "reader" / "number_reader.keras"
    card = train_reader(ReaderOptions(lines=1500, validation_lines=300, epochs=1, output=output,
                                      verbose=0, seed=3), data=mnist)
    assert {"model_version", "validation_exact", "validation_exact_by_length", "parameter_count",
            "training_seconds", "data_sha256", "model_files"} <= set(card)
    assert 0.0 <= card["validation_exact"] <= 1.0 and len(card["history"]["loss"]) == 1
    assert card["parameter_count"] == build_reader().count_params()
    exported = output.with_suffix(".tflite")
    assert card["model_files"][exported.name]["bytes"] == exported.stat().st_size
    # The export LiteRT serves computes what the Keras model computes.
    lines = generate_number_lines(20, mnist.test_images, mnist.test_labels, seed=9).lines
    inputs = lines.astype(np.float32) / 255.0
    served = NumberReader.from_path(exported)
    keras_steps = load_model(output)(inputs[..., None], training=False).numpy()
    np.testing.assert_allclose(served.network(inputs), keras_steps, atol=1e-4)
    assert served.model_version == card["model_version"]
    assert len(served.read_lines(inputs)) == len(inputs)

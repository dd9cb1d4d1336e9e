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
    return TrainingOptions(epochs=2, train_subset=3000, output=tmp_path / name / "model.keras",
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

    repeat = train(smoke_options(tmp_path, "second"), data=mnist)
    first, second = load_model(output), load_model(tmp_path / "second" / "model.keras")
    for one, other in zip(first.get_weights(), second.get_weights()):
        np.testing.assert_array_equal(one, other)
    assert repeat["test_accuracy"] == card["test_accuracy"]

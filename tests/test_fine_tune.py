"""The feedback loop end to end, in seconds: readings and their feedback stored on the real node,
exported by the CLI, a fine-tune on them, and a card whose figures this test computes again."""

from __future__ import annotations

import datetime
import json

import numpy as np
import pytest

from mnist_core import feedback, readings
from mnist_core.model import load_model
from tests.conftest import SHIPPED_MODEL_PATH
from tests.test_dataset_export import run_export
from tests.test_rest_api import digit_pngs
from train.fine_tune import FeedbackFileError, FineTuneOptions, fine_tune, load_feedback, split_by_time
from train.pipeline import read_through_product

pytestmark = pytest.mark.cassandra

READINGS = 40
TEST_SUBSET = 200


def test_feedback_in_export_out_a_fine_tune_and_a_card_of_computed_figures(recognizer, store, mnist,
                                                                           module_keyspace, tmp_path):
    labels = []
    for index, body in enumerate(digit_pngs(recognizer, mnist, READINGS, seed=21)):
        stored = readings.predict_and_store(body, source="api", recognizer=recognizer, store=store)
        # The writer says what it meant; a few times the model's reading was wrong.
        true_label = (stored.reading.digit + 3) % 10 if index % 5 == 0 else stored.reading.digit
        feedback.record_feedback(store, stored.record.id, true_label)
        labels.append(true_label)
    store.flush()
    today = datetime.datetime.now(datetime.timezone.utc).date()
    export_path = tmp_path / "feedback.npz"
    finished = run_export(module_keyspace, tmp_path, "--from", str(today), "--to", str(today), "--tz", "UTC",
                          "--output", str(export_path))
    assert finished.returncode == 0, finished.stderr
    assert sorted(np.load(export_path)["y"].tolist()) == sorted(labels)

    output = tmp_path / "tuned" / "model.keras"
    card = fine_tune(FineTuneOptions(feedback=export_path, base=SHIPPED_MODEL_PATH.with_suffix(".keras"),
                                     output=output, epochs=1, mnist_subset=300, test_subset=TEST_SUBSET,
                                     batch_size=32, verbose=0, non_digits_per_kind=20),
                     data=mnist)

    assert json.loads(output.with_suffix(".card.json").read_text()) == card
    assert output.with_suffix(".tflite").exists()
    tuning = card["fine_tune"]
    assert (tuning["feedback_readings"], tuning["trained_on"], tuning["held_out"]) == (READINGS, 32, 8)
    comparison = tuning["comparison"]
    assert "development_set" not in comparison  # training never reads the development set
    shown = comparison["non_digits_shown_as_digit"]
    assert set(shown["base"]) == set(shown["tuned"]) == {"scribbles", "letters", "doodles"}
    assert all(0.0 <= value <= 1.0 for value in shown["tuned"].values())

    # The held-out figures are the newest eight readings, read again here by both models.
    _, held_out = split_by_time(load_feedback(export_path), 0.2)
    for name, model_path in (("tuned", output), ("base", SHIPPED_MODEL_PATH.with_suffix(".keras"))):
        predicted = load_model(model_path).predict(held_out.inputs[..., None], verbose=0).argmax(axis=1)
        assert comparison["held_out_feedback"][name] == pytest.approx(float((predicted == held_out.labels).mean()))
    tuned_readings = read_through_product(output.with_suffix(".tflite"), mnist.test_images[:TEST_SUBSET])
    tuned_digits = np.array([reading.digit if len(reading.digits) == 1 else -1 for reading in tuned_readings])
    assert comparison["mnist_test_through_product"]["tuned"] == pytest.approx(
        float((tuned_digits == mnist.test_labels[:TEST_SUBSET]).mean()))
    assert card["test_accuracy"] == comparison["mnist_test_through_product"]["tuned"]
    base_card = json.loads(SHIPPED_MODEL_PATH.with_suffix(".card.json").read_text())
    assert card["model_version"].startswith(base_card["model_version"] + "+feedback-")
    assert tuning["base_model_version"] == base_card["model_version"]


def test_a_file_that_is_no_export_is_refused_with_a_sentence(tmp_path):
    wrong = tmp_path / "wrong.npz"
    np.savez(wrong, pictures=np.zeros((3, 28, 28)))
    with pytest.raises(FeedbackFileError, match="not an npz export"):
        load_feedback(wrong)
    lonely = tmp_path / "one.npz"
    np.savez(lonely, x=np.zeros((1, 28, 28), np.uint8), y=np.array([3]),
             created_at=np.array(["2026-12-01T10:00"], dtype="datetime64[ms]"))
    with pytest.raises(FeedbackFileError, match="at least two"):
        fine_tune(FineTuneOptions(feedback=lonely, output=tmp_path / "never.keras"))
    assert not (tmp_path / "never.keras").exists()

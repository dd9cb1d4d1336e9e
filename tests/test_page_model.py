"""AppTest of the Model page: the card's figures and charts come from the shipped model card."""

from __future__ import annotations

import json

import pytest
from streamlit.testing.v1 import AppTest

from tests.conftest import REPOSITORY_ROOT, SHIPPED_MODEL_PATH, chart_with_columns

pytestmark = pytest.mark.cassandra  # the sidebar asks storage for its status


def test_model_page_shows_the_model_card(app_settings):
    card = json.loads(SHIPPED_MODEL_PATH.with_suffix(".card.json").read_text())
    app = AppTest.from_file(str(REPOSITORY_ROOT / "Home.py"), default_timeout=60)
    app.switch_page("app_pages/model.py").run()

    assert not app.exception, app.exception
    figures = {metric.label: metric.value for metric in app.metric}
    assert figures["MNIST test accuracy (through the app)"] == f"{card['test_accuracy']:.2%}"
    real = card["real_handwriting"]
    assert figures["Real pen digits, filling the canvas"] == f"{real['dev_fit_accuracy']:.2%}"
    assert figures["Numbers of 2-4 digits read exactly"] == f"{real['numbers_2_to_4_exact']:.1%}"
    assert figures["… drawn here (strokes known)"] == f"{real['numbers_2_to_4_exact_with_strokes']:.1%}"
    assert figures["Parameters"] == f"{card['parameter_count']:,}"
    reader_card = json.loads((SHIPPED_MODEL_PATH.parent / "number_reader.card.json").read_text())
    assert figures["Validation numbers read exactly"] == f"{reader_card['validation_exact']:.1%}"
    assert figures["Number reader parameters"] == f"{reader_card['parameter_count']:,}"
    per_class = chart_with_columns(app, "digit", "measure", "value")
    recall_of_eight = per_class[(per_class["digit"] == 8) & (per_class["measure"] == "recall")]["value"].iloc[0]
    assert recall_of_eight == pytest.approx(card["per_class"]["8"]["recall"])
    confusion = chart_with_columns(app, "true", "predicted", "count")
    assert confusion["count"].sum() == sum(map(sum, card["confusion_matrix"]))
    curves = chart_with_columns(app, "epoch", "metric", "split", "value")
    assert curves["epoch"].max() == len(card["history"]["accuracy"])
    assert any(card["model_version"] in caption.value for caption in app.caption)


def test_the_model_versions_beside_the_served_one_are_listed_with_their_figures(app_settings, monkeypatch,
                                                                                  tmp_path):
    import shutil

    from dashboard import resources
    from mnist_core import settings

    folder = tmp_path / "models"
    folder.mkdir()
    for name in ("mnist_cnn.tflite", "mnist_cnn.card.json", "number_reader.tflite", "number_reader.card.json"):
        shutil.copy(SHIPPED_MODEL_PATH.parent / name, folder / name)
    # A fine-tuned model saved beside it, with a card of its own.
    shutil.copy(SHIPPED_MODEL_PATH, folder / "finetuned.tflite")
    card = json.loads((folder / "mnist_cnn.card.json").read_text())
    card.update(model_version="finetuned-test-1", test_accuracy=0.9876)
    card["real_handwriting"] = {**card.get("real_handwriting", {}), "dev_fit_accuracy": 0.99}
    (folder / "finetuned.card.json").write_text(json.dumps(card))
    (folder / "orphan.card.json").write_text(json.dumps({"test_accuracy": 0.5}))  # no model file: not listed
    monkeypatch.setenv("MNIST_MODEL_PATH", str(folder / "mnist_cnn.tflite"))
    settings.get_settings.cache_clear()
    resources.recognizer_resource.clear()
    try:
        app = AppTest.from_file(str(REPOSITORY_ROOT / "Home.py"), default_timeout=60)
        app.switch_page("app_pages/model.py").run()
        assert not app.exception, app.exception
        versions = next(frame.value for frame in app.dataframe if "model version" in frame.value.columns)
        served = json.loads(SHIPPED_MODEL_PATH.with_suffix(".card.json").read_text())
        assert list(versions["model version"]) == [served["model_version"], "finetuned-test-1"]
        assert list(versions["served"]) == ["yes", ""]
        assert versions["MNIST test"].tolist() == [pytest.approx(served["test_accuracy"]), pytest.approx(0.9876)]
        assert versions["real digits (fit)"].iloc[1] == pytest.approx(0.99)
    finally:
        resources.recognizer_resource.clear()

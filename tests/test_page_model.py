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

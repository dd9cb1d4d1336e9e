"""AppTest of the History page: the empty state, then figures and charts that follow the stored data."""

from __future__ import annotations

import datetime

import pytest
from streamlit.testing.v1 import AppTest

from tests.conftest import REPOSITORY_ROOT, build_record, chart_with_columns

pytestmark = pytest.mark.cassandra

APP_TIMEOUT_SECONDS = 60


def history_page() -> AppTest:
    app = AppTest.from_file(str(REPOSITORY_ROOT / "Home.py"), default_timeout=APP_TIMEOUT_SECONDS)
    app.switch_page("app_pages/history.py").run()
    assert not app.exception, app.exception
    return app


def metric_values(app: AppTest) -> dict[str, str]:
    return {metric.label: metric.value for metric in app.metric}


def test_history_starts_with_a_friendly_empty_state(app_settings):
    app = history_page()
    assert app.info and app.info[0].value.startswith("No predictions between")
    assert not app.metric


def test_history_with_an_unresolvable_host_says_so_without_a_traceback(app_settings, monkeypatch):
    from tests.conftest import _forget_process_storage

    monkeypatch.setenv("MNIST_CASSANDRA_CONTACT_POINTS", "cassandra-stopped.invalid")
    monkeypatch.setenv("MNIST_CASSANDRA_CONNECT_ATTEMPTS", "1")
    _forget_process_storage()
    app = history_page()
    errors = [element.value for element in app.error]
    assert any("cannot be read right now" in text and "'cassandra-stopped.invalid'" in text
               for text in errors), errors
    assert not app.exception


def test_history_shows_counts_charts_feedback_and_the_table(app_settings):
    from mnist_core.storage import PredictionStore

    now = datetime.datetime.now(datetime.timezone.utc)
    records = [
        build_record(digit=3, confidence=0.9, created_at=now - datetime.timedelta(seconds=30)),
        build_record(digit=3, confidence=0.7, created_at=now - datetime.timedelta(seconds=20)),
        build_record(digit=8, confidence=0.5, created_at=now - datetime.timedelta(seconds=10)),
    ]
    store = PredictionStore(app_settings, background=False)
    try:
        for record in records:
            store.store(record)
        store.record_correction(records[0].id, 3)
        store.record_correction(records[2].id, 0)
        store.flush()
    finally:
        store.close()

    app = history_page()

    figures = metric_values(app)
    assert figures["Predictions"] == "3"
    assert figures["Today"] == "3"
    assert figures["Mean confidence"] == "70.0%"
    assert figures["Accuracy from feedback"] == "50.0%"
    counts = chart_with_columns(app, "digit", "count")
    assert dict(zip(counts["digit"], counts["count"])) == {digit: {3: 2, 8: 1}.get(digit, 0) for digit in range(10)}
    over_time = chart_with_columns(app, "period_start", "digit", "count")
    assert over_time["count"].sum() == 3
    confidences = chart_with_columns(app, "from", "to", "predictions")
    filled = confidences[confidences["predictions"] > 0]
    assert sorted(filled["from"]) == pytest.approx([0.5, 0.7, 0.9]) and filled["predictions"].sum() == 3
    confusion = chart_with_columns(app, "true", "predicted", "count")
    cell = confusion[(confusion["true"] == 0) & (confusion["predicted"] == 8)]
    assert int(cell["count"].iloc[0]) == 1
    table = next(frame.value for frame in app.dataframe if "digit" in frame.value.columns)
    assert list(table["digit"]) == [8, 3, 3]
    assert table["image"].str.startswith("data:image/png;base64,").all()


def test_hourly_view_and_an_older_range(app_settings):
    from mnist_core.storage import PredictionStore

    old_day = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(days=10)
    store = PredictionStore(app_settings, background=False)
    try:
        store.store(build_record(digit=5, created_at=old_day))
        store.flush()
    finally:
        store.close()

    app = history_page()
    app.date_input(key="history_range").set_value((old_day.date(), old_day.date())).run()
    app.segmented_control(key="history_granularity").set_value("hour").run()

    assert not app.exception, app.exception
    assert metric_values(app)["Predictions"] == "1"
    over_time = chart_with_columns(app, "period_start", "digit", "count")
    assert len(over_time) == 24 * 10, "one row per hour of the day and digit"


def test_the_range_s_corrected_readings_download_as_a_data_set(app_settings):
    from mnist_core.storage import PredictionStore

    # A day of its own (the module's other tests store today and ten days ago).
    day = datetime.datetime.now(datetime.timezone.utc).replace(hour=12) - datetime.timedelta(days=20)
    records = [build_record(digit=digit, created_at=day + datetime.timedelta(seconds=10 * index))
               for index, digit in enumerate((1, 7, 7))]
    store = PredictionStore(app_settings, background=False)
    try:
        for record in records:
            store.store(record)
        store.record_correction(records[0].id, 1)
        store.record_correction(records[1].id, 2)
        store.flush()
    finally:
        store.close()

    app = history_page()
    app.date_input(key="history_range").set_value((day.date(), day.date())).run()
    assert not app.get("download_button") or all(
        "data set" not in element.proto.label for element in app.get("download_button"))
    prepare = next(button for button in app.button if button.label == "Prepare the data set")
    prepare.click().run()
    assert not app.exception and not app.error, [element.value for element in app.error]
    assert any(caption.value.startswith("2 labelled readings") for caption in app.caption)
    labels = [element.proto.label for element in app.get("download_button")]
    assert "Download the data set (npz)" in labels


def test_accuracy_from_feedback_is_shown_per_model_version_side_by_side(app_settings):
    from mnist_core.storage import PredictionStore

    day = datetime.datetime.now(datetime.timezone.utc).replace(hour=9) - datetime.timedelta(days=30)
    # (model version, predicted digit, true labels sent in order: the last one counts)
    feedback = [("model-old", 4, [4]), ("model-old", 9, [9, 3]), ("model-old", 1, [7]),
                ("model-new", 9, [3, 9]), ("model-new", 7, [7])]
    store = PredictionStore(app_settings, background=False)
    try:
        records = [build_record(digit=digit, model_version=version, created_at=day + datetime.timedelta(minutes=20 * index))
                   for index, (version, digit, _) in enumerate(feedback)]
        for record in records:
            store.store(record)
        store.flush()
        for record, (_, _, labels) in zip(records, feedback):
            for label in labels:
                store.record_correction(record.id, label)
                store.flush()
    finally:
        store.close()

    app = history_page()
    app.date_input(key="history_range").set_value((day.date(), day.date())).run()
    assert not app.exception, app.exception
    versions = next(frame.value for frame in app.dataframe if "model version" in frame.value.columns)
    rows = {row["model version"]: (row["feedback"], row["accuracy"]) for _, row in versions.iterrows()}
    assert rows == {"model-old": (3, pytest.approx(1 / 3)), "model-new": (2, pytest.approx(1.0))}
    assert list(versions["model version"]) == ["model-old", "model-new"]  # most feedback first

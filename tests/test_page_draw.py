"""AppTest of the Draw page: what it shows for a drawing, a blank canvas, an upload and feedback.

The canvas component cannot render under AppTest, so ``fake_canvas`` hands the page a canvas
picture (an MNIST digit redrawn as strokes); everything after the canvas is the real page,
the shipped model and the real Cassandra node.
"""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image
from streamlit.testing.v1 import AppTest

from evaluation.drawings import CANVAS_SIDE, redraw
from tests.conftest import REPOSITORY_ROOT, chart_with_columns

pytestmark = pytest.mark.cassandra

APP_TIMEOUT_SECONDS = 60


@pytest.fixture(scope="module")
def drawn_digit(mnist):
    return redraw(mnist.test_images[0], "fill", np.random.default_rng(2)), int(mnist.test_labels[0])


def draw_page() -> AppTest:
    app = AppTest.from_file(str(REPOSITORY_ROOT / "Home.py"), default_timeout=APP_TIMEOUT_SECONDS)
    app.run()
    assert not app.exception, app.exception
    return app


def stored_records(settings):
    """What the app's own store (the one the page wrote through) holds, once its writer has sent it."""
    from mnist_core.storage import get_storage

    store = get_storage()
    assert store.settings == settings
    store.flush()
    return store.latest(100)


def test_predict_shows_the_digit_its_probabilities_and_stores_it(app_settings, fake_canvas, drawn_digit, recognizer):
    picture, label = drawn_digit
    expected = recognizer.read(picture)
    app = draw_page()
    assert not app.metric, "nothing should be predicted before Predict"

    fake_canvas.picture = picture
    app.button(key="draw_predict").click().run()

    assert not app.exception, app.exception
    prediction = app.metric[0]
    assert prediction.label == "Prediction"
    assert prediction.value.startswith(str(label))
    assert f"{expected.overall_confidence:.0%}" in prediction.value
    probabilities = chart_with_columns(app, "digit", "probability", "predicted")
    assert list(probabilities["digit"]) == list(range(10))
    assert probabilities["probability"].to_numpy() == pytest.approx(np.array(expected.probabilities), abs=1e-6)
    assert any("What the model saw" in caption for image in app.image for caption in image.captions), [image.captions for image in app.image]
    assert any(toast.value == "Saved." for toast in app.toast)

    records = stored_records(app_settings)
    assert [(record.digit, record.source) for record in records[:1]] == [(label, "canvas")]


def test_feedback_stores_the_right_digit(app_settings, fake_canvas, drawn_digit):
    picture, label = drawn_digit
    wrong_answer = (label + 1) % 10
    app = draw_page()
    fake_canvas.picture = picture
    app.button(key="draw_predict").click().run()
    record_id = app.session_state["draw_result"].record.id

    app.radio(key=f"draw_right_{record_id}").set_value("No").run()
    app.pills(key=f"draw_true_label_{record_id}").set_value(wrong_answer).run()

    assert not app.exception, app.exception
    assert any(f"Recorded {wrong_answer}" in message.value for message in app.success)
    stored = next(record for record in stored_records(app_settings) if record.id == record_id)
    assert stored.true_label == wrong_answer


def test_a_blank_canvas_says_draw_first_and_stores_nothing(app_settings, fake_canvas):
    app = draw_page()
    before = len(stored_records(app_settings))
    fake_canvas.picture = np.zeros((CANVAS_SIDE, CANVAS_SIDE, 4), dtype=np.uint8)
    app.button(key="draw_predict").click().run()

    assert not app.exception, app.exception
    assert [message.value for message in app.info] == ["Draw a digit first."]
    assert not app.metric
    assert len(stored_records(app_settings)) == before


def test_a_letter_is_answered_not_a_digit_and_stores_nothing(app_settings, fake_canvas, refused_letter):
    app = draw_page()
    before = len(stored_records(app_settings))
    fake_canvas.picture = refused_letter()
    app.button(key="draw_predict").click().run()

    assert not app.exception, app.exception
    assert [metric.value for metric in app.metric] == ["Not a digit"]
    assert any("does not look like a digit" in message.value for message in app.warning)
    assert len(stored_records(app_settings)) == before


def test_below_the_threshold_the_page_says_not_sure(app_settings, fake_canvas, drawn_digit, monkeypatch):
    from mnist_core import settings

    monkeypatch.setenv("MNIST_CONFIDENCE_THRESHOLD", "1.0")
    settings.get_settings.cache_clear()
    app = draw_page()
    fake_canvas.picture = drawn_digit[0]
    app.button(key="draw_predict").click().run()

    assert any(message.value.startswith("Not sure") for message in app.warning)


def test_an_upload_is_read_and_stored_as_upload(app_settings, fake_canvas, drawn_digit):
    picture, label = drawn_digit
    buffer = io.BytesIO()
    Image.fromarray(picture).save(buffer, format="PNG")
    app = draw_page()

    app.file_uploader(key="draw_upload_0").upload("digit.png", buffer.getvalue(), mime_type="image/png").run()

    assert not app.exception, app.exception
    assert app.metric[0].value.startswith(str(label))
    assert stored_records(app_settings)[0].source == "upload"


def test_an_unreadable_upload_is_an_error_message(app_settings, fake_canvas):
    app = draw_page()
    app.file_uploader(key="draw_upload_0").upload("digit.png", b"not a picture at all", mime_type="image/png").run()

    assert not app.exception, app.exception
    assert app.error and "image" in app.error[0].value.lower()
    assert not app.metric


def test_the_canvas_strokes_tell_apart_digits_drawn_over_each_other(app_settings, fake_canvas):
    from mnist_core.strokes import canvas_picture
    from tests.conftest import fabric_scene
    from tests.test_segmentation import _circle

    # A 1 drawn through the left of a 0: as a picture alone one blob, which the model refuses.
    strokes = [np.array([[80.0, 50.0], [80.0, 230.0]]), _circle(120, 140, 55)]
    picture = canvas_picture(strokes, pen_width=18)
    app = draw_page()
    fake_canvas.picture = picture
    app.button(key="draw_predict").click().run()
    assert [metric.value for metric in app.metric] == ["Not a digit"]

    # With the canvas's scene, stroke by stroke, the page reads the number.
    fake_canvas.json_data = fabric_scene(strokes)
    app.button(key="draw_predict").click().run()
    assert not app.exception, app.exception
    assert app.metric[0].value.startswith("10 ")
    records = stored_records(app_settings)
    assert records[0].number == "10" and records[0].source == "canvas"


def new_records(settings, known_ids: set) -> list:
    return [record for record in stored_records(settings) if record.id not in known_ids]


def live_answer_on_screen(settings, fake_canvas, picture):
    """The Draw page with "Predict as I draw" on and the picture's answer shown, not stored yet;
    and the ids stored before it."""
    app = draw_page()
    known = {record.id for record in stored_records(settings)}
    app.toggle(key="draw_live").set_value(True).run()
    fake_canvas.picture = picture
    app.run()  # the canvas sent a picture
    assert app.metric, "a live answer is on screen"
    assert new_records(settings, known) == [], "a live answer stores nothing"
    return app, known


def test_predict_as_i_draw_answers_each_picture_and_stores_the_drawing_once_on_predict(app_settings, fake_canvas, mnist):
    first, second = (redraw(mnist.test_images[index], "fill", np.random.default_rng(index)) for index in (1, 2))
    labels = [int(mnist.test_labels[index]) for index in (1, 2)]
    assert labels[0] != labels[1]
    app = draw_page()
    known = {record.id for record in stored_records(app_settings)}
    app.toggle(key="draw_live").set_value(True).run()

    fake_canvas.picture = first
    app.run()  # the canvas sent a picture
    assert app.metric[0].value.startswith(str(labels[0]))
    assert any("not saved yet" in caption.value for caption in app.caption)
    fake_canvas.picture = second  # the drawing goes on (here: becomes another digit)
    app.run()
    assert app.metric[0].value.startswith(str(labels[1]))
    assert new_records(app_settings, known) == [], "a live answer stores nothing"

    app.button(key="draw_predict").click().run()
    assert not app.exception, app.exception
    assert [record.digit for record in new_records(app_settings, known)] == [labels[1]]
    assert any(toast.value == "Saved." for toast in app.toast)
    app.button(key="draw_predict").click().run()  # the same drawing again: no second row
    assert len(new_records(app_settings, known)) == 1


def test_clear_stores_a_live_answer_not_saved_yet(app_settings, fake_canvas, drawn_digit):
    picture, label = drawn_digit
    app, known = live_answer_on_screen(app_settings, fake_canvas, picture)

    fake_canvas.picture = None  # Clear gives a new, empty canvas
    app.button(key="draw_clear").click().run()
    assert not app.exception, app.exception
    assert not app.metric
    assert [record.digit for record in new_records(app_settings, known)] == [label]


def test_an_upload_stores_the_live_answer_it_moves_on_from(app_settings, fake_canvas, drawn_digit, mnist):
    picture, label = drawn_digit
    uploaded = redraw(mnist.test_images[3], "fill", np.random.default_rng(3))
    buffer = io.BytesIO()
    Image.fromarray(uploaded).save(buffer, format="PNG")
    app, known = live_answer_on_screen(app_settings, fake_canvas, picture)

    app.file_uploader(key="draw_upload_0").upload("digit.png", buffer.getvalue(), mime_type="image/png").run()
    assert not app.exception, app.exception
    stored = new_records(app_settings, known)
    assert sorted(record.source for record in stored) == ["canvas", "upload"]
    assert next(record for record in stored if record.source == "canvas").digit == label


def test_a_click_left_waiting_by_a_visit_that_went_elsewhere_is_stored_on_return(app_settings, fake_canvas, drawn_digit):
    import time

    picture, label = drawn_digit
    app, known = live_answer_on_screen(app_settings, fake_canvas, picture)
    app.session_state["draw_pending_since"] = time.monotonic() - 60  # clicked, then left for another page
    fake_canvas.picture = None  # the canvas the person comes back to
    app.run()
    assert not app.exception, app.exception
    assert [record.digit for record in new_records(app_settings, known)] == [label]
    assert not any(message.value == "Draw a digit first." for message in app.info)

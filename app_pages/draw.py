"""Draw page: draw (or upload) a digit, read it, store it, and tell us whether it was right.

The canvas sends its picture 200 ms after mouse-up; a Predict click can reach the server
first, with the picture from before the last stroke. So a click marks a prediction as
pending and the page gives the last stroke ``CLICK_GRACE_SECONDS`` to arrive (a picture
arriving meanwhile restarts the run with it), then reads the newest picture; with nothing
drawn yet it waits up to ``STROKE_WAIT_SECONDS``. Everything else is ``mnist_core.readings``.
"""

import hashlib
import time

import numpy as np
import streamlit as st
import streamlit_drawable_canvas

from dashboard import charts, resources
from mnist_core import readings, settings, storage
from mnist_core.preprocess import ImageDecodeError
from mnist_core.strokes import strokes_from_canvas_json

CANVAS_SIDE = 280
DEFAULT_STROKE_WIDTH = 18
# The canvas sends its picture 200 ms after mouse-up (debounced), so a Predict click waits this
# long for a newer picture; with nothing drawn yet it waits up to STROKE_WAIT_SECONDS.
CLICK_GRACE_SECONDS = 0.2
STROKE_WAIT_SECONDS = 1.5
STROKE_POLL_SECONDS = 0.1
DIGIT_CHOICES = list(range(10))


def init_state() -> None:
    """Session keys of this page, set once per session."""
    defaults = {
        "draw_canvas_generation": 0,  # bumped by Clear: a new canvas key empties the canvas
        "draw_result": None,  # the last StoredReading shown
        "draw_message": None,  # "blank" (nothing drawn) or "not_a_digit" for the last Predict
        "draw_predicted_signature": None,  # hash of the canvas picture last read
        "draw_pending_since": None,  # monotonic time of a Predict click still waiting for a picture
        "draw_upload_handled": None,  # file id of the last upload read
        "draw_feedback_saved": {},  # prediction id -> (true label, StoreOutcome)
    }
    for key, value in defaults.items():
        st.session_state.setdefault(key, value)


def clear_canvas() -> None:
    st.session_state.draw_canvas_generation += 1
    st.session_state.draw_result = None
    st.session_state.draw_message = None
    st.session_state.draw_predicted_signature = None
    st.session_state.draw_pending_since = None


def request_prediction() -> None:
    st.session_state.draw_pending_since = time.monotonic()


def canvas_ui(stroke_width: int) -> tuple[np.ndarray | None, list[np.ndarray]]:
    """The drawing canvas (toolbar: undo, redo, clear); returns its RGBA picture (None before the first one)
    and its strokes in drawing order."""
    result = streamlit_drawable_canvas.st_canvas(
        stroke_width=stroke_width,
        stroke_color="#000000",
        background_color="",
        width=CANVAS_SIDE,
        height=CANVAS_SIDE,
        drawing_mode="freedraw",
        update_streamlit=True,
        return_image_data=True,
        key=f"draw_canvas_{st.session_state.draw_canvas_generation}",
    )
    image = result.image_data
    strokes = [] if image is None else strokes_from_canvas_json(result.json_data, picture_width=image.shape[1])
    return image, strokes


def controls_ui() -> tuple[int, bool]:
    """Pen width and the "predict as I draw" toggle."""
    stroke_width = st.slider("Pen width", min_value=6, max_value=40, value=DEFAULT_STROKE_WIDTH, key="draw_stroke_width")
    live = st.toggle("Predict as I draw", value=False, key="draw_live")
    return stroke_width, live


def picture_signature(image: np.ndarray | None) -> str | None:
    return None if image is None else hashlib.blake2b(np.ascontiguousarray(image).tobytes(), digest_size=16).hexdigest()


def has_ink(image: np.ndarray | None) -> bool:
    """Cheap check before reading: a canvas picture with any stroke has some alpha."""
    return image is not None and image.ndim == 3 and image.shape[-1] == 4 and int(image[..., 3].max()) > 0


def show_toast(outcome: storage.StoreOutcome) -> None:
    if not outcome.offline:
        st.toast("Saved.", icon=":material/check_circle:")
    else:
        st.toast("Cassandra is unreachable: kept offline, it will be sent later.", icon=":material/cloud_off:")


def read_and_store(image, *, source: str, strokes=None) -> None:
    """Read one picture through mnist_core and keep the result for rendering."""
    result = readings.predict_and_store(
        image, source=source, recognizer=resources.recognizer_resource(), store=resources.store_resource(), strokes=strokes
    )
    if not result.reading.has_digits:
        st.session_state.draw_result = None
        st.session_state.draw_message = "not_a_digit" if result.reading.is_not_a_digit else "blank"
        return
    st.session_state.draw_result = result
    st.session_state.draw_message = None
    show_toast(result.outcome)


def wait_for_stroke(seconds: float) -> None:
    """Pause this run briefly; a canvas picture arriving meanwhile stops it and starts a run with that picture.

    Streamlit stops a run for a newer rerun request at its next element call, so the loop
    touches a placeholder after each short sleep (cheaper and faster than st.rerun()).
    """
    deadline = time.monotonic() + seconds
    checkpoint = st.empty()
    while time.monotonic() < deadline:
        time.sleep(STROKE_POLL_SECONDS)
        checkpoint.empty()


def handle_canvas(image: np.ndarray | None, *, live: bool, strokes=None) -> None:
    """Predict the canvas picture when asked (or live), after giving a stroke still in flight time to arrive."""
    signature = picture_signature(image)
    pending_since = st.session_state.draw_pending_since
    if pending_since is None:
        if live and has_ink(image) and signature != st.session_state.draw_predicted_signature:
            st.session_state.draw_predicted_signature = signature
            read_and_store(image, source="canvas", strokes=strokes)
        return
    waited = time.monotonic() - pending_since
    if waited < CLICK_GRACE_SECONDS:
        wait_for_stroke(CLICK_GRACE_SECONDS - waited)
    if not has_ink(image):
        # Nothing has arrived yet: the first stroke may still be on its way.
        wait_for_stroke(STROKE_WAIT_SECONDS - (time.monotonic() - pending_since))
    st.session_state.draw_pending_since = None
    if not has_ink(image):
        st.session_state.draw_result = None
        st.session_state.draw_message = "blank"
    elif signature != st.session_state.draw_predicted_signature or st.session_state.draw_result is None:
        st.session_state.draw_predicted_signature = signature
        read_and_store(image, source="canvas", strokes=strokes)
    # Otherwise the answer on screen is already this picture's: no second row for it.


def upload_ui() -> None:
    """A PNG/JPEG upload read like a drawing (size-limited by the server and here)."""
    uploaded = st.file_uploader(
        "Or upload a picture of a digit (PNG or JPEG)",
        type=list(readings.ACCEPTED_IMAGE_TYPES),
        key=f"draw_upload_{st.session_state.draw_canvas_generation}",
    )
    if uploaded is None or uploaded.file_id == st.session_state.draw_upload_handled:
        return
    st.session_state.draw_upload_handled = uploaded.file_id
    if uploaded.size > readings.MAX_UPLOAD_BYTES:
        st.error(f"That file is {uploaded.size // 1024} kB; pictures up to {readings.MAX_UPLOAD_BYTES // 1024} kB are read.")
        return
    try:
        read_and_store(uploaded.getvalue(), source="upload")
    except ImageDecodeError as error:
        st.error(str(error))


def feedback_ui(result: readings.StoredReading) -> None:
    """"Was this right?" and, if not, the right digit, stored as the prediction's true label."""
    record = result.record
    saved = st.session_state.draw_feedback_saved.get(record.id)
    if saved is not None:
        label, outcome = saved
        where = "kept offline, to be sent later" if outcome.offline else "saved"
        st.success(f"Thanks! Recorded {label} as the right digit ({where}).", icon=":material/thumb_up:")
        return
    what = "first digit" if result.reading.number else "digit"
    answer = st.radio("Was this right?", ["Yes", "No"], index=None, horizontal=True, key=f"draw_right_{record.id}")
    if answer is None:
        return
    if answer == "Yes":
        true_label = record.digit
    else:
        true_label = st.pills(f"The right {what}", DIGIT_CHOICES, key=f"draw_true_label_{record.id}")
        if true_label is None:
            return
    try:
        outcome = resources.store_resource().record_correction(record.id, int(true_label))
    except (storage.PredictionNotFound, ValueError) as error:
        st.error(f"The feedback was not saved: {error}")
        return
    st.session_state.draw_feedback_saved[record.id] = (int(true_label), outcome)
    st.rerun()


def result_ui(result: readings.StoredReading, *, threshold: float) -> None:
    """The answer: metric, not-sure state, probabilities, the 28x28 input(s) and feedback."""
    reading = result.reading
    st.metric("Prediction", readings.answer_text(reading), border=True)
    if readings.is_unsure(reading, threshold):
        st.warning(
            f"Not sure: the model is below {threshold:.0%} confident. Try drawing the digit larger and centred.",
            icon=":material/help:",
        )
    st.altair_chart(
        charts.probabilities_chart(reading.probabilities, predicted=reading.digit),
        width="stretch",
        key="draw_probabilities_chart",
    )
    columns = st.columns(min(len(reading.digits), 6))
    for index, column in enumerate(columns):
        with column:
            st.image(
                charts.model_input_image(reading.model_inputs[index]),
                caption=f"Model input {index + 1}: {reading.digits[index].digit}" if reading.number else "What the model saw (28×28)",
            )
    st.caption(f"Read in {reading.latency_ms:.0f} ms from {result.record.source} · model {result.record.model_version}")
    feedback_ui(result)


# Page ---------------------------------------------------------------------------------

init_state()
app_settings = settings.get_settings()
try:
    resources.recognizer_resource()
except (OSError, ValueError) as error:
    st.error(f"The model could not be loaded, so nothing can be read yet: {error}")
    st.stop()

st.title("Draw a digit")
drawing_column, answer_column = st.columns([1, 1], gap="large")
with drawing_column:
    stroke_width, live = controls_ui()
    canvas_image, canvas_strokes = canvas_ui(stroke_width)
    predict_column, clear_column = st.columns(2)
    # Read the click inline, not in on_click: a click whose run is cut short by the canvas's own
    # rerun is replayed to the next run, while a callback's session-state write can be lost.
    if predict_column.button("Predict", type="primary", key="draw_predict", width="stretch"):
        request_prediction()
    clear_column.button("Clear", key="draw_clear", on_click=clear_canvas, width="stretch")
    handle_canvas(canvas_image, live=live, strokes=canvas_strokes)
    upload_ui()

with answer_column:
    if st.session_state.draw_message == "blank":
        st.info("Draw a digit first.", icon=":material/draw:")
    elif st.session_state.draw_message == "not_a_digit":
        st.metric("Prediction", "Not a digit", border=True)
        st.warning("That does not look like a digit, so nothing was saved. Clear the canvas and draw "
                   "one digit (0-9) or a number.", icon=":material/block:")
    elif st.session_state.draw_result is not None:
        result_ui(st.session_state.draw_result, threshold=app_settings.confidence_threshold)
    else:
        st.caption("Draw a digit (or a number) on the canvas and press **Predict**.")

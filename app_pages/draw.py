"""Draw page: draw (or upload) a digit, read it, store it, and tell us whether it was right.

The canvas, its buttons and the answer are one ``st.fragment``: a stroke or a click reruns
only that part of the page. A Predict click reads the newest picture at once and shows the
answer; the row is stored ``CLICK_GRACE_SECONDS`` after the click, in a rerun that comes with
the newest picture: the canvas sends its picture 200 ms after mouse-up, so a quick click can
come before the last stroke's picture, and that picture is then read and stored instead. The
wait delays the "Saved" toast, never the answer. With nothing drawn yet the click looks for a
first stroke for up to ``STROKE_WAIT_SECONDS``.

"Predict as I draw" reads each new picture as it arrives and stores nothing: the drawing's
reading is stored once, when the person presses Predict or moves on with Clear.
Everything else is ``mnist_core.readings`` (and the answer's wording ``mnist_core.answer_wording``).
"""

import hashlib
import time

import numpy as np
import streamlit as st
import streamlit_drawable_canvas
from streamlit.errors import StreamlitAPIException

from dashboard import charts, resources
from mnist_core import answer_wording, feedback, preprocess, readings, settings, storage
from mnist_core.preprocess import ImageDecodeError
from mnist_core.strokes import strokes_from_canvas_json

CANVAS_SIDE = 280
DEFAULT_STROKE_WIDTH = 18
# The canvas sends its picture 200 ms after mouse-up (debounced; encoding and sending it add tens
# of ms), so a Predict click stores the reading of the picture it has this long after the click.
# The answer is on screen before: the wait only delays the toast. With nothing drawn yet a
# click looks for a first stroke every STROKE_POLL_SECONDS for up to STROKE_WAIT_SECONDS.
CLICK_GRACE_SECONDS = 0.4
STROKE_WAIT_SECONDS = 1.5
STROKE_POLL_SECONDS = 0.1
# A click still waiting this long after it was made belongs to a visit that left the page.
STALE_CLICK_SECONDS = 5.0
DIGIT_CHOICES = list(range(10))


def init_state() -> None:
    """Session keys of this page, set once per session."""
    defaults = {
        "draw_canvas_generation": 0,  # bumped by Clear: a new canvas key empties the canvas
        "draw_result": None,  # the StoredReading shown; its record is None until it is stored
        "draw_message": None,  # "blank" (nothing drawn) or "not_a_digit" for the last Predict
        "draw_predicted_signature": None,  # hash of the canvas picture the shown answer read
        "draw_pending_since": None,  # monotonic time of a Predict click not yet stored
        "draw_upload_handled": None,  # file id of the last upload read
        "draw_feedback_saved": {},  # prediction id -> (true label, StoreOutcome)
    }
    for key, value in defaults.items():
        st.session_state.setdefault(key, value)


def clear_canvas() -> None:
    """Clear: a reading shown live and not stored yet is stored first (the person moves on)."""
    store_shown_reading()
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


def show_toast(outcome: storage.StoreOutcome) -> None:
    if not outcome.offline:
        st.toast("Saved.", icon=":material/check_circle:")
    else:
        st.toast("Cassandra is unreachable: kept offline, it will be sent later.", icon=":material/cloud_off:")


def is_unstored(result: readings.StoredReading | None) -> bool:
    return result is not None and result.record is None


def keep_result(result: readings.StoredReading) -> None:
    """What the answer column renders: a reading with digits, or why there is none."""
    if result.reading.has_digits:
        st.session_state.draw_result = result
        st.session_state.draw_message = None
    else:
        st.session_state.draw_result = None
        st.session_state.draw_message = "not_a_digit" if result.reading.is_not_a_digit else "blank"


def show_reading(image, *, strokes=None) -> None:
    """Read the canvas picture and put its answer on the page, storing nothing yet."""
    reading = resources.recognizer_resource().read(image, strokes=strokes)
    keep_result(readings.StoredReading(reading=reading, record=None, outcome=None))


def store_shown_reading() -> None:
    """Store the reading on screen if it is not stored yet, and say where it went."""
    if not is_unstored(st.session_state.draw_result):
        return
    result = readings.store_reading(
        st.session_state.draw_result.reading,
        source="canvas",
        model_version=resources.recognizer_resource().model_version,
        store=resources.store_resource(),
    )
    st.session_state.draw_result = result
    show_toast(result.outcome)


def read_and_store(image, *, source: str) -> None:
    """Read one picture (an upload) through mnist_core, store it, and keep the result for rendering.

    The canvas's reading on screen, if not stored yet (live, or a click within its grace), is
    stored first: an upload moves on from it as Clear does.
    """
    store_shown_reading()
    st.session_state.draw_predicted_signature = None
    st.session_state.draw_pending_since = None
    result = readings.predict_and_store(
        image, source=source, recognizer=resources.recognizer_resource(), store=resources.store_resource()
    )
    keep_result(result)
    if result.outcome is not None:
        show_toast(result.outcome)


def rerun_drawing_after(seconds: float) -> None:
    """Let the canvas deliver what it is still sending, then run the drawing part again.

    A canvas picture sent while this part runs does not stop the run (Streamlit queues a
    fragment's own reruns), so the page cannot wait for it inside a run: it sleeps briefly
    and asks for a rerun, which comes with the newest picture.
    """
    time.sleep(max(seconds, 0.0))
    try:
        st.rerun(scope="fragment")
    except StreamlitAPIException:
        # This run is the whole page's (the first one, or a test's): rerun all of it.
        st.rerun()


def handle_canvas(image: np.ndarray | None, *, live: bool, strokes=None) -> None:
    """Read the canvas picture when asked (or live, as it changes); storing comes after the answer (finish_prediction)."""
    signature = picture_signature(image)
    pending_since = st.session_state.draw_pending_since
    if pending_since is not None and time.monotonic() - pending_since > STALE_CLICK_SECONDS:
        # The person left the page during the wait: the click's reading is stored now, and the
        # canvas they come back to is not taken for a blank answer.
        st.session_state.draw_pending_since = pending_since = None
        store_shown_reading()
    if pending_since is None:
        if live and preprocess.has_ink(image) and signature != st.session_state.draw_predicted_signature:
            st.session_state.draw_predicted_signature = signature
            show_reading(image, strokes=strokes)
        return
    if not preprocess.has_ink(image):
        st.session_state.draw_result = None
        if time.monotonic() - pending_since >= STROKE_WAIT_SECONDS:
            # No stroke came: the canvas is blank.
            st.session_state.draw_pending_since = None
            st.session_state.draw_message = "blank"
    elif signature != st.session_state.draw_predicted_signature or st.session_state.draw_result is None:
        st.session_state.draw_predicted_signature = signature
        show_reading(image, strokes=strokes)


def finish_prediction(image: np.ndarray | None) -> None:
    """After the answer is on screen: store a clicked prediction once no newer picture can come.

    Until CLICK_GRACE_SECONDS after the click (STROKE_WAIT_SECONDS while nothing is drawn), the
    page looks again for a newer picture; the reading stored is the newest picture's. A click
    on a picture whose reading is stored already stores nothing again.
    """
    pending_since = st.session_state.draw_pending_since
    if pending_since is None:
        return
    waited = time.monotonic() - pending_since
    if not preprocess.has_ink(image):
        rerun_drawing_after(min(STROKE_POLL_SECONDS, STROKE_WAIT_SECONDS - waited))
    if waited < CLICK_GRACE_SECONDS:
        rerun_drawing_after(CLICK_GRACE_SECONDS - waited)
    st.session_state.draw_pending_since = None
    store_shown_reading()


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
        outcome = feedback.record_feedback(resources.store_resource(), record.id, int(true_label))
    except (feedback.FeedbackRefused, feedback.UnknownPrediction, storage.StorageError) as error:
        st.error(f"The feedback was not saved: {error}")
        return
    st.session_state.draw_feedback_saved[record.id] = (int(true_label), outcome)
    st.rerun()


def result_ui(result: readings.StoredReading, *, threshold: float) -> None:
    """The answer: metric, not-sure state, probabilities and the 28x28 input(s)."""
    reading = result.reading
    st.metric("Prediction", answer_wording.answer_text(reading), border=True)
    if answer_wording.is_unsure(reading, threshold):
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


def stored_result_ui(result: readings.StoredReading) -> None:
    """Below the answer: where it was stored and "Was this right?", or that it is not stored yet."""
    reading = result.reading
    if result.record is None:
        if st.session_state.draw_pending_since is None:
            st.caption(f"Read in {reading.latency_ms:.0f} ms · not saved yet: press **Predict** to save this reading.")
        return
    st.caption(f"Read in {reading.latency_ms:.0f} ms from {result.record.source} · model {result.record.model_version}")
    feedback_ui(result)


def answer_ui(*, threshold: float) -> None:
    if st.session_state.draw_message == "blank":
        st.info("Draw a digit first.", icon=":material/draw:")
    elif st.session_state.draw_message == "not_a_digit":
        st.metric("Prediction", "Not a digit", border=True)
        st.warning("That does not look like a digit, so nothing was saved. Clear the canvas and draw "
                   "one digit (0-9) or a number.", icon=":material/block:")
    elif st.session_state.draw_result is not None:
        result_ui(st.session_state.draw_result, threshold=threshold)
    else:
        st.caption("Draw a digit (or a number) on the canvas and press **Predict**.")


@st.fragment
def drawing_ui(*, threshold: float) -> None:
    """Canvas, buttons, upload and answer: the part of the page a stroke or a click reruns."""
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
        answer_ui(threshold=threshold)
        below_answer = st.container()
    # The answer is on screen before this: storing waits for a picture that may still come.
    finish_prediction(canvas_image)
    if st.session_state.draw_result is not None and st.session_state.draw_message is None:
        with below_answer:
            stored_result_ui(st.session_state.draw_result)


# Page ---------------------------------------------------------------------------------

init_state()
app_settings = settings.get_settings()
try:
    resources.recognizer_resource()
except (OSError, ValueError) as error:
    st.error(f"The model could not be loaded, so nothing can be read yet: {error}")
    st.stop()

st.title("Draw a digit")
drawing_ui(threshold=app_settings.confidence_threshold)

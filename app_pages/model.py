"""Model page: the model card written at the end of training, shown as figures and Altair charts.

Everything comes from ``models/mnist_cnn.card.json`` through the loaded recognizer, so the
page always describes the model that is answering.
"""

import pandas as pd
import streamlit as st

from dashboard import charts, resources
from mnist_core import model_catalogue


def facts_ui(card: dict) -> None:
    accuracy, parameters, errors, training = st.columns(4)
    test_accuracy = card.get("test_accuracy")
    accuracy.metric("MNIST test accuracy (through the app)", "–" if test_accuracy is None else f"{test_accuracy:.2%}",
                    border=True)
    parameters.metric("Parameters", f"{card.get('parameter_count', 0):,}", border=True)
    if "test_errors" in card:
        errors.metric(f"Test errors (of {card.get('test_examples', 0):,})", f"{card['test_errors']:,}", border=True)
    if "training_seconds" in card:
        training.metric("Training time", f"{card['training_seconds'] / 60:.1f} min", border=True)


def real_handwriting_ui(card: dict) -> None:
    """Figures on material the model never trained on: real pen-drawn digits, numbers, non-digits."""
    figures = card.get("real_handwriting")
    if not figures:
        st.caption("No real-handwriting figures in this card yet (`python -m bench.drawn_digits --write-card`).")
        return
    fit, box, numbers, drawn_numbers, refused = st.columns(5)
    fit.metric("Real pen digits, filling the canvas", f"{figures['dev_fit_accuracy']:.2%}", border=True)
    box.metric("Real pen digits, writer's own size", f"{figures['dev_box_accuracy']:.2%}", border=True)
    numbers.metric("Numbers of 2-4 digits read exactly", f"{figures['numbers_2_to_4_exact']:.1%}", border=True)
    if "numbers_2_to_4_exact_with_strokes" in figures:
        drawn_numbers.metric(
            "… drawn here (strokes known)", f"{figures['numbers_2_to_4_exact_with_strokes']:.1%}", border=True
        )
    refused.metric("Scribbles shown as a sure digit", f"{figures['scribbles_shown_as_digit']:.1%}", border=True)
    st.caption(
        f"{figures['dev_digits']:,} digits from {figures['dev_writers']} writers outside MNIST, drawn on the "
        f"280×280 canvas with an 18 px pen; numbers composed from the same writers' digits (touching, "
        f"slanted, overlapping), read from the picture alone (CLI, API, uploads) and, on the Draw page, "
        f"with the order of the strokes too; scribbles, letters and doodles generated with a seed "
        f"(letters {figures['letters_shown_as_digit']:.1%}, doodles {figures['doodles_shown_as_digit']:.1%} "
        f"shown as a digit with ≥ 60% confidence). Reproduce with `{figures['reproduce']}`."
    )


def number_reader_ui(number_reader) -> None:
    """The second model, which reads a drawing of several digits as one line of writing."""
    if number_reader is None:
        st.caption("No number reader next to the model: numbers are read by cutting the ink into digits alone.")
        return
    card = number_reader.model_card
    exact, parameters, training = st.columns(3)
    if "validation_exact" in card:
        exact.metric("Validation numbers read exactly", f"{card['validation_exact']:.1%}", border=True)
    parameters.metric("Number reader parameters", f"{card.get('parameter_count', 0):,}", border=True)
    if "training_seconds" in card:
        training.metric("Number reader training time", f"{card['training_seconds'] / 60:.1f} min", border=True)
    st.caption(
        f"Version `{number_reader.model_version}`: a convolutional sequence model trained with CTC on numbers "
        f"of 1 to 6 digits composed from MNIST training digits (validation: numbers from MNIST's validation "
        f"digits). When the digit model reads a drawing as several digits, or its ink is wide enough to hold "
        f"several, the number reader reads the whole line too, and its reading wins when it disagrees and "
        f"is sure. Train it with `python -m train.number_reader`."
    )


def training_setup_ui(card: dict) -> None:
    """Architecture and the hyperparameters the card recorded, as a small table."""
    setup_keys = [
        "architecture", "epochs", "batch_size", "learning_rate", "label_smoothing", "augmentation",
        "training_examples", "validation_examples", "seed", "data_source",
    ]
    rows = [{"setting": key.replace("_", " "), "value": str(card[key])} for key in setup_keys if key in card]
    st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch", key="model_setup")
    if card.get("layers"):
        st.caption("Layers: " + " → ".join(card["layers"]))


def versions_ui(served_path) -> None:
    """Every digit model in the served one's folder, with its card's figures: what could be served instead."""
    models = model_catalogue.models_beside(served_path)
    if len(models) < 2:
        st.caption("Only the served model is in its folder. A fine-tuned model saved beside it (with its card) "
                   "appears here; `MNIST_MODEL_PATH` chooses which one the app serves.")
        return
    rows = [{"model version": entry.model_version, "served": "yes" if entry.served else "",
             "file": entry.path.name, "MNIST test": entry.test_accuracy, "real digits (fit)": entry.dev_fit_accuracy,
             "real digits (box)": entry.dev_box_accuracy, "numbers 2–4": entry.numbers_exact} for entry in models]
    percent = {column: st.column_config.NumberColumn(column, format="percent")
               for column in ("MNIST test", "real digits (fit)", "real digits (box)", "numbers 2–4")}
    st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch", column_config=percent, key="model_versions")
    st.caption("`MNIST_MODEL_PATH` chooses the served model; the History page compares versions on your users' feedback.")


# Page ---------------------------------------------------------------------------------

st.title("Model")
try:
    recognizer = resources.recognizer_resource()
except (OSError, ValueError) as error:
    st.error(f"The model could not be loaded: {error}")
    st.stop()
card = recognizer.model_card
if not card:
    st.info(f"Model `{recognizer.model_version}` has no model card next to it, so there is nothing to show.")
    st.stop()

st.caption(f"Model version `{recognizer.model_version}`")
facts_ui(card)
st.subheader("Real handwriting")
real_handwriting_ui(card)
st.subheader("Number reader")
number_reader_ui(recognizer.number_reader)
st.subheader("Model versions")
versions_ui(recognizer.model_path)
setup_column, classes_column = st.columns(2)
with setup_column:
    st.subheader("Architecture and training")
    training_setup_ui(card)
with classes_column:
    st.subheader("Precision and recall per digit")
    if card.get("per_class"):
        st.altair_chart(charts.per_class_chart(card["per_class"]), width="stretch", key="model_per_class_chart")
matrix_column, curves_column = st.columns(2)
with matrix_column:
    st.subheader("Confusion matrix (MNIST test set)")
    if card.get("confusion_matrix"):
        st.altair_chart(charts.confusion_heatmap(card["confusion_matrix"]), width="stretch", key="model_confusion_chart")
with curves_column:
    st.subheader("Training curves")
    if card.get("history"):
        st.altair_chart(charts.training_curves_chart(card["history"]), key="model_curves_chart")

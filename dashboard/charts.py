"""Altair charts for the pages, built from plain data so tests can check what each one plots.

Every function returns an ``altair.Chart`` whose data is a pandas DataFrame with named
columns (``digit``, ``probability``, ``count``, ...); AppTests read that data back.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Sequence

import altair as alt
import numpy as np
import pandas as pd
from PIL import Image

DIGITS = list(range(10))
DIGIT_SCALE = alt.Scale(scheme="tableau10", domain=DIGITS)


def probabilities_chart(probabilities: Sequence[float], *, predicted: int | None = None) -> alt.Chart:
    """One bar per digit with the model's probability; the predicted digit is highlighted."""
    frame = pd.DataFrame({"digit": DIGITS, "probability": [float(value) for value in probabilities]})
    frame["predicted"] = frame["digit"] == predicted
    return (
        alt.Chart(frame, height=220)
        .mark_bar()
        .encode(
            x=alt.X("digit:O", title="Digit", axis=alt.Axis(labelAngle=0)),
            y=alt.Y("probability:Q", title="Probability", scale=alt.Scale(domain=[0, 1]), axis=alt.Axis(format="%")),
            color=alt.condition("datum.predicted", alt.value("#e4572e"), alt.value("#9db4c0")),
            tooltip=["digit", alt.Tooltip("probability:Q", format=".2%")],
        )
    )


def counts_per_digit_chart(totals: Sequence[int]) -> alt.Chart:
    """How many predictions read each digit: the mission's chart."""
    frame = pd.DataFrame({"digit": DIGITS, "count": [int(value) for value in totals]})
    return (
        alt.Chart(frame, height=260)
        .mark_bar()
        .encode(
            x=alt.X("digit:O", title="Digit", axis=alt.Axis(labelAngle=0)),
            y=alt.Y("count:Q", title="Predictions", axis=alt.Axis(tickMinStep=1)),
            color=alt.Color("digit:N", scale=DIGIT_SCALE, legend=None),
            tooltip=["digit", "count"],
        )
    )


def counts_over_time_chart(rows: Sequence[dict], *, granularity: str) -> alt.Chart:
    """Predictions per hour or per day, stacked by digit (rows from HistoryCounts.long_rows)."""
    frame = pd.DataFrame(rows, columns=["period_start", "digit", "count"])
    frame["period_start"] = pd.to_datetime(frame["period_start"].map(lambda moment: moment.replace(tzinfo=None)))
    if granularity == "hour":
        x = alt.X("yearmonthdatehours(period_start):T", title="Hour")
    else:
        # One labelled band per day reads better than a time axis whose ticks fall between bars.
        x = alt.X("yearmonthdate(period_start):O", title="Day", axis=alt.Axis(format="%d %b", labelAngle=0))
    return (
        alt.Chart(frame, height=260)
        .mark_bar()
        .encode(
            x=x,
            y=alt.Y("sum(count):Q", title="Predictions", stack="zero", axis=alt.Axis(tickMinStep=1)),
            color=alt.Color("digit:N", scale=DIGIT_SCALE, title="Digit"),
            tooltip=[alt.Tooltip("period_start:T", title="From"), "digit", "count"],
        )
    )


def confidence_histogram(bin_counts: Sequence[int]) -> alt.Chart:
    """How sure the model was: predictions per 5 % confidence bin (the rollups' histogram)."""
    width = 1 / len(bin_counts)
    frame = pd.DataFrame({
        "from": [index * width for index in range(len(bin_counts))],
        "to": [(index + 1) * width for index in range(len(bin_counts))],
        "predictions": [int(count) for count in bin_counts],
    })
    return (
        alt.Chart(frame, height=220)
        .mark_bar()
        .encode(
            x=alt.X("from:Q", title="Confidence", scale=alt.Scale(domain=[0, 1]), axis=alt.Axis(format="%")),
            x2="to:Q",
            y=alt.Y("predictions:Q", title="Predictions"),
        )
    )


def confusion_heatmap(matrix: Sequence[Sequence[int]], *, title_rows: str = "True digit",
                      title_columns: str = "Predicted digit") -> alt.Chart:
    """A 10x10 heatmap with counts written in the cells; rows are true digits, columns predictions."""
    frame = pd.DataFrame(
        [{"true": row, "predicted": column, "count": int(matrix[row][column])} for row in DIGITS for column in DIGITS]
    )
    base = alt.Chart(frame, height=320).encode(
        x=alt.X("predicted:O", title=title_columns, axis=alt.Axis(labelAngle=0)),
        y=alt.Y("true:O", title=title_rows),
    )
    cells = base.mark_rect().encode(
        color=alt.Color("count:Q", scale=alt.Scale(scheme="blues", type="symlog"), legend=None),
        tooltip=["true", "predicted", "count"],
    )
    labels = base.transform_filter("datum.count > 0").mark_text(fontSize=10).encode(
        text=alt.Text("count:Q"),
        color=alt.condition(f"datum.count > {max(1, frame['count'].max()) / 2}", alt.value("white"), alt.value("black")),
    )
    return cells + labels


def per_class_chart(per_class: dict) -> alt.Chart:
    """Precision and recall per digit side by side, from the model card."""
    rows = []
    for digit_text, values in sorted(per_class.items(), key=lambda item: int(item[0])):
        for measure in ("precision", "recall"):
            rows.append({"digit": int(digit_text), "measure": measure, "value": float(values[measure])})
    frame = pd.DataFrame(rows)
    low = max(0.0, min(0.9, float(frame["value"].min()) - 0.02)) if len(frame) else 0.0
    return (
        alt.Chart(frame, height=240)
        .mark_bar(clip=True)  # the axis starts near the lowest score, so bars are cut at it
        .encode(
            x=alt.X("digit:O", title="Digit", axis=alt.Axis(labelAngle=0)),
            xOffset="measure:N",
            y=alt.Y("value:Q", title="Score", scale=alt.Scale(domain=[low, 1]), axis=alt.Axis(format="%")),
            color=alt.Color("measure:N", title=None, legend=alt.Legend(orient="bottom")),
            tooltip=["digit", "measure", alt.Tooltip("value:Q", format=".2%")],
        )
    )


def training_curves_chart(history: dict) -> alt.Chart:
    """Accuracy and loss per epoch for training and validation, from the model card's history."""
    rows = []
    for series, values in history.items():
        metric = "loss" if "loss" in series else "accuracy"
        split = "validation" if series.startswith("val_") else "training"
        for epoch, value in enumerate(values, start=1):
            rows.append({"epoch": epoch, "metric": metric, "split": split, "value": float(value)})
    frame = pd.DataFrame(rows, columns=["epoch", "metric", "split", "value"])
    return (
        alt.Chart(frame, height=200, width=280)
        .mark_line(point=True)
        .encode(
            x=alt.X("epoch:Q", title="Epoch", axis=alt.Axis(tickMinStep=1)),
            y=alt.Y("value:Q", title=None, scale=alt.Scale(zero=False)),
            color=alt.Color("split:N", title=None),
            tooltip=["epoch", "split", alt.Tooltip("value:Q", format=".4f")],
        )
        .facet(column=alt.Column("metric:N", title=None))
        .resolve_scale(y="independent")
    )


def model_input_image(model_input: np.ndarray | bytes, *, scale: int = 4) -> Image.Image:
    """The 28x28 model input as a greyscale picture enlarged without smoothing (white ink on black, as the model sees it)."""
    if isinstance(model_input, bytes | bytearray):
        pixels = np.frombuffer(model_input, dtype=np.uint8).reshape(28, 28)
    else:
        pixels = np.rint(np.clip(np.asarray(model_input, dtype=np.float32), 0, 1) * 255).astype(np.uint8).reshape(28, 28)
    return Image.fromarray(pixels, "L").resize((28 * scale, 28 * scale), Image.Resampling.NEAREST)


def thumbnail_data_url(model_input: bytes) -> str:
    """A 28x28 PNG data URL for st.column_config.ImageColumn."""
    buffer = io.BytesIO()
    model_input_image(model_input, scale=1).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")

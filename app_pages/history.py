"""History page: what has been read, when, how sure the model was, and how often it was right.

One cached call to ``mnist_core.history_figures.history_summary`` per (keyspace, range, zone) feeds
every figure, chart, the table and the CSV; Refresh drops the cache.
"""

import datetime

import pandas as pd
import streamlit as st

from dashboard import charts, resources
from mnist_core import dataset_export, history_figures, settings, storage

CACHE_SECONDS = 30
DEFAULT_DAYS = 7
TABLE_ROWS = 50
COMMON_TIMEZONES = ["UTC", "Europe/London", "Europe/Paris", "America/New_York", "America/Los_Angeles", "Asia/Tokyo"]


@st.cache_data(ttl=CACHE_SECONDS, show_spinner="Reading the history from Cassandra...")
def load_summary(*, keyspace: str, start: datetime.date, end: datetime.date,
                 timezone: str) -> history_figures.HistorySummary:
    """The History figures for a range; the keyspace is part of the cache key so tests never share entries."""
    return history_figures.history_summary(resources.store_resource(), start=start, end=end, timezone=timezone)


def timezone_choices(default: str) -> list[str]:
    browser = st.context.timezone
    ordered = [default, browser, *COMMON_TIMEZONES]
    return list(dict.fromkeys(zone for zone in ordered if zone))


def controls_ui(default_timezone: str) -> tuple[datetime.date, datetime.date, str, str] | None:
    """Range, zone and granularity; None while the user has picked only the first date of the range."""
    range_column, zone_column, granularity_column, refresh_column = st.columns([3, 2, 2, 1.4], vertical_alignment="bottom")
    timezone = zone_column.selectbox("Time zone", timezone_choices(default_timezone), key="history_timezone")
    today = history_figures.local_today(timezone)
    picked = range_column.date_input(
        "Dates", value=(today - datetime.timedelta(days=DEFAULT_DAYS - 1), today), max_value=today, key="history_range"
    )
    granularity = granularity_column.segmented_control(
        "Over time", ["hour", "day"], default="day", format_func=lambda value: f"per {value}", key="history_granularity"
    ) or "day"
    if refresh_column.button("Refresh", icon=":material/refresh:", key="history_refresh"):
        load_summary.clear()
    if not isinstance(picked, tuple | list) or len(picked) != 2:
        return None
    return picked[0], picked[1], timezone, granularity


def figures_ui(summary: history_figures.HistorySummary) -> None:
    total, today, confidence, accuracy = st.columns(4)
    total.metric("Predictions", f"{summary.total:,}", border=True)
    today.metric("Today", f"{summary.today_count:,}", border=True)
    mean = summary.mean_confidence
    confidence.metric("Mean confidence", "–" if mean is None else f"{mean:.1%}", border=True)
    report = summary.accuracy
    accuracy.metric(
        "Accuracy from feedback",
        "–" if report.accuracy is None else f"{report.accuracy:.1%}",
        help=f"{report.correct} of {report.corrections} predictions with feedback were right.",
        border=True,
    )


def charts_ui(summary: history_figures.HistorySummary, granularity: str) -> None:
    left, right = st.columns(2)
    with left:
        st.subheader("Counts per digit")
        st.altair_chart(charts.counts_per_digit_chart(summary.counts.totals_per_digit), width="stretch", key="history_counts_chart")
    with right:
        st.subheader(f"Over time (per {granularity})")
        st.altair_chart(
            charts.counts_over_time_chart(summary.counts.long_rows(granularity), granularity=granularity),
            width="stretch",
            key="history_time_chart",
        )
    left, right = st.columns(2)
    with left:
        st.subheader("Confidence")
        if sum(summary.counts.confidence_histogram):
            st.altair_chart(
                charts.confidence_histogram(summary.counts.confidence_histogram),
                width="stretch",
                key="history_confidence_chart",
            )
    with right:
        st.subheader("Feedback: true vs predicted")
        if summary.accuracy.corrections:
            st.altair_chart(charts.confusion_heatmap(summary.accuracy.confusion), width="stretch", key="history_confusion_chart")
        else:
            st.caption("No feedback yet: answer “Was this right?” on the Draw page to fill this in.")


def versions_ui(summary: history_figures.HistorySummary) -> None:
    """Accuracy from feedback per model version, side by side: is the new model better on these users?"""
    if not summary.accuracy_by_version:
        return
    st.subheader("Accuracy per model version")
    frame = pd.DataFrame(
        [{"model version": version, "feedback": corrections, "accuracy": correct / corrections}
         for version, corrections, correct in summary.accuracy_by_version if corrections])
    st.dataframe(frame, hide_index=True, width="stretch", key="history_versions",
                 column_config={"accuracy": st.column_config.ProgressColumn(
                     "Accuracy", min_value=0.0, max_value=1.0, format="percent")})


def table_ui(summary: history_figures.HistorySummary) -> None:
    st.subheader("Latest predictions")
    rows = history_figures.record_rows(summary.records, timezone=summary.timezone)
    frame = pd.DataFrame(rows)
    if frame.empty:
        st.caption("No single predictions to list in this range.")
        return
    shown = frame.head(TABLE_ROWS).copy()
    shown.insert(1, "image", [charts.thumbnail_data_url(record.model_input) for record in summary.records[:TABLE_ROWS]])
    st.dataframe(
        shown.drop(columns=["id"]),
        hide_index=True,
        width="stretch",
        column_config={
            "image": st.column_config.ImageColumn("Input", width="small"),
            "confidence": st.column_config.ProgressColumn("Confidence", min_value=0.0, max_value=1.0, format="percent"),
            "time": st.column_config.DatetimeColumn("Time", format="YYYY-MM-DD HH:mm:ss"),
        },
        key="history_table",
    )
    st.download_button(
        "Download CSV",
        frame.to_csv(index=False).encode("utf-8"),
        file_name=f"predictions_{summary.start}_{summary.end}.csv",
        mime="text/csv",
        icon=":material/download:",
        key="history_download",
    )
    if summary.records_truncated:
        st.caption(f"The CSV holds the latest {len(summary.records):,} of the range's {summary.total:,} predictions; "
                   "narrow the range for the rest.")


def data_set_ui(summary: history_figures.HistorySummary) -> None:
    """The range's corrected readings as a labelled data set (npz: the exact 28x28 inputs and labels)."""
    if summary.accuracy is None or not summary.accuracy.corrections:
        return
    st.subheader("Data set")
    key = ("history_data_set", summary.start, summary.end, summary.timezone)
    prepared = st.session_state.get("history_data_set")
    if prepared is None or prepared[0] != key:
        st.caption("The readings of this range that have feedback, as `x` (the 28×28 inputs the model saw) and "
                   "`y` (the right digits): the same file as `python -m mnist_core export`.")
        if st.button("Prepare the data set", icon=":material/dataset:", key="history_prepare_data_set"):
            try:
                data, count = dataset_export.data_set_bytes(resources.store_resource(), start=summary.start,
                                                            end=summary.end, timezone=summary.timezone)
            except (storage.StorageError, dataset_export.ExportError) as error:
                st.error(f"The data set cannot be made right now. {error}", icon=":material/cloud_off:")
                return
            st.session_state.history_data_set = (key, data, count)
            st.rerun()
        return
    _, data, count = prepared
    st.caption(f"{count:,} labelled readings from {summary.start:%d %b %Y} to {summary.end:%d %b %Y}.")
    st.download_button("Download the data set (npz)", data,
                       file_name=f"readings_{summary.start}_{summary.end}.npz", mime="application/octet-stream",
                       icon=":material/download:", key="history_download_data_set")


# Page ---------------------------------------------------------------------------------

app_settings = settings.get_settings()
st.title("History")
choice = controls_ui(app_settings.display_timezone)
if choice is None:
    st.info("Pick the last day of the range too.")
    st.stop()
start, end, timezone, granularity = choice
try:
    summary = load_summary(keyspace=app_settings.cassandra_keyspace, start=start, end=end, timezone=timezone)
except storage.StorageError as error:
    # Unreachable, hung, wrong credentials, a schema that cannot be applied: each has its sentence.
    st.error(f"The history cannot be read right now. {error}", icon=":material/cloud_off:")
    st.stop()
except ValueError as error:
    st.error(str(error))
    st.stop()

if summary.is_empty:
    st.info(
        f"No predictions between {start:%d %b %Y} and {end:%d %b %Y} yet. Draw a digit on the Draw page and it shows up here.",
        icon=":material/hourglass_empty:",
    )
    st.page_link("app_pages/draw.py", label="Go to Draw", icon=":material/draw:")
    st.stop()

figures_ui(summary)
charts_ui(summary, granularity)
versions_ui(summary)
table_ui(summary)
data_set_ui(summary)

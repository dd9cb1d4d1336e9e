"""The readings people made, as a labelled data set: the exact 28x28 inputs and their true labels.

Every stored reading keeps the picture the model saw, and feedback adds the digit that was
meant, so a date range of readings is a data set of exactly the handwriting of this app's
users. Three formats:

- ``npz`` (NumPy, the default): ``x`` uint8 (N, 28, 28), ``y`` int64 (N,) true labels (-1 for a
  reading without feedback, only with ``include_unlabelled``), ``predicted`` int64,
  ``confidence`` float64, ``model_version`` and ``id`` text, ``created_at`` datetime64[ms] (UTC);
- ``csv``: one row per reading with the same fields and the 784 pixels as ``pixel0..pixel783``;
- ``png-zip``: one PNG per reading, under a folder named for its true label, and ``readings.csv``
  with the fields and each file's name.

Rows come from Cassandra a page at a time and go straight to disk (the npz columns through
temporary files), so an export of any range holds one page in memory. The file appears only
when it is complete: a fault on the way leaves nothing behind.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import datetime
import io
import os
import pathlib
import tempfile
import zipfile
from collections.abc import Iterable, Iterator

import numpy as np
from PIL import Image

from mnist_core import time_zones
from mnist_core.storage import buckets

FORMATS = ("npz", "csv", "png-zip")
SIDE = 28
PIXELS = SIDE * SIDE
UNLABELLED = -1
FIELDS = ("id", "created_at", "predicted", "number", "confidence", "model_version", "source", "true_label")
# Rows copied per chunk when the npz columns are assembled.
CHUNK_ROWS = 4096


class ExportError(ValueError):
    """An export that cannot be made as asked (a bad range, format or output); nothing was written."""


@dataclasses.dataclass(frozen=True)
class ExportedReading:
    """One reading as exported: its fields and its 784-byte model input."""

    id: str
    created_at: datetime.datetime
    predicted: int
    number: str | None
    confidence: float
    model_version: str
    source: str
    true_label: int | None
    model_input: bytes

    @classmethod
    def from_row(cls, row) -> "ExportedReading":
        return cls(id=str(row.id), created_at=buckets.from_cassandra_timestamp(row.created_at),
                   predicted=int(row.digit), number=row.number, confidence=float(row.confidence),
                   model_version=row.model_version or "", source=row.source or "",
                   true_label=row.true_label, model_input=bytes(row.model_input or b""))

    def fields(self) -> list:
        return [self.id, self.created_at.isoformat(), self.predicted, self.number or "",
                round(self.confidence, 6), self.model_version, self.source,
                "" if self.true_label is None else self.true_label]


def format_for(output: pathlib.Path, requested: str | None) -> str:
    """The format asked for, or the one the file name says (.csv, .zip), npz otherwise."""
    if requested is not None:
        if requested not in FORMATS:
            raise ExportError(f"Unknown format {requested!r}; choose one of {', '.join(FORMATS)}.")
        return requested
    suffix = output.suffix.lower()
    return {".csv": "csv", ".zip": "png-zip"}.get(suffix, "npz")


def utc_range(start: datetime.date, end: datetime.date, timezone: str) -> tuple[datetime.datetime, datetime.datetime]:
    """The UTC instants covering local days start..end in the zone (ExportError with a sentence if not)."""
    try:
        return buckets.local_dates_to_utc_range(start, end, time_zones.zone(timezone))
    except ValueError as error:
        raise ExportError(str(error)) from None


def readings_to_export(rows: Iterable, *, include_unlabelled: bool) -> Iterator[ExportedReading]:
    """The rows as exported readings: those with a true label, or every one with ``include_unlabelled``.

    A row without its 784-byte input (none should exist) is left out: it is no training example.
    """
    for row in rows:
        if row.true_label is None and not include_unlabelled:
            continue
        reading = ExportedReading.from_row(row)
        if len(reading.model_input) == PIXELS:
            yield reading


def write_export(readings: Iterable[ExportedReading], output: pathlib.Path, export_format: str) -> int:
    """Write the readings to ``output`` in the format; returns how many were written.

    Written to a temporary file beside the output and renamed when complete.
    """
    writer = {"npz": _write_npz, "csv": _write_csv, "png-zip": _write_png_zip}.get(export_format)
    if writer is None:
        raise ExportError(f"Unknown format {export_format!r}; choose one of {', '.join(FORMATS)}.")
    output = pathlib.Path(output)
    if not output.parent.is_dir():
        raise ExportError(f"The folder {output.parent} does not exist; nothing was written.")
    handle, temporary = tempfile.mkstemp(prefix=f".{output.name}.", suffix=".partial", dir=output.parent)
    os.close(handle)
    try:
        count = writer(readings, pathlib.Path(temporary))
        os.replace(temporary, output)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise
    return count


def data_set_bytes(store, *, start: datetime.date, end: datetime.date, timezone: str,
                   export_format: str = "npz") -> tuple[bytes, int]:
    """The labelled readings of local days start..end as one file's bytes, and how many it holds.

    For the History page's download: written through a temporary file like any export, then
    read back, since the page hands the browser bytes. StorageError when Cassandra cannot answer.
    """
    since, until = utc_range(start, end, timezone)
    with tempfile.TemporaryDirectory(prefix="mnist-export-") as scratch:
        path = pathlib.Path(scratch) / "export"
        count = write_export(readings_to_export(store.rows_for_export(since=since, until=until),
                                                include_unlabelled=False), path, export_format)
        return path.read_bytes(), count


# ---------------------------------------------------------------------------------------
# The formats
# ---------------------------------------------------------------------------------------

def _write_csv(readings: Iterable[ExportedReading], path: pathlib.Path) -> int:
    count = 0
    with open(path, "w", newline="", encoding="utf-8") as handle:
        table = csv.writer(handle)
        table.writerow([*FIELDS, *(f"pixel{index}" for index in range(PIXELS))])
        for reading in readings:
            table.writerow([*reading.fields(), *reading.model_input])
            count += 1
    return count


def _png(model_input: bytes) -> bytes:
    buffer = io.BytesIO()
    Image.frombytes("L", (SIDE, SIDE), model_input).save(buffer, format="PNG")
    return buffer.getvalue()


def _write_png_zip(readings: Iterable[ExportedReading], path: pathlib.Path) -> int:
    count = 0
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as archive, \
            tempfile.TemporaryFile("w+", newline="", encoding="utf-8") as index:
        table = csv.writer(index)
        table.writerow(["file", *FIELDS])
        for reading in readings:
            folder = "unlabelled" if reading.true_label is None else str(reading.true_label)
            name = f"{folder}/{reading.id}.png"
            # PNGs are compressed already.
            archive.writestr(name, _png(reading.model_input))
            table.writerow([name, *reading.fields()])
            count += 1
        index.seek(0)
        with archive.open("readings.csv", "w") as entry:
            for line in index:
                entry.write(line.encode("utf-8"))
    return count


@dataclasses.dataclass
class _Column:
    """One npz array kept in a temporary file while the rows stream by."""

    name: str
    dtype: np.dtype
    shape_tail: tuple[int, ...]
    file: object


def _write_npz(readings: Iterable[ExportedReading], path: pathlib.Path) -> int:
    with tempfile.TemporaryDirectory(dir=path.parent, prefix=".export-") as scratch:
        scratch_path = pathlib.Path(scratch)
        fixed = {
            "x": (np.dtype(np.uint8), (SIDE, SIDE)),
            "y": (np.dtype("<i8"), ()),
            "predicted": (np.dtype("<i8"), ()),
            "confidence": (np.dtype("<f8"), ()),
            "created_at": (np.dtype("<M8[ms]"), ()),
        }
        columns = {name: _Column(name, dtype, tail, open(scratch_path / name, "w+b"))
                   for name, (dtype, tail) in fixed.items()}
        texts = {name: open(scratch_path / f"{name}.txt", "w+", encoding="utf-8")
                 for name in ("model_version", "id")}
        widths = {name: 1 for name in texts}
        count = 0
        try:
            for reading in readings:
                columns["x"].file.write(reading.model_input)
                label = UNLABELLED if reading.true_label is None else reading.true_label
                columns["y"].file.write(np.array(label, "<i8").tobytes())
                columns["predicted"].file.write(np.array(reading.predicted, "<i8").tobytes())
                columns["confidence"].file.write(np.array(reading.confidence, "<f8").tobytes())
                milliseconds = int(reading.created_at.timestamp() * 1000)
                columns["created_at"].file.write(np.array(milliseconds, "<i8").tobytes())
                for name, value in (("model_version", reading.model_version), ("id", reading.id)):
                    clean = value.replace("\n", " ")
                    texts[name].write(clean + "\n")
                    widths[name] = max(widths[name], len(clean))
                count += 1
            with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
                for column in columns.values():
                    column.file.seek(0)
                    row_bytes = column.dtype.itemsize * int(np.prod(column.shape_tail, dtype=np.int64))
                    _add_array(archive, column.name, column.dtype, (count, *column.shape_tail),
                               _file_chunks(column.file, CHUNK_ROWS * row_bytes))
                for name, handle in texts.items():
                    handle.seek(0)
                    dtype = np.dtype(f"<U{widths[name]}")
                    _add_array(archive, name, dtype, (count,), _fixed_width_chunks(handle, dtype))
        finally:
            for column in columns.values():
                column.file.close()
            for handle in texts.values():
                handle.close()
    return count


def _file_chunks(handle, size: int) -> Iterator[bytes]:
    while chunk := handle.read(size):
        yield chunk


def _fixed_width_chunks(lines, dtype: np.dtype) -> Iterator[bytes]:
    chunk: list[str] = []
    for line in lines:
        chunk.append(line.rstrip("\n"))
        if len(chunk) == CHUNK_ROWS:
            yield np.array(chunk, dtype=dtype).tobytes()
            chunk = []
    if chunk:
        yield np.array(chunk, dtype=dtype).tobytes()


def _add_array(archive: zipfile.ZipFile, name: str, dtype: np.dtype, shape: tuple[int, ...],
               chunks: Iterable[bytes]) -> None:
    """One .npy entry of the npz, its header written for the final shape and its data streamed in."""
    with archive.open(f"{name}.npy", "w", force_zip64=True) as entry:
        np.lib.format.write_array_header_1_0(
            entry, {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False, "shape": shape})
        for chunk in chunks:
            entry.write(chunk)

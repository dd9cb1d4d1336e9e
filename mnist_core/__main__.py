"""Command line: `python -m mnist_core predict FILE [FILE ...]`, `python -m mnist_core migrate` and
`python -m mnist_core export --from YYYY-MM-DD --to YYYY-MM-DD --output FILE`.

`export` writes the stored readings of a local date range that have a true label (all of them
with `--all`) as a data set: the exact 28x28 model inputs and their labels, in npz (default),
csv or png-zip (see mnist_core.dataset_export). It prints one JSON line saying what it wrote.

`migrate` applies the schema files (mnist_core/schema) to the keyspace the settings name, as the
role they log in with: an administrator's job where the app's own role may not change the schema
(compose's schema service runs it before the app starts). It prints the versions it applied.

Prints one JSON object per file, one per line, in the order given. Other tools parse this
output, so its keys are a contract: file, digit, confidence, probabilities, and number
when several digits were read; error (a sentence) when a file could not be read, in which
case the exit code is 1 after every file has been handled. `digit` is null when no digit
was read: nothing drawn, or a drawing that is not a digit (`not_a_digit` is then true).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

BATCH_SIZE = 256


def reading_as_json(file_name: str, reading) -> dict:
    row = {"file": file_name, "digit": reading.digit,
           "confidence": round(reading.confidence, 6),
           "probabilities": [round(value, 6) for value in reading.probabilities],
           "not_a_digit": reading.is_not_a_digit,
           "not_a_digit_probability": round(reading.not_a_digit_probability, 6)}
    if reading.is_blank:
        row["message"] = "Nothing is drawn in this image."
    elif reading.is_not_a_digit:
        row["message"] = "This does not look like a digit."
    if reading.number is not None:
        row["number"] = reading.number
        row["number_confidence"] = round(reading.overall_confidence, 6)
        row["digits"] = [{"digit": item.digit, "confidence": round(item.confidence, 6),
                          "probabilities": [round(value, 6) for value in item.probabilities]}
                         for item in reading.digits]
    return row


def predict_files(files: list[str], recognizer, output=sys.stdout) -> int:
    """Read the files in batches, writing each row as soon as its batch is done."""
    from mnist_core.preprocess import ImageDecodeError
    from mnist_core.segmentation import segment

    failures = 0
    for start in range(0, len(files), BATCH_SIZE):
        batch = files[start:start + BATCH_SIZE]
        segmented, errors = [], {}
        for position, file_name in enumerate(batch):
            try:
                segmented.append(segment(Path(file_name)))
            except ImageDecodeError as error:
                errors[position] = str(error)
        readings = iter(recognizer.read_segmented(segmented))
        for position, file_name in enumerate(batch):
            if position in errors:
                failures += 1
                row = {"file": file_name, "digit": None, "error": errors[position]}
            else:
                row = reading_as_json(file_name, next(readings))
            output.write(json.dumps(row) + "\n")
        output.flush()
    return 1 if failures else 0


def migrate(*, grant_to: str | None = None, output=sys.stdout) -> int:
    """Apply every schema file not yet applied, and with `grant_to` leave that role SELECT and
    MODIFY on the keyspace and nothing else there; 0 when done, 2 with a sentence if not."""
    from cassandra import DriverException

    from mnist_core.settings import get_settings
    from mnist_core.storage import StorageError, connection, migrations

    try:
        settings = get_settings()
        cluster, _ = connection.connect(settings)
    except (StorageError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    try:
        applied = migrations.apply_migrations(cluster, keyspace=settings.cassandra_keyspace,
                                              replication=settings.cassandra_replication,
                                              retention_days=settings.retention_days)
        if grant_to is not None:
            migrations.grant_reading_and_writing(cluster, keyspace=settings.cassandra_keyspace, role=grant_to)
    except (StorageError, DriverException, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    finally:
        cluster.shutdown()
    output.write(json.dumps({"keyspace": settings.cassandra_keyspace, "applied": applied,
                             "granted_to": grant_to}) + "\n")
    return 0


def export(parsed, output=sys.stdout) -> int:
    """Write the readings of a local date range (with a true label, or all) as a data set file."""
    from cassandra import DriverException

    from mnist_core import dataset_export
    from mnist_core.settings import get_settings
    from mnist_core.storage import StorageError, connection
    from mnist_core.storage.repository import PredictionRepository

    try:
        settings = get_settings()
        timezone = parsed.tz or settings.display_timezone
        since, until = dataset_export.utc_range(parsed.start, parsed.end, timezone)
        export_format = dataset_export.format_for(parsed.output, parsed.format)
        cluster, session = connection.connect(settings)
    except (StorageError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    try:
        repository, _ = PredictionRepository.open(cluster, session, settings)
        readings = dataset_export.readings_to_export(repository.rows_for_export(since=since, until=until),
                                                     include_unlabelled=parsed.all)
        count = dataset_export.write_export(readings, parsed.output, export_format)
    except (StorageError, DriverException, ValueError, OSError) as error:
        print(f"error: nothing was written: {error}", file=sys.stderr)
        return 2
    finally:
        cluster.shutdown()
    output.write(json.dumps({"output": str(parsed.output), "format": export_format, "readings": count,
                             "from": parsed.start.isoformat(), "to": parsed.end.isoformat(),
                             "timezone": timezone, "unlabelled_included": parsed.all}) + "\n")
    return 0


def _date(text: str):
    import datetime

    try:
        return datetime.date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a date; use YYYY-MM-DD") from None


def main(arguments: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mnist_core",
                                     description="Read handwritten digits in image files.")
    commands = parser.add_subparsers(dest="command", required=True)
    predict = commands.add_parser("predict", help="print one JSON line per image file")
    predict.add_argument("files", nargs="+", metavar="FILE")
    predict.add_argument("--model", type=Path, default=None,
                         help="a .tflite (LiteRT) or .keras model (default: the shipped one)")
    predict.add_argument("--keras", action="store_true",
                         help="read with the .keras file beside the model instead, on TensorFlow "
                              "(slow to start; a check that the two runtimes agree)")
    migrate_command = commands.add_parser("migrate", help="apply the schema files to the configured keyspace, then exit")
    migrate_command.add_argument("--grant-to", metavar="ROLE", default=None,
                                 help="then leave ROLE exactly SELECT and MODIFY on the keyspace (the app's role)")
    export_command = commands.add_parser(
        "export", help="write the readings of a date range that have a true label as a data set (npz, csv or png-zip)")
    export_command.add_argument("--from", dest="start", type=_date, required=True, metavar="YYYY-MM-DD")
    export_command.add_argument("--to", dest="end", type=_date, required=True, metavar="YYYY-MM-DD")
    export_command.add_argument("--output", type=Path, required=True, metavar="FILE")
    export_command.add_argument("--tz", default=None, help="the zone of the dates (default: the display time zone)")
    export_command.add_argument("--all", action="store_true",
                                help="include readings without feedback (their true label is -1 in npz, empty in csv)")
    export_command.add_argument("--format", choices=("npz", "csv", "png-zip"), default=None,
                                help="default: from the file name (.csv, .zip), else npz")
    parsed = parser.parse_args(sys.argv[1:] if arguments is None else arguments)
    if parsed.command == "migrate":
        return migrate(grant_to=parsed.grant_to)
    if parsed.command == "export":
        return export(parsed)

    from mnist_core.inference import load_recognizer
    from mnist_core.settings import get_settings

    try:
        model_path = parsed.model or get_settings().model_path
        if parsed.keras:
            model_path = model_path.with_suffix(".keras")
        recognizer = load_recognizer(model_path)
    except (FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except ImportError as error:
        print(f"error: --keras needs TensorFlow, which only training installs (requirements-train.txt): {error}",
              file=sys.stderr)
        return 2
    return predict_files(parsed.files, recognizer)


if __name__ == "__main__":
    sys.exit(main())

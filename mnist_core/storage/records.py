"""The values the storage layer takes and returns: one prediction, and the answers to the dashboard's questions.

A :class:`PredictionRecord` is validated when it is built, so nothing malformed reaches Cassandra
or the outbox, and it is normalised to what Cassandra keeps (UTC, millisecond times) so that a
record read back compares equal to the one written.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime
import enum
import math
import secrets
import uuid
from collections.abc import Iterable, Sequence
from typing import Any

from mnist_core.storage import buckets

DIGIT_COUNT = 10
# The confidence histogram of the History page: 20 bins of 5 %, kept per slot in the rollups.
CONFIDENCE_BINS = 20
MODEL_INPUT_BYTES = 28 * 28
SOURCES = ("canvas", "upload", "api")
# Offset between the UUID version 1 epoch (1582-10-15) and the Unix epoch, in 100 ns units.
UUID_EPOCH_OFFSET = 0x01B21DD213814000


def _check_digit(value: Any, field_name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) and not hasattr(value, "__index__"):
        raise ValueError(f"{field_name} must be a whole number from 0 to 9; got {value!r}.")
    digit = int(value)
    if not 0 <= digit <= 9:
        raise ValueError(f"{field_name} must be from 0 to 9; got {digit}.")
    return digit


def _check_finite(value: Any, field_name: str, *, minimum: float, maximum: float | None = None) -> float:
    number = float(value)
    if not math.isfinite(number) or number < minimum or (maximum is not None and number > maximum):
        bounds = f"from {minimum} to {maximum}" if maximum is not None else f"at least {minimum}"
        raise ValueError(f"{field_name} must be a finite number {bounds}; got {value!r}.")
    return number


def _as_model_input_bytes(value: Any) -> bytes:
    """784 bytes of the 28x28 uint8 image; accepts bytes or a uint8 array (anything with tobytes)."""
    if hasattr(value, "dtype") and hasattr(value, "tobytes"):
        if str(value.dtype) != "uint8":
            raise ValueError(f"model_input must be a uint8 image; got dtype {value.dtype}.")
        value = value.tobytes()
    if not isinstance(value, (bytes, bytearray, memoryview)):
        raise ValueError(f"model_input must be 784 bytes or a 28x28 uint8 array; got {type(value).__name__}.")
    data = bytes(value)
    if len(data) != MODEL_INPUT_BYTES:
        raise ValueError(f"model_input must hold {MODEL_INPUT_BYTES} bytes (28x28); got {len(data)}.")
    return data


# The node field of the ids this process makes: random, with the multicast bit that marks a node
# that is not a network card. uuid1() would put this host's MAC address in every id (and so in the
# API's answers and the CSV download).
PROCESS_NODE = secrets.randbits(48) | 0x010000000000


def uuid_time(identifier: uuid.UUID) -> datetime.datetime:
    """The moment a version 1 (time-based) UUID was made, in UTC, to the microsecond."""
    if identifier.version != 1:
        raise ValueError(f"Expected a time-based (version 1) UUID; got version {identifier.version}.")
    microseconds = (identifier.time - UUID_EPOCH_OFFSET) // 10
    return datetime.datetime(1970, 1, 1, tzinfo=buckets.UTC) + datetime.timedelta(microseconds=microseconds)


def time_uuid(moment: datetime.datetime) -> uuid.UUID:
    """A version 1 UUID whose time is ``moment`` (to the millisecond) and whose other bits are random.

    For records made at a given time (tests, imports): many ids for the same millisecond
    differ in their sub-millisecond ticks, clock sequence and node, so they never collide.
    """
    moment = buckets.as_utc(moment)
    milliseconds = (moment - datetime.datetime(1970, 1, 1, tzinfo=buckets.UTC)) // datetime.timedelta(milliseconds=1)
    ticks = milliseconds * 10_000 + UUID_EPOCH_OFFSET + secrets.randbelow(10_000)
    clock_sequence = secrets.randbits(14)
    return uuid.UUID(
        fields=(
            ticks & 0xFFFFFFFF,
            (ticks >> 32) & 0xFFFF,
            ((ticks >> 48) & 0x0FFF) | 0x1000,
            ((clock_sequence >> 8) & 0x3F) | 0x80,
            clock_sequence & 0xFF,
            secrets.randbits(48) | 0x010000000000,  # multicast bit: a random node, not a MAC address
        )
    )


def confidence_bin(confidence: float) -> int:
    """The histogram bin of a confidence: [0, 0.05) is bin 0, ..., [0.95, 1] is bin 19."""
    return min(int(confidence * CONFIDENCE_BINS), CONFIDENCE_BINS - 1)


def _truncate_to_milliseconds(moment: datetime.datetime) -> datetime.datetime:
    """Cassandra timestamps keep milliseconds; truncate up front so reads compare equal."""
    return moment.replace(microsecond=moment.microsecond - moment.microsecond % 1000)


@dataclasses.dataclass(frozen=True, kw_only=True)
class PredictionRecord:
    """One prediction as stored: what was read, how sure the model was, and what it saw.

    Build new ones with :meth:`PredictionRecord.new`, which makes the time-based id and the time.
    ``created_at`` must be the id's own time (to the millisecond): the storage finds a
    prediction's partition from its id alone. :func:`time_uuid` makes an id for a given time.
    """

    id: uuid.UUID
    created_at: datetime.datetime
    digit: int
    number: str | None = None
    confidence: float
    probabilities: tuple[float, ...]
    model_input: bytes
    source: str
    model_version: str
    latency_ms: float
    true_label: int | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.id, uuid.UUID) or self.id.version != 1:
            raise ValueError(f"id must be a time-based UUID (uuid.uuid1()); got {self.id!r}.")
        if not isinstance(self.created_at, datetime.datetime):
            raise ValueError(f"created_at must be a datetime; got {self.created_at!r}.")
        object.__setattr__(self, "created_at", _truncate_to_milliseconds(buckets.as_utc(self.created_at)))
        if _truncate_to_milliseconds(uuid_time(self.id)) != self.created_at:
            raise ValueError(
                f"created_at ({self.created_at.isoformat()}) must be the time of the id "
                f"({uuid_time(self.id).isoformat()}); use PredictionRecord.new() or time_uuid(created_at)."
            )
        object.__setattr__(self, "digit", _check_digit(self.digit, "digit"))
        if self.number is not None:
            if not isinstance(self.number, str) or not self.number.isdigit():
                raise ValueError(f"number must be a string of digits such as '42', or None; got {self.number!r}.")
        object.__setattr__(self, "confidence", _check_finite(self.confidence, "confidence", minimum=0.0, maximum=1.0))
        probabilities = tuple(
            _check_finite(value, "each probability", minimum=0.0, maximum=1.0) for value in self.probabilities
        )
        if len(probabilities) != DIGIT_COUNT:
            raise ValueError(f"probabilities must hold {DIGIT_COUNT} values, one per digit; got {len(probabilities)}.")
        # They may add up to less than 1: the model's remaining share is "not a digit".
        if sum(probabilities) > 1.0 + 1e-3:
            raise ValueError(f"probabilities must add up to at most 1; they add up to {sum(probabilities):.4f}.")
        object.__setattr__(self, "probabilities", probabilities)
        object.__setattr__(self, "model_input", _as_model_input_bytes(self.model_input))
        if self.source not in SOURCES:
            raise ValueError(f"source must be one of {', '.join(SOURCES)}; got {self.source!r}.")
        if not isinstance(self.model_version, str) or not self.model_version.strip():
            raise ValueError("model_version must be a non-empty string.")
        object.__setattr__(self, "latency_ms", _check_finite(self.latency_ms, "latency_ms", minimum=0.0))
        if self.true_label is not None:
            object.__setattr__(self, "true_label", _check_digit(self.true_label, "true_label"))

    @classmethod
    def from_storage(cls, **fields: Any) -> PredictionRecord:
        """A record read back from Cassandra, built without the checks above: every stored row was
        checked as a record before it was written, and checking again the 5,000 rows of one
        History read took 0.4 s of its 1.2 s (profiled on the development node, December 2026).
        Every field must be given, as stored (created_at in UTC, to the millisecond)."""
        record = object.__new__(cls)
        for name in _RECORD_FIELDS:
            object.__setattr__(record, name, fields[name])
        return record

    @classmethod
    def new(
        cls,
        *,
        digit: int,
        created_at: datetime.datetime | None = None,
        confidence: float,
        probabilities: Sequence[float],
        model_input: Any,
        source: str,
        model_version: str,
        latency_ms: float,
        number: str | None = None,
        true_label: int | None = None,
    ) -> PredictionRecord:
        """A record with a fresh time-based id whose time is created_at (default: now)."""
        identifier = uuid.uuid1(node=PROCESS_NODE) if created_at is None else time_uuid(created_at)
        return cls(
            id=identifier,
            created_at=uuid_time(identifier),
            digit=digit,
            number=number,
            confidence=confidence,
            probabilities=tuple(probabilities),
            model_input=model_input,
            source=source,
            model_version=model_version,
            latency_ms=latency_ms,
            true_label=true_label,
        )

    def to_json_dict(self) -> dict[str, Any]:
        """A JSON-safe dict (for the outbox); :meth:`from_json_dict` rebuilds an equal record."""
        return {
            "id": str(self.id),
            "created_at": self.created_at.isoformat(),
            "digit": self.digit,
            "number": self.number,
            "confidence": self.confidence,
            "probabilities": list(self.probabilities),
            "model_input": base64.b64encode(self.model_input).decode("ascii"),
            "source": self.source,
            "model_version": self.model_version,
            "latency_ms": self.latency_ms,
            "true_label": self.true_label,
        }

    @classmethod
    def from_json_dict(cls, data: dict[str, Any]) -> PredictionRecord:
        return cls(
            id=uuid.UUID(data["id"]),
            created_at=datetime.datetime.fromisoformat(data["created_at"]),
            digit=data["digit"],
            number=data["number"],
            confidence=data["confidence"],
            probabilities=tuple(data["probabilities"]),
            model_input=base64.b64decode(data["model_input"]),
            source=data["source"],
            model_version=data["model_version"],
            latency_ms=data["latency_ms"],
            true_label=data["true_label"],
        )


# Looked up once: dataclasses.fields() on every stored row cost 55 ms per 5,000 rows.
_RECORD_FIELDS = tuple(field.name for field in dataclasses.fields(PredictionRecord))


class StoreOutcome(enum.Enum):
    """Where a write stands when the call returns; either way it is on local disk (the outbox).

    ACCEPTED: Cassandra is connected and answering, so the writer sends it within milliseconds.
    QUEUED: Cassandra is unreachable or not answering; it is sent when Cassandra is back.
    """

    ACCEPTED = "accepted"
    QUEUED = "queued"

    @property
    def offline(self) -> bool:
        """True when the write waits for Cassandra to come back (what the UI warns about)."""
        return self is StoreOutcome.QUEUED


@dataclasses.dataclass(frozen=True)
class StorageStatus:
    """What the UI shows about the database: connected, or degraded with N writes waiting locally."""

    state: str  # "connected", "connecting" (the first attempt since start is under way) or "degraded"
    pending: int
    message: str
    dead_letters: int = 0
    other_target_pending: int = 0
    warnings: tuple[str, ...] = ()

    @property
    def connected(self) -> bool:
        return self.state == "connected"

    @classmethod
    def describe(cls, *, answering: bool, on_their_way: bool, pending: int, failure: str | None, dead_letters: int,
                 other_target_pending: int, outbox_path, warnings: Sequence[str] = (),
                 connecting: bool = False) -> StorageStatus:
        """The status with its sentences, from what the store knows (nothing here contacts Cassandra)."""
        if connecting:
            message = (f"Connecting to Cassandra (the first attempt since start); {pending} write(s) are kept in "
                       "the local outbox meanwhile.")
        elif answering and on_their_way:
            message = "Connected to Cassandra."
        elif answering:
            message = f"Connected to Cassandra; writing {pending} queued prediction(s) from the local outbox."
        else:
            message = (f"Cassandra is unreachable; {pending} write(s) are kept in the local outbox and will be "
                       "written when it is back.")
            if failure:
                message += f" Last error: {failure}"
        warnings = list(warnings)
        if dead_letters:
            warnings.append(f"{dead_letters} write(s) failed repeatedly and were set aside in the dead_letter table "
                            f"of {outbox_path}.")
        if other_target_pending:
            warnings.append(f"{other_target_pending} write(s) queued for another Cassandra target are kept in "
                            f"{outbox_path} and will be sent when the settings point there again.")
        state = "connecting" if connecting else "connected" if answering and on_their_way else "degraded"
        return cls(state=state, pending=pending,
                   message=" ".join([message, *warnings]), dead_letters=dead_letters,
                   other_target_pending=other_target_pending, warnings=tuple(warnings))


@dataclasses.dataclass(frozen=True)
class SlotFigures:
    """One 15-minute UTC slot's rollup: per-digit counts and confidence figures (None: not rolled up)."""

    slot_start: datetime.datetime
    counts: tuple[int, ...]
    confidence_histogram: tuple[int, ...] | None
    confidence_sum: float


@dataclasses.dataclass(frozen=True)
class PeriodCounts:
    """Predictions per digit in one hour or one day, starting at ``start`` in the display zone."""

    start: datetime.datetime
    counts: tuple[int, ...]

    @property
    def total(self) -> int:
        return sum(self.counts)


@dataclasses.dataclass(frozen=True)
class HistoryCounts:
    """Counts per digit per hour and per day over a date range, every period present (zeros included)."""

    timezone: str
    start: datetime.date
    end: datetime.date
    hourly: tuple[PeriodCounts, ...]
    daily: tuple[PeriodCounts, ...]
    # Over the predictions whose confidence was rolled up (all but those stored before schema 002).
    confidence_histogram: tuple[int, ...] = (0,) * CONFIDENCE_BINS
    confidence_sum: float = 0.0

    @property
    def mean_confidence(self) -> float | None:
        """Mean confidence over the whole range, from the rollups; None when nothing was rolled up."""
        counted = sum(self.confidence_histogram)
        return None if counted == 0 else self.confidence_sum / counted

    @property
    def totals_per_digit(self) -> tuple[int, ...]:
        return tuple(sum(period.counts[digit] for period in self.daily) for digit in range(DIGIT_COUNT))

    def long_rows(self, granularity: str = "day") -> list[dict[str, Any]]:
        """Rows of {period_start, digit, count} for charting ('hour' or 'day')."""
        if granularity not in ("hour", "day"):
            raise ValueError(f"granularity must be 'hour' or 'day'; got {granularity!r}.")
        periods = self.hourly if granularity == "hour" else self.daily
        return [
            {"period_start": period.start, "digit": digit, "count": count}
            for period in periods
            for digit, count in enumerate(period.counts)
        ]


@dataclasses.dataclass(frozen=True)
class AccuracyReport:
    """Accuracy and confusion matrix from users' corrections; rows are true labels, columns predictions."""

    corrections: int
    correct: int
    confusion: tuple[tuple[int, ...], ...]

    @property
    def accuracy(self) -> float | None:
        """Share of corrected predictions the model got right; None when there is no correction yet."""
        return None if self.corrections == 0 else self.correct / self.corrections

    @classmethod
    def from_pairs(cls, pairs: Iterable[tuple[int, int]]) -> AccuracyReport:
        """Build from (true_label, predicted_digit) pairs."""
        matrix = [[0] * DIGIT_COUNT for _ in range(DIGIT_COUNT)]
        for true_label, predicted_digit in pairs:
            matrix[true_label][predicted_digit] += 1
        return cls.from_matrix(matrix)

    @classmethod
    def from_matrix(cls, matrix: Sequence[Sequence[int]]) -> AccuracyReport:
        """Build from a 10x10 confusion matrix (rows true labels, columns predictions)."""
        total = sum(map(sum, matrix))
        correct = sum(matrix[digit][digit] for digit in range(DIGIT_COUNT))
        return cls(corrections=total, correct=correct, confusion=tuple(tuple(row) for row in matrix))

"""Pure unit tests of the storage values and time buckets: no database needed."""

from __future__ import annotations

import datetime
import socket
import uuid
import zoneinfo

import numpy
import pytest

from mnist_core.settings import settings_from_mapping
from mnist_core.storage import AccuracyReport, PredictionRecord, StorageUnavailable, buckets, connection
from mnist_core.storage.records import uuid_time

UTC = datetime.timezone.utc


def test_new_record_has_a_time_based_id_matching_its_time(make_record) -> None:
    before = datetime.datetime.now(UTC) - datetime.timedelta(milliseconds=1)
    record = PredictionRecord.new(
        digit=7,
        confidence=0.8,
        probabilities=[0.8] + [0.2 / 9] * 9,
        model_input=numpy.zeros((28, 28), dtype=numpy.uint8),
        source="upload",
        model_version="v2",
        latency_ms=1.5,
    )
    assert record.id.version == 1
    assert abs(uuid_time(record.id) - record.created_at) < datetime.timedelta(milliseconds=1)
    assert before <= record.created_at <= datetime.datetime.now(UTC)
    assert record.created_at.microsecond % 1000 == 0
    assert record.model_input == bytes(784)


def test_new_ids_do_not_carry_this_hosts_mac_address_and_never_repeat() -> None:
    records = [PredictionRecord.new(digit=1, confidence=0.9, probabilities=[0.1] * 10,
                                    model_input=numpy.zeros((28, 28), dtype=numpy.uint8), source="api",
                                    model_version="v", latency_ms=1.0) for _ in range(2000)]
    nodes = {record.id.node for record in records}
    assert uuid.getnode() not in nodes
    assert all(node & 0x010000000000 for node in nodes), "a random node has the multicast bit set"
    assert len({record.id for record in records}) == len(records)


def test_json_round_trip_is_equal(make_record) -> None:
    record = make_record(number="42", true_label=4)
    assert PredictionRecord.from_json_dict(record.to_json_dict()) == record


@pytest.mark.parametrize(
    ("field", "value", "message_part"),
    [
        ("digit", 10, "digit"),
        ("digit", True, "digit"),
        ("true_label", -1, "true_label"),
        ("confidence", float("nan"), "confidence"),
        ("probabilities", (0.1,) * 9, "10 values"),
        ("probabilities", (0.5,) * 10, "add up to at most 1"),
        ("model_input", bytes(100), "784"),
        ("model_input", numpy.zeros((28, 28), dtype=numpy.float32), "uint8"),
        ("source", "camera", "source"),
        ("model_version", " ", "model_version"),
        ("number", "4a", "number"),
        ("id", uuid.uuid4(), "time-based"),
        ("created_at", datetime.datetime(2024, 1, 1), "time zone"),
        ("latency_ms", -1.0, "latency_ms"),
    ],
)
def test_invalid_records_are_refused(make_record, field: str, value, message_part: str) -> None:
    with pytest.raises(ValueError, match=message_part):
        make_record(**{field: value})


def test_created_at_is_normalised_to_utc_milliseconds(make_record) -> None:
    paris = zoneinfo.ZoneInfo("Europe/Paris")
    record = make_record(created_at=datetime.datetime(2024, 3, 1, 12, 0, 0, 123456, tzinfo=paris))
    assert record.created_at == datetime.datetime(2024, 3, 1, 11, 0, 0, 123000, tzinfo=UTC)
    assert record.created_at.tzinfo == UTC


def test_slots_and_days_are_utc() -> None:
    moment = datetime.datetime(2024, 3, 1, 23, 59, 59, tzinfo=zoneinfo.ZoneInfo("America/New_York"))
    assert buckets.utc_day(moment) == datetime.date(2024, 3, 2)
    assert buckets.slot_start(moment) == datetime.datetime(2024, 3, 2, 4, 45, tzinfo=UTC)


def test_local_days_map_to_the_right_utc_range() -> None:
    kolkata = zoneinfo.ZoneInfo("Asia/Kolkata")
    start, end = buckets.local_dates_to_utc_range(datetime.date(2024, 1, 31), datetime.date(2024, 2, 1), kolkata)
    assert start == datetime.datetime(2024, 1, 30, 18, 30, tzinfo=UTC)
    assert end == datetime.datetime(2024, 2, 1, 18, 30, tzinfo=UTC)
    assert buckets.utc_days_between(start, end) == [
        datetime.date(2024, 1, 30), datetime.date(2024, 1, 31), datetime.date(2024, 2, 1)
    ]
    with pytest.raises(ValueError, match="before the start"):
        buckets.local_dates_to_utc_range(datetime.date(2024, 2, 1), datetime.date(2024, 1, 1), kolkata)


def test_accuracy_report_from_pairs() -> None:
    report = AccuracyReport.from_pairs([(3, 3), (3, 8), (1, 1), (7, 1)])
    assert report.corrections == 4
    assert report.correct == 2
    assert report.accuracy == 0.5
    assert report.confusion[3][8] == 1 and report.confusion[7][1] == 1 and report.confusion[3][3] == 1
    assert AccuracyReport.from_pairs([]).accuracy is None


def _unused_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_connection_retry_is_bounded_and_ends_in_a_sentence() -> None:
    settings = settings_from_mapping(
        {"MNIST_CASSANDRA_PORT": str(_unused_port()), "MNIST_CASSANDRA_CONNECT_TIMEOUT": "1"}
    )
    waits: list[float] = []
    with pytest.raises(StorageUnavailable) as raised:
        connection.connect(settings, attempts=3, retry_delay_seconds=0.25, sleep=waits.append)
    # Three attempts, and a growing wait between them, then a stop: never an endless loop.
    assert waits == [0.25, 0.5]
    message = str(raised.value)
    assert f"127.0.0.1:{settings.cassandra_port}" in message
    assert "after 3 attempts" in message
    assert "scripts/cassandra start" in message


def test_connection_retry_really_waits_between_attempts() -> None:
    settings = settings_from_mapping({"MNIST_CASSANDRA_PORT": str(_unused_port())})
    started = datetime.datetime.now()
    with pytest.raises(StorageUnavailable, match="after 2 attempts"):
        connection.connect(settings, attempts=2, retry_delay_seconds=0.3)
    elapsed = (datetime.datetime.now() - started).total_seconds()
    assert 0.3 <= elapsed < 10


def test_time_uuid_keeps_the_millisecond_and_never_collides() -> None:
    from mnist_core.storage.records import time_uuid

    moment = datetime.datetime(2001, 2, 3, 4, 5, 6, 789000, tzinfo=UTC)
    identifiers = {time_uuid(moment) for _ in range(10_000)}
    assert len(identifiers) == 10_000
    for identifier in list(identifiers)[:100]:
        assert identifier.version == 1
        assert uuid_time(identifier).replace(microsecond=uuid_time(identifier).microsecond // 1000 * 1000) == moment


def test_created_at_must_be_the_time_of_the_id(make_record) -> None:
    with pytest.raises(ValueError, match="must be the time of the id"):
        make_record(identifier=uuid.uuid1(), created_at=datetime.datetime(2001, 1, 1, tzinfo=UTC))

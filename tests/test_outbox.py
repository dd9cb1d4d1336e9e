"""The SQLite outbox on its own (order, durability across reopening, the resend window) and the node watch that triggers resends."""

from __future__ import annotations

import os
import pathlib
import threading
import time
import types

import pytest

from mnist_core.storage import outbox
from mnist_core.storage.writer import NodeWatch


@pytest.fixture
def queue(tmp_path):
    opened = outbox.Outbox(tmp_path / "outbox.sqlite3", target=TARGET)
    yield opened
    opened.close()


TARGET = "127.0.0.1:9042/mnist"


def payloads(entries) -> list[int]:
    return [entry.payload["n"] for entry in entries]


def test_entries_survive_reopening_in_the_order_they_were_added(tmp_path):
    first = outbox.Outbox(tmp_path / "outbox.sqlite3", target=TARGET)
    for number in range(5):
        first.add(outbox.PREDICTION, {"n": number})
    first.close()
    second = outbox.Outbox(tmp_path / "outbox.sqlite3", target=TARGET)
    assert payloads(second.peek(10)) == [0, 1, 2, 3, 4]
    second.close()


def test_unknown_kinds_are_refused(queue):
    with pytest.raises(ValueError, match="kind"):
        queue.add("photo", {"n": 1})
    assert queue.pending_count() == 0


def test_sent_entries_come_back_at_their_old_places_before_newer_ones(queue):
    for number in range(4):
        queue.add(outbox.PREDICTION if number != 2 else outbox.CORRECTION, {"n": number})
    sequences = [entry.sequence for entry in queue.peek(10)]
    queue.acknowledge(sequences[:3])  # 0, 1, 2 acknowledged
    assert payloads(queue.peek(10)) == [3]
    assert queue.sent_count() == 3
    queue.add(outbox.PREDICTION, {"n": 4})

    assert queue.resend_since(time.time() - 60) == 3
    entries = queue.peek(10)
    assert payloads(entries) == [0, 1, 2, 3, 4]
    assert [entry.kind for entry in entries][:3] == [outbox.PREDICTION, outbox.PREDICTION, outbox.CORRECTION]
    assert queue.sent_count() == 0
    # A new entry still goes after all of them.
    queue.add(outbox.PREDICTION, {"n": 5})
    assert payloads(queue.peek(10))[-1] == 5


def test_only_entries_sent_within_the_window_are_resent_and_old_ones_are_forgotten(queue):
    queue.add(outbox.PREDICTION, {"n": 0})
    queue.acknowledge([queue.peek(1)[0].sequence])
    between = time.time()
    time.sleep(0.02)
    queue.add(outbox.PREDICTION, {"n": 1})
    queue.acknowledge([queue.peek(1)[0].sequence])

    assert queue.resend_since(between) == 1
    assert payloads(queue.peek(10)) == [1]
    assert queue.sent_count() == 1  # entry 0 is still kept
    queue.forget_sent_before(time.time())
    assert queue.sent_count() == 0
    assert queue.resend_since(0) == 0


def test_each_node_that_comes_back_triggers_one_resend_from_when_it_went_down():
    wake = threading.Event()
    watch = NodeWatch(wake)
    first, second = types.SimpleNamespace(endpoint="127.0.0.1:9042"), types.SimpleNamespace(endpoint="127.0.0.2:9042")
    assert watch.take_return() is None and watch.all_up
    watch.on_down(first)
    time.sleep(0.01)
    watch.on_down(second)
    watch.on_down(first)  # the driver may report it twice: the first moment counts
    assert not watch.all_up

    watch.on_up(first)
    assert wake.is_set()
    first_down = watch.take_return()
    assert first_down is not None
    assert watch.take_return() is None, "one resend per return"
    assert not watch.all_up, "the second node is still down: old sends must be kept"

    watch.on_up(second)
    second_down = watch.take_return()
    assert second_down is not None and second_down > first_down
    assert watch.all_up
    watch.on_up(second)  # up again without having been down: nothing to resend
    assert watch.take_return() is None


def test_entries_belong_to_their_target_and_wait_there_when_the_settings_change(tmp_path):
    path = tmp_path / "outbox.sqlite3"
    first = outbox.Outbox(path, target=TARGET)
    first.add(outbox.PREDICTION, {"n": 0})
    first.close()

    elsewhere = outbox.Outbox(path, target="10.0.0.9:9042/other")
    assert elsewhere.peek(10) == [] and elsewhere.pending_count() == 0
    assert elsewhere.other_target_count() == 1
    elsewhere.add(outbox.PREDICTION, {"n": 1})
    elsewhere.close()

    back = outbox.Outbox(path, target=TARGET)
    assert payloads(back.peek(10)) == [0]
    assert back.pending_count() == 1 and back.other_target_count() == 1
    back.close()


def test_a_second_outbox_on_the_same_file_is_refused_with_a_sentence(tmp_path, queue):
    with pytest.raises(outbox.OutboxInUse, match="MNIST_DATA_DIR"):
        outbox.Outbox(tmp_path / "outbox.sqlite3", target=TARGET)
    assert queue.pending_count() == 0  # the first one is untouched


def test_a_failing_entry_is_deferred_without_blocking_the_next_and_dead_lettered_at_last(tmp_path):
    queue = outbox.Outbox(tmp_path / "outbox.sqlite3", target=TARGET, first_retry_delay_seconds=0.0)
    queue.add(outbox.CORRECTION, {"n": 0})
    queue.add(outbox.PREDICTION, {"n": 1})
    for attempt in range(1, outbox.MAX_ATTEMPTS):
        poison = queue.peek(10)[0]
        assert poison.payload == {"n": 0} and poison.attempts == attempt - 1
        assert queue.defer(poison, "refused") is False
    assert queue.defer(queue.peek(10)[0], "refused for good") is True
    assert payloads(queue.peek(10)) == [1]
    assert queue.pending_count() == 1 and queue.dead_letter_count() == 1
    queue.close()
    reopened = outbox.Outbox(tmp_path / "outbox.sqlite3", target=TARGET)
    assert reopened.dead_letter_count() == 1  # counted again from the file
    reopened.close()


def test_a_deferred_entry_waits_for_its_retry_time(queue):
    queue.add(outbox.PREDICTION, {"n": 0})
    queue.add(outbox.PREDICTION, {"n": 1})
    queue.defer(queue.peek(1)[0], "not visible yet")
    assert payloads(queue.peek(10)) == [1]
    assert queue.pending_count() == 2


def test_sent_bookkeeping_is_bounded_in_rows(queue, monkeypatch):
    monkeypatch.setattr(outbox, "SENT_ROW_LIMIT", 5)
    queue.add_many([(outbox.PREDICTION, {"n": number}) for number in range(12)])
    queue.acknowledge(entry.sequence for entry in queue.peek(12))
    assert queue.sent_count() == 12
    queue.bound_sent()
    assert queue.sent_count() == 5
    assert queue.resend_since(0) == 5
    assert payloads(queue.peek(12)) == [7, 8, 9, 10, 11]  # the newest are kept


def test_an_outbox_from_before_targets_is_given_to_the_configured_target(tmp_path):
    import sqlite3
    path = tmp_path / "outbox.sqlite3"
    old = sqlite3.connect(path)
    old.execute("CREATE TABLE outbox (sequence INTEGER PRIMARY KEY AUTOINCREMENT, kind TEXT NOT NULL,"
                " payload TEXT NOT NULL, enqueued_at REAL NOT NULL)")
    old.execute("INSERT INTO outbox (kind, payload, enqueued_at) VALUES ('prediction', ?, 0)",
                ('{"created_at": "2026-11-30T10:20:00+00:00", "digit": 7, "confidence": 0.93}',))
    old.commit()
    old.close()
    queue = outbox.Outbox(path, target=TARGET)
    assert queue.pending_count() == 1
    [figures] = queue.pending_slot_figures(since=0, until=2e9)
    assert figures.slot_start.isoformat() == "2026-11-30T10:15:00+00:00"
    assert figures.counts[7] == 1 and figures.confidence_histogram[18] == 1
    assert figures.confidence_sum == pytest.approx(0.93)
    queue.close()


def test_a_second_process_on_the_same_data_directory_is_refused(tmp_path, queue):
    """A real second process (the lock is the kernel's, per open file): it gets a sentence, not a shared queue."""
    import subprocess
    import sys

    queue.add(outbox.PREDICTION, {"n": 0})
    script = (
        "import pathlib, sys\n"
        "from mnist_core.storage import outbox\n"
        "try:\n"
        f"    outbox.Outbox(pathlib.Path({str(tmp_path / 'outbox.sqlite3')!r}), target={TARGET!r})\n"
        "except outbox.OutboxInUse as error:\n"
        "    print(error)\n"
        "    sys.exit(3)\n"
    )
    finished = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60,
                              cwd=pathlib.Path(__file__).resolve().parents[1])
    assert finished.returncode == 3, finished.stderr
    assert f"in use by process {os.getpid()}" in finished.stdout and "MNIST_DATA_DIR" in finished.stdout
    assert payloads(queue.peek(10)) == [0]

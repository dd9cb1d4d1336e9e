"""The SQLite outbox on its own: order, durability across reopening, and the resend window."""

from __future__ import annotations

import time

import pytest

from mnist_core.storage import outbox


@pytest.fixture
def queue(tmp_path):
    opened = outbox.Outbox(tmp_path / "outbox.sqlite3")
    yield opened
    opened.close()


def payloads(entries) -> list[int]:
    return [entry.payload["n"] for entry in entries]


def test_entries_survive_reopening_in_the_order_they_were_added(tmp_path):
    first = outbox.Outbox(tmp_path / "outbox.sqlite3")
    for number in range(5):
        first.add(outbox.PREDICTION, {"n": number})
    first.close()
    second = outbox.Outbox(tmp_path / "outbox.sqlite3")
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
    queue.remove_through(sequences[2])  # 0, 1, 2 acknowledged
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
    queue.remove_through(queue.peek(1)[0].sequence)
    between = time.time()
    time.sleep(0.02)
    queue.add(outbox.PREDICTION, {"n": 1})
    queue.remove_through(queue.peek(1)[0].sequence)

    assert queue.resend_since(between) == 1
    assert payloads(queue.peek(10)) == [1]
    assert queue.sent_count() == 1  # entry 0 is still kept
    queue.forget_sent_before(time.time())
    assert queue.sent_count() == 0
    assert queue.resend_since(0) == 0

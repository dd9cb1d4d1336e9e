"""The SQLite outbox on its own (order, durability across reopening, the resend window) and the node watch that triggers resends."""

from __future__ import annotations

import threading
import time
import types

import pytest

from mnist_core.storage import outbox
from mnist_core.storage.service import _NodeWatch


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


def test_each_node_that_comes_back_triggers_one_resend_from_when_it_went_down():
    wake = threading.Event()
    watch = _NodeWatch(wake)
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

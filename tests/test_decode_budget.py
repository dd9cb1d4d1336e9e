"""The decode budget: encoded pictures decoded at once never hold more pixels than it allows."""

from __future__ import annotations

import io
import threading
import time

import numpy as np
from PIL import Image

from mnist_core import decode_budget
from mnist_core.decode_budget import PixelBudget
from mnist_core.segmentation import segmentations


def test_a_hold_that_does_not_fit_waits_and_one_larger_than_the_budget_goes_alone():
    budget = PixelBudget(100)
    order = []
    first_holding, release_first = threading.Event(), threading.Event()

    def first():
        with budget.hold(60):
            order.append("first in")
            first_holding.set()
            release_first.wait(5)
        order.append("first out")

    def second():
        first_holding.wait(5)
        with budget.hold(60):
            order.append("second in")

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for thread in threads:
        thread.start()
    first_holding.wait(5)
    time.sleep(0.2)
    assert order == ["first in"], "60 + 60 pixels do not fit in 100: the second waits"
    release_first.set()
    for thread in threads:
        thread.join(5)
    assert order == ["first in", "first out", "second in"]
    assert budget.peak == 60 and budget.in_use == 0
    with budget.hold(250):  # alone, a picture larger than the whole budget is still read
        assert budget.in_use == 250


def test_pictures_read_from_many_threads_stay_within_the_budget(monkeypatch):
    side = 2000
    canvas = np.full((side, side), 255, np.uint8)
    canvas[side // 4:3 * side // 4, side // 2 - 60:side // 2 + 60] = 0  # a thick 1
    buffer = io.BytesIO()
    Image.fromarray(canvas).save(buffer, format="PNG")
    body = buffer.getvalue()
    budget = decode_budget.DECODE_BUDGET
    monkeypatch.setattr(budget, "limit", int(2.5 * side * side))
    monkeypatch.setattr(budget, "peak", 0)
    results, failures = [], []

    def read():
        try:
            results.append(len(segmentations(body)[0].candidates))
        except Exception as error:  # noqa: BLE001 - reported below
            failures.append(error)

    threads = [threading.Thread(target=read) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not failures and len(results) == 8 and all(count >= 1 for count in results)
    assert side * side <= budget.peak <= 2.5 * side * side
    assert budget.in_use == 0


def test_a_large_picture_is_not_passed_for_ever_by_small_ones():
    budget = PixelBudget(100)
    order = []
    small_holding = threading.Event()
    release = threading.Event()

    def holder(name: str, pixels: int, wait_for: threading.Event | None = None):
        with budget.hold(pixels):
            order.append(name)
            if wait_for is not None:
                small_holding.set()
                wait_for.wait(5)

    first = threading.Thread(target=holder, args=("small-1", 30, release))
    first.start()
    small_holding.wait(5)
    large = threading.Thread(target=holder, args=("large", 90))
    large.start()
    time.sleep(0.1)
    late_small = threading.Thread(target=holder, args=("small-2", 30))  # would fit beside small-1
    late_small.start()
    time.sleep(0.2)
    assert order == ["small-1"], "the later small picture waits behind the large one"
    release.set()
    for thread in (first, large, late_small):
        thread.join(5)
    assert order == ["small-1", "large", "small-2"]

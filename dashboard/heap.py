"""Keeping Python's garbage collector from stalling the server: the long-lived heap is frozen.

A full collection (Python's own, or one a library asks for) walks every tracked object: with
pandas and Altair loaded, well over 100,000 long-lived ones, holding the GIL long enough to
stall every session and the API. Frozen objects are never walked, so collections only see
what is new. The server freezes once the pages' first-view imports are loaded, and a thread
freezes again now and then.
"""

from __future__ import annotations

import gc
import threading
import time


# After the warm-up, the heap is frozen again this long after start (the pages' own first runs
# have loaded what they need by then), and then at this interval.
FIRST_REFREEZE_SECONDS = 60.0
REFREEZE_INTERVAL_SECONDS = 600.0


def _freeze_heap() -> None:
    """Collect everything once, then exempt what survives from later collections.

    Unfreezing first lets that one collection find cycles among objects frozen earlier (a
    closed session's, say), so nothing is kept for ever; it is the only slow one in the interval.
    """
    gc.unfreeze()
    gc.collect()
    gc.freeze()


def _refreeze_heap_forever() -> None:
    time.sleep(FIRST_REFREEZE_SECONDS)
    while True:
        _freeze_heap()
        time.sleep(REFREEZE_INTERVAL_SECONDS)


def freeze_after_warm_up() -> None:
    """Load what the pages use on first view, then take it all out of the collector's sight;
    a thread freezes again now and then (see the module's docstring for why)."""
    # Altair's classes and, once a chart is validated, its Vega-Lite schema.
    from dashboard import charts

    charts.probabilities_chart([0.1] * 10, predicted=0).to_dict()
    _freeze_heap()
    threading.Thread(target=_refreeze_heap_forever, name="mnist-heap", daemon=True).start()

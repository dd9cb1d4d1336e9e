"""How the dashboard words an answer: the "Prediction" metric's text and the "not sure" state.

Kept apart from the reading itself (:mod:`mnist_core.readings`) because it is UI wording,
not what is read or stored (the REST API answers with the numbers), and out of the page so
it is tested without a browser.
"""

from __future__ import annotations

from mnist_core.inference import Reading


def answer_text(reading: Reading) -> str:
    """What the "Prediction" metric shows: the digit or the whole number first, then how sure the model is."""
    if not reading.has_digits:
        raise ValueError("A reading without digits has no answer to show.")
    return f"{reading.number or reading.digit} ({reading.overall_confidence:.0%} sure)"


def is_unsure(reading: Reading, threshold: float) -> bool:
    """True when the model's confidence in the whole answer is below the threshold (the "not sure" state)."""
    return reading.has_digits and reading.overall_confidence < threshold

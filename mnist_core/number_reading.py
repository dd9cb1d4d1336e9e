"""What the number reader's steps say: the digits of a line, each with how sure the model is.

The number reader (`train/number_reader.py`) gives, for each of its columns ("steps"), scores
for the ten digits and for the blank (no new digit here). Its reading is the best path:
each step's likeliest class, runs of one class collapsed, blanks dropped. A digit's
probabilities are those of its most confident step, over the ten digits.
"""

from __future__ import annotations

import dataclasses
import itertools
from pathlib import Path

import numpy as np
from scipy.special import softmax

from mnist_core.networks import ModelFileError, card_beside, load_network
from mnist_core.number_line import LINE_HEIGHT, LINE_WIDTH, STEPS

BLANK = 10
CLASSES = 11


@dataclasses.dataclass(frozen=True)
class LineDigit:
    digit: int
    confidence: float
    # Over the ten digits (the blank's share left out), at the digit's most confident step.
    probabilities: tuple[float, ...]
    # The steps the digit's run covers, [first, last].
    first_step: int
    last_step: int


@dataclasses.dataclass(frozen=True)
class LineReading:
    digits: tuple[LineDigit, ...]
    # The best path's probability: every step's chosen class multiplied.
    path_probability: float

    @property
    def text(self) -> str:
        return "".join(str(digit.digit) for digit in self.digits)


def greedy_decode(logits: np.ndarray) -> LineReading:
    """The best-path reading of one line's step logits (STEPS, CLASSES)."""
    probabilities = softmax(np.asarray(logits, dtype=np.float64), axis=-1)
    best = probabilities.argmax(axis=1)
    digits = []
    step = 0
    for label, run in itertools.groupby(best.tolist()):
        end = step + len(list(run)) - 1
        if label != BLANK:
            peak = step + int(probabilities[step:end + 1, label].argmax())
            over_digits = probabilities[peak, :BLANK] / max(probabilities[peak, :BLANK].sum(),
                                                            1e-12)
            digits.append(LineDigit(digit=label, confidence=float(over_digits[label]),
                                    probabilities=tuple(float(value) for value in over_digits),
                                    first_step=step, last_step=end))
        step = end + 1
    path = float(np.prod(probabilities[np.arange(len(best)), best]))
    return LineReading(digits=tuple(digits), path_probability=path)


class NumberReader:
    """The number reader's network (LiteRT for serving), reading lines (N, LINE_HEIGHT, LINE_WIDTH)."""

    def __init__(self, network, *, model_card: dict | None = None, model_version: str = "unknown"):
        self.network = network
        self.model_card = model_card or {}
        self.model_version = self.model_card.get("model_version", model_version)

    @classmethod
    def from_path(cls, path: str | Path) -> "NumberReader":
        path = Path(path)
        network = load_network(path, (LINE_HEIGHT, LINE_WIDTH, 1))
        if network.output_classes != CLASSES:
            # Checked once here, not as a reshape error on every wide drawing.
            raise ModelFileError(f"{path} gives {network.output_classes} outputs per step, not "
                                 f"the number reader's {CLASSES} (ten digits and the blank).")
        return cls(network, model_card=card_beside(path), model_version=path.stem)

    def read_lines(self, lines: np.ndarray) -> list[LineReading]:
        logits = self.network(np.asarray(lines, dtype=np.float32))
        return [greedy_decode(row) for row in logits.reshape(len(logits), STEPS, CLASSES)]

"""Reading digits with the trained model: a picture in, the digits (or "not a digit") out.

The network itself is `mnist_core.networks` (LiteRT for serving); this module turns a
segmented picture into a reading: the model scores every candidate digit, the likeliest
grouping wins, and a drawing whose digits are mostly "not a digit" is refused.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import numpy as np

from mnist_core.networks import card_beside, load_network
from mnist_core.number_line import STEP_WIDTH
from mnist_core.number_reading import NumberReader
from mnist_core.preprocess import DigitBox
from mnist_core.segmentation import Segmentation, drawing_ink, lone_piece, segmentations_of

# The shipped model's eleventh output; a ten-output model (the baseline) never refuses.
NOT_A_DIGIT = 10
# A candidate is refused as "not a digit" when that output is this many times its likeliest
# digit's. Chosen on MNIST's validation split and generated training non-digits: from 1.0 to
# 1.5 validation digits read right rose from 99.26% to 99.38%, non-digits refused fell from
# 55.2% to 53.0% (those shown instead are shown as unsure: none at 60% confidence or more).
REFUSAL_RATIO = 1.5
# Probabilities are never exactly 0 in the log.
LOG_FLOOR = 1e-9
# The number reader (mnist_core.number_reading) is asked about drawings the digit CNN read as
# several digits, and about refused ink at least this many times as wide as tall (a number the
# CNN gave up on); it replaces the CNN's reading when it disagrees and its best path is at least
# this likely (the second, for overturning a refusal, where it must also read two or more).
# A lone digit is never re-read: on the real-handwriting set that gained no number and cost
# MNIST test digits (python -m bench.drawn_digits, python -m train --evaluate).
NUMBER_READER_ASPECT = 0.9
NUMBER_READER_SURE = 0.3
NUMBER_READER_SURE_OVER_REFUSAL = 0.9
# The number reader's file, next to the digit model's.
NUMBER_READER_FILE = "number_reader.tflite"


@dataclasses.dataclass(frozen=True)
class DigitReading:
    digit: int
    confidence: float
    probabilities: tuple[float, ...]


@dataclasses.dataclass(frozen=True)
class Reading:
    """What the model read in one picture: no digits (blank), one, or a number."""

    digits: tuple[DigitReading, ...]
    model_inputs: np.ndarray
    boxes: tuple[DigitBox, ...]
    latency_ms: float
    # Ink was drawn, but it is not a digit (a scribble, a letter, a doodle): no digits.
    is_not_a_digit: bool = False
    # How sure the model is that it is not a digit (the eleventh output; 0 for the baseline).
    not_a_digit_probability: float = 0.0
    # The chosen grouping's total log-score (see Segmentation.best_grouping).
    grouping_score: float = 0.0
    # The digits are the number reader's, which read the drawing as one line.
    read_by_number_reader: bool = False

    @property
    def is_blank(self) -> bool:
        """Nothing is drawn (no ink, or only specks and dots)."""
        return not self.digits and not self.is_not_a_digit

    @property
    def has_digits(self) -> bool:
        """At least one digit was read: the only readings that are stored."""
        return bool(self.digits)

    @property
    def digit(self) -> int | None:
        """The digit, or for a number its first digit; None when no digit was read."""
        return self.digits[0].digit if self.digits else None

    @property
    def confidence(self) -> float:
        return self.digits[0].confidence if self.digits else 0.0

    @property
    def probabilities(self) -> tuple[float, ...]:
        return self.digits[0].probabilities if self.digits else (0.0,) * 10

    @property
    def number(self) -> str | None:
        """All digits left to right when there are several, else None."""
        if len(self.digits) < 2:
            return None
        return "".join(str(reading.digit) for reading in self.digits)

    @property
    def text(self) -> str:
        return "".join(str(reading.digit) for reading in self.digits)

    @property
    def overall_confidence(self) -> float:
        """The chance that every digit is right, taking the digits as independent."""
        return float(np.prod([reading.confidence for reading in self.digits])) if (
            self.digits) else 0.0

    def model_input_bytes(self, index: int = 0) -> bytes:
        """The 28x28 image the model saw for one digit, as 784 bytes (0-255)."""
        return np.rint(self.model_inputs[index] * 255).astype(np.uint8).tobytes()


class Recognizer:
    """A loaded network with its version and model card; thread-safe for reading."""

    def __init__(self, network, *, model_version: str = "unknown", model_card: dict | None = None,
                 model_path: Path | None = None, number_reader: NumberReader | None = None):
        self.network = network
        self.number_reader = number_reader
        self.model_path = model_path
        self.digit_model_version = model_version
        self.model_card = model_card or {}

    @property
    def model_version(self) -> str:
        """What every reading records: the digit model's version, and the number reader's when
        one is used (a reading may depend on both)."""
        if self.number_reader is None:
            return self.digit_model_version
        return f"{self.digit_model_version}+{self.number_reader.model_version}"

    @classmethod
    def from_path(cls, path: str | Path) -> "Recognizer":
        """The model in `path` (.tflite on LiteRT, .keras on TensorFlow) with the card beside it,
        and the number reader when its file sits in the same folder."""
        path = Path(path)
        card = card_beside(path)
        reader_path = path.with_name(NUMBER_READER_FILE)
        number_reader = NumberReader.from_path(reader_path) if reader_path.exists() else None
        return cls(load_network(path), model_version=card.get("model_version", path.stem),
                   model_card=card, model_path=path, number_reader=number_reader)

    def probabilities(self, images: np.ndarray) -> np.ndarray:
        """Class probabilities (N, classes) for model inputs (N, 28, 28) scaled 0..1."""
        return self.network(np.asarray(images, dtype=np.float32).reshape(-1, 28, 28))

    @staticmethod
    def _readings(probabilities: np.ndarray) -> tuple[DigitReading, ...]:
        return tuple(DigitReading(digit=int(row[:NOT_A_DIGIT].argmax()),
                                  confidence=float(row[:NOT_A_DIGIT].max()),
                                  probabilities=tuple(float(value) for value in row[:NOT_A_DIGIT]))
                     for row in probabilities)

    def read(self, image, strokes=None) -> Reading:
        """Read one picture (canvas RGBA array, any image array, PIL image, bytes or path).

        `strokes`, the pen's paths in drawing order (the Draw page's canvas knows them), give
        a second segmentation, stroke by stroke, that tells apart digits whose ink overlaps;
        the reading is whichever of the two groupings the model scores higher, then checked
        by the number reader (see `_checked_by_number_reader`).
        """
        started = time.perf_counter()
        drawing = drawing_ink(image)
        lone = lone_piece(drawing) if strokes is None else None
        if lone is not None:
            # One piece of ink the model is sure of as one digit: no cut of it could do better.
            (reading, _), = self._network_readings([lone])
            if len(reading.digits) == 1 and not reading.is_not_a_digit and lone.whole_is_certain(
                    float(np.log(max(reading.digits[0].confidence, LOG_FLOOR)))):
                return dataclasses.replace(reading, latency_ms=(time.perf_counter() - started) * 1000)
        found = segmentations_of(drawing, strokes)
        readings = self._network_readings(found)
        best = max(range(len(found)), key=lambda index: readings[index][0].grouping_score)
        reading = self._checked_by_number_reader([readings[best]], [found[best]])[0]
        return dataclasses.replace(reading, latency_ms=(time.perf_counter() - started) * 1000)

    def read_segmented(self, segmentations: list[Segmentation]) -> list[Reading]:
        """Read many segmented pictures with one model call over all their candidates (and
        one number-reader call over the lines it checks)."""
        return self._checked_by_number_reader(self._network_readings(segmentations),
                                              segmentations)

    def _network_readings(self, segmentations: list[Segmentation]
                          ) -> list[tuple[Reading, np.ndarray]]:
        """Each picture's reading by the digit CNN, with its candidates' probabilities.

        The model scores every candidate digit; each picture's reading is the grouping its
        segmentation finds likeliest. If most digits of that grouping are more than
        REFUSAL_RATIO times as likely "not a digit" as any digit, the picture is not a digit
        (a scribble, a letter).
        """
        started = time.perf_counter()
        # The whole ink of each picture as one digit is scored first, where it is a candidate:
        # when the model is sure enough of it, no other grouping can score higher (see
        # Segmentation.whole_is_certain), so the other candidates are never made or scored
        # and keep probability 0. The reading is the same as with all of them scored.
        first = [[item.whole_candidate] if item.whole_candidate is not None
                 else list(range(item.candidate_count)) for item in segmentations]
        first_scores = self._scores(segmentations, first)
        rest = []
        for item, indices, scores in zip(segmentations, first, first_scores):
            settled = len(indices) == item.candidate_count or item.whole_is_certain(
                float(np.log(max(float(scores[0, :NOT_A_DIGIT].max()), LOG_FLOOR))))
            rest.append([] if settled else [index for index in range(item.candidate_count)
                                            if index not in indices])
        rest_scores = self._scores(segmentations, rest)
        per_picture_ms = (time.perf_counter() - started) * 1000 / max(len(segmentations), 1)
        classes = next((scores.shape[1] for scores in first_scores if len(scores)), NOT_A_DIGIT)
        readings = []
        for item, indices, scores, more, more_scores in zip(segmentations, first, first_scores,
                                                            rest, rest_scores):
            probabilities = np.zeros((item.candidate_count, classes), np.float32)
            for scored, values in ((indices, scores), (more, more_scores)):
                if scored:
                    probabilities[scored] = values
            readings.append((self._reading(item, probabilities, per_picture_ms), probabilities))
        return readings

    def _scores(self, segmentations: list[Segmentation],
                wanted: list[list[int]]) -> list[np.ndarray]:
        """The probabilities of the wanted candidates of each picture, in one model call."""
        inputs = [item.candidate_inputs(indices)
                  for item, indices in zip(segmentations, wanted) if indices]
        if not inputs:
            return [np.zeros((0, NOT_A_DIGIT), np.float32) for _ in wanted]
        everything = self.probabilities(np.concatenate(inputs))
        scores, position = [], 0
        for indices in wanted:
            scores.append(everything[position:position + len(indices)])
            position += len(indices)
        return scores

    def _checked_by_number_reader(self, readings: list[tuple[Reading, np.ndarray]],
                                  segmentations: list[Segmentation]) -> list[Reading]:
        """Readings the number reader, reading the whole line, reads as another number and is
        sure of take its digits; the rest stay as they are.

        It is asked about drawings read from their pixels (the strokes, when known, already
        tell digits apart better than it can) that the digit CNN read as two or more digits,
        where cutting may have gone wrong (it may read them as other digits, more, or fewer),
        and about wide drawings the CNN refused as not a digit: a number it gave up on the
        reader may still read, if it is surer still (it also learnt to read nothing in
        scribbles). A lone digit stays the digit CNN's to read, and so does a drawing the
        reader reads as one digit.
        """
        final = [reading for reading, _ in readings]
        if self.number_reader is None:
            return final
        asked = [index for index, ((reading, _), segmentation) in
                 enumerate(zip(readings, segmentations))
                 if segmentation.ink is not None and not segmentation.by_strokes
                 and (len(reading.digits) > 1 or (reading.is_not_a_digit and
                                                  segmentation.ink_aspect >= NUMBER_READER_ASPECT))]
        if not asked:
            return final
        lines = self.number_reader.read_lines(np.stack([segmentations[index].line
                                                        for index in asked]))
        for index, line in zip(asked, lines):
            reading, probabilities = readings[index]
            sure = (NUMBER_READER_SURE_OVER_REFUSAL if reading.is_not_a_digit
                    else NUMBER_READER_SURE)
            # Its reading must have two digits or more: of 78 drawings it read as one digit
            # where the CNN read several or refused (1,500 generated non-digits, a third of
            # the development set in both placements, 900 numbers), none was right.
            if (len(line.digits) < 2 or line.text == reading.text
                    or line.path_probability < sure):
                continue
            segmentation = segmentations[index]
            digit_probability = probabilities[:, :NOT_A_DIGIT].max(axis=1)
            # The model inputs and boxes of the digits (stored as what each digit looked like):
            # the segmentation's best grouping into as many digits as the number reader read,
            # or, when its atoms cannot make that many, the ink cut where the reader's digits end.
            chosen, _ = segmentation.best_grouping(
                np.log(np.maximum(digit_probability, LOG_FLOOR)), digit_count=len(line.digits))
            if len(chosen) == len(line.digits):
                model_inputs = segmentation.candidate_inputs(chosen)
                boxes = tuple(segmentation.boxes[position] for position in chosen)
            else:
                cut = segmentation.cut_at([
                    (before.last_step + 1 + after.first_step) * STEP_WIDTH / 2
                    for before, after in zip(line.digits[:-1], line.digits[1:])])
                if cut is None:
                    continue
                model_inputs, boxes = cut
            final[index] = dataclasses.replace(
                reading, digits=tuple(DigitReading(digit=digit.digit, confidence=digit.confidence,
                                                   probabilities=digit.probabilities)
                                      for digit in line.digits),
                model_inputs=model_inputs, boxes=boxes,
                is_not_a_digit=False, read_by_number_reader=True)
        return final

    @classmethod
    def _reading(cls, segmentation: Segmentation, probabilities: np.ndarray,
                 latency_ms: float) -> Reading:
        empty = np.zeros((0, 28, 28), np.float32)
        if segmentation.is_blank:
            return Reading(digits=(), model_inputs=empty, boxes=(), latency_ms=latency_ms)
        digit_probability = probabilities[:, :NOT_A_DIGIT].max(axis=1)
        chosen, score = segmentation.best_grouping(np.log(np.maximum(digit_probability,
                                                                     LOG_FLOOR)))
        if not chosen:
            return Reading(digits=(), model_inputs=empty, boxes=(), latency_ms=latency_ms,
                           grouping_score=score)
        chosen_probabilities = probabilities[chosen]
        inputs = segmentation.candidate_inputs(chosen)
        boxes = tuple(segmentation.boxes[index] for index in chosen)
        if chosen_probabilities.shape[1] > NOT_A_DIGIT:
            refusal = chosen_probabilities[:, NOT_A_DIGIT]
            # A number with one doubtful digit is still a number (shown with a low confidence);
            # a drawing whose digits are mostly "not a digit" is not one.
            refused = refusal > REFUSAL_RATIO * chosen_probabilities[:, :NOT_A_DIGIT].max(axis=1)
            if refused.sum() * 2 > len(refused):
                return Reading(digits=(), model_inputs=inputs, boxes=boxes,
                               latency_ms=latency_ms, is_not_a_digit=True,
                               not_a_digit_probability=float(refusal.max()),
                               grouping_score=score)
            not_a_digit_probability = float(refusal.max())
        else:
            not_a_digit_probability = 0.0
        return Reading(digits=cls._readings(chosen_probabilities), model_inputs=inputs,
                       boxes=boxes, latency_ms=latency_ms,
                       not_a_digit_probability=not_a_digit_probability, grouping_score=score)


def load_recognizer(path: str | Path | None = None) -> Recognizer:
    """The shipped model (or the one at `path`), ready to read."""
    if path is None:
        from mnist_core.settings import get_settings

        path = get_settings().model_path
    return Recognizer.from_path(path)

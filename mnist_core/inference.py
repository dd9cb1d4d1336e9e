"""Reading digits with the trained model: one image fast, many images in batches.

`model.predict` costs tens of milliseconds per call, mostly framework overhead, while the
network itself is a few million multiply-adds. So a single drawing runs through a NumPy
copy of the network (batch normalisation folded into the weights), checked against Keras
when the model is loaded; batches go through a traced TensorFlow function.
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

import numpy as np
import threadpoolctl

from mnist_core.preprocess import DigitBox
from mnist_core.segmentation import Segmentation, segmentations

# Up to this many images at once the NumPy path wins; above it TensorFlow's batching does.
# A drawn number has a few dozen candidate digits (see segmentation).
NUMPY_BATCH_LIMIT = 48
# The shipped model's eleventh output; a ten-output model (the baseline) never refuses.
NOT_A_DIGIT = 10
# A candidate is refused as "not a digit" when that output is this many times its likeliest
# digit's. Chosen on MNIST's validation split and generated training non-digits: from 1.0 to
# 1.5 validation digits read right rose from 99.26% to 99.38%, non-digits refused fell from
# 55.2% to 53.0% (those shown instead are shown as unsure: none at 60% confidence or more).
REFUSAL_RATIO = 1.5
# Probabilities are never exactly 0 in the log.
LOG_FLOOR = 1e-9
TENSORFLOW_BATCH_SIZE = 512


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


class _NumpyNetwork:
    """The Keras network's layers replayed with NumPy, for one image at a time."""

    def __init__(self, network):
        self.steps: list[tuple] = []
        for layer in network.layers:
            kind = layer.__class__.__name__
            if kind in ("InputLayer", "Dropout"):
                continue
            if kind == "Conv2D":
                if tuple(layer.strides) != (1, 1) or tuple(layer.dilation_rate) != (1, 1):
                    raise ValueError(f"{layer.name}: only unit strides are supported.")
                kernel, *rest = [np.asarray(weight) for weight in layer.get_weights()]
                bias = rest[0] if rest else np.zeros(kernel.shape[-1], np.float32)
                self.steps.append(["conv", kernel, bias, layer.padding])
                self._activation(layer.activation.__name__)
            elif kind == "Dense":
                kernel, *rest = [np.asarray(weight) for weight in layer.get_weights()]
                bias = rest[0] if rest else np.zeros(kernel.shape[-1], np.float32)
                self.steps.append(["dense", kernel, bias])
                self._activation(layer.activation.__name__)
            elif kind == "BatchNormalization":
                self._fold_batch_normalisation(layer)
            elif kind == "Activation":
                self._activation(layer.activation.__name__)
            elif kind == "MaxPooling2D":
                if tuple(layer.pool_size) != (2, 2) or tuple(layer.strides) != (2, 2):
                    raise ValueError(f"{layer.name}: only 2x2 pooling is supported.")
                self.steps.append(["pool", layer.padding])
            elif kind == "Flatten":
                self.steps.append(["flatten"])
            else:
                raise ValueError(f"Layer type {kind} has no NumPy equivalent.")

    def _activation(self, name: str) -> None:
        if name in ("relu", "softmax"):
            self.steps.append([name])
        elif name != "linear":
            raise ValueError(f"Activation {name} has no NumPy equivalent.")

    def _fold_batch_normalisation(self, layer) -> None:
        previous = self.steps[-1] if self.steps else None
        if previous is None or previous[0] not in ("conv", "dense"):
            raise ValueError(f"{layer.name}: batch normalisation must follow a weight layer.")
        gamma, beta, mean, variance = [np.asarray(weight) for weight in layer.get_weights()]
        scale = gamma / np.sqrt(variance + layer.epsilon)
        previous[1] = (previous[1] * scale).astype(np.float32)
        previous[2] = ((previous[2] - mean) * scale + beta).astype(np.float32)

    def __call__(self, images: np.ndarray) -> np.ndarray:
        tensor = images.astype(np.float32).reshape(-1, 28, 28, 1)
        for step in self.steps:
            kind = step[0]
            if kind == "conv":
                tensor = self._convolve(tensor, step[1], step[2], step[3])
            elif kind == "dense":
                tensor = tensor @ step[1] + step[2]
            elif kind == "relu":
                np.maximum(tensor, 0.0, out=tensor)
            elif kind == "softmax":
                tensor = np.exp(tensor - tensor.max(axis=-1, keepdims=True))
                tensor /= tensor.sum(axis=-1, keepdims=True)
            elif kind == "pool":
                tensor = self._max_pool(tensor, step[1])
            elif kind == "flatten":
                tensor = tensor.reshape(tensor.shape[0], -1)
        return tensor

    @staticmethod
    def _convolve(tensor, kernel, bias, padding):
        kernel_height, kernel_width, channels_in, channels_out = kernel.shape
        count, height, width, _ = tensor.shape
        if padding == "same":
            # TensorFlow puts the odd padding pixel after, not before.
            top, left = (kernel_height - 1) // 2, (kernel_width - 1) // 2
            padded = np.zeros((count, height + kernel_height - 1, width + kernel_width - 1,
                               channels_in), dtype=np.float32)
            padded[:, top:top + height, left:left + width] = tensor
        else:
            padded = tensor
            height, width = height - kernel_height + 1, width - kernel_width + 1
        # Patches laid out as (row offset, column offset, channel), the kernel's own order.
        patches = np.concatenate([padded[:, row:row + height, column:column + width]
                                  for row in range(kernel_height)
                                  for column in range(kernel_width)], axis=-1)
        output = patches.reshape(-1, kernel_height * kernel_width * channels_in) @ kernel.reshape(
            -1, channels_out) + bias
        return output.reshape(count, height, width, channels_out)

    @staticmethod
    def _max_pool(tensor, padding):
        count, height, width, channels = tensor.shape
        if padding == "same" and (height % 2 or width % 2):
            padded = np.full((count, height + height % 2, width + width % 2, channels), -np.inf,
                             dtype=np.float32)
            padded[:, :height, :width] = tensor
            tensor, height, width = padded, height + height % 2, width + width % 2
        height, width = height // 2 * 2, width // 2 * 2
        return tensor[:, :height, :width].reshape(
            count, height // 2, 2, width // 2, 2, channels).max(axis=(2, 4))


class Recognizer:
    """A loaded model with its version; thread-safe for reading."""

    def __init__(self, network, *, model_version: str = "unknown", model_card: dict | None = None,
                 model_path: Path | None = None):
        import tensorflow as tf

        self.network = network
        self.model_path = model_path
        self.model_version = model_version
        self.model_card = model_card or {}
        self._batched = tf.function(
            lambda images: network(images, training=False),
            input_signature=[tf.TensorSpec([None, 28, 28, 1], tf.float32)],
            autograph=False)
        try:
            self._numpy_network: _NumpyNetwork | None = _NumpyNetwork(network)
        except ValueError:
            self._numpy_network = None
        self._check_fast_path()

    def _check_fast_path(self) -> None:
        """Use the NumPy copy only if it agrees with Keras on a few inputs."""
        if self._numpy_network is None:
            return
        probe = np.random.default_rng(0).random((4, 28, 28), dtype=np.float32)
        expected = self._run_tensorflow(probe)
        if not np.allclose(self._numpy_network(probe), expected, atol=1e-4):
            self._numpy_network = None

    @classmethod
    def from_path(cls, path: str | Path) -> "Recognizer":
        from mnist_core.model import load_model

        path = Path(path)
        card_path = path.with_suffix(".card.json")
        card = json.loads(card_path.read_text()) if card_path.exists() else {}
        return cls(load_model(path), model_version=card.get("model_version", path.stem),
                   model_card=card, model_path=path)

    @property
    def uses_fast_path(self) -> bool:
        return self._numpy_network is not None

    def _run_tensorflow(self, images: np.ndarray) -> np.ndarray:
        outputs = [self._batched(images[start:start + TENSORFLOW_BATCH_SIZE, ..., None]).numpy()
                   for start in range(0, len(images), TENSORFLOW_BATCH_SIZE)]
        return np.concatenate(outputs) if outputs else np.zeros((0, 10), np.float32)

    def probabilities(self, images: np.ndarray) -> np.ndarray:
        """Class probabilities (N, 10) for model inputs (N, 28, 28) scaled 0..1."""
        images = np.asarray(images, dtype=np.float32).reshape(-1, 28, 28)
        if len(images) == 0:
            return np.zeros((0, 10), np.float32)
        if self._numpy_network is not None and len(images) <= NUMPY_BATCH_LIMIT:
            return self._numpy_network(images)
        return self._run_tensorflow(images)

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
        the reading is whichever of the two groupings the model scores higher.
        """
        started = time.perf_counter()
        readings = self.read_segmented(segmentations(image, strokes))
        reading = max(readings, key=lambda item: item.grouping_score)
        return dataclasses.replace(reading, latency_ms=(time.perf_counter() - started) * 1000)

    def read_segmented(self, segmentations: list[Segmentation]) -> list[Reading]:
        """Read many segmented pictures with one model call over all their candidates.

        The model scores every candidate digit; each picture's reading is the grouping its
        segmentation finds likeliest. If most digits of that grouping are more than
        REFUSAL_RATIO times as likely "not a digit" as any digit, the picture is not a digit
        (a scribble, a letter).
        """
        started = time.perf_counter()
        stacked = [item.candidates for item in segmentations if len(item.candidates)]
        all_probabilities = self.probabilities(np.concatenate(stacked)) if stacked else (
            np.zeros((0, 10), np.float32))
        per_picture_ms = (time.perf_counter() - started) * 1000 / max(len(segmentations), 1)
        readings, position = [], 0
        for item in segmentations:
            probabilities = all_probabilities[position:position + len(item.candidates)]
            position += len(item.candidates)
            readings.append(self._reading(item, probabilities, per_picture_ms))
        return readings

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
        inputs = segmentation.candidates[chosen]
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


def limit_blas_to_one_thread() -> None:
    """Run NumPy's BLAS on the calling thread only, for the whole process.

    The NumPy path multiplies matrices of a few hundred kB, far too small to split; OpenBLAS
    splits them anyway, and its worker threads spin while waiting for the next call. Under
    50 API requests per second that spinning took a whole core (24 s of CPU in 20 s, against
    9 s single-threaded) and raised p99 latency from 68 ms to 400 ms. TensorFlow (batches,
    training) keeps its own thread pools.
    """
    threadpoolctl.threadpool_limits(limits=1, user_api="blas")


def load_recognizer(path: str | Path | None = None) -> Recognizer:
    """The shipped model (or the one at `path`), ready to read; NumPy's BLAS is limited to one thread."""
    if path is None:
        from mnist_core.settings import get_settings

        path = get_settings().model_path
    limit_blas_to_one_thread()
    return Recognizer.from_path(path)

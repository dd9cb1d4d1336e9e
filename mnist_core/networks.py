"""The trained network as something to call: LiteRT for serving, Keras when asked for.

The app, the API and the CLI run the network exported by training as a LiteRT flatbuffer
(`models/mnist_cnn.tflite`). LiteRT is TensorFlow's runtime for inference alone: it imports
in a tenth of a second without TensorFlow, keeps the process small, and with its XNNPACK
kernels reads one 28x28 picture in about 0.2 ms. The `.keras` file it was exported from is
still read by training, by the tests that check the two agree, and by the CLI's `--keras`
check; only those import TensorFlow.

Both classes take model inputs scaled 0..1 ((N, 28, 28) for the digit CNN, (N, 24, 120) lines
for the number reader) and return the network's outputs: probabilities (N, C) for the digit
CNN, step scores (N, steps, C) for the number reader.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import threading
from pathlib import Path

import numpy as np

# LiteRT reads a batch in one call up to this size; larger ones are split (memory stays flat).
LITERT_BATCH_SIZE = 512
KERAS_BATCH_SIZE = 512
# Each interpreter computes on the calling thread only: one request never takes both cores,
# and concurrent requests each get their own interpreter (see LiteRtNetwork).
LITERT_THREADS = 1
# What the digit CNN takes: one 28x28 grey picture.
DIGIT_INPUT = (28, 28, 1)


class ModelFileError(ValueError):
    """A model file is missing or is not a model this project can run."""


_first_interpreter_lock = threading.Lock()
_first_interpreter_made = False


@contextlib.contextmanager
def _first_interpreter_quiet():
    """Drop what native code writes to stderr while the process's first interpreter is made.

    LiteRT announces its XNNPACK delegate once per process with an INFO line that no setting
    turns off. Redirecting file descriptor 2 is process-wide, so it is done once, under a lock,
    for the few milliseconds of that first construction (before the server takes requests).
    """
    global _first_interpreter_made
    with _first_interpreter_lock:
        if _first_interpreter_made:
            yield
            return
        try:
            saved = os.dup(2)
        except OSError:  # no stderr at all: nothing to silence
            yield
            return
        try:
            with open(os.devnull, "wb") as devnull:
                os.dup2(devnull.fileno(), 2)
            yield
            _first_interpreter_made = True
        finally:
            os.dup2(saved, 2)
            os.close(saved)


class LiteRtNetwork:
    """The exported network run by LiteRT's interpreter.

    An interpreter holds its tensors and must not be used by two threads at once, while
    Streamlit runs every session's script and every API request on threads of its own. So
    interpreters wait in a pool: a call takes an idle one (making one, ~2 ms, when all are
    busy) and gives it back; the pool never holds more than the most calls seen at once.
    """

    def __init__(self, path: str | os.PathLike, input_shape: tuple[int, ...] = DIGIT_INPUT):
        from ai_edge_litert.interpreter import Interpreter

        self.path = Path(path)
        self.input_shape = tuple(input_shape)
        try:
            self._model_content = self.path.read_bytes()
        except OSError as error:
            raise ModelFileError(f"No model file at {self.path} ({error.strerror}); train one "
                                 "with `python -m train`.") from error
        self._interpreter_class = Interpreter
        self._idle: queue.SimpleQueue = queue.SimpleQueue()
        try:
            # The first interpreter announces its delegate on stderr; later ones do not.
            with _first_interpreter_quiet():
                interpreter = self._new_interpreter()
        except (ValueError, RuntimeError) as error:
            raise ModelFileError(f"{self.path} is not a LiteRT model: {error}") from error
        input_details = interpreter.interpreter.get_input_details()[0]
        output_details = interpreter.interpreter.get_output_details()[0]
        if tuple(input_details["shape_signature"][1:]) != self.input_shape:
            raise ModelFileError(f"{self.path} does not take {_size(self.input_shape)} pictures.")
        self.output_classes = int(output_details["shape_signature"][-1])
        self._idle.put(interpreter)

    def _new_interpreter(self) -> "_Interpreter":
        interpreter = self._interpreter_class(model_content=self._model_content,
                                              num_threads=LITERT_THREADS)
        interpreter.allocate_tensors()
        return _Interpreter(interpreter)

    def __call__(self, images: np.ndarray) -> np.ndarray:
        images = np.ascontiguousarray(images, dtype=np.float32).reshape(-1, *self.input_shape)
        if len(images) == 0:
            return np.zeros((0, self.output_classes), np.float32)
        try:
            interpreter = self._idle.get_nowait()
        except queue.Empty:
            interpreter = self._new_interpreter()
        try:
            return np.concatenate([interpreter.run(images[start:start + LITERT_BATCH_SIZE])
                                   for start in range(0, len(images), LITERT_BATCH_SIZE)])
        finally:
            self._idle.put(interpreter)


class _Interpreter:
    """One LiteRT interpreter with its tensor indices and the batch size it is allocated for
    (looking those up on every call costs as much as a third of reading one picture)."""

    def __init__(self, interpreter):
        self.interpreter = interpreter
        input_details = interpreter.get_input_details()[0]
        self.input_index = input_details["index"]
        self.output_index = interpreter.get_output_details()[0]["index"]
        self.batch_size = int(input_details["shape"][0])

    def run(self, batch: np.ndarray) -> np.ndarray:
        if len(batch) != self.batch_size:
            # Resizing costs microseconds; tensors are reallocated for the new batch size.
            self.interpreter.resize_tensor_input(self.input_index, batch.shape)
            self.interpreter.allocate_tensors()
            self.batch_size = len(batch)
        self.interpreter.set_tensor(self.input_index, batch)
        self.interpreter.invoke()
        return self.interpreter.get_tensor(self.output_index)


class KerasNetwork:
    """The `.keras` model run by TensorFlow, in batches through one traced function.

    Importing TensorFlow costs seconds and hundreds of megabytes, so the product never does;
    this is for training's own checks and for comparing the runtimes.
    """

    def __init__(self, path: str | os.PathLike, input_shape: tuple[int, ...] = DIGIT_INPUT):
        import tensorflow as tf

        from mnist_core.model import load_model

        self.path = Path(path)
        self.input_shape = tuple(input_shape)
        try:
            self.model = load_model(self.path)
        except FileNotFoundError as error:
            raise ModelFileError(str(error)) from error
        self.output_classes = int(self.model.output_shape[-1])
        model = self.model
        self._batched = tf.function(lambda images: model(images, training=False),
                                    input_signature=[tf.TensorSpec([None, *self.input_shape],
                                                                   tf.float32)],
                                    autograph=False)

    def __call__(self, images: np.ndarray) -> np.ndarray:
        images = np.asarray(images, dtype=np.float32).reshape(-1, *self.input_shape)
        if len(images) == 0:
            return np.zeros((0, self.output_classes), np.float32)
        return np.concatenate([self._batched(images[start:start + KERAS_BATCH_SIZE]).numpy()
                               for start in range(0, len(images), KERAS_BATCH_SIZE)])


def card_beside(path: str | os.PathLike) -> dict:
    """The model card written next to a model file (`<name>.card.json`), or {} without one."""
    card_path = Path(path).with_suffix(".card.json")
    return json.loads(card_path.read_text()) if card_path.exists() else {}


def _size(input_shape: tuple[int, ...]) -> str:
    return "x".join(str(side) for side in input_shape[:2])


def load_network(path: str | os.PathLike, input_shape: tuple[int, ...] = DIGIT_INPUT):
    """The network in `path`: a `.tflite` file runs on LiteRT, a `.keras` file on TensorFlow."""
    path = Path(path)
    if path.suffix == ".tflite":
        return LiteRtNetwork(path, input_shape)
    if path.suffix == ".keras":
        return KerasNetwork(path, input_shape)
    raise ModelFileError(f"{path}: a model is a .tflite (LiteRT) or .keras file.")

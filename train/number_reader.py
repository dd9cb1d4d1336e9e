"""Train the number reader: a small convolutional sequence model that reads a line of digits.

The digit CNN reads one digit; a number drawn with touching or overlapping digits must first
be cut apart, and vertical cuts cannot free a 7's bar reaching over the next digit. This model
reads the whole line (`mnist_core.number_line.line_input`) column by column and is trained
with CTC (connectionist temporal classification), so it never needs to know where one digit
ends: at each of its STEPS columns it says which digit it sees, or none (the blank), and a
reading is the run-collapsed sequence. It learns from numbers composed of MNIST training
digits only (`train/number_lines.py`; a tenth of its lines are non-digits, to be read as
nothing), is checked on numbers composed of MNIST validation digits, and is exported as a LiteRT file beside the Keras one, like the digit CNN.

    python -m train.number_reader [--lines 160000] [--epochs 12] [--output models/number_reader.keras]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

from mnist_core.number_line import LINE_HEIGHT, LINE_WIDTH, STEPS
from mnist_core.number_reading import BLANK, CLASSES, greedy_decode

DEFAULT_OUTPUT = Path("models/number_reader.keras")


@dataclasses.dataclass(frozen=True)
class ReaderOptions:
    lines: int = 160_000
    validation_lines: int = 6_000
    epochs: int = 12
    batch_size: int = 64
    learning_rate: float = 2e-3
    seed: int = 2019
    output: Path = DEFAULT_OUTPUT
    data_source: str = "auto"
    verbose: int = 2


def build_reader():
    """Columns of the line in, per-step logits over the ten digits and the blank out.

    Two poolings of 2 make a step 4 px of the 120 px line (30 steps; six digits need at most
    eleven); the last convolutions see about 40 px across, two digits' width, so each step
    knows its neighbours.
    """
    import keras
    from keras import layers

    inputs = keras.Input((LINE_HEIGHT, LINE_WIDTH, 1), name="line")
    features = inputs
    for filters, pool in ((16, (2, 2)), (32, (2, 2)), (64, None), (64, (2, 1))):
        features = layers.Conv2D(filters, 3, padding="same", use_bias=False)(features)
        features = layers.BatchNormalization()(features)
        features = layers.Activation("relu")(features)
        if pool:
            features = layers.MaxPooling2D(pool)(features)
    # (rows, steps, channels) -> (steps, rows * channels)
    features = layers.Permute((2, 1, 3))(features)
    features = layers.Reshape((STEPS, -1))(features)
    for _ in range(2):
        features = layers.Conv1D(128, 3, padding="same", use_bias=False)(features)
        features = layers.BatchNormalization()(features)
        features = layers.Activation("relu")(features)
        features = layers.Dropout(0.2)(features)
    outputs = layers.Dense(CLASSES, name="steps")(features)
    return keras.Model(inputs, outputs, name="number_reader")


def ctc_loss(targets, logits):
    """CTC loss of padded targets (batch, MAX_LENGTH), -1 past each number's end."""
    import keras
    from keras import ops

    targets = ops.cast(targets, "int32")
    target_lengths = ops.sum(ops.cast(targets >= 0, "int32"), axis=1)
    batch = ops.shape(targets)[0]
    output_lengths = ops.full((batch,), STEPS, dtype="int32")
    return keras.ops.ctc_loss(ops.where(targets >= 0, targets, 0), logits, target_lengths,
                              output_lengths, mask_index=BLANK)


def texts(labels: np.ndarray) -> list[str]:
    return ["".join(str(int(value)) for value in row if value >= 0) for row in labels]


def exact_share(network, lines, labels) -> float:
    logits = network.predict(lines[..., None].astype(np.float32) / 255.0, batch_size=512,
                             verbose=0)
    read = [greedy_decode(row).text for row in logits]
    return float(np.mean([guess == truth for guess, truth in zip(read, texts(labels))]))


def train_reader(options: ReaderOptions, data=None) -> dict:
    """Train, check on the validation numbers, save the model, its LiteRT export and its card."""
    import keras
    import tensorflow as tf

    from mnist_core.datasets import load_mnist
    from train.export import export_litert, record_model_files
    from train.number_lines import generate_number_lines

    keras.utils.set_random_seed(options.seed)
    # As for the digit model: a re-run with the same seed gives the same weights.
    tf.config.experimental.enable_op_determinism()
    started = time.perf_counter()
    data = data or load_mnist(options.data_source)
    training = generate_number_lines(options.lines, data.train_images, data.train_labels,
                                     seed=options.seed)
    validation = generate_number_lines(options.validation_lines, data.validation_images,
                                       data.validation_labels, seed=options.seed + 100)
    preparation_seconds = time.perf_counter() - started

    network = build_reader()
    steps_per_epoch = int(np.ceil(len(training.lines) / options.batch_size))
    schedule = keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=options.learning_rate / 10,
        decay_steps=max(1, steps_per_epoch * (options.epochs - 1)),
        warmup_target=options.learning_rate, warmup_steps=steps_per_epoch, alpha=0.01)
    network.compile(optimizer=keras.optimizers.Adam(learning_rate=schedule), loss=ctc_loss)
    dataset = tf.data.Dataset.from_tensor_slices((training.lines[..., None], training.labels))
    dataset = dataset.shuffle(len(training.lines), seed=options.seed).batch(options.batch_size)
    # Scaled to 0..1 per batch, so the lines stay uint8 in memory.
    dataset = dataset.map(lambda lines, labels: (tf.cast(lines, tf.float32) / 255.0, labels))
    validation_inputs = validation.lines[..., None].astype(np.float32) / 255.0
    history = network.fit(dataset.prefetch(2), epochs=options.epochs, verbose=options.verbose,
                          validation_data=(validation_inputs, validation.labels))
    training_seconds = time.perf_counter() - started

    output = Path(options.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    # Inference needs no optimizer state and no dropout: a fresh copy with the weights.
    shipped = build_reader()
    shipped.set_weights(network.get_weights())
    shipped.save(output)
    export_litert(output, record=False)
    by_length = {}
    numbers = validation.lengths > 0
    for length in range(1, int(validation.lengths.max()) + 1):
        chosen = validation.lengths == length
        by_length[str(length)] = round(exact_share(shipped, validation.lines[chosen],
                                                   validation.labels[chosen]), 4)
    card = {
        "model_version": f"number-reader-s{options.seed}-{time.strftime('%Y%m%d')}",
        "task": "reads a whole line of digits (1 to 6) with CTC; see train/number_reader.py",
        "parameter_count": int(shipped.count_params()),
        "line_input": {"height": LINE_HEIGHT, "width": LINE_WIDTH, "steps": STEPS},
        "validation_exact": round(exact_share(shipped, validation.lines[numbers],
                                              validation.labels[numbers]), 4),
        # Lines that hold no digit (scribbles, letters...) read as no digits at all.
        "validation_non_digits_read_as_nothing": round(exact_share(
            shipped, validation.lines[~numbers], validation.labels[~numbers]), 4),
        "validation_exact_by_length": by_length,
        "validation_lines": int(len(validation.lines)),
        "training_lines": int(len(training.lines)),
        "epochs": options.epochs, "batch_size": options.batch_size,
        "learning_rate": options.learning_rate, "seed": options.seed,
        "history": {name: [round(float(value), 4) for value in values]
                    for name, values in history.history.items()},
        "preparation_seconds": round(preparation_seconds, 1),
        "training_seconds": round(training_seconds, 1),
        "data_source": data.source, "data_sha256": data.sha256,
        "library_versions": {"python": platform.python_version(), "keras": keras.__version__,
                             "tensorflow": tf.__version__, "numpy": np.__version__},
        "machine": {"processor": platform.machine(), "cpu_count": os.cpu_count()},
    }
    output.with_suffix(".card.json").write_text(json.dumps(card, indent=1) + "\n")
    return record_model_files(output)


def main(arguments: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m train.number_reader",
                                     description=__doc__.splitlines()[0])
    defaults = ReaderOptions()
    parser.add_argument("--lines", type=int, default=defaults.lines)
    parser.add_argument("--validation-lines", type=int, default=defaults.validation_lines)
    parser.add_argument("--epochs", type=int, default=defaults.epochs)
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--output", type=Path, default=defaults.output)
    parsed = parser.parse_args(sys.argv[1:] if arguments is None else arguments)
    card = train_reader(ReaderOptions(lines=parsed.lines, validation_lines=parsed.validation_lines,
                                      epochs=parsed.epochs, seed=parsed.seed,
                                      output=parsed.output))
    print(json.dumps({key: card[key] for key in ("model_version", "validation_exact",
                                                 "training_seconds")}))
    return 0


if __name__ == "__main__":
    sys.exit(main())

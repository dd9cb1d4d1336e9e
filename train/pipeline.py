"""Train a digit CNN on MNIST and write the model with its model card.

The story, top to bottom: load the data (offline sources first), build the network, train
with drawing-like augmentation while watching the held-out validation split, then touch
the test split once for the final evaluation and write everything down.
"""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import time
from pathlib import Path

import numpy as np

from mnist_core import model as model_module
from mnist_core.datasets import MnistSplits, load_mnist


@dataclasses.dataclass(frozen=True)
class TrainingOptions:
    architecture: str = "default"
    epochs: int = 15
    seed: int = 2019
    output: Path = Path("models/mnist_cnn.keras")
    data_source: str = "auto"
    npz_path: Path | None = None
    batch_size: int = 128
    learning_rate: float = 2e-3
    label_smoothing: float = 0.05
    augment: bool = True
    train_subset: int | None = None
    verbose: int = 1


MOVING_AVERAGE_MINIMUM_STEPS = 2_000

# Hyperparameters of the ancestor, used when the baseline architecture is chosen.
BASELINE_LEARNING_RATE = 1e-3


# ---------------------------------------------------------------------------------------
# Prepare the data
# ---------------------------------------------------------------------------------------

def _as_model_input(images: np.ndarray) -> np.ndarray:
    return (images.astype(np.float32) / 255.0)[..., None]


def _training_dataset(images, labels, options: TrainingOptions):
    import tensorflow as tf

    from train.augment import augment_batch

    one_hot = np.eye(model_module.NUMBER_OF_CLASSES, dtype=np.float32)[labels]
    dataset = tf.data.Dataset.from_tensor_slices((_as_model_input(images), one_hot))
    dataset = dataset.shuffle(len(images), seed=options.seed, reshuffle_each_iteration=True)
    dataset = dataset.batch(options.batch_size)
    if options.augment:
        # Each batch gets its own stateless seed, so a run is repeatable for a given seed.
        batch_seeds = tf.data.Dataset.random(seed=options.seed).batch(2)
        dataset = tf.data.Dataset.zip((dataset, batch_seeds)).map(
            lambda batch, seed: (augment_batch(batch[0], tf.cast(seed % 2**31, tf.int32)),
                                 batch[1]),
            num_parallel_calls=1)
    return dataset.prefetch(2)


# ---------------------------------------------------------------------------------------
# Build and train
# ---------------------------------------------------------------------------------------

def _compile(network, options: TrainingOptions, steps_per_epoch: int):
    import keras

    if options.architecture == "baseline":
        optimizer = keras.optimizers.Adam(learning_rate=BASELINE_LEARNING_RATE)
        loss = keras.losses.CategoricalCrossentropy()
    else:
        schedule = keras.optimizers.schedules.CosineDecay(
            initial_learning_rate=options.learning_rate / 10,
            decay_steps=max(1, steps_per_epoch * options.epochs - steps_per_epoch),
            warmup_target=options.learning_rate, warmup_steps=steps_per_epoch, alpha=0.01)
        # A moving average of the weights smooths the last, noisy steps of training; it
        # needs far more steps than its horizon (about 100), so short runs go without.
        use_moving_average = steps_per_epoch * options.epochs >= MOVING_AVERAGE_MINIMUM_STEPS
        optimizer = keras.optimizers.Adam(learning_rate=schedule, use_ema=use_moving_average,
                                          ema_momentum=0.99)
        loss = keras.losses.CategoricalCrossentropy(label_smoothing=options.label_smoothing)
    network.compile(optimizer=optimizer, loss=loss, metrics=["accuracy"])


def train(options: TrainingOptions, data: MnistSplits | None = None) -> dict:
    """Train, evaluate once on the test split, save the model and its card; return the card."""
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(options.seed)
    tf.config.experimental.enable_op_determinism()
    data = data or load_mnist(options.data_source, npz_path=options.npz_path)

    train_images, train_labels = data.train_images, data.train_labels
    if options.train_subset:
        train_images = train_images[:options.train_subset]
        train_labels = train_labels[:options.train_subset]
    validation_inputs = _as_model_input(data.validation_images)
    validation_targets = np.eye(10, dtype=np.float32)[data.validation_labels]

    network = model_module.build_model(options.architecture)
    steps_per_epoch = int(np.ceil(len(train_images) / options.batch_size))
    _compile(network, options, steps_per_epoch)
    dataset = _training_dataset(train_images, train_labels,
                                dataclasses.replace(options, augment=options.augment
                                                    and options.architecture != "baseline"))
    started = time.perf_counter()
    history = network.fit(dataset, epochs=options.epochs, verbose=options.verbose, shuffle=False,
                          validation_data=(validation_inputs, validation_targets))
    training_seconds = time.perf_counter() - started

    # -----------------------------------------------------------------------------------
    # Evaluate on the untouched test split and write the model card
    # -----------------------------------------------------------------------------------
    test_probabilities = network.predict(_as_model_input(data.test_images), batch_size=1000,
                                         verbose=0)
    card = build_model_card(network, options, data, test_probabilities,
                            {name: [float(value) for value in values]
                             for name, values in history.history.items()},
                            training_seconds)
    output = Path(options.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    # A fresh copy carries the weights without the optimizer state, keeping the file small.
    shipped = model_module.build_model(options.architecture)
    shipped.set_weights(network.get_weights())
    shipped.save(output)
    model_card_path(output).write_text(json.dumps(card, indent=1) + "\n")
    return card


def model_card_path(model_path: Path) -> Path:
    return Path(model_path).with_suffix(".card.json")


def confusion_matrix(true_labels: np.ndarray, predicted_labels: np.ndarray) -> np.ndarray:
    matrix = np.zeros((10, 10), dtype=np.int64)
    np.add.at(matrix, (true_labels, predicted_labels), 1)
    return matrix


def build_model_card(network, options: TrainingOptions, data: MnistSplits,
                     test_probabilities: np.ndarray, history: dict,
                     training_seconds: float) -> dict:
    import keras
    import tensorflow as tf

    predicted = test_probabilities.argmax(axis=1)
    matrix = confusion_matrix(data.test_labels, predicted)
    true_positives = np.diag(matrix).astype(float)
    precision = true_positives / np.maximum(matrix.sum(axis=0), 1)
    recall = true_positives / np.maximum(matrix.sum(axis=1), 1)
    accuracy = float((predicted == data.test_labels).mean())
    return {
        "model_version": f"{options.architecture}-s{options.seed}-{time.strftime('%Y%m%d')}",
        "architecture": options.architecture,
        "layers": [layer.__class__.__name__ for layer in network.layers],
        "parameter_count": int(network.count_params()),
        "test_accuracy": accuracy,
        "test_examples": int(len(data.test_labels)),
        "test_errors": int((predicted != data.test_labels).sum()),
        "per_class": {str(digit): {"precision": float(precision[digit]),
                                   "recall": float(recall[digit]),
                                   "support": int(matrix[digit].sum())}
                      for digit in range(10)},
        "confusion_matrix": matrix.tolist(),
        "history": history,
        "training_seconds": round(training_seconds, 1),
        "epochs": options.epochs,
        "batch_size": options.batch_size,
        "learning_rate": options.learning_rate,
        "label_smoothing": options.label_smoothing,
        "augmentation": bool(options.augment and options.architecture != "baseline"),
        "training_examples": int(len(data.train_labels) if not options.train_subset
                                 else min(options.train_subset, len(data.train_labels))),
        "validation_examples": int(len(data.validation_labels)),
        "seed": options.seed,
        "data_source": data.source,
        "data_sha256": data.sha256,
        "library_versions": {"python": platform.python_version(), "keras": keras.__version__,
                             "tensorflow": tf.__version__, "numpy": np.__version__},
        "machine": {"processor": platform.processor() or platform.machine(),
                    "cpu_count": os.cpu_count()},
    }

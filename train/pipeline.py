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
from train.export import export_litert, record_model_files


@dataclasses.dataclass(frozen=True)
class TrainingOptions:
    architecture: str = "default"
    epochs: int = 9
    seed: int = 2019
    output: Path = Path("models/mnist_cnn.keras")
    data_source: str = "auto"
    npz_path: Path | None = None
    batch_size: int = 128
    learning_rate: float = 2e-3
    label_smoothing: float = 0.05
    augment: bool = True
    train_subset: int | None = None
    # Validate on the first N validation digits only: each is also redrawn on the canvas, the
    # slowest part of a smoke run's preparation. The test split is always read whole.
    validation_subset: int | None = None
    verbose: int = 1
    # Canvas drawings of each MNIST training digit (see train/canvas_rendering.py), and
    # non-digit drawings as a share of the whole training set.
    canvas_passes: int = 2
    mnist_passes: int = 2
    non_digit_share: float = 0.1
    # Numbers (1 to 5 digits) composed from the training digits, whose segmentation
    # candidates are added to the training pictures (see train/number_candidates.py).
    numbers: int = 12_000


MOVING_AVERAGE_MINIMUM_STEPS = 2_000

# Hyperparameters of the ancestor, used when the baseline architecture is chosen.
BASELINE_LEARNING_RATE = 1e-3


# ---------------------------------------------------------------------------------------
# Prepare the data
# ---------------------------------------------------------------------------------------

def _as_model_input(images: np.ndarray) -> np.ndarray:
    return (images.astype(np.float32) / 255.0)[..., None]


@dataclasses.dataclass(frozen=True)
class PreparedSplit:
    """Model inputs (N, 28, 28) float32 in 0..1 and labels (10 means "not a digit")."""

    inputs: np.ndarray
    labels: np.ndarray


def prepare_split(images: np.ndarray, labels: np.ndarray, *, canvas_passes: int,
                  non_digit_share: float, seed: int, mnist_passes: int = 1,
                  numbers: int = 0) -> PreparedSplit:
    """What the app's preprocessing makes of these digits, drawn and scanned, plus non-digits.

    MNIST images go through the preprocessing as a 28x28 scan would (`mnist_passes` copies,
    which the augmentation then varies); each digit is also redrawn on the canvas
    `canvas_passes` times in varied styles; non-digit drawings are added so they make up
    `non_digit_share` of the split; and the candidates the segmentation cuts from `numbers`
    composed numbers, each labelled with its digit or "not a digit".
    """
    from train.canvas_rendering import NOT_A_DIGIT, generate
    from train.number_candidates import generate_number_candidates

    scanned = generate("mnist", len(images), images, labels, seed=seed)
    parts = [scanned] * mnist_passes
    part_labels = [labels] * mnist_passes
    if canvas_passes:
        parts.append(generate("redrawn", canvas_passes * len(images), images, labels,
                              seed=seed + 1))
        part_labels.append(np.tile(labels, canvas_passes))
    digits = sum(len(part) for part in parts)
    non_digits = int(round(digits * non_digit_share / max(1.0 - non_digit_share, 1e-9)))
    if non_digits:
        parts.append(generate("non_digit", non_digits, images, labels, seed=seed + 2))
        part_labels.append(np.full(non_digits, NOT_A_DIGIT, dtype=labels.dtype))
    if numbers:
        candidates, candidate_labels = generate_number_candidates(numbers, images, labels,
                                                                  seed=seed + 3)
        parts.append(candidates)
        part_labels.append(candidate_labels.astype(labels.dtype))
    return PreparedSplit(inputs=np.concatenate(parts), labels=np.concatenate(part_labels))


def _training_dataset(images, labels, options: TrainingOptions, classes: int):
    import tensorflow as tf

    from train.augment import augment_batch

    one_hot = np.eye(classes, dtype=np.float32)[labels]
    dataset = tf.data.Dataset.from_tensor_slices((images[..., None], one_hot))
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

    started = time.perf_counter()
    train_images, train_labels = data.train_images, data.train_labels
    if options.train_subset:
        train_images = train_images[:options.train_subset]
        train_labels = train_labels[:options.train_subset]
    validation_images = data.validation_images[:options.validation_subset]
    validation_labels = data.validation_labels[:options.validation_subset]
    network = model_module.build_model(options.architecture)
    classes = int(network.output_shape[-1])
    if options.architecture == "baseline":
        # The ancestor's network, trained as in 2019: raw MNIST, ten classes.
        training = PreparedSplit(_as_model_input(train_images)[..., 0], train_labels)
        validation = PreparedSplit(_as_model_input(validation_images)[..., 0], validation_labels)
    else:
        training = prepare_split(train_images, train_labels, canvas_passes=options.canvas_passes,
                                 mnist_passes=options.mnist_passes,
                                 non_digit_share=options.non_digit_share, seed=options.seed,
                                 numbers=options.numbers)
        validation = prepare_split(validation_images, validation_labels, canvas_passes=1,
                                   non_digit_share=options.non_digit_share,
                                   seed=options.seed + 100, numbers=options.numbers // 12)
    preparation_seconds = time.perf_counter() - started
    validation_targets = np.eye(classes, dtype=np.float32)[validation.labels]

    steps_per_epoch = int(np.ceil(len(training.labels) / options.batch_size))
    _compile(network, options, steps_per_epoch)
    dataset = _training_dataset(training.inputs, training.labels,
                                dataclasses.replace(options, augment=options.augment
                                                    and options.architecture != "baseline"),
                                classes)
    history = network.fit(dataset, epochs=options.epochs, verbose=options.verbose, shuffle=False,
                          validation_data=(validation.inputs[..., None], validation_targets))
    training_seconds = time.perf_counter() - started

    # -----------------------------------------------------------------------------------
    # Evaluate on the untouched test split and write the model card
    # -----------------------------------------------------------------------------------
    if options.architecture == "baseline":
        test_inputs = _as_model_input(data.test_images)
    else:
        # As the product reads them: each 28x28 test image through the preprocessing.
        from train.canvas_rendering import generate

        test_inputs = generate("mnist", len(data.test_images), data.test_images,
                               data.test_labels, seed=0)[..., None]
    test_probabilities = network.predict(test_inputs, batch_size=1000, verbose=0)
    card = build_model_card(network, options, data, test_probabilities,
                            {name: [float(value) for value in values]
                             for name, values in history.history.items()},
                            training_seconds)
    card["preparation_seconds"] = round(preparation_seconds, 1)
    card["training_pictures"] = int(len(training.labels))
    output = Path(options.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    # A fresh copy carries the weights without the optimizer state, keeping the file small.
    shipped = model_module.build_model(options.architecture)
    shipped.set_weights(network.get_weights())
    shipped.save(output)
    # What the product serves: the same network as a LiteRT flatbuffer, made before the card is
    # written (a failed export leaves no card describing a model that is not served).
    served = export_litert(output, record=False)
    model_card_path(output).write_text(json.dumps(card, indent=1) + "\n")
    record_model_files(output)
    if options.architecture != "baseline":
        return record_product_test_figures(served, data)
    return json.loads(model_card_path(output).read_text())


def read_through_product(model_path: Path, images: np.ndarray):
    """Every image read as `python -m mnist_core predict` reads a file: segmented, then the model."""
    from mnist_core.inference import load_recognizer
    from mnist_core.segmentation import segment

    recognizer = load_recognizer(model_path)
    readings = []
    for start in range(0, len(images), 256):
        readings.extend(recognizer.read_segmented([segment(image)
                                                   for image in images[start:start + 256]]))
    return readings


def record_product_test_figures(model_path: Path, data: MnistSplits | None = None) -> dict:
    """Put the test split's figures *through the product* in the model card, and return it.

    The network's own figure on whole-image inputs stays as `network_test_accuracy`; what a
    user gets is the product's: a test digit split in two, read as blank or refused as not a
    digit is an error.
    """
    data = data or load_mnist()
    card_path = model_card_path(model_path)
    card = json.loads(card_path.read_text())
    readings = read_through_product(model_path, data.test_images)
    labels = data.test_labels
    predicted = np.array([reading.digit if len(reading.digits) == 1 else -1
                          for reading in readings])
    likeliest = np.array([int(np.argmax(reading.probabilities)) for reading in readings])
    matrix = confusion_matrix(labels, likeliest)
    true_positives = np.diag(matrix).astype(float)
    precision = true_positives / np.maximum(matrix.sum(axis=0), 1)
    recall = true_positives / np.maximum(matrix.sum(axis=1), 1)
    card.setdefault("network_test_accuracy", card.get("test_accuracy"))
    card.update({
        "test_accuracy": float((predicted == labels).mean()),
        "test_accuracy_path": "each 28x28 test image read by the product (segmentation, "
                              "preprocessing, model), as `python -m mnist_core predict` reads a PNG",
        "test_errors": int((predicted != labels).sum()),
        "test_refused_as_not_a_digit": int(sum(reading.is_not_a_digit for reading in readings)),
        "test_not_one_digit": int(sum(len(reading.digits) != 1 for reading in readings)),
        "per_class": {str(digit): {"precision": float(precision[digit]),
                                   "recall": float(recall[digit]),
                                   "support": int(matrix[digit].sum())}
                      for digit in range(10)},
        "confusion_matrix": matrix.tolist(),
    })
    card_path.write_text(json.dumps(card, indent=1) + "\n")
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
    # A refusal ("not a digit") of a test digit is an error; the matrix shows the digit the
    # model thought likeliest.
    matrix = confusion_matrix(data.test_labels, test_probabilities[:, :10].argmax(axis=1))
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
        "test_refused_as_not_a_digit": int((predicted == 10).sum()),
        "classes": int(test_probabilities.shape[1]),
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
        "composed_numbers": options.numbers,
        "training_examples": int(len(data.train_labels) if not options.train_subset
                                 else min(options.train_subset, len(data.train_labels))),
        "validation_examples": int(len(data.validation_labels[:options.validation_subset])),
        "seed": options.seed,
        "data_source": data.source,
        "data_sha256": data.sha256,
        "library_versions": {"python": platform.python_version(), "keras": keras.__version__,
                             "tensorflow": tf.__version__, "numpy": np.__version__},
        "machine": {"processor": platform.processor() or platform.machine(),
                    "cpu_count": os.cpu_count()},
    }

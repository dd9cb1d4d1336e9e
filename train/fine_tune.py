"""Fine-tune the digit model on the app's own feedback, and say honestly whether it helped.

The export (`python -m mnist_core export`) gives the exact 28x28 inputs the model saw and the
digits people say they drew. Training on them alone would forget MNIST, so each epoch mixes
MNIST training digits (through the preprocessing, as in `train.pipeline`) with the feedback,
oversampled until it makes up `feedback_share` of the pictures: a few hundred corrections then
matter, and MNIST still holds the rest. The newest share of the feedback (by time, so it stands
for readings still to come) is held out, and the card compares the new model and the one it
started from on MNIST test (through the product path), on that held-out feedback, and on seeded
scribbles, letters and doodles (shown as a digit or not). Non-digit drawings stay in the mix, as
in the full training. Every figure is computed in this run. Training never reads the real
pen-drawn digits kept for evaluation; their figures reach the tuned card afterwards, from
`python -m bench.drawn_digits --model TUNED.tflite --write-card`, as for the shipped model.

    python -m train --feedback FILE.npz [--base models/mnist_cnn.keras] [--output models/mnist_cnn_tuned.keras]
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

import numpy as np

from mnist_core.datasets import MnistSplits, load_mnist
from train.export import export_litert, record_model_files
from train.pipeline import model_card_path, read_through_product

DEFAULT_BASE = Path("models/mnist_cnn.keras")
DEFAULT_OUTPUT = Path("models/mnist_cnn_tuned.keras")


class FeedbackFileError(ValueError):
    """The feedback file is not an export this can train on; nothing was trained."""


@dataclasses.dataclass(frozen=True)
class FineTuneOptions:
    feedback: Path
    base: Path = DEFAULT_BASE
    output: Path = DEFAULT_OUTPUT
    epochs: int = 2
    learning_rate: float = 2e-4
    batch_size: int = 128
    # Share of each epoch's pictures that are feedback (repeated as needed).
    feedback_share: float = 0.25
    # The newest share of the feedback, kept out of training to measure the new model on.
    holdout_share: float = 0.2
    # Drawings that are not digits, as a share of the MNIST part (as in train.pipeline), so the
    # tuned model still refuses scribbles.
    non_digit_share: float = 0.1
    # Seeded non-digits of each kind the two models are compared on.
    non_digits_per_kind: int = 300
    mnist_subset: int | None = None
    test_subset: int | None = None
    seed: int = 2019
    verbose: int = 2


@dataclasses.dataclass(frozen=True)
class Feedback:
    inputs: np.ndarray  # (N, 28, 28) float32 0..1, the model inputs as stored
    labels: np.ndarray  # (N,) int64
    created_at: np.ndarray  # (N,) datetime64[ms]


def load_feedback(path: Path) -> Feedback:
    """The labelled readings of an export, oldest first (unlabelled ones, from --all, left out)."""
    try:
        with np.load(path) as data:
            inputs, labels, created_at = data["x"], data["y"], data["created_at"]
    except (OSError, ValueError, KeyError) as error:
        raise FeedbackFileError(f"{path} is not an npz export with x, y and created_at: {error}") from None
    if inputs.ndim != 3 or inputs.shape[1:] != (28, 28) or len(labels) != len(inputs):
        raise FeedbackFileError(f"{path}: x must be (N, 28, 28) with one label per picture; got {inputs.shape}.")
    labelled = (labels >= 0) & (labels <= 9)
    order = np.argsort(created_at[labelled], kind="stable")
    return Feedback(inputs=(inputs[labelled][order].astype(np.float32) / 255.0),
                    labels=labels[labelled][order].astype(np.int64),
                    created_at=created_at[labelled][order])


def split_by_time(feedback: Feedback, holdout_share: float) -> tuple[Feedback, Feedback]:
    """The older readings to train on and the newest `holdout_share` to measure on."""
    count = len(feedback.labels)
    held = min(count - 1, max(1, int(round(count * holdout_share)))) if count >= 2 else 0
    cut = count - held

    def part(selection: slice) -> Feedback:
        return Feedback(feedback.inputs[selection], feedback.labels[selection], feedback.created_at[selection])

    return part(slice(0, cut)), part(slice(cut, count))


def _network_accuracy(network, feedback: Feedback) -> float | None:
    """Share of the held-out pictures whose likeliest class is their label ("not a digit" counts wrong)."""
    if not len(feedback.labels):
        return None
    probabilities = network.predict(feedback.inputs[..., None], batch_size=512, verbose=0)
    return float((probabilities.argmax(axis=1) == feedback.labels).mean())


def _product_test_accuracy(model_path: Path, data: MnistSplits, subset: int | None) -> float:
    images, labels = data.test_images[:subset], data.test_labels[:subset]
    readings = read_through_product(model_path, images)
    predicted = np.array([reading.digit if len(reading.digits) == 1 else -1 for reading in readings])
    return float((predicted == labels).mean())


def _non_digits_shown(model_path: Path, per_kind: int = 300) -> dict:
    """Seeded scribbles, letters and doodles shown as a digit with confidence >= 0.6 (evaluation/non_digits.py)."""
    from evaluation.non_digits import non_digit_figures
    from mnist_core.inference import load_recognizer

    figures = non_digit_figures(load_recognizer(model_path), per_kind)
    return {kind: round(result["shown_as_digit_confident"], 4) for kind, result in figures.items()}


def _mixed_training_set(mnist_inputs: np.ndarray, mnist_labels: np.ndarray, feedback: Feedback,
                        share: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    if not len(feedback.labels):
        return mnist_inputs, mnist_labels
    wanted = int(round(len(mnist_labels) * share / max(1.0 - share, 1e-9)))
    repeats = np.resize(np.arange(len(feedback.labels)), max(wanted, len(feedback.labels)))
    inputs = np.concatenate([mnist_inputs, feedback.inputs[repeats]])
    labels = np.concatenate([mnist_labels, feedback.labels[repeats]])
    order = np.random.default_rng(seed).permutation(len(labels))
    return inputs[order], labels[order]


def fine_tune(options: FineTuneOptions, data: MnistSplits | None = None) -> dict:
    """Fine-tune the base model on MNIST plus the feedback; write the model, its LiteRT file and a card."""
    import keras
    import tensorflow as tf

    from mnist_core import model as model_module
    from train.augment import augment_batch
    from train.canvas_rendering import NOT_A_DIGIT, generate

    feedback = load_feedback(options.feedback)
    if len(feedback.labels) < 2:
        raise FeedbackFileError(f"{options.feedback} holds {len(feedback.labels)} labelled readings; "
                                "fine-tuning needs at least two (one to learn from, one to measure on).")
    training_feedback, held_out = split_by_time(feedback, options.holdout_share)
    keras.utils.set_random_seed(options.seed)
    tf.config.experimental.enable_op_determinism()
    data = data or load_mnist()
    started = time.perf_counter()

    base = model_module.load_model(options.base)
    base_path = Path(options.base)
    base_card = json.loads(model_card_path(base_path).read_text()) if model_card_path(base_path).exists() else {}
    # The copy that is trained; the base stays as it was, to be compared with.
    network = keras.models.clone_model(base)
    network.set_weights(base.get_weights())
    classes = int(network.output_shape[-1])
    mnist_images = data.train_images[:options.mnist_subset]
    mnist_labels = data.train_labels[:options.mnist_subset]
    mnist_inputs = generate("mnist", len(mnist_images), mnist_images, mnist_labels, seed=options.seed)
    non_digits = int(round(len(mnist_images) * options.non_digit_share))
    if non_digits:
        mnist_inputs = np.concatenate([mnist_inputs, generate("non_digit", non_digits, mnist_images, mnist_labels,
                                                              seed=options.seed + 2)])
        mnist_labels = np.concatenate([mnist_labels, np.full(non_digits, NOT_A_DIGIT, dtype=mnist_labels.dtype)])
    inputs, labels = _mixed_training_set(mnist_inputs, mnist_labels, training_feedback,
                                         options.feedback_share, options.seed)
    dataset = tf.data.Dataset.from_tensor_slices((inputs[..., None], np.eye(classes, dtype=np.float32)[labels]))
    dataset = dataset.batch(options.batch_size)
    batch_seeds = tf.data.Dataset.random(seed=options.seed).batch(2)
    dataset = tf.data.Dataset.zip((dataset, batch_seeds)).map(
        lambda batch, seed: (augment_batch(batch[0], tf.cast(seed % 2**31, tf.int32)), batch[1])).prefetch(2)
    steps = int(np.ceil(len(labels) / options.batch_size)) * options.epochs
    schedule = keras.optimizers.schedules.CosineDecay(initial_learning_rate=options.learning_rate,
                                                      decay_steps=max(1, steps), alpha=0.05)
    network.compile(optimizer=keras.optimizers.Adam(learning_rate=schedule),
                    loss=keras.losses.CategoricalCrossentropy(label_smoothing=base_card.get("label_smoothing", 0.0)),
                    metrics=["accuracy"])
    history = network.fit(dataset, epochs=options.epochs, verbose=options.verbose)
    training_seconds = time.perf_counter() - started

    output = Path(options.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    network.save(output)
    served = export_litert(output, record=False)
    # The base as the product reads it: its LiteRT file when it has one.
    base_served = base_path.with_suffix(".tflite") if base_path.with_suffix(".tflite").exists() else base_path
    comparison = {
        "mnist_test_through_product": {
            "base": _product_test_accuracy(base_served, data, options.test_subset),
            "tuned": _product_test_accuracy(served, data, options.test_subset),
            "examples": int(len(data.test_labels[:options.test_subset]))},
        "held_out_feedback": {"base": _network_accuracy(base, held_out), "tuned": _network_accuracy(network, held_out),
                              "examples": int(len(held_out.labels))},
    }
    comparison["non_digits_shown_as_digit"] = {
        "base": _non_digits_shown(base_served, options.non_digits_per_kind),
        "tuned": _non_digits_shown(served, options.non_digits_per_kind),
        "per_kind": options.non_digits_per_kind}
    card = {
        **{key: base_card[key] for key in ("architecture", "layers", "parameter_count", "classes") if key in base_card},
        "model_version": f"{base_card.get('model_version', base_path.stem)}+feedback-{time.strftime('%Y%m%d')}",
        "test_accuracy": comparison["mnist_test_through_product"]["tuned"],
        "test_examples": comparison["mnist_test_through_product"]["examples"],
        "fine_tune": {
            "base_model": str(base_path), "base_model_version": base_card.get("model_version"),
            "feedback_file": str(options.feedback), "feedback_readings": int(len(feedback.labels)),
            "trained_on": int(len(training_feedback.labels)), "held_out": int(len(held_out.labels)),
            "held_out_from": str(held_out.created_at[0]) if len(held_out.labels) else None,
            "feedback_share": options.feedback_share, "mnist_examples": int(len(mnist_images)),
            "non_digit_examples": non_digits,
            "epochs": options.epochs, "learning_rate": options.learning_rate, "seed": options.seed,
            "comparison": comparison,
        },
        "history": {name: [float(value) for value in values] for name, values in history.history.items()},
        "training_seconds": round(training_seconds, 1),
        "data_sha256": data.sha256,
    }
    model_card_path(output).write_text(json.dumps(card, indent=1) + "\n")
    record_model_files(output)
    return json.loads(model_card_path(output).read_text())

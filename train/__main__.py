"""Command line for the training pipeline."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from mnist_core.datasets import SOURCES, DatasetUnavailable
from mnist_core.model import ARCHITECTURES


def parse_arguments(arguments: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m train",
                                     description="Train a digit CNN and write its model card.")
    parser.add_argument("--architecture", choices=ARCHITECTURES, default="default")
    parser.add_argument("--epochs", type=int, default=None,
                        help="default: 9 (4 for the baseline, as in 2019)")
    parser.add_argument("--seed", type=int, default=2019)
    parser.add_argument("--output", type=Path, default=None,
                        help="default: models/mnist_cnn.keras (with --feedback: models/mnist_cnn_tuned.keras)")
    parser.add_argument("--data-source", choices=SOURCES, default="auto")
    parser.add_argument("--npz", type=Path, default=None,
                        help="a local .npz with x_train, y_train, x_test, y_test")
    parser.add_argument("--train-subset", type=int, default=None,
                        help="train on the first N training images only (smoke runs)")
    parser.add_argument("--validation-subset", type=int, default=None,
                        help="validate on the first N validation images only (smoke runs)")
    parser.add_argument("--no-augment", action="store_true")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.add_argument("--evaluate", type=Path, default=None, metavar="MODEL",
                        help="train nothing: recompute MODEL's card figures on the test split "
                             "through the product path")
    parser.add_argument("--export", type=Path, default=None, metavar="MODEL",
                        help="train nothing: export MODEL (.keras) as the LiteRT file the "
                             "product serves, and record both files in its card")
    parser.add_argument("--feedback", type=Path, default=None, metavar="EXPORT.npz",
                        help="fine-tune --base on MNIST plus this export of the app's feedback "
                             "(python -m mnist_core export), and compare the two models in the card")
    parser.add_argument("--base", type=Path, default=Path("models/mnist_cnn.keras"),
                        help="with --feedback: the model to start from (default: the shipped one)")
    parser.add_argument("--holdout", type=float, default=0.2,
                        help="with --feedback: the newest share of it kept out of training, to measure on")
    parser.add_argument("--feedback-share", type=float, default=0.25,
                        help="with --feedback: its share of each epoch's pictures (repeated as needed)")
    return parser.parse_args(arguments)


def main(arguments: list[str] | None = None) -> int:
    parsed = parse_arguments(sys.argv[1:] if arguments is None else arguments)
    from train.pipeline import TrainingOptions, record_product_test_figures, train

    if parsed.export is not None:
        from train.export import export_litert

        print(json.dumps({"exported": str(export_litert(parsed.export))}))
        return 0
    if parsed.evaluate is not None:
        card = record_product_test_figures(parsed.evaluate)
        print(json.dumps({key: card[key] for key in ("model_version", "test_accuracy",
                                                     "test_errors", "network_test_accuracy")}))
        return 0

    if parsed.feedback is not None:
        return _fine_tune(parsed)
    epochs = parsed.epochs or (4 if parsed.architecture == "baseline" else 9)
    if epochs < 1:
        print("error: --epochs must be at least 1", file=sys.stderr)
        return 2
    options = TrainingOptions(
        architecture=parsed.architecture, epochs=epochs, seed=parsed.seed,
        output=parsed.output or Path("models/mnist_cnn.keras"), data_source=parsed.data_source,
        npz_path=parsed.npz,
        augment=not parsed.no_augment, train_subset=parsed.train_subset,
        validation_subset=parsed.validation_subset, verbose=2 if parsed.quiet else 1)
    try:
        card = train(options)
    except DatasetUnavailable as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    summary = {key: card[key] for key in ("model_version", "parameter_count", "test_accuracy",
                                          "test_errors", "training_seconds")}
    print(json.dumps(summary))
    return 0


def _fine_tune(parsed: argparse.Namespace) -> int:
    from train.fine_tune import DEFAULT_OUTPUT, FeedbackFileError, FineTuneOptions, fine_tune

    if not 0.0 < parsed.holdout < 1.0 or not 0.0 < parsed.feedback_share < 1.0:
        print("error: --holdout and --feedback-share must be between 0 and 1", file=sys.stderr)
        return 2
    options = FineTuneOptions(feedback=parsed.feedback, base=parsed.base, output=parsed.output or DEFAULT_OUTPUT,
                              epochs=parsed.epochs or 2, holdout_share=parsed.holdout,
                              feedback_share=parsed.feedback_share, mnist_subset=parsed.train_subset,
                              seed=parsed.seed, verbose=2 if parsed.quiet else 1)
    try:
        card = fine_tune(options)
    except (FeedbackFileError, FileNotFoundError, DatasetUnavailable) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(json.dumps({"model_version": card["model_version"], **card["fine_tune"]["comparison"],
                      "training_seconds": card["training_seconds"]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())

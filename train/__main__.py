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
    parser.add_argument("--output", type=Path, default=Path("models/mnist_cnn.keras"))
    parser.add_argument("--data-source", choices=SOURCES, default="auto")
    parser.add_argument("--npz", type=Path, default=None,
                        help="a local .npz with x_train, y_train, x_test, y_test")
    parser.add_argument("--train-subset", type=int, default=None,
                        help="train on the first N training images only (smoke runs)")
    parser.add_argument("--no-augment", action="store_true")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.add_argument("--evaluate", type=Path, default=None, metavar="MODEL",
                        help="train nothing: recompute MODEL's card figures on the test split "
                             "through the product path")
    parser.add_argument("--export", type=Path, default=None, metavar="MODEL",
                        help="train nothing: export MODEL (.keras) as the LiteRT file the "
                             "product serves, and record both files in its card")
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

    epochs = parsed.epochs or (4 if parsed.architecture == "baseline" else 9)
    if epochs < 1:
        print("error: --epochs must be at least 1", file=sys.stderr)
        return 2
    options = TrainingOptions(
        architecture=parsed.architecture, epochs=epochs, seed=parsed.seed,
        output=parsed.output, data_source=parsed.data_source, npz_path=parsed.npz,
        augment=not parsed.no_augment, train_subset=parsed.train_subset,
        verbose=2 if parsed.quiet else 1)
    try:
        card = train(options)
    except DatasetUnavailable as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    summary = {key: card[key] for key in ("model_version", "parameter_count", "test_accuracy",
                                          "test_errors", "training_seconds")}
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""How well the shipped model reads digits drawn on the canvas (our proxy for real users).

Digits from writers the model never trained on are redrawn as 18 px pen strokes on a
280x280 canvas, filling it or at a natural size and place (see train/drawings.py), and read
through exactly the path the app and the CLI use. Prints accuracy per source and layout;
the last line is a JSON object with every figure.

    python bench/drawn_digits.py [--per-source 2000] [--model models/mnist_cnn.keras]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mnist_core.datasets import load_mnist  # noqa: E402
from mnist_core.inference import load_recognizer  # noqa: E402
from mnist_core.preprocess import preprocess  # noqa: E402
from train.drawings import LAYOUTS, drawn_digits, optdigits_source  # noqa: E402


def proxy_sources(per_source: int, seed: int = 7):
    """(name, images scaled 0..1, labels) for each writer pool outside MNIST training."""
    random = np.random.default_rng(seed)
    mnist = load_mnist()
    chosen = random.choice(len(mnist.test_labels), size=min(per_source, len(mnist.test_labels)),
                           replace=False)
    optdigit_images, optdigit_labels = optdigits_source()
    yield "mnist_test_writers", mnist.test_images[chosen] / 255.0, mnist.test_labels[chosen]
    chosen = random.choice(len(optdigit_labels), size=min(per_source, len(optdigit_labels)),
                           replace=False)
    yield "optdigits_writers", optdigit_images[chosen], optdigit_labels[chosen]


def accuracy_on_drawings(recognizer, images, labels, layout: str, seed: int = 11) -> dict:
    drawings = drawn_digits(images, labels, layout, source="proxy", seed=seed)
    prepared = [preprocess(canvas) for canvas in drawings.canvases]
    readings = recognizer.read_prepared(prepared)
    read = np.array([reading.digit if reading.digit is not None else -1
                     for reading in readings])
    single = np.array([len(reading.digits) == 1 for reading in readings])
    return {"accuracy": float((read == labels).mean()),
            "split_or_blank": int((~single).sum()), "count": int(len(labels))}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-source", type=int, default=2000)
    parser.add_argument("--model", type=Path, default=None)
    arguments = parser.parse_args()
    recognizer = load_recognizer(arguments.model)
    figures = {"model_version": recognizer.model_version}
    started = time.perf_counter()
    for name, images, labels in proxy_sources(arguments.per_source):
        for layout in LAYOUTS:
            result = accuracy_on_drawings(recognizer, images, labels, layout)
            figures[f"{name}_{layout}"] = round(result["accuracy"], 4)
            print(f"{name:20s} {layout:8s} accuracy {result['accuracy']:.2%} "
                  f"({result['count']} drawings, {result['split_or_blank']} not read as one digit)")
    figures["seconds"] = round(time.perf_counter() - started, 1)
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())

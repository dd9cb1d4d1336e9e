"""Latency of one canvas prediction: the 2019 ancestor's path against ours.

(a) Ancestor: the canvas is written to disk as a PNG, read back, resized to 28x28 as a whole,
    inverted, and passed to `model.predict`.
(b) Ours: the canvas RGBA array goes through preprocessing and the fast single-image path.

Both use the same shipped model and the same drawings, after warm-up. The last line is a
JSON object with seed_p50_ms, ours_p50_ms, ours_p99_ms and speedup_p50.

    python bench/predict_latency.py [--runs 300]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mnist_core.datasets import load_mnist  # noqa: E402
from mnist_core.inference import load_recognizer  # noqa: E402
from train.drawings import drawn_digits  # noqa: E402

WARM_UP_RUNS = 20


def ancestor_predict(network, canvas: np.ndarray, directory: Path) -> int:
    """The 2019 app's steps, with Pillow standing in for its OpenCV calls."""
    path = directory / "output.png"
    Image.fromarray(canvas, "RGBA").save(path)
    image = Image.open(path).convert("L").resize((28, 28))
    # It drew black on a white canvas and inverted; our canvas is white ink on transparent,
    # so the alpha channel already is the inverted image: invert twice for the same cost.
    pixels = 255 - np.asarray(image, dtype=np.float32)
    pixels = (255 - pixels) / 255.0
    probabilities = network.predict(pixels.reshape(1, 28, 28, 1), verbose=0)
    return int(probabilities.argmax())


def percentile_ms(samples: list[float], percentile: float) -> float:
    return float(np.percentile(np.array(samples) * 1000, percentile))


def time_calls(function, inputs, runs: int) -> list[float]:
    for index in range(WARM_UP_RUNS):
        function(inputs[index % len(inputs)])
    durations = []
    for index in range(runs):
        started = time.perf_counter()
        function(inputs[index % len(inputs)])
        durations.append(time.perf_counter() - started)
    return durations


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=300)
    parser.add_argument("--model", type=Path, default=None)
    arguments = parser.parse_args()
    recognizer = load_recognizer(arguments.model)
    mnist = load_mnist()
    canvases = drawn_digits(mnist.test_images[:50] / 255.0, mnist.test_labels[:50],
                            "natural", source="mnist_test_writers", seed=3).canvases
    with tempfile.TemporaryDirectory() as directory:
        ancestor = time_calls(lambda canvas: ancestor_predict(recognizer.network, canvas,
                                                              Path(directory)),
                              canvases, arguments.runs)
    ours = time_calls(recognizer.read, canvases, arguments.runs)
    figures = {
        "seed_p50_ms": round(percentile_ms(ancestor, 50), 3),
        "seed_p99_ms": round(percentile_ms(ancestor, 99), 3),
        "ours_p50_ms": round(percentile_ms(ours, 50), 3),
        "ours_p99_ms": round(percentile_ms(ours, 99), 3),
        "runs": arguments.runs,
        "fast_path": recognizer.uses_fast_path,
    }
    figures["speedup_p50"] = round(figures["seed_p50_ms"] / figures["ours_p50_ms"], 1)
    print(f"ancestor path: p50 {figures['seed_p50_ms']:.2f} ms, p99 {figures['seed_p99_ms']:.2f} ms")
    print(f"our path:      p50 {figures['ours_p50_ms']:.3f} ms, p99 {figures['ours_p99_ms']:.3f} ms")
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())

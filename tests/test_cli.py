"""The CLI contract: one JSON line per file, in order; error rows; exit code 1 on errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from evaluation.drawings import centre_line, draw_on_canvas

REPOSITORY_ROOT = Path(__file__).resolve().parents[1]


def run_cli(*arguments: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mnist_core", *arguments], cwd=REPOSITORY_ROOT,
                          capture_output=True, text=True, timeout=300,
                          env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})


def test_predict_prints_one_row_per_file_in_order(tmp_path, mnist):
    index_of = {digit: int(np.flatnonzero(mnist.test_labels == digit)[0]) for digit in range(10)}
    files = []
    for digit in (3, 8):
        path = tmp_path / f"digit-{digit}.png"
        canvas = draw_on_canvas(centre_line(mnist.test_images[index_of[digit]] / 255, 180), 40, 50)
        Image.fromarray(255 - canvas[..., 3]).save(path)  # black ink on white paper
        files.append(path)
    blank = tmp_path / "blank.png"
    Image.new("RGB", (280, 280), "white").save(blank)
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    number = tmp_path / "number.png"
    strip = np.zeros((240, 480), np.uint8)
    for position, digit in enumerate((4, 2)):
        canvas = draw_on_canvas(centre_line(mnist.test_images[index_of[digit]] / 255, 170), 30, 40)
        strip[:, position * 240:(position + 1) * 240] = canvas[20:260, 20:260, 3]
    Image.fromarray(strip).save(number)
    missing = tmp_path / "missing.png"

    ordered = [files[0], blank, broken, files[1], number, missing]
    completed = run_cli("predict", *map(str, ordered))

    assert completed.returncode == 1, completed.stderr
    rows = [json.loads(line) for line in completed.stdout.splitlines()]
    assert [row["file"] for row in rows] == [str(path) for path in ordered]
    assert rows[0]["digit"] == 3 and rows[3]["digit"] == 8
    for row in (rows[0], rows[3]):
        assert len(row["probabilities"]) == 10
        # The digits' shares and the model's "not a digit" output make the whole.
        assert sum(row["probabilities"]) + row["not_a_digit_probability"] == pytest.approx(1, abs=1e-3)
        assert row["not_a_digit"] is False
        assert row["confidence"] == max(row["probabilities"])
        assert "error" not in row and "number" not in row
    assert rows[1]["digit"] is None and "error" not in rows[1] and rows[1]["not_a_digit"] is False
    assert rows[2]["digit"] is None and "readable" in rows[2]["error"]
    assert rows[4]["number"] == "42" and rows[4]["digit"] == 4
    assert rows[5]["error"].startswith("No such file")


def test_all_good_files_exit_zero(tmp_path, mnist):
    path = tmp_path / "seven.png"
    Image.fromarray(mnist.test_images[0]).save(path)
    completed = run_cli("predict", str(path))
    assert completed.returncode == 0, completed.stderr
    (row,) = [json.loads(line) for line in completed.stdout.splitlines()]
    assert row["digit"] == 7


def test_the_keras_check_reads_the_same_as_the_served_runtime(tmp_path, mnist):
    paths = []
    for index in range(12):
        path = tmp_path / f"test-{index}.png"
        Image.fromarray(mnist.test_images[index]).save(path)
        paths.append(str(path))
    served = run_cli("predict", *paths)
    checked = run_cli("predict", "--keras", *paths)
    assert served.returncode == checked.returncode == 0, served.stderr + checked.stderr
    served_rows = [json.loads(line) for line in served.stdout.splitlines()]
    checked_rows = [json.loads(line) for line in checked.stdout.splitlines()]
    assert [row["digit"] for row in served_rows] == [row["digit"] for row in checked_rows]
    assert [row["digit"] for row in served_rows] == mnist.test_labels[:12].tolist()
    for served_row, checked_row in zip(served_rows, checked_rows):
        np.testing.assert_allclose(served_row["probabilities"], checked_row["probabilities"], atol=1e-5)


def test_a_model_file_that_is_not_a_model_is_one_sentence_and_exit_2(tmp_path):
    model = tmp_path / "broken.tflite"
    model.write_bytes(b"\0" * 64)
    completed = run_cli("predict", "--model", str(model), str(tmp_path / "any.png"))
    assert completed.returncode == 2
    assert completed.stderr.startswith("error: ") and "not a LiteRT model" in completed.stderr
    assert "Traceback" not in completed.stderr and completed.stdout == ""


def test_a_bad_setting_is_one_sentence_and_exit_2(tmp_path, mnist):
    path = tmp_path / "seven.png"
    Image.fromarray(mnist.test_images[0]).save(path)
    completed = subprocess.run([sys.executable, "-m", "mnist_core", "predict", str(path)], cwd=REPOSITORY_ROOT,
                               capture_output=True, text=True, timeout=120,
                               env={**os.environ, "MNIST_CONFIDENCE_THRESHOLD": "2"})
    assert completed.returncode == 2
    assert completed.stderr.startswith("error: ") and "MNIST_CONFIDENCE_THRESHOLD" in completed.stderr
    assert "Traceback" not in completed.stderr

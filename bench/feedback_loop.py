"""What the feedback loop is worth, as an experiment on real handwriting (never a shipped model).

Writers 1-15 of the development set (`../shared/data/pen-digits-dev/`) play the app's users:
each of their digits is drawn on the canvas (alternately filling it and at the writer's own size
and place), sent to the live app's `POST /api/predict`, and corrected through `POST /api/feedback`
with the digit the writer meant. `python -m mnist_core export` then writes those readings as a
data set, `python -m train --feedback` fine-tunes the served model on it, and both models are
measured on writers 16-30, whom neither the users nor the fine-tune ever saw, and on MNIST test.
This is the one use of the development set for training that is allowed, and only here: the
tuned model lives in a temporary folder and is deleted with it.

Everything runs on loopback: a private Cassandra node (node 8, 127.0.0.8) and the app, both
started and stopped here. The last line is JSON.

    python -m bench.feedback_loop [--data PATH] [--epochs 2] [--keep]
"""

from __future__ import annotations

import argparse
import datetime
import io
import json
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile
import time

from PIL import Image

from bench.drawn_digits import digit_figures
from evaluation.canvas_layouts import draw_digit
from evaluation.unipen import DEFAULT_PATH, DevelopmentSetMissing, read_unipen
from harness import REPOSITORY_ROOT
from harness.app_process import AppProcess
from harness.cassandra_node import CassandraNode
from mnist_core.inference import load_recognizer

NODE = 8
USER_WRITERS = range(1, 16)
SHIPPED_MODEL = REPOSITORY_ROOT / "models" / "mnist_cnn.keras"


def png_of(picture) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(picture, "RGBA").save(buffer, format="PNG")
    return buffer.getvalue()


def users_correct_the_app(app: AppProcess, digits) -> dict:
    """Every user digit predicted through the API and then corrected with its true label."""
    counts = {"sent": 0, "stored": 0, "refused": 0, "feedback": 0, "read_right": 0}
    for index, digit in enumerate(digits):
        picture = draw_digit(digit, "fit" if index % 2 == 0 else "box")
        response = app.http.post(app.base_url + "/api/predict", content=png_of(picture),
                                 headers={"Content-Type": "image/png"})
        counts["sent"] += 1
        if response.status_code != 200:
            counts["refused"] += 1  # not a digit or nothing drawn: nothing stored, nothing to correct
            continue
        answer = response.json()
        counts["stored"] += 1
        counts["read_right"] += int(answer["digit"] == digit.label and answer["number"] is None)
        feedback = app.http.post(app.base_url + "/api/feedback", json={"id": answer["id"], "true_label": digit.label})
        if feedback.status_code != 202:
            raise RuntimeError(f"/api/feedback answered {feedback.status_code}: {feedback.text}")
        counts["feedback"] += 1
    return counts


def held_out_figures(model_path: pathlib.Path, digits) -> dict:
    recognizer = load_recognizer(model_path)
    recognizer.number_reader = None  # lone digits, for both models alike
    return {placement: round(digit_figures(recognizer, digits, placement)["accuracy"], 4)
            for placement in ("fit", "box")}


def main(arguments: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.feedback_loop", description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=pathlib.Path, default=DEFAULT_PATH)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--keep", action="store_true", help="keep the work folder (export, tuned model, logs)")
    parsed = parser.parse_args(arguments)
    try:
        digits = read_unipen(parsed.data)
    except DevelopmentSetMissing as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    users = [digit for digit in digits if digit.writer in USER_WRITERS]
    held_out = [digit for digit in digits if digit.writer not in USER_WRITERS]
    work = pathlib.Path(tempfile.mkdtemp(prefix="feedback-loop-"))
    keyspace = f"feedback_loop_{datetime.datetime.now(datetime.timezone.utc):%Y%m%d_%H%M%S}"
    node = CassandraNode(NODE)
    figures: dict = {"user_digits": len(users), "held_out_digits": len(held_out)}
    started = time.monotonic()
    node.start()
    app = AppProcess(environment=node.app_environment(keyspace, work / "data"), log_path=work / "app.log")
    try:
        app.start()
        app.wait_until_serving()
        figures["api"] = users_correct_the_app(app, users)
        if app.wait_until_drained(120) is None:
            raise RuntimeError("The app's outbox did not drain within 120 s.")
        app.stop()
        today = datetime.datetime.now(datetime.timezone.utc).date()
        export = work / "feedback.npz"
        exported = subprocess.run(
            [sys.executable, "-m", "mnist_core", "export", "--from", str(today - datetime.timedelta(days=1)),
             "--to", str(today), "--tz", "UTC", "--output", str(export)], cwd=REPOSITORY_ROOT,
            env={**app.environment}, capture_output=True, text=True, timeout=300)
        if exported.returncode != 0:
            raise RuntimeError(f"export failed: {exported.stderr}")
        figures["exported"] = json.loads(exported.stdout.strip().splitlines()[-1])["readings"]
        print(f"users: {figures['api']}; exported {figures['exported']} labelled readings", flush=True)

        from train.fine_tune import FineTuneOptions, fine_tune

        tuned_path = work / "tuned" / "mnist_cnn_tuned.keras"
        card = fine_tune(FineTuneOptions(feedback=export, base=SHIPPED_MODEL, output=tuned_path,
                                         epochs=parsed.epochs))
        comparison = card["fine_tune"]["comparison"]
        figures["mnist_test"] = comparison["mnist_test_through_product"]
        figures["held_out_feedback_of_users"] = comparison["held_out_feedback"]
        figures["non_digits_shown_as_digit"] = comparison["non_digits_shown_as_digit"]
        figures["held_out_writers"] = {"base": held_out_figures(SHIPPED_MODEL.with_suffix(".tflite"), held_out),
                                       "tuned": held_out_figures(tuned_path.with_suffix(".tflite"), held_out)}
        figures["fine_tune_seconds"] = card["training_seconds"]
    finally:
        if app.running():
            app.stop()
        node.drop_keyspace(keyspace)
        node.stop()
        if not parsed.keep:
            shutil.rmtree(work, ignore_errors=True)
    figures["seconds"] = round(time.monotonic() - started, 1)
    base, tuned = figures["held_out_writers"]["base"], figures["held_out_writers"]["tuned"]
    print(f"writers 16-30, fit: {base['fit']:.2%} -> {tuned['fit']:.2%}; box: {base['box']:.2%} -> {tuned['box']:.2%}")
    shown = figures["non_digits_shown_as_digit"]
    print(f"scribbles shown as a digit: {shown['base']['scribbles']:.1%} -> {shown['tuned']['scribbles']:.1%}; "
          f"letters {shown['base']['letters']:.1%} -> {shown['tuned']['letters']:.1%}")
    mnist = figures["mnist_test"]
    print(f"MNIST test through the product: {mnist['base']:.2%} -> {mnist['tuned']:.2%}")
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    sys.exit(main())

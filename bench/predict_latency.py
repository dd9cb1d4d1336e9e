"""Speed a person feels, in one run: one reading in the process, a Predict click in a browser, a cold start.

(1) In the process: one canvas reading by the 2019 ancestor's path (the canvas written to disk
    as a PNG, read back, resized whole to 28x28, `model.predict` of the Keras model) against
    ours (preprocessing, segmentation and the LiteRT network), same drawings, after warm-up,
    each in a process of its own (ours without TensorFlow, as the server runs), ours timed half
    before and half after the ancestor.
(2) Cold start: `streamlit run Home.py` launched on a free port; seconds until its first
    `/api/predict` answer (polled every 20 ms), and its RSS after 100 API predictions: once on
    a new keyspace (its tables are created first), then again as a restart.
(3) In Chromium, idle: MNIST test digits drawn stroke by stroke on the canvas, a 0.7 s pause,
    the Predict click; seconds until the "Prediction" metric is on screen (polled every 10 ms),
    the canvas cleared between drawings.

(2) and (3) need the local Cassandra node (`scripts/cassandra start`) and Debian's chromium; the
server writes to a keyspace of its own, dropped afterwards. `--in-process-only` skips them.
The last line is a JSON object with every figure.

    python -m bench.predict_latency [--runs 1000] [--drawings 20] [--in-process-only]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path

import numpy as np
from PIL import Image

from evaluation.drawings import drawn_digits
from mnist_core.datasets import load_mnist
from mnist_core.inference import load_recognizer

REPOSITORY_ROOT = Path(__file__).resolve().parents[1]
WARM_UP_RUNS = 20
API_PREDICTIONS_BEFORE_RSS = 100
START_POLL_SECONDS = 0.02
ANSWER_POLL_SECONDS = 0.01
PAUSE_BEFORE_CLICK_SECONDS = 0.7
START_TIMEOUT_SECONDS = 120


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


def measured_durations(path: str, model_path: Path | None, runs: int) -> dict:
    """One path timed in this process: `ours` (LiteRT, as the server reads) or `ancestor` (Keras)."""
    from mnist_core.settings import get_settings

    mnist = load_mnist()
    canvases = drawn_digits(mnist.test_images[:50] / 255.0, mnist.test_labels[:50],
                            "natural", source="mnist_test_writers", seed=3).canvases
    served_model = Path(model_path or get_settings().model_path)
    if path == "ancestor":
        from mnist_core.networks import KerasNetwork

        network = KerasNetwork(served_model.with_suffix(".keras")).model
        directory = tempfile.TemporaryDirectory()
        function = lambda canvas: ancestor_predict(network, canvas, Path(directory.name))  # noqa: E731
        runtime = "Keras model.predict"
    else:
        recognizer = load_recognizer(served_model)
        function = recognizer.read
        runtime = type(recognizer.network).__name__
    for index in range(WARM_UP_RUNS):
        function(canvases[index % len(canvases)])
    durations = []
    for index in range(runs):
        started = time.perf_counter()
        function(canvases[index % len(canvases)])
        durations.append(time.perf_counter() - started)
    return {"durations": durations, "runtime": runtime,
            "tensorflow_imported": "tensorflow" in sys.modules}


def durations_in_a_process_of_their_own(path: str, model_path: Path | None, runs: int) -> dict:
    """Each path in a fresh process, as each really runs: ours never has TensorFlow loaded (its
    idle threads spin after every `model.predict` and would slow whatever runs next)."""
    command = [sys.executable, "-m", "bench.predict_latency", "--measure", path, "--runs", str(runs)]
    if model_path is not None:
        command += ["--model", str(model_path)]
    completed = subprocess.run(command, cwd=REPOSITORY_ROOT, capture_output=True, text=True)
    if completed.returncode != 0:
        raise RuntimeError(f"Timing the {path} path failed:\n{completed.stderr[-3000:]}")
    return json.loads(completed.stdout.strip().splitlines()[-1])


def in_process_figures(model_path: Path | None, runs: int) -> dict:
    # Ours before and after the ancestor, so that both meet the same minutes of this shared VM.
    first = durations_in_a_process_of_their_own("ours", model_path, runs // 2)
    ancestor = durations_in_a_process_of_their_own("ancestor", model_path, runs)
    second = durations_in_a_process_of_their_own("ours", model_path, runs - runs // 2)
    ours = first["durations"] + second["durations"]
    figures = {
        "seed_p50_ms": round(percentile_ms(ancestor["durations"], 50), 3),
        "seed_p99_ms": round(percentile_ms(ancestor["durations"], 99), 3),
        "ours_p50_ms": round(percentile_ms(ours, 50), 3),
        "ours_p99_ms": round(percentile_ms(ours, 99), 3),
        "runs": runs,
        "runtime": first["runtime"],
        "ours_imported_tensorflow": first["tensorflow_imported"] or second["tensorflow_imported"],
    }
    figures["speedup_p50"] = round(figures["seed_p50_ms"] / figures["ours_p50_ms"], 1)
    return figures


def png_bytes(picture: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(picture).save(buffer, format="PNG")
    return buffer.getvalue()


def post_png(base_url: str, body: bytes, timeout: float = 10.0) -> dict:
    request = urllib.request.Request(f"{base_url}/api/predict", data=body, headers={"Content-Type": "image/png"})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.loads(response.read())


def resident_megabytes(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(status.split("VmRSS:")[1].split()[0]) / 1024


def launch_server(keyspace: str, data_directory: Path, log_path: Path):
    from harness.app_process import free_port

    port = free_port()
    # The bench's own server: no API key from the caller's environment (its polls send none).
    environment = {name: value for name, value in os.environ.items() if name != "MNIST_API_KEY"}
    environment.update({"MNIST_CASSANDRA_CONTACT_POINTS": "127.0.0.1",
                        "MNIST_CASSANDRA_KEYSPACE": keyspace, "MNIST_DATA_DIR": str(data_directory)})
    command = [sys.executable, "-m", "streamlit", "run", "Home.py", "--server.port", str(port),
               "--server.address", "127.0.0.1"]
    with open(log_path, "w") as log:
        server = subprocess.Popen(command, cwd=REPOSITORY_ROOT, env=environment, stdout=log,
                                  stderr=subprocess.STDOUT)
    return server, f"http://127.0.0.1:{port}"


def cold_start_figures(server, base_url: str, launched: float, body: bytes) -> dict:
    """Seconds from launch to the first /api/predict answer; RSS after 100 more predictions."""
    while True:
        if server.poll() is not None:
            raise RuntimeError(f"The server exited with {server.returncode} before answering.")
        try:
            post_png(base_url, body, timeout=5)
            break
        except OSError:
            if time.monotonic() - launched > START_TIMEOUT_SECONDS:
                raise RuntimeError(f"No /api/predict answer within {START_TIMEOUT_SECONDS} s.") from None
            time.sleep(START_POLL_SECONDS)
    first_answer = time.monotonic() - launched
    for _ in range(API_PREDICTIONS_BEFORE_RSS):
        post_png(base_url, body)
    return {"launch_to_first_predict_s": round(first_answer, 2),
            "rss_after_100_predictions_mb": round(resident_megabytes(server.pid), 1)}


def browser_figures(base_url: str, mnist, drawings: int) -> dict:
    """Median and spread of Predict click -> answer on screen over `drawings` digits."""
    from playwright.sync_api import sync_playwright

    from harness.chromium import launch_chromium
    from harness.strokes import ANSWER_TIMER_SCRIPT, digit_strokes, draw_strokes

    idle = '[data-testid="stApp"][data-test-script-state="notRunning"]'
    seconds, in_page_seconds, answers = [], [], []
    with sync_playwright() as playwright:
        browser = launch_chromium(playwright)
        page = browser.new_context(viewport={"width": 1280, "height": 900}).new_page()
        page.goto(f"{base_url}/", wait_until="domcontentloaded")
        page.wait_for_selector(idle, timeout=60_000)
        for index in range(drawings):
            page.get_by_role("button", name="Clear").click()
            page.get_by_test_id("stMetric").wait_for(state="detached", timeout=60_000)
            page.wait_for_selector(idle, timeout=60_000)
            time.sleep(1.0)  # the new canvas mounts
            canvas = page.locator("canvas").last
            canvas.wait_for(state="visible")
            draw_strokes(page, canvas.bounding_box(), digit_strokes(mnist.test_images[index]))
            time.sleep(PAUSE_BEFORE_CLICK_SECONDS)
            page.evaluate(ANSWER_TIMER_SCRIPT)
            button = page.get_by_role("button", name="Predict")
            button.wait_for()
            clicked = time.perf_counter()
            button.click()
            while page.query_selector('[data-testid="stMetricValue"]') is None:
                if time.perf_counter() - clicked > 30:
                    raise RuntimeError("No answer within 30 s of a Predict click.")
                time.sleep(ANSWER_POLL_SECONDS)
            seconds.append(time.perf_counter() - clicked)
            page.wait_for_function("() => window.__answerShownAt !== null", timeout=60_000)
            in_page_seconds.append(page.evaluate("() => (window.__answerShownAt - window.__predictClickedAt) / 1000"))
            answers.append((int(mnist.test_labels[index]),
                            page.query_selector('[data-testid="stMetricValue"]').inner_text()))
            page.wait_for_selector(idle, timeout=60_000)
        browser.close()
    return {"click_to_answer_p50_s": round(statistics.median(seconds), 3),
            "click_to_answer_max_s": round(max(seconds), 3),
            "click_to_answer_in_page_p50_s": round(statistics.median(in_page_seconds), 3),
            "drawings": drawings,
            "drawings_read_right": sum(text.startswith(str(label)) for label, text in answers)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=300)
    parser.add_argument("--drawings", type=int, default=20)
    parser.add_argument("--model", type=Path, default=None, help="the .tflite model (default: the shipped one)")
    parser.add_argument("--in-process-only", action="store_true")
    parser.add_argument("--measure", choices=("ours", "ancestor"), default=None,
                        help="time one path in this process and print its durations (used by the run itself)")
    arguments = parser.parse_args()
    if arguments.measure is not None:
        print(json.dumps(measured_durations(arguments.measure, arguments.model, arguments.runs)))
        return 0
    mnist = load_mnist()
    figures = in_process_figures(arguments.model, arguments.runs)
    print(f"ancestor path: p50 {figures['seed_p50_ms']:.2f} ms, p99 {figures['seed_p99_ms']:.2f} ms")
    print(f"our path:      p50 {figures['ours_p50_ms']:.3f} ms, p99 {figures['ours_p99_ms']:.3f} ms "
          f"({figures['speedup_p50']}x)")
    if not arguments.in_process_only:
        keyspace = f"bench_latency_{uuid.uuid4().hex[:8]}"
        body = png_bytes(drawn_digits(mnist.test_images[:1] / 255.0, mnist.test_labels[:1], "fill",
                                      source="mnist_test_writers", seed=1).canvases[0])
        with tempfile.TemporaryDirectory() as directory:
            try:
                # The first launch also creates the keyspace and its tables; the second is a restart.
                for launch in ("first_launch", "restart"):
                    launched = time.monotonic()
                    server, base_url = launch_server(keyspace, Path(directory), Path(directory) / f"{launch}.log")
                    try:
                        cold = cold_start_figures(server, base_url, launched, body)
                        figures.update({f"{launch}_{name}": value for name, value in cold.items()})
                        print(f"{launch.replace('_', ' ')}: first /api/predict answer "
                              f"{cold['launch_to_first_predict_s']} s after launch; RSS "
                              f"{cold['rss_after_100_predictions_mb']} MB after 100 predictions")
                        if launch == "restart":
                            figures.update(browser_figures(base_url, mnist, arguments.drawings))
                            print(f"browser: Predict click -> answer on screen p50 {figures['click_to_answer_p50_s']} s "
                                  f"(max {figures['click_to_answer_max_s']} s) over {arguments.drawings} drawings")
                    finally:
                        server.terminate()
                        try:
                            server.wait(timeout=30)
                        except subprocess.TimeoutExpired:
                            server.kill()
                            server.wait(timeout=30)
            finally:
                from harness.cassandra_node import drop_keyspace

                drop_keyspace(keyspace)
            log_tail = (Path(directory) / "restart.log").read_text()[-2000:]
        # What the restarted server printed (nothing, when start-up is clean).
        figures["server_log_lines"] = len([line for line in log_tail.splitlines() if line.strip()])
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Serving never imports TensorFlow: the app's server module, the REST API and the CLI read with LiteRT alone."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.conftest import REPOSITORY_ROOT

# Runs in a fresh interpreter: everything the server and the CLI import, then readings.
PROBE = r"""
import importlib.util, io, json, sys
import numpy as np
from PIL import Image

spec = importlib.util.spec_from_file_location("served_home", "Home.py")
home = importlib.util.module_from_spec(spec)
spec.loader.exec_module(home)  # what `streamlit run Home.py` imports to build the server
# What the pages import (they are scripts Streamlit runs, so their imports are listed here;
# the canvas component registers itself only inside a running server).
from dashboard import charts, resources  # noqa: F401
from mnist_core import __main__ as command_line, answer_wording, history_figures, readings, rest_api  # noqa: F401
from mnist_core import settings, storage, strokes  # noqa: F401

recognizer = resources.inference.load_recognizer()
canvas = np.zeros((280, 280, 4), np.uint8)
canvas[60:220, 130:150, 3] = 255
reading = recognizer.read(canvas)
path = sys.argv[1]
Image.fromarray(canvas[..., 3]).save(path)
output = io.StringIO()
command_line.predict_files([path], recognizer, output=output)
print(json.dumps({"digit": reading.digit, "cli": json.loads(output.getvalue()),
                  "loaded": sorted(name for name in sys.modules
                                   if name.split(".")[0] in ("tensorflow", "keras", "tf_keras"))}))
"""


def test_reading_through_the_server_modules_and_the_cli_imports_no_tensorflow(tmp_path):
    completed = subprocess.run([sys.executable, "-c", PROBE, str(tmp_path / "one.png")],
                               cwd=REPOSITORY_ROOT, capture_output=True, text=True, timeout=120)
    assert completed.returncode == 0, completed.stderr
    result = json.loads(completed.stdout.strip().splitlines()[-1])
    assert result["digit"] == 1 and result["cli"]["digit"] == 1
    assert result["loaded"] == [], f"serving imported {result['loaded'][:5]}"

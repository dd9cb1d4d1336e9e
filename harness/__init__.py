"""The pieces tests and benchmarks both use to drive the real system.

The tests (``tests/``) and the benchmarks (``bench/``) start the same app, the same private
Cassandra nodes and the same headless Chromium, draw the same strokes and count the same
stored rows. Those pieces live here, once, so neither imports the other. Nothing here uses
pytest: a failure is an exception (``AppProcessFailed``), and the test fixtures turn it into
a clean test failure.

- ``app_process.py``: one ``streamlit run Home.py`` process on a loopback port (start, wait, stop, kill)
- ``cassandra_node.py``: a private node 2-9 through scripts/cassandra; a plain driver cluster; DROP KEYSPACE
- ``chromium.py``: Debian's ``/usr/bin/chromium``, its arguments, and launching it through Playwright
- ``strokes.py``: an MNIST digit as mouse strokes on the canvas; the in-page Predict-to-answer timer
- ``browser_sessions.py``: one Chromium context on the Draw page: clear, draw, Predict, read the answer
- ``pictures.py``: MNIST test digits as PNG bodies for the API and as strokes for the browsers
- ``api_load.py``: ``POST /api/predict`` at a fixed rate, open loop, from a child process
- ``accounting.py``: the ids the app answered matched against the rows stored (lost, duplicated)
- ``stored_rows.py``: reading the prediction tables by their 15-minute slot partitions
- ``bad_inputs.py``: byte builders for broken uploads: PNG chunks and files, multipart bodies
"""

from __future__ import annotations

import pathlib

REPOSITORY_ROOT = pathlib.Path(__file__).resolve().parents[1]

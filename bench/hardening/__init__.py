"""Hardening run: the live app under browser and API load, through Cassandra faults, and against bad input.

Run: .venv/bin/python -m bench.hardening [--duration 120] [--sessions 20] [--api-rate 50] [--fuzz-cases 1000]
Smoke run: --duration 20 --sessions 3 --api-rate 10 --fuzz-cases 100 (about 3.5 minutes on two cores,
most of it Cassandra restarting); --skip-faults and --skip-fuzz leave scenarios out; --secured runs the
app with an API key and a dashboard password (every request sends the key, every browser session
signs in first); --help for the rest.

Everything it needs runs on loopback and is started and stopped here: a private Cassandra node
(node 7 on 127.0.0.7:9042, cluster "mnist-hardening"; the shared default node 1 is never touched),
the app (`streamlit run Home.py` on a free port, with its own keyspace and outbox directory) and a
headless Debian Chromium driven by Playwright. Chromium and the Playwright driver run at nice 19
and cannot raise their priority, and Chromium's own session groups get autogroup nice 19, so the
load generator does not take the CPU from the app it measures; the API requests are sent from a
child process of their own.

1. Load: browser sessions (one Chromium, one context each) clear the Draw page, draw an MNIST test
   digit with mouse strokes, click Predict and wait for the answer, over and over; meanwhile
   ``POST /api/predict`` gets digit PNGs at a fixed rate, open loop (a request is sent on schedule
   whether or not earlier ones have answered, and its latency counts from that schedule).
   Errors: transport failures, non-200 answers, API answers later than --api-deadline, browser
   answers later than --answer-timeout (or "Draw a digit first."), Python or JavaScript exceptions
   in a page. A drawing that does not show on the canvas is cleared and drawn again (counted as
   browser_canvas_misses; not a prediction yet). The app's RSS (/proc/<pid>/status) is read after the
   warm-up and when the load ends.
2. Faults: a third into the load the node is killed (SIGKILL) and started again (its commit log
   replays) while predictions go to the app's outbox; after the load the outbox must drain. Then
   Cassandra is stopped, --restart-predictions API predictions are queued, the app is stopped
   (SIGTERM), Cassandra and the app are started again, and the outbox must drain after the restart.
3. Bad input: --fuzz-cases seeded bad bodies (empty, garbage, truncated or corrupted PNG/JPEG,
   decompression bombs, wrong content types, broken multipart, oversized, malformed HTTP) sent to
   ``POST /api/predict`` with no other load; a crash is a 5xx, a connection error or an unhealthy
   server afterwards; the rows stored in Cassandra are counted before and after.

Every prediction id the app answered (API) or showed (browser: the feedback widget's key holds it)
is looked up in Cassandra: ``lost`` counts ids without a row, ``duplicated`` counts extra rows.
Each scenario prints its figures as it finishes; the last line is one JSON object with
load_errors, lost, duplicated, fuzz_cases, fuzz_crashes, rss_growth_pct and more.
"""

"""The hardening run's command line: start the node and the app, run each scenario, print the JSON line.

What the run does is described in the package docstring (bench/hardening/__init__.py).
"""

from __future__ import annotations

import argparse
import datetime
import json
import logging
import os
import pathlib
import secrets
import shutil
import statistics
import sys
import tempfile
import time

from bench import hardening
from bench.hardening.bad_inputs import run_bad_input
from bench.hardening.faults import run_restart_fault
from bench.hardening.load import run_load
from bench.hardening.processes import git_state
from bench.hardening.report import say
from harness.accounting import account
from harness.app_process import START_TIMEOUT_SECONDS, AppProcess
from harness.cassandra_node import CassandraNode
from harness.pictures import browser_drawings, digit_pictures, png_bytes
from mnist_core.datasets import load_mnist


def parse_arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.hardening",
                                     description=hardening.__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=120.0, help="seconds of load (default 120)")
    parser.add_argument("--sessions", type=int, default=20, help="concurrent browser sessions (default 20)")
    parser.add_argument("--api-rate", type=float, default=50.0, help="API requests per second, open loop (default 50)")
    parser.add_argument("--api-deadline", type=float, default=2.0,
                        help="an API answer later than this many seconds after its scheduled send is an error (default 2)")
    parser.add_argument("--answer-timeout", type=float, default=10.0,
                        help="a browser answer later than this many seconds after the click is an error (default 10)")
    parser.add_argument("--fuzz-cases", type=int, default=1000, help="bad bodies to send (default 1000)")
    parser.add_argument("--fuzz-concurrency", type=int, default=4)
    parser.add_argument("--bomb-repeats", type=int, default=2, help="times each bomb/near-limit picture is sent")
    parser.add_argument("--restart-predictions", type=int, default=50,
                        help="API predictions queued before the app restart (default 50)")
    parser.add_argument("--drain-timeout", type=float, default=180.0)
    parser.add_argument("--idle-drain-seconds", type=float, default=10.0,
                        help="after the app restart, how long to watch for the outbox draining before any request")
    parser.add_argument("--skip-faults", action="store_true", help="no Cassandra kill, no restart scenario")
    parser.add_argument("--skip-fuzz", action="store_true")
    parser.add_argument("--node", type=int, default=7, help="private Cassandra node number, 2-9 (default 7)")
    parser.add_argument("--seed", type=int, default=20261122)
    parser.add_argument("--streamlit-option", action="append", default=[], metavar="NAME=VALUE",
                        help="extra `streamlit run` option for the app, e.g. runner.postScriptGC=false (repeatable)")
    parser.add_argument("--secured", action="store_true",
                        help="run the app with MNIST_API_KEY and MNIST_DASHBOARD_PASSWORD set (random): every "
                             "request sends the key, every browser session signs in first")
    parser.add_argument("--keep", action="store_true", help="keep the keyspace and the work directory (logs, outbox)")
    return parser.parse_args()


def main() -> int:
    arguments = parse_arguments()
    logging.basicConfig(level=logging.ERROR)
    logging.getLogger("cassandra").setLevel(logging.CRITICAL)
    node = CassandraNode(arguments.node)
    keyspace = "hardening_" + datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%d_%H%M%S")
    work_directory = pathlib.Path(tempfile.mkdtemp(prefix="bench-hardening-"))
    data_directory = work_directory / "app-data"
    log_path = work_directory / "streamlit.log"
    figures: dict = {}
    expected = {"api": set(), "canvas": set(), "queued": set(), "fault": set(), "unknown_api": 0, "unknown_canvas": 0}
    node_was_running = False
    app: AppProcess | None = None
    run_started = time.monotonic()
    failure: BaseException | None = None

    say(f"hardening run: node {node.number} ({node.address}), keyspace {keyspace}, work directory {work_directory}")
    figures.update(git_state())
    figures["load_average_at_start"] = [round(value, 2) for value in os.getloadavg()]
    say(f"code: commit {figures['git_head']}, {len(figures['git_changed_files'])} changed file(s) in the working tree "
        f"{figures['git_changed_files']}")
    mnist = load_mnist("hub")
    pictures = digit_pictures(mnist, first=0, count=120, seed=arguments.seed)
    api_images = [(png_bytes(picture), label) for picture, label in pictures]
    drawings = browser_drawings(mnist, first=2000, count=max(40, arguments.sessions * 4))
    say(f"inputs: {len(api_images)} digit PNGs for the API (mean {statistics.mean(len(i) for i, _ in api_images) / 1024:.1f}"
        f" kB), {len(drawings)} digits as mouse strokes")
    try:
        node_was_running = node.answers()
        if node_was_running:
            say(f"node {node.number} already answers; using it (and leaving it running)")
        else:
            say(f"node {node.number} started in {node.start():.0f} s")
        app = AppProcess(environment=node.app_environment(keyspace, data_directory), log_path=log_path,
                         streamlit_options=arguments.streamlit_option,
                         api_key=secrets.token_urlsafe(24) if arguments.secured else None,
                         dashboard_password=secrets.token_urlsafe(12) if arguments.secured else None)
        app.start()
        serving = app.wait_until_serving()
        connected = app.wait_until_drained(START_TIMEOUT_SECONDS)
        if connected is None:
            raise RuntimeError(f"The app never reported storage connected; see {log_path}.")
        say(f"app (pid {app.pid}) serving on {app.base_url} in {serving:.1f} s, storage connected")

        if arguments.sessions > 0 or arguments.api_rate > 0:
            run_load(app=app, node=node, keyspace=keyspace, arguments=arguments, api_images=api_images,
                     drawings=drawings, figures=figures, expected=expected)
        if not arguments.skip_faults:
            app = run_restart_fault(app=app, node=node, keyspace=keyspace, data_directory=data_directory,
                                    arguments=arguments, api_images=api_images, figures=figures, expected=expected)
        if not arguments.skip_fuzz:
            run_bad_input(app=app, node=node, keyspace=keyspace, arguments=arguments, pictures=pictures,
                          api_images=api_images, figures=figures, expected=expected)

        # The whole run: every id answered anywhere is stored exactly once.
        counts, sources = node.stored_ids(keyspace)
        api_total = account(expected["api"], counts, sources, source="api", unknown_outcomes=expected["unknown_api"])
        canvas_total = account(expected["canvas"], counts, sources, source="canvas",
                               unknown_outcomes=expected["unknown_canvas"])
        figures["lost"] = api_total.lost + canvas_total.lost
        figures["duplicated"] = api_total.duplicated + canvas_total.duplicated
        figures["stored_rows"] = sum(counts.values())
        figures["expected_rows"] = len(expected["api"]) + len(expected["canvas"])
        if not arguments.skip_faults:
            outbox_account = account(expected["fault"], counts, sources, source=None, unknown_outcomes=0)
            figures["fault_predictions"] = len(expected["fault"])
            figures["fault_lost"] = outbox_account.lost
            figures["fault_duplicated"] = outbox_account.extra_copies
        say(f"all scenarios: {figures['stored_rows']} rows stored, {figures['expected_rows']} answered with an id or "
            f"accepted; lost {figures['lost']}, duplicated {figures['duplicated']}")
    except BaseException as error:  # noqa: BLE001 - clean up first, then report
        failure = error
    finally:
        if app is not None and app.running():
            app.stop()
        try:
            if not arguments.keep:
                if not node.answers():  # a failure may have left it down
                    node.start()
                node.drop_keyspace(keyspace)
                say(f"keyspace {keyspace} dropped")
        except Exception as error:  # noqa: BLE001 - report, keep cleaning up
            say(f"could not drop keyspace {keyspace}: {error}")
        if not node_was_running:
            try:
                node.stop()
                say(f"node {node.number} stopped")
            except Exception as error:  # noqa: BLE001 - report it; nothing else is left to clean up
                say(f"could not stop node {node.number}: {error}")
        if arguments.keep or failure is not None:
            say(f"work directory kept: {work_directory}")
        else:
            shutil.rmtree(work_directory, ignore_errors=True)
    if failure is not None:
        if isinstance(failure, KeyboardInterrupt):
            return 130
        say(f"the run failed: {failure!r}")
        raise failure
    figures["run_s"] = round(time.monotonic() - run_started)
    figures["load_average_at_end"] = [round(value, 2) for value in os.getloadavg()]
    figures["settings"] = {"duration": arguments.duration, "sessions": arguments.sessions, "api_rate": arguments.api_rate,
                           "api_deadline_s": arguments.api_deadline, "answer_timeout_s": arguments.answer_timeout,
                           "streamlit_options": arguments.streamlit_option, "secured": arguments.secured}
    leading = ["load_errors", "lost", "duplicated", "fuzz_cases", "fuzz_crashes", "rss_growth_pct"]
    ordered = {key: figures.get(key) for key in leading}
    ordered.update({key: value for key, value in figures.items() if key not in ordered})
    print(json.dumps(ordered))
    return 0


if __name__ == "__main__":
    sys.exit(main())

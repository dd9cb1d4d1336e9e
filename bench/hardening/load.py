"""Scenario 1: the browser sessions and the REST API load at once, with the first fault on the way.

Warm-up, then the load; afterwards the outbox must drain and every answered id be stored once.
"""

from __future__ import annotations

import asyncio
import collections
import statistics
import time

from playwright.async_api import Error as PlaywrightError
from playwright.async_api import async_playwright

from bench.hardening.faults import FaultInjector
from bench.hardening.processes import (
    BROWSER_NICENESS,
    AutogroupDemoter,
    RssSampler,
    drop_priority_raising_for_children,
    log_size,
    thread_niceness,
    tracebacks_in_log,
)
from bench.hardening.report import milliseconds, say
from bench.statistics_helpers import percentile
from harness.accounting import account
from harness.api_load import ApiLoad, ApiResult
from harness.app_process import AppProcess
from harness.browser_sessions import BrowserAttempt, BrowserSession
from harness.cassandra_node import CassandraNode
from harness.chromium import launch_chromium
PAGE_OPEN_CONCURRENCY = 4  # pages opened at once during the warm-up
STATS_WAIT_SECONDS = 60


async def browsers_and_api(*, app: AppProcess, node: CassandraNode, arguments, api_images, drawings,
                           figures: dict) -> tuple[list[ApiResult], list[BrowserAttempt], list[BrowserSession], dict]:
    """Warm up, then run the browser sessions and the API load together (with the node killed on the way)."""
    timing: dict = {}
    api_results: list[ApiResult] = []
    figures["browser_priority_capped"] = drop_priority_raising_for_children()
    figures["browser_nice"] = BROWSER_NICENESS
    with thread_niceness(BROWSER_NICENESS):  # the Playwright driver, and Chromium after it, inherit it
        playwright_manager = async_playwright()
        playwright = await playwright_manager.__aenter__()
    demoter = AutogroupDemoter()
    demoter.start()
    try:
        browser = await launch_chromium(playwright)
        sessions = [BrowserSession(index, browser=browser, base_url=app.base_url, drawings=drawings,
                                   answer_timeout_seconds=arguments.answer_timeout,
                                   dashboard_password=app.dashboard_password)
                    for index in range(arguments.sessions)]
        try:
            # Warm-up: every page open with one answered drawing, and the API served a few times.
            warm_up_started = time.monotonic()
            opening = asyncio.Semaphore(PAGE_OPEN_CONCURRENCY)

            async def open_and_draw(session: BrowserSession) -> None:
                try:
                    async with opening:
                        await session.open()
                    attempt = await session.predict_once("warm-up")
                    if attempt.error is not None:
                        await session.recover()
                except PlaywrightError as error:
                    session.usable = False
                    session.page_errors.append(f"could not open the page: {error.message.splitlines()[0][:200]}")

            await asyncio.gather(*(open_and_draw(session) for session in sessions))
            warm_up = ApiLoad(base_url=app.base_url, images=api_images, rate=max(1.0, arguments.api_rate / 2),
                              duration=4.0, deadline_seconds=arguments.api_deadline, phase="warm-up",
                              headers=app.api_headers)
            await asyncio.to_thread(warm_up.start)
            warm_up.begin(time.monotonic())
            await asyncio.to_thread(warm_up.join)
            if warm_up.failure is not None:
                raise RuntimeError(f"The API warm-up failed: {warm_up.failure}")
            api_results.extend(warm_up.results)
            figures["warm_up_s"] = round(time.monotonic() - warm_up_started, 1)
            await asyncio.sleep(2.0)
            figures["rss_before_mb"] = round(app.memory_mb(), 1)
            say(f"  warm-up: {sum(s.usable for s in sessions)} of {len(sessions)} pages open, "
                f"{sum(len(s.attempts) for s in sessions)} drawings, "
                f"{len(warm_up.results)} API requests in {figures['warm_up_s']} s; app RSS {figures['rss_before_mb']} MB")

            # The load itself.
            load = ApiLoad(base_url=app.base_url, images=api_images, rate=arguments.api_rate,
                           duration=arguments.duration, deadline_seconds=arguments.api_deadline,
                           headers=app.api_headers)
            await asyncio.to_thread(load.start)
            sampler = RssSampler(app)
            sampler.start()
            start_at = time.monotonic() + 0.5
            stop_at = start_at + arguments.duration
            load.begin(start_at)
            fault = None
            if not arguments.skip_faults:
                fault = FaultInjector(node, start_at + arguments.duration / 3)
                fault.start()
            await asyncio.gather(*(session.run_until(stop_at) for session in sessions))
            await asyncio.to_thread(load.join)
            timing["load_started"], timing["load_stopped"] = start_at, time.monotonic()
            figures["rss_after_mb"] = round(app.memory_mb(), 1)
            figures["rss_peak_mb"] = round(sampler.finish() or figures["rss_after_mb"], 1)
            if load.failure is not None:
                raise RuntimeError(f"The API load failed: {load.failure}")
            api_results.extend(load.results)
            figures["api_dispatch_lag_max_ms"] = milliseconds(max(load.dispatch_lags, default=0.0))
            if fault is not None:
                await asyncio.to_thread(fault.join)
                if fault.failure is not None:
                    raise RuntimeError(f"The fault injection failed: {fault.failure!r}")
                timing["killed_at"], timing["back_at"] = fault.killed_at, fault.back_at
        finally:
            for session in sessions:
                try:
                    await session.close()
                except PlaywrightError:
                    pass
            await browser.close()
    finally:
        await playwright_manager.__aexit__(None, None, None)
        figures["browser_autogroups_demoted"] = demoter.finish()
    attempts = [attempt for session in sessions for attempt in session.attempts]
    return api_results, attempts, sessions, timing


TIMELINE_BUCKET_SECONDS = 10


def print_timeline(api_results: list[ApiResult], attempts: list[BrowserAttempt], timing: dict, arguments) -> None:
    """API and browser figures per 10 s of the load, with the node's outage marked."""
    start = timing["load_started"]
    say(f"  {'seconds':>9}  {'API sent':>8} {'errors':>6} {'p50 ms':>7} {'max ms':>7}   {'answers':>7} {'errors':>6} "
        f"{'p50 ms':>7}")
    for bucket_start in range(0, int(arguments.duration), TIMELINE_BUCKET_SECONDS):
        low, high = start + bucket_start, start + bucket_start + TIMELINE_BUCKET_SECONDS
        sent = [result for result in api_results if low <= result.scheduled_at < high]
        latencies = [result.latency_seconds for result in sent if result.latency_seconds is not None]
        clicked = [attempt for attempt in attempts if attempt.clicked_at is not None and low <= attempt.clicked_at < high]
        answers = [attempt.answer_seconds for attempt in clicked if attempt.answer_seconds is not None]
        marks = []
        if timing.get("killed_at") is not None and low <= timing["killed_at"] < high:
            marks.append("node killed")
        if timing.get("back_at") is not None and low <= timing["back_at"] < high:
            marks.append("node back")
        say(f"  {bucket_start:>4}-{bucket_start + TIMELINE_BUCKET_SECONDS:<4}  {len(sent):>8} "
            f"{sum(result.error is not None for result in sent):>6} {milliseconds(percentile(latencies, 0.5)) or '-':>7} "
            f"{milliseconds(max(latencies, default=None)) or '-':>7}   {len(answers):>7} "
            f"{sum(attempt.error is not None for attempt in clicked):>6} {milliseconds(percentile(answers, 0.5)) or '-':>7}"
            f"  {', '.join(marks)}")


def run_load(*, app: AppProcess, node: CassandraNode, keyspace: str, arguments, api_images, drawings,
             figures: dict, expected: dict) -> None:
    say(f"(1) load: {arguments.sessions} browser sessions drawing and predicting, and POST /api/predict at "
        f"{arguments.api_rate:g}/s open loop, for {arguments.duration:g} s"
        + ("" if arguments.skip_faults else f"; (2a) node {node.number} SIGKILLed and restarted at "
           f"{arguments.duration / 3:.0f} s"))
    log_offset = log_size(app.log_path)
    api_results, attempts, sessions, timing = asyncio.run(browsers_and_api(
        app=app, node=node, arguments=arguments, api_images=api_images, drawings=drawings, figures=figures))

    load_api = [result for result in api_results if result.phase == "load"]
    load_attempts = [attempt for attempt in attempts if attempt.phase == "load"]
    api_errors = [result for result in load_api if result.error is not None]
    browser_errors = [attempt for attempt in load_attempts if attempt.error is not None]
    page_errors = [error for session in sessions for error in session.page_errors]
    api_latencies = [result.latency_seconds for result in load_api if result.latency_seconds is not None]
    answer_latencies = [attempt.answer_seconds for attempt in load_attempts if attempt.answer_seconds is not None]
    answered_api = [result for result in api_results if result.prediction_id is not None]
    answered_browser = [attempt for attempt in attempts if attempt.prediction_id is not None]
    duration = timing["load_stopped"] - timing["load_started"]

    figures.update({
        "api_requests": len(load_api),
        "api_rate_achieved": round(len(load_api) / arguments.duration, 1),
        "api_errors": len(api_errors),
        "api_refused_as_not_a_digit": sum(result.refused_as_not_a_digit for result in load_api),
        "api_p50_ms": milliseconds(percentile(api_latencies, 0.50)),
        "api_p99_ms": milliseconds(percentile(api_latencies, 0.99)),
        "api_max_ms": milliseconds(max(api_latencies, default=None)),
        "api_queued": sum(result.stored == "queued" for result in answered_api),
        "api_digit_accuracy": round(statistics.mean(result.digit == result.label for result in answered_api), 4)
        if answered_api else None,
        "browser_predictions": sum(attempt.prediction_id is not None for attempt in load_attempts),
        "browser_attempts": len(load_attempts),
        "browser_errors": len(browser_errors),
        "browser_page_errors": len(page_errors),
        "browser_p50_ms": milliseconds(percentile(answer_latencies, 0.50)),
        "browser_p99_ms": milliseconds(percentile(answer_latencies, 0.99)),
        "browser_max_ms": milliseconds(max(answer_latencies, default=None)),
        "browser_predictions_per_s": round(len(answer_latencies) / duration, 2),
        "browser_reloads": sum(session.reloads for session in sessions),
        "browser_canvas_misses": sum(session.canvas_misses for session in sessions),
        "browser_digit_accuracy": round(statistics.mean(
            attempt.answer_text.startswith(str(attempt.label)) for attempt in answered_browser), 4)
        if answered_browser else None,
        "warm_up_errors": sum(r.error is not None for r in api_results if r.phase == "warm-up")
        + sum(a.error is not None for a in attempts if a.phase == "warm-up"),
    })
    figures["load_errors"] = figures["api_errors"] + figures["browser_errors"] + figures["browser_page_errors"]
    figures["api_error_kinds"] = dict(collections.Counter(result.error for result in api_errors))
    figures["browser_error_kinds"] = dict(collections.Counter(attempt.error.split(":")[0] for attempt in browser_errors))
    before, after = figures["rss_before_mb"], figures["rss_after_mb"]
    figures["rss_growth_pct"] = round((after - before) / before * 100, 2)

    if "killed_at" in timing:
        window_start, window_end = timing["killed_at"], timing["back_at"] + 10
        figures["fault_downtime_s"] = round(timing["back_at"] - timing["killed_at"], 1)
        figures["load_errors_in_fault_window"] = (
            sum(window_start <= result.scheduled_at <= window_end for result in api_errors)
            + sum(window_start <= (attempt.clicked_at or 0) <= window_end for attempt in browser_errors))

    say(f"  API: {figures['api_requests']} requests ({figures['api_rate_achieved']}/s), {len(api_errors)} errors "
        f"{dict(collections.Counter(result.error for result in api_errors))}, "
        f"{figures['api_refused_as_not_a_digit']} refused as not a digit (the model's answer, not an error), "
        f"p50 {figures['api_p50_ms']} ms, "
        f"p99 {figures['api_p99_ms']} ms, max {figures['api_max_ms']} ms (from the scheduled send; late means over "
        f"{arguments.api_deadline:g} s); {figures['api_queued']} answered 'queued'; digit right "
        f"{figures['api_digit_accuracy']}; pacer lag max {figures['api_dispatch_lag_max_ms']} ms")
    say(f"  browsers: {figures['browser_predictions']} answered of {len(load_attempts)} Predict attempts "
        f"({figures['browser_predictions_per_s']}/s), {len(browser_errors)} errors, {len(page_errors)} page errors, "
        f"answer p50 {figures['browser_p50_ms']} ms, p99 {figures['browser_p99_ms']} ms, max "
        f"{figures['browser_max_ms']} ms; digit right {figures['browser_digit_accuracy']}; "
        f"{figures['browser_canvas_misses']} drawing(s) did not show on the canvas and were drawn again")
    for reason, count in collections.Counter(attempt.error for attempt in browser_errors).most_common(5):
        say(f"    {count} x {reason}")
    for error in page_errors[:5]:
        say(f"    page error: {error}")
    if "fault_downtime_s" in figures:
        say(f"  fault: node down {figures['fault_downtime_s']} s; "
            f"{figures['load_errors_in_fault_window']} of the load errors fall in the outage (+10 s)")
    print_timeline(load_api, load_attempts, timing, arguments)
    say(f"  app RSS: {before} MB after warm-up, {after} MB after the load ({figures['rss_growth_pct']:+.2f}%), "
        f"peak {figures['rss_peak_mb']} MB")

    # The outbox must drain, then every answered id must be stored exactly once.
    drained = app.wait_until_drained(arguments.drain_timeout)
    figures["drain_s"] = None if drained is None else round(drained, 1)
    say(f"  outbox drained {'in ' + str(figures['drain_s']) + ' s' if drained is not None else 'NOT within the timeout'}")
    api_ids = {result.prediction_id for result in answered_api}
    browser_ids = {attempt.prediction_id for attempt in answered_browser}
    expected["api"] |= api_ids
    expected["canvas"] |= browser_ids
    expected["queued"] |= {result.prediction_id for result in answered_api if result.stored == "queued"}
    expected["unknown_api"] += sum(result.prediction_id is None and result.status is None for result in api_results)
    # A Predict click that showed nothing may still have stored a row.
    expected["unknown_canvas"] += sum(attempt.predict_clicked and attempt.prediction_id is None for attempt in attempts)
    counts, sources = node.stored_ids(keyspace)
    api_account = account(api_ids, counts, sources, source="api", unknown_outcomes=expected["unknown_api"])
    browser_account = account(browser_ids, counts, sources, source="canvas", unknown_outcomes=expected["unknown_canvas"])
    canvas_rows = sum(count for identifier, count in counts.items() if sources[identifier] == "canvas")
    figures["load_lost"] = api_account.lost + browser_account.lost
    figures["load_duplicated"] = api_account.duplicated + browser_account.duplicated
    figures["stored_rows_after_load"] = sum(counts.values())
    figures["stored_matches_answers"] = sum(counts.values()) == len(api_ids) + len(browser_ids)
    say(f"  Cassandra: {sum(counts.values())} rows for {len(api_ids)} API + {len(browser_ids)} browser answers "
        f"(warm-up included); API lost {api_account.lost}, duplicated {api_account.duplicated}; canvas rows "
        f"{canvas_rows} for {len(browser_ids)} answers shown, lost {browser_account.lost}, duplicated "
        f"{browser_account.duplicated} (unmatched rows {browser_account.unmatched_rows}, clicks without an answer "
        f"{expected['unknown_canvas']})")

    answered_at = {result.prediction_id: (result.scheduled_at + (result.latency_seconds or 0), f"API, answered "
                   f"'{result.stored}'") for result in answered_api}
    answered_at.update({attempt.prediction_id: (attempt.clicked_at + (attempt.answer_seconds or 0), "browser")
                        for attempt in answered_browser})
    if "killed_at" in timing:
        # The predictions the first fault put at risk: answered from 5 s before the SIGKILL until 10 s
        # after the node was back, and every one answered 'queued'.
        low, high = timing["killed_at"] - 5, timing["back_at"] + 10
        at_risk = {identifier for identifier, (moment, _) in answered_at.items() if low <= moment <= high}
        at_risk |= expected["queued"]
        expected["fault"] |= at_risk
        fault_account = account(at_risk, counts, sources, source=None, unknown_outcomes=0)
        figures["fault1_predictions"] = len(at_risk)
        figures["fault1_lost"] = fault_account.lost
        figures["fault1_duplicated"] = fault_account.extra_copies
        say(f"  around the SIGKILL (from 5 s before to 10 s after the node was back, or answered 'queued'): "
            f"{len(at_risk)} predictions, lost {fault_account.lost}, duplicated {fault_account.extra_copies}")
    for identifier in (api_account.lost_ids + browser_account.lost_ids)[:10]:
        moment, what = answered_at[identifier]
        relative = (f"{moment - timing['killed_at']:+.2f} s from the SIGKILL" if "killed_at" in timing
                    else f"{moment - timing['load_started']:.1f} s into the load")
        say(f"    LOST {identifier} ({what}, answered about {relative})")

    # The per-digit rollup behind /api/stats must come to the same total.
    stats_total = None
    deadline = time.monotonic() + STATS_WAIT_SECONDS
    while time.monotonic() < deadline:
        status, body = app.get("/api/stats")
        stats_total = body.get("total") if status == 200 and isinstance(body, dict) else None
        if stats_total == sum(counts.values()):
            break
        time.sleep(2)
    figures["stats_match"] = stats_total == sum(counts.values())
    say(f"  /api/stats total {stats_total} ({'matches' if figures['stats_match'] else 'DOES NOT match'} the rows)")
    tracebacks = tracebacks_in_log(app.log_path, log_offset)
    figures["server_tracebacks_load"] = sum(tracebacks.values())
    for exception, count in tracebacks.most_common(5):
        say(f"  the app logged {count} traceback(s) ending in: {exception}")

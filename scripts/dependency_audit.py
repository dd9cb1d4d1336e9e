"""Known-vulnerability audit of the pinned requirements that passes only with evidence for every pin.

    .venv/bin/python scripts/dependency_audit.py requirements.txt requirements-train.txt

A step of ``scripts/test`` (so of CI), after the test suite: it needs the network (OSV, PyPI),
which no test may. Exit 0 when every pin has evidence and none is vulnerable, 1 otherwise;
it prints which source vouched for each pin.

pip-audit is asked first (OSV and PyPI's per-release JSON, both at once). Where it had to skip
a pin because neither service answered, PyPI's per-project JSON is the fallback: its
``vulnerabilities`` list is exactly the advisories for the project's latest release
(``info.version``), so it vouches for a pin only when the pin is that release. One exception,
stated in the report as unaudited: a pin that is the newest release installable on this
Python (the latest needs a newer interpreter) has nothing to be upgraded to, so failing on it
would only block CI; it is named in a warning instead. Any other pin that no source vouched
for is a failure, never a pass.

The decision (``decide``) is a pure function of the pins, pip-audit's JSON reports and PyPI's
project JSON, so it is tested offline; the network calls are kept apart and time-bounded.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import json
import pathlib
import platform
import re
import subprocess
import sys
import tempfile
import urllib.request

from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.version import InvalidVersion, Version

AUDIT_SERVICES = ("osv", "pypi")
REQUEST_TIMEOUT_SECONDS = 20
# One pip-audit run sends one request per pin; a run still going after this is treated as unreachable.
PIP_AUDIT_TIMEOUT_SECONDS = 35
PYPI_PROJECT_URL = "https://pypi.org/pypi/{name}/json"
PIN_LINE = re.compile(r"^(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)==(?P<version>[^\s;#]+)\s*(?:#.*)?$")


@dataclasses.dataclass(frozen=True)
class Pin:
    name: str
    version: str

    def __str__(self) -> str:
        return f"{self.name}=={self.version}"


@dataclasses.dataclass(frozen=True)
class PipAuditRun:
    """One pip-audit run: its JSON report, or why there is none (the service could not be reached, a timeout)."""

    service: str
    report: dict | None
    error: str = ""


@dataclasses.dataclass(frozen=True)
class PinVerdict:
    """What is known about one pin: where the evidence came from, and what is wrong (empty when it is clean)."""

    pin: Pin
    evidence: str
    problems: tuple[str, ...]
    # Set when the pin passed without an audit because no newer release runs on this Python.
    unaudited_reason: str = ""


def normalized_name(name: str) -> str:
    """PEP 503 form, so "tensorflow_cpu", "TensorFlow-CPU" and "tensorflow-cpu" are one project."""
    return re.sub(r"[-_.]+", "-", name).lower()


def same_version(first: str, second: str) -> bool:
    """PEP 440 equality ("2.21" is "2.21.0"), falling back to text when a version does not parse."""
    try:
        return Version(first) == Version(second)
    except InvalidVersion:
        return first == second


def read_pins(requirements: pathlib.Path) -> list[Pin]:
    """The name==version lines; anything else in the file is refused, since this audit only vouches for exact pins."""
    pins = []
    for line in requirements.read_text(encoding="utf-8").splitlines():
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        match = PIN_LINE.match(text)
        if match is None:
            raise ValueError(f"{requirements.name}: {text!r} is not an exact pin (name==version)")
        pins.append(Pin(match["name"], match["version"]))
    return pins


def run_pip_audit(pip_audit: pathlib.Path, service: str, requirements: pathlib.Path,
                  cache_directory: pathlib.Path) -> PipAuditRun:
    """pip-audit's JSON report for fully pinned requirements (no resolution, no pip), with bounded time."""
    command = [str(pip_audit), "--requirement", str(requirements), "--no-deps", "--disable-pip",
               "--vulnerability-service", service, "--format", "json", "--progress-spinner", "off",
               "--timeout", str(REQUEST_TIMEOUT_SECONDS), "--cache-dir", str(cache_directory / service)]
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=PIP_AUDIT_TIMEOUT_SECONDS,
                                check=False)
    except subprocess.TimeoutExpired:
        return PipAuditRun(service, None, f"no answer within {PIP_AUDIT_TIMEOUT_SECONDS} s")
    try:
        return PipAuditRun(service, json.loads(result.stdout))
    except json.JSONDecodeError:
        last_line = ([line.strip() for line in result.stderr.splitlines() if line.strip()] or ["no output"])[-1]
        shown = last_line if len(last_line) <= 240 else last_line[:240] + "..."
        return PipAuditRun(service, None, f"exit {result.returncode}: {shown}")


def run_pip_audit_services(pip_audit: pathlib.Path, requirements: pathlib.Path, cache_directory: pathlib.Path,
                           services: tuple[str, ...] = AUDIT_SERVICES) -> list[PipAuditRun]:
    """All services at once, so an unreachable one costs its timeout only once."""
    with concurrent.futures.ThreadPoolExecutor(max_workers=len(services)) as pool:
        return list(pool.map(lambda service: run_pip_audit(pip_audit, service, requirements, cache_directory),
                             services))


def fetch_pypi_project(name: str) -> dict | str:
    """PyPI's per-project JSON (info, releases, vulnerabilities of the latest release), or why it could not be read."""
    request = urllib.request.Request(PYPI_PROJECT_URL.format(name=name), headers={"Accept": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=REQUEST_TIMEOUT_SECONDS) as response:
            return json.load(response)
    except (OSError, ValueError) as error:  # URLError and timeouts are OSErrors
        return f"{PYPI_PROJECT_URL.format(name=name)}: {error}"


def fetch_pypi_projects(names: list[str]) -> dict[str, dict | str]:
    """Several projects in parallel, so the whole fallback takes one request timeout at most."""
    if not names:
        return {}
    with concurrent.futures.ThreadPoolExecutor(max_workers=min(8, len(names))) as pool:
        return dict(zip(map(normalized_name, names), pool.map(fetch_pypi_project, names)))


def pins_pip_audit_missed(pins: list[Pin], runs: list[PipAuditRun]) -> list[Pin]:
    """The pins no pip-audit run audited: these need PyPI's project JSON."""
    return [pin for pin in pins if not any(audited_entry(run, pin) for run in runs)]


def audited_entry(run: PipAuditRun, pin: Pin) -> dict | None:
    """pip-audit's entry for the pin, only if it really audited that version (no skip_reason)."""
    for entry in (run.report or {}).get("dependencies", []):
        if (normalized_name(entry.get("name", "")) == normalized_name(pin.name) and "skip_reason" not in entry
                and same_version(entry.get("version", ""), pin.version)):
            return entry
    return None


def describe_runs(runs: list[PipAuditRun]) -> str:
    """What each pip-audit service made of the file (audited, skipped, unreachable), for the failure message."""
    lines = []
    for run in runs:
        if run.report is None:
            lines.append(f"pip-audit {run.service}: {run.error}")
            continue
        entries = run.report.get("dependencies", [])
        skipped = [entry for entry in entries if "skip_reason" in entry]
        example = f", e.g. {skipped[0]['skip_reason']!r}" if skipped else ""
        lines.append(f"pip-audit {run.service}: audited {len(entries) - len(skipped)}, skipped {len(skipped)}{example}")
    return "\n".join(lines)


def runs_on_this_python(requires_python: str | None) -> bool:
    """Whether a release's Requires-Python admits the running interpreter (unknown or unparsable counts as yes)."""
    try:
        return not requires_python or platform.python_version() in SpecifierSet(requires_python)
    except InvalidSpecifier:
        return True


def decide_from_pip_audit(pin: Pin, runs: list[PipAuditRun]) -> PinVerdict:
    """Every service that audited the pin counts; any advisory from any of them is a problem (listed once)."""
    services, advisories = [], {}
    for run in runs:
        entry = audited_entry(run, pin)
        if entry is None:
            continue
        services.append(run.service)
        for vulnerability in entry.get("vulns", []):
            advisories.setdefault(vulnerability["id"], (vulnerability, run.service))
    problems = tuple(
        f"{pin}: {shown_advisory_id(vulnerability)}, fixed in "
        f"{', '.join(vulnerability.get('fix_versions') or []) or 'no fixed release yet'} (pip-audit, {service})"
        for vulnerability, service in advisories.values()
    )
    return PinVerdict(pin, f"pip-audit ({', '.join(services)})", problems)


def shown_advisory_id(vulnerability: dict) -> str:
    """The advisory id with its aliases (a PYSEC id is easier to look up with its CVE and GHSA)."""
    aliases = [alias for alias in vulnerability.get("aliases") or [] if alias != vulnerability["id"]]
    return vulnerability["id"] + (f" ({', '.join(aliases)})" if aliases else "")


def newest_release_for_this_python(project: dict) -> str | None:
    """The highest final, non-yanked release with a file whose Requires-Python admits this interpreter."""
    candidates = []
    for version_text, files in (project.get("releases") or {}).items():
        try:
            version = Version(version_text)
        except InvalidVersion:
            continue
        if version.is_prerelease or version.is_devrelease:
            continue
        if any(not file.get("yanked") and runs_on_this_python(file.get("requires_python")) for file in files):
            candidates.append(version)
    return str(max(candidates)) if candidates else None


def decide_from_pypi_project(pin: Pin, project: dict | str) -> PinVerdict:
    """PyPI's project JSON vouches only for its latest release; any other version stays without evidence."""
    if not isinstance(project, str) and not (project.get("info") or {}).get("version"):
        project = "the answer has no info.version"
    if isinstance(project, str):
        return PinVerdict(pin, "none", (
            f"{pin} could not be checked: no vulnerability service audited it and PyPI's project JSON "
            f"could not be read ({project}).",))
    latest = project["info"]["version"]
    newest_here = newest_release_for_this_python(project)
    if not same_version(latest, pin.version) and newest_here is not None and same_version(newest_here, pin.version):
        reason = (f"{pin} was not audited (no vulnerability service answered, and PyPI lists advisories only for "
                  f"{latest}, which needs Python {project['info'].get('requires_python')}); it is the newest "
                  f"release for Python {platform.python_version()}, so there is nothing to upgrade to.")
        return PinVerdict(pin, "none: newest release for this Python", (), unaudited_reason=reason)
    if not same_version(latest, pin.version):
        requires_python = project["info"].get("requires_python")
        needs = ("" if runs_on_this_python(requires_python)
                 else f" (which needs Python {requires_python}; this is {platform.python_version()})")
        return PinVerdict(pin, "none", (
            f"{pin} could not be checked: no vulnerability service audited it, and it is not the latest "
            f"release {latest}{needs}, the only one PyPI's project JSON lists advisories for. "
            f"Upgrade the pin to {latest}, or run this test where https://api.osv.dev is reachable.",))
    problems = []
    for vulnerability in project.get("vulnerabilities") or []:
        if vulnerability.get("withdrawn"):
            continue
        fixed = ", ".join(vulnerability.get("fixed_in") or []) or "no fixed release yet"
        problems.append(f"{pin}: {shown_advisory_id(vulnerability)}, fixed in {fixed} (PyPI project JSON)")
    return PinVerdict(pin, f"PyPI project JSON (latest release {latest})", tuple(problems))


def decide(pins: list[Pin], runs: list[PipAuditRun], pypi_projects: dict[str, dict | str]) -> list[PinVerdict]:
    """One verdict per pin: pip-audit's when it audited the pin, else PyPI's project JSON, else a failure."""
    verdicts = []
    for pin in pins:
        if any(audited_entry(run, pin) for run in runs):
            verdicts.append(decide_from_pip_audit(pin, runs))
        else:
            project = pypi_projects.get(normalized_name(pin.name), "not fetched")
            verdicts.append(decide_from_pypi_project(pin, project))
    return verdicts


def audit_requirements(pip_audit: pathlib.Path, requirements: pathlib.Path,
                       cache_directory: pathlib.Path) -> tuple[list[PipAuditRun], list[PinVerdict]]:
    """The whole audit with the network: pip-audit on every service, then PyPI for the pins it did not audit."""
    pins = read_pins(requirements)
    runs = run_pip_audit_services(pip_audit, requirements, cache_directory)
    projects = fetch_pypi_projects([pin.name for pin in pins_pip_audit_missed(pins, runs)])
    return runs, decide(pins, runs, projects)


def main(arguments: list[str]) -> int:
    """Audit each requirements file named; 1 if any pin is vulnerable or nothing could check it."""
    if not arguments:
        print("usage: dependency_audit.py REQUIREMENTS_FILE...", file=sys.stderr)
        return 2
    pip_audit = pathlib.Path(sys.executable).with_name("pip-audit")
    if not pip_audit.exists():
        print(f"error: {pip_audit} is missing: install requirements-dev.txt", file=sys.stderr)
        return 2
    failed = False
    for name in arguments:
        requirements = pathlib.Path(name)
        with tempfile.TemporaryDirectory() as cache_directory:
            runs, verdicts = audit_requirements(pip_audit, requirements, pathlib.Path(cache_directory))
        print(f"{requirements}: {describe_runs(runs)}")
        for verdict in verdicts:
            print(f"  {verdict.pin}: {verdict.evidence}")
        problems = [problem for verdict in verdicts for problem in verdict.problems]
        if len(verdicts) != len(read_pins(requirements)) or not verdicts:
            problems.append(f"{requirements}: not every pin got a verdict")
        for problem in problems:
            print(f"error: {problem}", file=sys.stderr)
        for verdict in verdicts:
            if verdict.unaudited_reason:
                print(f"warning: left unaudited here: {verdict.unaudited_reason}", file=sys.stderr)
        failed = failed or bool(problems)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

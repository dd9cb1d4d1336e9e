"""The dependency audit's decisions (scripts/dependency_audit.py), offline.

The audit itself needs the network and runs as a step of scripts/test after this suite. Its
decision is a pure function of the pins, pip-audit's reports and PyPI's project JSON, so what
it concludes from each kind of evidence (or the lack of it) is checked here without one.
"""

from __future__ import annotations

import importlib.util
import pathlib
import platform
import sys

import pytest

from tests.conftest import REPOSITORY_ROOT


def _load_the_script():
    specification = importlib.util.spec_from_file_location(
        "dependency_audit", REPOSITORY_ROOT / "scripts" / "dependency_audit.py")
    module = importlib.util.module_from_spec(specification)
    sys.modules[specification.name] = module  # its dataclasses look their module up there
    specification.loader.exec_module(module)
    return module


dependency_audit = _load_the_script()
Pin, PipAuditRun = dependency_audit.Pin, dependency_audit.PipAuditRun


def fake_project(version: str, vulnerabilities: list[dict] | None = None, requires_python: str = ">=3.11") -> dict:
    """The parts of PyPI's per-project JSON that the fallback reads."""
    return {"info": {"version": version, "requires_python": requires_python}, "vulnerabilities": vulnerabilities or []}


def fake_advisory(advisory_id: str, fixed_in: list[str], withdrawn: str | None = None) -> dict:
    return {"id": advisory_id, "aliases": ["CVE-2099-0001"], "fixed_in": fixed_in, "withdrawn": withdrawn,
            "summary": "made up for the test"}


UNREACHABLE_OSV = PipAuditRun("osv", None, "exit 1: Failed to resolve 'api.osv.dev'")


def skipped_everything(*pins: Pin) -> PipAuditRun:
    """pip-audit's pypi report when the per-release JSON answers 404 for every pin (as on this machine)."""
    return PipAuditRun("pypi", {"dependencies": [
        {"name": pin.name, "skip_reason": f"Dependency not found on PyPI and could not be audited: {pin.name} "
                                          f"({pin.version})"} for pin in pins], "fixes": []})


def test_the_fallback_vouches_for_a_clean_latest_pin_and_fails_every_pin_without_evidence() -> None:
    clean_latest, vulnerable_latest, older, unreadable = (
        Pin("Clean_Package", "2.0"), Pin("vulnerable", "1.4.0"), Pin("older", "2.4.6"), Pin("unreadable", "1.0"))
    pins = [clean_latest, vulnerable_latest, older, unreadable]
    projects = {
        "clean-package": fake_project("2.0.0", [fake_advisory("PYSEC-2099-2", ["1.9"], withdrawn="2099-01-02")]),
        "vulnerable": fake_project("1.4.0", [fake_advisory("GHSA-aaaa-bbbb-cccc", ["1.4.1"]),
                                             fake_advisory("PYSEC-2099-3", [])]),
        "older": fake_project("2.5.5", requires_python=">=3.99"),
        "unreadable": "https://pypi.org/pypi/unreadable/json: HTTP Error 503",
    }
    verdicts = {verdict.pin: verdict for verdict in dependency_audit.decide(
        pins, [UNREACHABLE_OSV, skipped_everything(*pins)], projects)}

    # Latest release without advisories (a withdrawn one does not count): evidence, no problem.
    assert verdicts[clean_latest].problems == ()
    assert verdicts[clean_latest].evidence == "PyPI project JSON (latest release 2.0.0)"
    # Latest release with advisories: each listed with its id and fixed versions.
    assert verdicts[vulnerable_latest].problems == (
        "vulnerable==1.4.0: GHSA-aaaa-bbbb-cccc (CVE-2099-0001), fixed in 1.4.1 (PyPI project JSON)",
        "vulnerable==1.4.0: PYSEC-2099-3 (CVE-2099-0001), fixed in no fixed release yet (PyPI project JSON)",
    )
    # Not the latest release: PyPI's list says nothing about it, so it fails with what to do.
    (message,) = verdicts[older].problems
    assert message.startswith("older==2.4.6 could not be checked")
    assert "latest release 2.5.5 (which needs Python >=3.99" in message
    assert "Upgrade the pin to 2.5.5, or run this test where https://api.osv.dev is reachable." in message
    # PyPI could not be read either: no evidence, a failure.
    (message,) = verdicts[unreadable].problems
    assert "unreadable==1.0 could not be checked" in message and "HTTP Error 503" in message
    # A pin PyPI was not even asked about is no pass either.
    (missing,) = dependency_audit.decide([Pin("absent", "1.0")], [UNREACHABLE_OSV], {})
    assert missing.problems and missing.evidence == "none"


def test_a_pin_with_no_newer_release_for_this_python_is_named_unaudited_not_failed() -> None:
    here = platform.python_version()
    stuck, upgradable = Pin("stuck", "2.4.6"), Pin("upgradable", "2.4.5")
    releases = {
        "2.4.5": [{"requires_python": ">=3.10", "yanked": False}],
        "2.4.6": [{"requires_python": ">=3.10", "yanked": False}],
        "2.4.7rc1": [{"requires_python": ">=3.10", "yanked": False}],
        "2.5.5": [{"requires_python": ">=3.99", "yanked": False}],
    }
    projects = {name: {**fake_project("2.5.5", requires_python=">=3.99"), "releases": releases}
                for name in ("stuck", "upgradable")}
    verdicts = {verdict.pin: verdict for verdict in dependency_audit.decide(
        [stuck, upgradable], [UNREACHABLE_OSV, skipped_everything(stuck, upgradable)], projects)}

    assert verdicts[stuck].problems == ()
    assert f"newest release for Python {here}" in verdicts[stuck].unaudited_reason
    # An older pin could be upgraded to 2.4.6 on this Python: without evidence it still fails.
    assert verdicts[upgradable].problems and not verdicts[upgradable].unaudited_reason


def test_what_pip_audit_audited_decides_without_pypi() -> None:
    clean_older, vulnerable_older = Pin("clean", "1.0"), Pin("tensorflow_cpu", "2.20.0")
    osv_report = PipAuditRun("osv", {"dependencies": [
        {"name": "clean", "version": "1.0", "vulns": []},
        {"name": "tensorflow-cpu", "version": "2.20.0", "vulns": [
            {"id": "PYSEC-2099-7", "aliases": ["GHSA-dddd-eeee-ffff"], "fix_versions": ["2.20.1", "2.21.0"]}]},
    ], "fixes": []})
    runs = [osv_report, skipped_everything(clean_older, vulnerable_older)]
    assert dependency_audit.pins_pip_audit_missed([clean_older, vulnerable_older], runs) == []
    # Older than the latest releases below, yet audited, so PyPI's project JSON is not consulted.
    projects = {"clean": fake_project("9.0"), "tensorflow-cpu": fake_project("9.0")}
    clean, vulnerable = dependency_audit.decide([clean_older, vulnerable_older], runs, projects)
    assert (clean.evidence, clean.problems) == ("pip-audit (osv)", ())
    assert vulnerable.problems == (
        "tensorflow_cpu==2.20.0: PYSEC-2099-7 (GHSA-dddd-eeee-ffff), fixed in 2.20.1, 2.21.0 (pip-audit, osv)",)
    # An entry for another version is not an audit of the pin.
    assert dependency_audit.pins_pip_audit_missed([Pin("clean", "1.1")], runs) == [Pin("clean", "1.1")]


def test_only_exact_pins_are_audited(tmp_path: pathlib.Path) -> None:
    requirements = tmp_path / "requirements.txt"
    requirements.write_text("# comment\nnumpy==2.4.6\n\nscipy==1.17.1  # why\n")
    assert dependency_audit.read_pins(requirements) == [Pin("numpy", "2.4.6"),
                                                        Pin("scipy", "1.17.1")]
    requirements.write_text("numpy>=2\n")
    with pytest.raises(ValueError, match="not an exact pin"):
        dependency_audit.read_pins(requirements)

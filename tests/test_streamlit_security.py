"""The Streamlit server's own protections: XSRF stays on, and users never see a traceback.

XSRF protection stays on for the Streamlit server (the upload box posts through it): in its
configuration, as Streamlit reads it, and in no file that would turn it off. An unexpected
error shows users a generic sentence, never its message or a traceback.
"""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib

import pytest

from tests.conftest import REPOSITORY_ROOT
from tests.repository_files import repository_text_files

XSRF_OFF = re.compile(
    r"(?i)(enable_?xsrf_?protection[\"']?\s*[=:]\s*[\"']?false|--server\.enableXsrfProtection[= ]+false"
    r"|STREAMLIT_SERVER_ENABLE_XSRF_PROTECTION\s*[=:]\s*[\"']?(false|0))"
)


def test_xsrf_protection_is_on_in_the_streamlit_configuration() -> None:
    configuration = tomllib.loads((REPOSITORY_ROOT / ".streamlit" / "config.toml").read_text(encoding="utf-8"))
    server = configuration["server"]
    assert server.get("enableXsrfProtection") is True
    # Streamlit turns CORS back on when XSRF protection is on; a config asking for both off would be a change of policy.
    assert server.get("enableCORS", True) is not False


def test_users_never_see_a_traceback(monkeypatch: pytest.MonkeyPatch) -> None:
    from streamlit.testing.v1 import AppTest

    monkeypatch.chdir(REPOSITORY_ROOT)
    configuration = tomllib.loads((REPOSITORY_ROOT / ".streamlit" / "config.toml").read_text(encoding="utf-8"))
    assert configuration["client"]["showErrorDetails"] == "none"
    # A page that fails unexpectedly, run with the project's configuration (read from the working
    # directory, as `streamlit run` does): the user sees a generic sentence, not the error or a path.
    app = AppTest.from_string("raise RuntimeError('cannot open /srv/secret/model.tflite')")
    app.run()
    shown = " ".join(str(element.message) + " " + str(getattr(element, "stack_trace", "")) for element in app.exception)
    assert app.exception and "redacted" in shown
    assert "/srv/secret" not in shown and "RuntimeError" not in shown


def test_no_file_turns_xsrf_protection_off() -> None:
    offenders = [
        f"{path}:{line_number}"
        for path, text in repository_text_files()
        if path != "tests/test_streamlit_security.py"
        for line_number, line in enumerate(text.splitlines(), 1)
        if XSRF_OFF.search(line)
    ]
    assert not offenders, offenders


def test_streamlit_reads_xsrf_protection_as_on() -> None:
    """What Streamlit itself makes of the repository's configuration (cwd = the repository, as scripts/run-app runs it)."""
    probe = (
        "from streamlit import config\n"
        "config.get_config_options(force_reparse=True)\n"
        "print(config.get_option('server.enableXsrfProtection'), config.get_option('server.maxUploadSize'))\n"
    )
    result = subprocess.run([sys.executable, "-c", probe], cwd=REPOSITORY_ROOT, capture_output=True, text=True,
                            timeout=120, check=False)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split()[-2:] == ["True", "2"]

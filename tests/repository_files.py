"""The files a commit could publish, for the scans in tests/test_committed_secrets.py and tests/test_streamlit_security.py."""

from __future__ import annotations

import subprocess

from tests.conftest import REPOSITORY_ROOT


def repository_files() -> list[str]:
    """Files git tracks, plus new files it would add (untracked and not ignored): what a commit could publish."""
    result = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPOSITORY_ROOT,
                            capture_output=True, check=True, timeout=60)
    return sorted({path for path in result.stdout.decode().split("\0") if path and (REPOSITORY_ROOT / path).is_file()})


def repository_text_files() -> list[tuple[str, str]]:
    texts = []
    for path in repository_files():
        data = (REPOSITORY_ROOT / path).read_bytes()
        if b"\0" not in data[:8192]:
            texts.append((path, data.decode("utf-8", errors="replace")))
    return texts

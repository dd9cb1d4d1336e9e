"""README keeps up with the deployment: its settings table lists every setting mnist_core/settings.py
reads, and its Deployment section gives both compose commands.
"""

from __future__ import annotations

import re

from tests.deployment.settings_names import REPOSITORY_ROOT, setting_variable_names

README = REPOSITORY_ROOT / "README.md"


def test_setting_names_are_found_in_settings_py() -> None:
    names = setting_variable_names()
    # A guard for the parser above: if it silently found nothing, the checks using it would pass.
    assert {"MNIST_CASSANDRA_PASSWORD", "MNIST_CASSANDRA_REPLICATION", "MNIST_DATA_DIR", "MNIST_MODEL_PATH"} <= names
    assert len(names) >= 20


# --- README -----------------------------------------------------------------------------------


def readme_section(title: str) -> str:
    text = README.read_text(encoding="utf-8")
    start = text.index(f"\n## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end != -1 else len(text)]


def test_readme_settings_table_lists_every_setting() -> None:
    section = readme_section("Settings")
    documented = set(re.findall(r"^\| `(MNIST_[A-Z_]+)` \|", section, re.MULTILINE))
    missing = setting_variable_names() - documented
    assert not missing, f"README's Settings table lacks {sorted(missing)}"


def test_readme_deployment_section_gives_both_compose_commands() -> None:
    section = readme_section("Deployment")
    assert "docker compose up -d" in section
    assert "docker compose -f compose.yaml -f compose.cluster.yaml up -d" in section
    assert "sticky" in section.lower()

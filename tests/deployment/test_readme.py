"""README keeps up with the deployment: its settings table lists exactly the settings declared in
mnist_core.settings.SETTINGS (tests/test_settings.py checks it is the table rendered from them,
row for row), and its Deployment section gives both compose commands.
"""

from __future__ import annotations

import dataclasses
import re

from mnist_core.settings import SETTINGS, Settings
from tests.deployment.settings_names import REPOSITORY_ROOT, setting_variable_names

README = REPOSITORY_ROOT / "README.md"


def test_every_settings_field_is_declared_once_in_the_table() -> None:
    filled = [setting.field for setting in SETTINGS if setting.field is not None]
    assert sorted(filled) == sorted(field.name for field in dataclasses.fields(Settings)), \
        "each Settings field comes from exactly one declared MNIST_* variable"
    names = setting_variable_names()
    assert len(names) == len(SETTINGS), "no variable is declared twice"
    assert {"MNIST_CASSANDRA_PASSWORD", "MNIST_CASSANDRA_PASSWORD_FILE", "MNIST_DATA_DIR", "MNIST_MODEL_PATH"} <= names
    # A *_FILE variable has no field of its own: the secret it holds is read with its base variable.
    for setting in SETTINGS:
        if setting.field is None:
            assert setting.variable.endswith("_FILE") and any(
                other.variable + "_FILE" == setting.variable and other.field for other in SETTINGS), setting


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
    unknown = documented - setting_variable_names()
    assert not unknown, f"README's Settings table lists variables the app does not read: {sorted(unknown)}"


def test_readme_deployment_section_gives_both_compose_commands() -> None:
    section = readme_section("Deployment")
    assert "docker compose up -d" in section
    assert "docker compose -f compose.yaml -f compose.cluster.yaml up -d" in section
    assert "sticky" in section.lower()

"""The MNIST_* variable names the app reads, from the one table that declares them
(``mnist_core.settings.SETTINGS``), so the image, the compose files and README's settings table
can be checked against the settings that really exist.
"""

from __future__ import annotations

import pathlib

from mnist_core.settings import SETTINGS

REPOSITORY_ROOT = pathlib.Path(__file__).resolve().parents[2]


def setting_variable_names() -> set[str]:
    """Every MNIST_* variable the settings read (a secret's *_FILE variant included)."""
    return {setting.environment_name for setting in SETTINGS}

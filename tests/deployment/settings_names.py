"""The MNIST_* variable names mnist_core/settings.py reads, found in its source, so the image, the
compose files and README's settings table can be checked against the settings that really exist.
"""

from __future__ import annotations

import ast
import pathlib

REPOSITORY_ROOT = pathlib.Path(__file__).resolve().parents[2]
SETTINGS_SOURCE = REPOSITORY_ROOT / "mnist_core" / "settings.py"


def setting_variable_names() -> set[str]:
    """Every MNIST_* variable mnist_core/settings.py reads: `_helper(mapping, "NAME", ...)` calls and
    `ENVIRONMENT_PREFIX + "NAME"` look-ups."""
    names = set()
    for node in ast.walk(ast.parse(SETTINGS_SOURCE.read_text(encoding="utf-8"))):
        if (
            isinstance(node, ast.Call)
            and len(node.args) >= 2
            and isinstance(node.args[0], ast.Name)
            and node.args[0].id == "mapping"
            and isinstance(node.args[1], ast.Constant)
            and isinstance(node.args[1].value, str)
        ):
            # Every name a helper is given (a secret's value and its _FILE variant too).
            names.update("MNIST_" + argument.value for argument in node.args[1:]
                         if isinstance(argument, ast.Constant) and isinstance(argument.value, str))
        if (
            isinstance(node, ast.BinOp)
            and isinstance(node.left, ast.Name)
            and node.left.id == "ENVIRONMENT_PREFIX"
            and isinstance(node.right, ast.Constant)
        ):
            names.add("MNIST_" + node.right.value)
    return names

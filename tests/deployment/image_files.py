"""The image's own files read the way Docker reads them: the Dockerfile's instructions (continued
lines joined, comments dropped) and .dockerignore's patterns (the last matching rule decides),
plus the files git knows, for the checks in `tests/deployment/test_image.py` and the compose tests.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
import posixpath
import re
import shlex
import subprocess

REPOSITORY_ROOT = pathlib.Path(__file__).resolve().parents[2]
DOCKERFILE = REPOSITORY_ROOT / "Dockerfile"
DOCKERIGNORE = REPOSITORY_ROOT / ".dockerignore"


# --- Reading the Dockerfile -------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Instruction:
    keyword: str
    arguments: str


def dockerfile_instructions() -> list[Instruction]:
    """Instructions in order, continuation lines joined and comment lines dropped (as Docker does)."""
    instructions: list[Instruction] = []
    pending = ""
    for line in DOCKERFILE.read_text(encoding="utf-8").splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        whole = pending + stripped
        pending = ""
        keyword, _, arguments = whole.partition(" ")
        instructions.append(Instruction(keyword.upper(), arguments.strip()))
    assert not pending, "The Dockerfile ends inside a continued line."
    return instructions


def instructions_named(keyword: str) -> list[tuple[int, Instruction]]:
    return [(index, item) for index, item in enumerate(dockerfile_instructions()) if item.keyword == keyword]


def dockerfile_environment() -> dict[str, str]:
    environment: dict[str, str] = {}
    for _, instruction in instructions_named("ENV"):
        for assignment in shlex.split(instruction.arguments):
            name, equals, value = assignment.partition("=")
            assert equals, f"ENV {instruction.arguments!r}: use the NAME=value form."
            environment[name] = value
    return environment


def copy_sources_and_destination(instruction: Instruction) -> tuple[list[str], str]:
    words = [word for word in shlex.split(instruction.arguments) if not word.startswith("--")]
    return words[:-1], words[-1]


def healthcheck_command() -> list[str]:
    checks = instructions_named("HEALTHCHECK")
    assert len(checks) == 1, "The image needs exactly one HEALTHCHECK."
    _, separator, command = checks[0][1].arguments.partition("CMD ")
    assert separator, "HEALTHCHECK must run a command (CMD ...)."
    return json.loads(command)


# --- Reading .dockerignore the way Docker does ------------------------------------------------


def _pattern_regex(pattern: str) -> re.Pattern[str]:
    """Go's filepath.Match plus Docker's '**': '*' and '?' stay inside a folder, '**' crosses folders."""
    parts: list[str] = []
    index = 0
    while index < len(pattern):
        if pattern.startswith("**/", index):
            parts.append("(?:.*/)?")
            index += 3
        elif pattern.startswith("**", index):
            parts.append(".*")
            index += 2
        elif pattern[index] == "*":
            parts.append("[^/]*")
            index += 1
        elif pattern[index] == "?":
            parts.append("[^/]")
            index += 1
        elif pattern[index] == "[":
            closing = pattern.index("]", index)
            parts.append(pattern[index : closing + 1])
            index = closing + 1
        else:
            parts.append(re.escape(pattern[index]))
            index += 1
    return re.compile("^" + "".join(parts) + "$")


def dockerignore_rules() -> list[tuple[bool, re.Pattern[str]]]:
    rules = []
    for line in DOCKERIGNORE.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        include = line.startswith("!")
        pattern = posixpath.normpath(line.lstrip("!").strip()).lstrip("/")
        rules.append((include, _pattern_regex(pattern)))
    return rules


def left_out_of_build_context(path: str) -> bool:
    """True when .dockerignore keeps the file out: the last rule matching it or a parent folder decides."""
    parts = path.split("/")
    candidates = ["/".join(parts[: length + 1]) for length in range(len(parts))]
    excluded = False
    for include, regex in dockerignore_rules():
        if any(regex.match(candidate) for candidate in candidates):
            excluded = not include
    return excluded


def tracked_files() -> list[str]:
    """Files git knows about, plus new files not yet added (the deploy files may be uncommitted)."""
    result = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=REPOSITORY_ROOT, capture_output=True, text=True, check=True,
    )
    return [line for line in result.stdout.splitlines() if (REPOSITORY_ROOT / line).is_file()]

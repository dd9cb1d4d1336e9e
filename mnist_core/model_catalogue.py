"""The digit models that sit side by side in a folder, told apart by their cards.

Several models can live in `models/` (a fine-tuned one beside the shipped one, say);
`MNIST_MODEL_PATH` picks the one served. The Model page lists them all with the figures their
cards recorded, so an operator can compare versions before switching, and the History page
compares them on the users' own feedback. Reading cards needs no TensorFlow.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

CARD_SUFFIX = ".card.json"
MODEL_SUFFIXES = (".tflite", ".keras")


@dataclasses.dataclass(frozen=True)
class CataloguedModel:
    """One digit model file and the headline figures of its card (None where the card has none)."""

    path: Path
    model_version: str
    served: bool
    test_accuracy: float | None = None
    dev_fit_accuracy: float | None = None
    dev_box_accuracy: float | None = None
    numbers_exact: float | None = None
    parameter_count: int | None = None


def _model_file(card_path: Path) -> Path | None:
    stem = card_path.name[: -len(CARD_SUFFIX)]
    for suffix in MODEL_SUFFIXES:
        candidate = card_path.with_name(stem + suffix)
        if candidate.exists():
            return candidate
    return None


def models_beside(served_path: Path) -> list[CataloguedModel]:
    """Every digit model with a card in the served model's folder, the served one first.

    A card is a digit model's when it records an MNIST test accuracy (the number reader's card
    records validation numbers instead); a card that cannot be read is left out.
    """
    served_path = Path(served_path)
    entries = []
    for card_path in sorted(served_path.parent.glob(f"*{CARD_SUFFIX}")):
        model_file = _model_file(card_path)
        try:
            card = json.loads(card_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if model_file is None or not isinstance(card, dict) or "test_accuracy" not in card:
            continue
        handwriting = card.get("real_handwriting") or {}
        served = model_file.with_suffix("") == served_path.with_suffix("")
        entries.append(CataloguedModel(
            path=served_path if served else model_file, model_version=str(card.get("model_version", card_path.stem)),
            served=served, test_accuracy=card.get("test_accuracy"),
            dev_fit_accuracy=handwriting.get("dev_fit_accuracy"), dev_box_accuracy=handwriting.get("dev_box_accuracy"),
            numbers_exact=handwriting.get("numbers_2_to_4_exact"), parameter_count=card.get("parameter_count")))
    return sorted(entries, key=lambda entry: (not entry.served, entry.model_version))

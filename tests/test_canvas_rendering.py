"""The training pictures' handwriting styles draw the shapes real writers use and MNIST lacks."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from train.canvas_rendering import STYLE, centre_points, model_input, paint, redrawn_digit, warp, with_style

ALWAYS_HOOKED_NINE = dataclasses.replace(STYLE, tail_nine=1.0, hooked_nine=1.0)
ALWAYS_ROUNDED_FOUR = dataclasses.replace(STYLE, rounded_four=1.0)
SERIF_ONLY_SEVEN = dataclasses.replace(STYLE, crossbar_seven=0.0, serif_seven=1.0)


def first_of(mnist, label: int, count: int = 20) -> list[np.ndarray]:
    return [mnist.train_images[index] for index in np.flatnonzero(mnist.train_labels == label)[:count]]


def test_a_hooked_nine_ends_in_a_foot_far_left_of_its_stem(mnist):
    for seed, image in enumerate(first_of(mnist, 9)):
        points = centre_points(image)
        stem, hook = with_style(points, 9, np.random.default_rng(seed), ALWAYS_HOOKED_NINE)
        # The stem was shortened and the hook carries on below it, then runs out to the left.
        assert stem[:, 1].max() < points[:, 1].max()
        assert hook[0, 1] == pytest.approx(stem[:, 1].max())
        assert hook[-1, 0] <= hook[0, 0] - 0.19  # at least a 0.1 bend, then a foot
        assert hook[:, 1].max() > stem[:, 1].max()


def test_a_rounded_four_has_an_open_top_and_a_curved_corner(mnist):
    for seed in range(50):
        stem, arm = with_style(centre_points(first_of(mnist, 4, 1)[0]), 4, np.random.default_rng(seed),
                               ALWAYS_ROUNDED_FOUR)
        stem_x = stem[:, 0].min()
        # Open top: the arm starts well left of the stem, which it only meets at the bar.
        assert arm[0, 0] < stem_x - 0.15
        assert arm[-1, 0] >= stem_x - 0.05
        # Dense enough that the stem's points, painted as dots, join into a line.
        assert np.abs(np.diff(stem, axis=0)).max() < 0.02
        # No sharp corner: the direction turns a little at each point, never at once.
        directions = np.diff(arm, axis=0)
        angles = np.degrees(np.arctan2(directions[:, 1], directions[:, 0]))
        turns = np.abs((np.diff(angles) + 180.0) % 360.0 - 180.0)
        assert turns.max() < 45.0


def test_a_serif_seven_starts_its_bar_with_a_short_stroke_down(mnist):
    for seed, image in enumerate(first_of(mnist, 7)):
        points = centre_points(image)
        parts = with_style(points, 7, np.random.default_rng(seed), SERIF_ONLY_SEVEN)
        assert len(parts) == 2, "the serif, and no crossbar"
        serif = parts[1]
        top_band = points[points[:, 1] < 0.15]
        assert np.array_equal(serif[0], top_band[top_band[:, 0].argmin()])
        assert 0.08 <= serif[-1, 1] - serif[0, 1] <= 0.25


def test_every_styled_digit_paints_as_one_digit_of_ink(mnist):
    from mnist_core.preprocess import has_ink

    for label, style in ((9, ALWAYS_HOOKED_NINE), (4, ALWAYS_ROUNDED_FOUR), (7, SERIF_ONLY_SEVEN)):
        for seed, image in enumerate(first_of(mnist, label, 5)):
            random = np.random.default_rng(seed)
            picture = paint(warp(with_style(centre_points(image), label, random, style), random), random)
            assert has_ink(picture)
            normalised = model_input(picture)
            assert normalised.shape == (28, 28) and normalised.max() > 0.5


def test_redrawn_digits_repeat_for_a_seed(mnist):
    image = first_of(mnist, 1, 1)[0]
    first = redrawn_digit(image, 1, np.random.default_rng(7))
    again = redrawn_digit(image, 1, np.random.default_rng(7))
    other = redrawn_digit(image, 1, np.random.default_rng(8))
    assert np.array_equal(first, again)
    assert not np.array_equal(first, other)

"""Training pictures cut from composed numbers: labelled by whose ink they hold, repeatably."""

from __future__ import annotations

import dataclasses

import numpy as np

from train.canvas_rendering import NOT_A_DIGIT
from train.number_candidates import (SETTINGS, compose, generate_number_candidates, labelled_candidates,
                                     paint_digit)


def _candidates(mnist, indices, seed, settings=SETTINGS):
    random = np.random.default_rng(seed)
    digits, pen = compose(mnist.train_images, mnist.train_labels, np.asarray(indices), random,
                          settings)
    return labelled_candidates([paint_digit(parts, pen) for parts in digits],
                               mnist.train_labels[np.asarray(indices)], random, settings)


def test_digits_with_clear_gaps_are_each_a_positive_in_their_own_label(mnist):
    apart = dataclasses.replace(SETTINGS, clear_share=1.0, clear_gap_range=(20.0, 30.0),
                                slant_degrees=0.0)
    indices = [0, 1, 2]  # 5, 0, 4
    inputs, labels = _candidates(mnist, indices, seed=3, settings=apart)
    positives = labels[labels != NOT_A_DIGIT]
    assert sorted(positives.tolist()) == sorted(mnist.train_labels[indices].tolist())
    assert inputs.shape == (len(labels), 28, 28) and inputs.max() <= 1.0


def test_touching_digits_give_merged_and_fragment_negatives(mnist):
    close = dataclasses.replace(SETTINGS, clear_share=0.0, touching_share=1.0)
    labels_seen = []
    for seed in range(12):
        indices = np.random.default_rng(seed).integers(len(mnist.train_labels), size=3)
        _, labels = _candidates(mnist, indices, seed=seed, settings=close)
        # Every positive is one of the number's own digits.
        assert set(labels[labels != NOT_A_DIGIT].tolist()) <= set(mnist.train_labels[indices].tolist())
        labels_seen.extend(labels.tolist())
    labels_seen = np.array(labels_seen)
    assert (labels_seen == NOT_A_DIGIT).sum() >= 12, "cuts of touching digits make negatives"
    assert (labels_seen != NOT_A_DIGIT).sum() >= 18, "most touching digits are still cut out whole"


def test_generation_is_seeded_and_repeatable(mnist):
    first = generate_number_candidates(30, mnist.train_images, mnist.train_labels, seed=9,
                                       processes=1)
    second = generate_number_candidates(30, mnist.train_images, mnist.train_labels, seed=9,
                                        processes=2)
    np.testing.assert_array_equal(first[0], second[0])
    np.testing.assert_array_equal(first[1], second[1])
    other = generate_number_candidates(30, mnist.train_images, mnist.train_labels, seed=10,
                                       processes=1)
    assert not np.array_equal(first[1], other[1]) or not np.array_equal(first[0], other[0])

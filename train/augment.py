"""Augmentation that makes MNIST look like digits drawn on a canvas.

People draw with a round pen of fixed width, at any size and slant, so each batch gets a
random affine warp (rotation, scale, shear, shift) and a random change of stroke
thickness. All of it runs as TensorFlow ops inside the input pipeline.
"""

from __future__ import annotations

import dataclasses
import math

import tensorflow as tf


@dataclasses.dataclass(frozen=True)
class AugmentationSettings:
    # Mild: the canvas drawings already vary slant, size, width and pen (canvas_rendering),
    # and the preprocessing centres every input, so only small jitter is left to add.
    rotation_degrees: float = 6.0
    scale_range: tuple[float, float] = (0.92, 1.06)
    shear_degrees: float = 6.0
    shift_pixels: float = 1.5
    thicken_probability: float = 0.25
    thin_probability: float = 0.1


def _random_affine_transforms(batch_size, settings: AugmentationSettings, seed):
    """Projective transform rows (8 numbers each) mapping output pixels to input pixels."""
    seeds = tf.random.experimental.stateless_split(seed, num=4)
    angle = tf.random.stateless_uniform([batch_size], seeds[0], -1.0, 1.0) * math.radians(
        settings.rotation_degrees)
    scale = tf.random.stateless_uniform([batch_size], seeds[1], *settings.scale_range)
    shear = tf.random.stateless_uniform([batch_size], seeds[2], -1.0, 1.0) * math.radians(
        settings.shear_degrees)
    shift = tf.random.stateless_uniform([batch_size, 2], seeds[3], -1.0, 1.0) * (
        settings.shift_pixels)
    # Inverse map: rotate by -angle, unshear, divide by scale, all about the image centre.
    cosine, sine = tf.cos(angle) / scale, tf.sin(angle) / scale
    shear_tangent = tf.tan(shear)
    a0, a1 = cosine, sine + cosine * shear_tangent
    b0, b1 = -sine, cosine - sine * shear_tangent
    centre = 13.5
    a2 = centre - a0 * centre - a1 * centre - shift[:, 0]
    b2 = centre - b0 * centre - b1 * centre - shift[:, 1]
    zeros = tf.zeros_like(a0)
    return tf.stack([a0, a1, a2, b0, b1, b2, zeros, zeros], axis=1)


def augment_batch(images, seed, settings: AugmentationSettings = AugmentationSettings()):
    """images: float32 (N, 28, 28, 1) in [0, 1]; seed: int32 tensor of shape [2]."""
    batch_size = tf.shape(images)[0]
    seeds = tf.random.experimental.stateless_split(seed, num=3)
    transforms = _random_affine_transforms(batch_size, settings, seeds[0])
    warped = tf.raw_ops.ImageProjectiveTransformV3(
        images=images, transforms=transforms, output_shape=tf.constant([28, 28]),
        fill_value=0.0, interpolation="BILINEAR", fill_mode="CONSTANT")
    # Stroke thickness: blend towards a 3x3 grey dilation (thicker) or erosion (thinner).
    dilated = tf.nn.max_pool2d(warped, 3, 1, "SAME")
    eroded = -tf.nn.max_pool2d(-warped, 3, 1, "SAME")
    choice = tf.random.stateless_uniform([batch_size, 1, 1, 1], seeds[1])
    strength = tf.random.stateless_uniform([batch_size, 1, 1, 1], seeds[2], 0.3, 1.0)
    thicken = tf.cast(choice < settings.thicken_probability, tf.float32) * strength
    thin = tf.cast(choice > 1.0 - settings.thin_probability, tf.float32) * strength * 0.6
    result = warped + thicken * (dilated - warped) + thin * (eroded - warped)
    # Preprocessing stretches ink to a peak of 1, so augmented digits are stretched alike.
    peak = tf.reduce_max(result, axis=[1, 2, 3], keepdims=True)
    return tf.clip_by_value(result / tf.maximum(peak, 1e-3), 0.0, 1.0)

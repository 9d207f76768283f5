"""Toy 2-D classification tasks ``toy.*``, sampled in TensorFlow from a stateless seed.

Paraphrased from the BLUR reference's ``func2d`` toy functions, with one label convention:
labels are int32 class ids; for the binary tasks class 1 is the reference's ``+1``. Inputs
are float32 points in (roughly) ``[-1, 1]^2``. "x ~ U" below means
``x ~ Uniform([-1, 1]^2)``.

Every task has a ``label_fn(x) -> y``: for the "region" tasks the sampler draws x ~ U and
labels it with ``label_fn``; for the generative tasks (moons, concentric_circles, blobs)
the sampler draws a class, then a point from that class, and ``label_fn`` is the
noise-free nearest-class rule (the class whose noise-free curve/centre is nearest), which
agrees with the sampled label except where the noise crosses the boundary.

=================== ======= ==================================================================
task                classes definition (class 1 = reference's +1 for binary tasks)
=================== ======= ==================================================================
toy.and             2       x ~ U; 1 iff x0 > 0 and x1 > 0 (quadrant I)
toy.or              2       x ~ U; 1 iff x0 > 0 or x1 > 0
toy.xor             2       x ~ U; 1 iff x0*x1 > 0 (quadrants I and III; reference sign(x0 x1))
toy.nxor            2       x ~ U; 1 iff x0*x1 < 0 (quadrants II and IV)
toy.qand            2       x ~ U; 1 iff x0 < 0 and x1 > 0 (quadrant II)
toy.circles         2       x ~ U; 1 iff |x - c| < r; c ~ U, r ~ U[0.2, 0.7) fixed by ``seed``
toy.moons           2       sklearn-style two moons, noise 0.1: class 0 on (cos t, sin t),
                            class 1 on (1 - cos t, 0.5 - sin t), t ~ U[0, pi], then
                            x0 <- (x0 + 1) 2/3 - 1, x1 <- (x1 + 0.5) 2/1.5 - 1
toy.concentric_circles 4    class k ~ uniform, point at radius 0.25 (k + 1), angle ~ U[0, 2pi),
                            plus N(0, 0.04^2) noise per coordinate; label_fn: nearest radius
toy.blobs           5       class k ~ uniform, x = c_k + N(0, 0.1^2); centres c_k ~ U fixed by
                            ``seed``; label_fn: nearest centre
toy.square          2       x ~ U; 1 iff max(|x0|, |x1|) < 0.2 (about 4% positives, as in
                            the reference with its defaults: one centre (0, 0), no rotation)
toy.cross           2       x ~ U; 1 iff |x0| < 0.3 or |x1| < 0.3
toy.triangle        2       x ~ U; 1 iff x0 + x1 < 1 and x1 - x0 < 1 and x1 > -0.5
toy.angular_slice   2       x ~ U; 1 iff atan2(x1, x0) in [-0.78, 0.78] (wedge around +x)
toy.random_xor      2       x ~ U; z = x P + b, 1 iff z0*z1 > 0; P ~ U[-1,1]^{2x2},
                            b ~ U[-0.5, 0.5]^2 fixed by ``seed``
=================== ======= ==================================================================

Spec options: ``seed=<int>`` (default 0) for the tasks with per-task random parameters
(circles, blobs, random_xor): it fixes those parameters, so one spec is one fixed function
(``toy.circles:seed=3`` is another fixed circle). Other toy tasks accept no options.

Deviations from the reference: ``circles`` and ``random_xor`` draw their parameters once
per task (the reference redraws them per call unless given); ``concentric_circles`` uses
four evenly spaced rings with class id increasing with the radius (the reference
concatenates two sklearn ``make_circles`` sets, radii 1, 0.5, 5 and 2.5, unshuffled);
moons draw t uniformly rather than sklearn's evenly spaced grid.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

import numpy as np
import tensorflow as tf

from blur_tf.tasks import base
from blur_tf.tasks.spec import TaskSpec, check_keys, parse_int

PREFIX = "toy."


def _uniform_points(seed, n):
    return tf.random.stateless_uniform([n, 2], seed, -1.0, 1.0, dtype=tf.float32)


def _binary(condition: tf.Tensor) -> tf.Tensor:
    return tf.cast(condition, tf.int32)


# ----------------------------------------------------------------------- label functions
def and_label(x):
    return _binary((x[:, 0] > 0) & (x[:, 1] > 0))


def or_label(x):
    return _binary((x[:, 0] > 0) | (x[:, 1] > 0))


def xor_label(x):
    return _binary(x[:, 0] * x[:, 1] > 0)


def nxor_label(x):
    return _binary(x[:, 0] * x[:, 1] < 0)


def qand_label(x):
    return _binary((x[:, 0] < 0) & (x[:, 1] > 0))


def square_label(x, size=0.2):
    return _binary(tf.reduce_max(tf.abs(x), axis=1) < size)


def cross_label(x, width=0.3):
    return _binary((tf.abs(x[:, 0]) < width) | (tf.abs(x[:, 1]) < width))


def triangle_label(x):
    x0, x1 = x[:, 0], x[:, 1]
    return _binary((x0 + x1 < 1) & (x1 - x0 < 1) & (x1 > -0.5))


def angular_slice_label(x, begin=-0.78, end=0.78):
    angle = tf.atan2(x[:, 1], x[:, 0])
    return _binary((angle >= begin) & (angle <= end))


def circle_label(x, center, radius):
    return _binary(tf.norm(x - center, axis=1) < radius)


def random_xor_label(x, proj, bias):
    z = tf.matmul(x, proj) + bias
    return _binary(z[:, 0] * z[:, 1] > 0)


# Moons live in sklearn's coordinates and are mapped into [-1, 1]^2 by this affine map.
_MOON_SCALE = np.array([2.0 / 3.0, 2.0 / 1.5], np.float32)
_MOON_SHIFT = np.array([1.0, 0.5], np.float32)


def _moon_to_unit(p):
    return (p + _MOON_SHIFT) * _MOON_SCALE - 1.0


def _moon_from_unit(x):
    return (x + 1.0) / _MOON_SCALE - _MOON_SHIFT


def _arc_distance(q, upper: bool):
    """Distance from points q (relative to the arc's centre) to a unit half circle."""
    on_side = q[:, 1] >= 0 if upper else q[:, 1] <= 0
    to_circle = tf.abs(tf.norm(q, axis=1) - 1.0)
    to_ends = tf.minimum(tf.norm(q - [1.0, 0.0], axis=1), tf.norm(q + [1.0, 0.0], axis=1))
    return tf.where(on_side, to_circle, to_ends)


def moons_label(x):
    """Nearest noise-free moon: 0 = upper arc (cos t, sin t), 1 = lower (1-cos t, .5-sin t)."""
    p = _moon_from_unit(x)
    d0 = _arc_distance(p, upper=True)
    d1 = _arc_distance(p - [1.0, 0.5], upper=False)
    return _binary(d1 < d0)


CONCENTRIC_RADII = (0.25, 0.5, 0.75, 1.0)


def concentric_label(x):
    """Nearest ring: class round(4 |x| - 1), clipped to 0..3."""
    k = tf.round(tf.norm(x, axis=1) * 4.0 - 1.0)
    return tf.cast(tf.clip_by_value(k, 0.0, 3.0), tf.int32)


def blobs_label(x, centers):
    """Nearest centre."""
    d = tf.reduce_sum(tf.square(x[:, None, :] - centers[None]), axis=-1)
    return tf.argmin(d, axis=1, output_type=tf.int32)


# ----------------------------------------------------------------------- generative samplers
def _moons_sample(seed, n, noise=0.1):
    s = base.split_seed(seed, 3)
    y = tf.random.stateless_uniform([n], s[0], 0, 2, dtype=tf.int32)
    t = tf.random.stateless_uniform([n], s[1], 0.0, math.pi)
    outer = tf.stack([tf.cos(t), tf.sin(t)], axis=1)
    inner = tf.stack([1.0 - tf.cos(t), 0.5 - tf.sin(t)], axis=1)
    p = tf.where(y[:, None] == 1, inner, outer)
    p += noise * tf.random.stateless_normal([n, 2], s[2])
    return _moon_to_unit(p), y


def _concentric_sample(seed, n, noise=0.04):
    s = base.split_seed(seed, 3)
    y = tf.random.stateless_uniform([n], s[0], 0, len(CONCENTRIC_RADII), dtype=tf.int32)
    angle = tf.random.stateless_uniform([n], s[1], 0.0, 2.0 * math.pi)
    radius = tf.gather(tf.constant(CONCENTRIC_RADII, tf.float32), y)
    x = radius[:, None] * tf.stack([tf.cos(angle), tf.sin(angle)], axis=1)
    return x + noise * tf.random.stateless_normal([n, 2], s[2]), y


def _blobs_sample(seed, n, centers, std=0.1):
    s = base.split_seed(seed, 2)
    y = tf.random.stateless_uniform([n], s[0], 0, centers.shape[0], dtype=tf.int32)
    return tf.gather(centers, y) + std * tf.random.stateless_normal([n, 2], s[1]), y


# ----------------------------------------------------------------------- per-task parameters
def _param_seed(task_seed: int, slot: int):
    return tf.constant([task_seed, slot], tf.int64)


def circle_params(task_seed: int) -> dict:
    """Centre ~ U([-1,1]^2), radius ~ U[0.2, 0.7), from the task seed."""
    center = tf.random.stateless_uniform([2], _param_seed(task_seed, 1), -1.0, 1.0)
    radius = tf.random.stateless_uniform([], _param_seed(task_seed, 2), 0.2, 0.7)
    return {"center": center, "radius": radius}


def random_xor_params(task_seed: int) -> dict:
    """Projection ~ U[-1,1]^{2x2}, bias ~ U[-0.5,0.5]^2, from the task seed."""
    proj = tf.random.stateless_uniform([2, 2], _param_seed(task_seed, 3), -1.0, 1.0)
    bias = tf.random.stateless_uniform([2], _param_seed(task_seed, 4), -0.5, 0.5)
    return {"proj": proj, "bias": bias}


def blobs_params(task_seed: int, num_blobs: int = 5) -> dict:
    """Centres ~ U([-1,1]^2) (``num_blobs`` of them), from the task seed."""
    centers = tf.random.stateless_uniform([num_blobs, 2], _param_seed(task_seed, 5), -1.0, 1.0)
    return {"centers": centers}


# ----------------------------------------------------------------------- registry
@dataclasses.dataclass(frozen=True)
class _ToyDef:
    num_classes: int
    label_fn: Callable  # (x, **params) -> y
    sampler: Callable | None = None  # (seed, n, **params) -> (x, y); None = x ~ U + label_fn
    params_fn: Callable | None = None  # task_seed -> params dict (the task takes ``seed=``)


_TOYS: dict[str, _ToyDef] = {
    "and": _ToyDef(2, and_label),
    "or": _ToyDef(2, or_label),
    "xor": _ToyDef(2, xor_label),
    "nxor": _ToyDef(2, nxor_label),
    "qand": _ToyDef(2, qand_label),
    "circles": _ToyDef(2, circle_label, params_fn=circle_params),
    "moons": _ToyDef(2, moons_label, sampler=_moons_sample),
    "concentric_circles": _ToyDef(4, concentric_label, sampler=_concentric_sample),
    "blobs": _ToyDef(5, blobs_label, sampler=_blobs_sample, params_fn=blobs_params),
    "square": _ToyDef(2, square_label),
    "cross": _ToyDef(2, cross_label),
    "triangle": _ToyDef(2, triangle_label),
    "angular_slice": _ToyDef(2, angular_slice_label),
    "random_xor": _ToyDef(2, random_xor_label, params_fn=random_xor_params),
}

TOY_TASKS: tuple[str, ...] = tuple(PREFIX + name for name in _TOYS)


class ToyTask(base.Task):
    """A 2-D toy task (see the module docstring for the definitions).

    ``label_fn(x)`` labels given points (float32 ``[N, 2]`` -> int32 ``[N]``); ``params``
    holds the per-task random parameters (circles: center, radius; blobs: centers;
    random_xor: proj, bias), as float32 tensors.
    """

    input_size = 2

    def __init__(self, spec: TaskSpec):
        short = spec.name[len(PREFIX) :]
        if short not in _TOYS:
            raise ValueError(f"Unknown toy task {spec.name!r}; toy tasks: {', '.join(TOY_TASKS)}.")
        definition = _TOYS[short]
        check_keys(spec, ("seed",) if definition.params_fn else ())
        opts = spec.option_dict
        self.task_seed = parse_int(spec, "seed", opts["seed"], 0) if "seed" in opts else 0
        with tf.init_scope():
            self.params = definition.params_fn(self.task_seed) if definition.params_fn else {}
        self._def = definition
        self.name = spec.name
        self.spec = str(spec)
        self.num_classes = definition.num_classes

    def label_fn(self, x) -> tf.Tensor:
        """Labels points ``x`` (``[N, 2]``) by this task's rule (nearest class for moons etc.)."""
        return self._def.label_fn(tf.convert_to_tensor(x, tf.float32), **self.params)

    def _sample(self, seed, n, stream):
        del stream  # train and eval differ by the seed folding in base.Task
        if self._def.sampler is not None:
            return self._def.sampler(seed, n, **self.params)
        x = _uniform_points(seed, n)
        return x, self.label_fn(x)

    def eval_set(self, max_examples=None):
        """A fixed draw of 10000 eval-stream examples (``max_examples`` keeps the first ones)."""
        x, y = self.sample_eval(tf.constant(base.EVAL_SET_SEED, tf.int64), base.EVAL_SET_SIZE)
        if max_examples is not None:
            x, y = x[:max_examples], y[:max_examples]
        return x, y


def make_toy_task(spec: TaskSpec) -> ToyTask:
    return ToyTask(spec)

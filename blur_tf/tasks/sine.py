"""Incremental sine regression (OML; Lindsey & Litwin-Kumar 2020 §5.1): episodes of K sinusoids.

Function k of an episode is y = A_k sin(x + φ_k), A_k = 5·(U + 0.02), φ_k ~ U[0, π); an
example is the input (x, one-hot k) with x ~ U[−5, 5), size 1 + K. An episode shows each
function on S batches of B examples, T = K·S inner steps:

* `continual` order: function 0's S batches, then function 1's, …;
* `iid` order: the same T·B examples in a random order (batches mix the functions).

After the episode the learner is scored on `query_points` fresh examples of every function.
Meta-training draws the K functions of an episode from a fixed pool of `pool_size` functions
(the pool is deterministic in `pool_seed`); evaluation draws fresh functions.
"""

from __future__ import annotations

import dataclasses
import math

import tensorflow as tf

ORDERS = ("iid", "continual")
X_RANGE = 5.0


def sine_values(x: tf.Tensor, amplitudes: tf.Tensor, phases: tf.Tensor) -> tf.Tensor:
    """y = A sin(x + φ), broadcasting."""
    return amplitudes * tf.sin(x + phases)


def draw_amplitudes_phases(seed, shape):
    """(A, φ) of fresh functions: A = 5·(U + 0.02), φ ~ U[0, π); stateless in `seed`."""
    u = tf.random.stateless_uniform([2, *shape], seed)
    return 5.0 * (u[0] + 0.02), math.pi * u[1]


def episode_examples(
    seed,
    amplitudes: tf.Tensor,
    phases: tf.Tensor,
    steps_per_function: int,
    batch_size: int,
    order: str,
):
    """One episode per row of amplitudes / phases [P, K]: xs [T, P, B, 1 + K], ys [T, P, B]
    with T = K·S (module doc for the orders)."""
    if order not in ORDERS:
        raise ValueError(f"order {order!r}; one of {ORDERS}")
    population, num_functions = amplitudes.shape
    per_member = num_functions * steps_per_function * batch_size
    function = tf.repeat(tf.range(num_functions), steps_per_function * batch_size)  # [N]
    function = tf.tile(function[None], [population, 1])  # [P, N] continual order
    if order == "iid":
        keys = tf.random.stateless_uniform(
            [population, per_member], tf.random.experimental.stateless_fold_in(seed, 1)
        )
        function = tf.gather(function, tf.argsort(keys, axis=1), batch_dims=1)
    x, y = _examples(
        tf.random.experimental.stateless_fold_in(seed, 2), function, amplitudes, phases
    )
    shape = [population, num_functions * steps_per_function, batch_size]
    xs = tf.transpose(tf.reshape(x, [*shape, 1 + num_functions]), [1, 0, 2, 3])
    ys = tf.transpose(tf.reshape(y, shape), [1, 0, 2])
    return xs, ys


def query_examples(seed, amplitudes: tf.Tensor, phases: tf.Tensor, points: int):
    """`points` fresh examples of every function: x [P, K·points, 1 + K], y [P, K·points]."""
    population, num_functions = amplitudes.shape
    function = tf.tile(tf.repeat(tf.range(num_functions), points)[None], [population, 1])
    return _examples(seed, function, amplitudes, phases)


def _examples(seed, function, amplitudes, phases):
    """Inputs (x, one-hot k) [P, N, 1 + K] and targets [P, N] of function ids [P, N]."""
    num_functions = amplitudes.shape[1]
    x = tf.random.stateless_uniform(function.shape, seed, -X_RANGE, X_RANGE)
    y = sine_values(
        x, tf.gather(amplitudes, function, batch_dims=1), tf.gather(phases, function, batch_dims=1)
    )
    inputs = tf.concat([x[..., None], tf.one_hot(function, num_functions)], axis=-1)
    return inputs, y


@dataclasses.dataclass(frozen=True)
class SineEpisodes:
    """Episode source of incremental sine regression (module doc); a block is one function's
    S steps in the continual order."""

    regression = True
    output_size = 1

    num_functions: int = 10
    steps_per_function: int = 40
    batch_size: int = 32
    order: str = "iid"
    pool_size: int = 400
    pool_seed: int = 0
    query_points: int = 32

    def __post_init__(self):
        if self.order not in ORDERS:
            raise ValueError(f"order {self.order!r}; one of {ORDERS}")
        for name in (
            "num_functions",
            "steps_per_function",
            "batch_size",
            "pool_size",
            "query_points",
        ):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"sine episodes: {name} must be an int >= 1, got {value!r}")

    @property
    def name(self) -> str:
        return f"sine.{self.order}"

    @property
    def input_size(self) -> int:
        return 1 + self.num_functions

    @property
    def length(self) -> int:
        """T: inner steps of one episode."""
        return self.num_functions * self.steps_per_function

    @property
    def blocks(self) -> int:
        return self.num_functions

    @property
    def block_length(self) -> int:
        return self.steps_per_function

    def pool(self):
        """(A [pool_size], φ [pool_size]): the fixed meta-training functions."""
        a, phi = draw_amplitudes_phases(
            tf.constant([self.pool_seed, 17], tf.int64), [self.pool_size]
        )
        return a, phi

    def functions(self, seed, population: int, stream: str):
        """(A, φ) [P, K]: from the pool ('train', without repetition in an episode) or fresh
        ('eval')."""
        if stream == "eval":
            return draw_amplitudes_phases(seed, [population, self.num_functions])
        if self.num_functions > self.pool_size:
            raise ValueError(
                f"an episode of {self.num_functions} functions needs a pool of at "
                f"least as many, got {self.pool_size}"
            )
        keys = tf.random.stateless_uniform([population, self.pool_size], seed)
        ids = tf.argsort(keys, axis=1)[:, : self.num_functions]
        a, phi = self.pool()
        return tf.gather(a, ids), tf.gather(phi, ids)

    def sample(self, seed, population: int, stream: str = "train"):
        """(xs [T, P, B, 1 + K], ys [T, P, B], x_query [P, K·Q, 1 + K], y_query [P, K·Q]) of P
        episodes; stateless in `seed` (int64 [2])."""
        fold = lambda i: tf.random.experimental.stateless_fold_in(seed, i)
        a, phi = self.functions(fold(0), population, stream)
        xs, ys = episode_examples(
            fold(1), a, phi, self.steps_per_function, self.batch_size, self.order
        )
        x_query, y_query = query_examples(fold(2), a, phi, self.query_points)
        return xs, ys, x_query, y_query

"""Stateless seed derivation: every random draw of a run is a pure function of (seed, meta_step).

The trainer holds no RNG state: seeds for data, task choice and synapse initialization are
derived from the run seed and the outer step, so the same command gives the same genome and a
resumed run continues exactly as an uninterrupted one would.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

# Salts that separate the purposes a seed is used for.
DATA, EVAL, TASKS, SYNAPSES, VALIDATION, SEARCH = 1, 2, 3, 4, 5, 6  # SEARCH: CMA-ES sampling


def step_seed(seed: int, step: int, salt: int = 0) -> np.ndarray:
    """A stateless-RNG seed [2] (int64) for outer step `step` of run `seed` and a purpose salt."""
    state = np.random.SeedSequence([int(seed), int(step), int(salt)]).generate_state(2, np.uint32)
    return state.astype(np.int64)


def int_seed(seed: int, step: int, salt: int = 0) -> int:
    """A non-negative Python int derived from (seed, step, salt), for APIs that take an int seed."""
    return int(np.random.SeedSequence([int(seed), int(step), int(salt)]).generate_state(1)[0] >> 1)


def fold(seed: tf.Tensor, data) -> tf.Tensor:
    """In-graph: a new seed [2] from `seed` and an int (or int tensor) `data`."""
    return tf.random.experimental.stateless_fold_in(seed, tf.cast(data, tf.int64))

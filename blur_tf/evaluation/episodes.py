"""Evaluation of online-episode learners (FLP family, BLUR) on fresh episodes.

`evaluate_episodes(network, params, episodes, num_episodes, seed)` runs `num_episodes` fresh
episodes (evaluation functions or alphabets, never meta-training ones) with one meta-learned
parameter set and reports a JSON-ready dict. The query outputs are recorded before the episode
and after every block of steps (a block: one function's or one class's steps; in the continual
order, right after that function or class was learned).

Regression (`episodes.regression`, incremental sine):

* `mse` (± `mse_se`, standard error over episodes): query MSE after the whole episode (the
  paper's metric: Q fresh points of every function);
* `mse_no_plasticity`: the same queries on the initial network (no inner step);
* `mse_zero`: the queries' MSE of predicting 0 (the trivial reference);
* `interference`: how much learning the later functions changes the outputs on earlier ones,
  mean over functions k < K and their queries of (ŷ_end − ŷ_k)², ŷ_k the output right after
  block k and ŷ_end after the episode;
* `mse_by_function`: final query MSE per function position (list).

Classification (online Omniglot):

* `error` (± `error_se`): query error rate after the episode (the paper reports it in %);
* `error_no_plasticity`: the same queries before the first step; `error_chance`: 1 − 1/N;
* `forgetting`: mean over classes k < N of (accuracy on class k's queries right after block k
  − accuracy on them at the end), the classification counterpart of `interference`;
* `error_by_class`: final error per class position (list).
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from blur_tf.meta.estimators import repeat_genome


def _block_outputs(network, params, state, xs, ys, x_query, blocks: int, block_length: int):
    """Query outputs [blocks + 1, P, N, C] before the episode and after every block of steps."""
    outputs = [network.outputs(params, state, x_query)]
    for k in range(blocks):
        offset = k * block_length
        state = network.unroll(
            params, state, lambda t, offset=offset: (xs[offset + t], ys[offset + t]), block_length
        )
        outputs.append(network.outputs(params, state, x_query))
    return tf.stack(outputs)


def _standard_error(values: np.ndarray) -> float:
    return float(values.std(ddof=1) / np.sqrt(len(values))) if len(values) > 1 else 0.0


def evaluate_episodes(network, params, episodes, num_episodes: int, seed: int = 0) -> dict:
    """Scores of `params` (population 1) on fresh episodes (module doc)."""
    if not isinstance(num_episodes, int) or num_episodes < 1:
        raise ValueError(f"num_episodes must be an int >= 1, got {num_episodes!r}")
    params = repeat_genome(
        tf.nest.map_structure(lambda v: tf.convert_to_tensor(v, tf.float32), params), num_episodes
    )
    xs, ys, x_query, y_query = episodes.sample(
        tf.constant([seed, 12345], tf.int64), num_episodes, "eval"
    )
    state = network.init_synapses(num_episodes, seed)
    k, q = episodes.blocks, episodes.query_points
    outputs = tf.function(_block_outputs, autograph=False)(
        network, params, state, xs, ys, x_query, k, episodes.block_length
    ).numpy()  # [K + 1, P, K·Q, C]
    y = y_query.numpy()  # [P, K·Q]
    if episodes.regression:
        outputs = outputs[..., 0]
        loss = (outputs - y[None]) ** 2  # [K + 1, P, K·Q]
        per_block = outputs.reshape(k + 1, num_episodes, k, q)
        changes = [
            ((per_block[-1, :, j] - per_block[j + 1, :, j]) ** 2).mean() for j in range(k - 1)
        ]
        final = loss[-1].mean(axis=1)  # [P]
        return {
            "mse": float(final.mean()),
            "mse_se": _standard_error(final),
            "mse_no_plasticity": float(loss[0].mean()),
            "mse_zero": float((y**2).mean()),
            "interference": float(np.mean(changes)) if changes else 0.0,
            "mse_by_function": loss[-1].reshape(num_episodes, k, q).mean(axis=(0, 2)).tolist(),
            "episodes": num_episodes,
        }
    correct = (outputs.argmax(-1) == y[None]).astype(np.float64)  # [K + 1, P, K·Q]
    per_block = correct.reshape(k + 1, num_episodes, k, q).mean(axis=(1, 3))  # [K + 1, K]
    final = 1.0 - correct[-1].mean(axis=1)
    return {
        "error": float(final.mean()),
        "error_se": _standard_error(final),
        "error_no_plasticity": float(1.0 - correct[0].mean()),
        "error_chance": 1.0 - 1.0 / episodes.output_size,
        "forgetting": (
            float(np.mean([per_block[j + 1, j] - per_block[-1, j] for j in range(k - 1)]))
            if k > 1
            else 0.0
        ),
        "error_by_class": (1.0 - per_block[-1]).tolist(),
        "episodes": num_episodes,
    }

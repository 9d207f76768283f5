"""Evaluation of FLP-family learners on regression episodes (incremental sine regression).

`evaluate_episodes(network, params, episodes, num_episodes, seed)` runs `num_episodes` fresh
episodes (evaluation functions, never the meta-training pool) with one meta-learned parameter
set and reports, as a JSON-ready dict of floats:

* `mse` (± `mse_se`, standard error over episodes): query MSE after the whole episode (the
  paper's metric: Q fresh points of every function);
* `mse_no_plasticity`: the same queries on the initial network (no inner step);
* `mse_zero`: the queries' MSE of predicting 0 (the trivial reference);
* `interference`: how much learning the later functions changes the outputs on earlier ones,
  mean over functions k < K and their queries of (ŷ_end − ŷ_k)², where ŷ_k is the output
  right after the k-th block of S steps (in the continual order: right after function k was
  learned) and ŷ_end after the episode;
* `mse_by_function`: final query MSE per function position (list).
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from blur_tf.meta.estimators import repeat_genome


def _block_outputs(network, params, xs, ys, x_query, blocks: int, block_length: int):
    """Query outputs [blocks + 1, P, N] before the episode and after every block of steps."""
    plastic = tuple(params.weights[network.num_layers - network.num_plastic :])
    outputs = [network.outputs(params, plastic, x_query)[..., 0]]
    for k in range(blocks):

        def body(t, plastic, k=k):
            step = k * block_length + t
            return t + 1, network.step(params, plastic, xs[step], ys[step])

        plastic = tf.while_loop(lambda t, _: t < block_length, body, (tf.constant(0), plastic))[1]
        outputs.append(network.outputs(params, plastic, x_query)[..., 0])
    return tf.stack(outputs)


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
    k, q = episodes.num_functions, episodes.query_points
    outputs = tf.function(_block_outputs, autograph=False)(
        network, params, xs, ys, x_query, k, episodes.steps_per_function
    ).numpy()
    y = y_query.numpy()
    squared = (outputs - y[None]) ** 2  # [K + 1, P, K·Q]
    final = squared[-1].mean(axis=1)  # [P]
    by_function = squared[-1].reshape(num_episodes, k, q).mean(axis=(0, 2))
    per_function = outputs.reshape(k + 1, num_episodes, k, q)
    changes = [
        ((per_function[-1, :, j] - per_function[j + 1, :, j]) ** 2).mean() for j in range(k - 1)
    ]
    return {
        "mse": float(final.mean()),
        "mse_se": float(final.std(ddof=1) / np.sqrt(num_episodes)) if num_episodes > 1 else 0.0,
        "mse_no_plasticity": float(squared[0].mean()),
        "mse_zero": float((y**2).mean()),
        "interference": float(np.mean(changes)) if changes else 0.0,
        "mse_by_function": by_function.tolist(),
        "episodes": num_episodes,
    }

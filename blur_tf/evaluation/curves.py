"""Accuracy curves: BLUR genomes and gradient baselines on the same batches and initial weights.

`genome_curves` trains fresh BLUR networks from every seed for max(horizons) inner steps (all
configurations × seeds as one population, one compiled `tf.while_loop` per segment between
consecutive horizons) and measures test accuracy at every horizon on the same held-out
examples. `baseline_curves` does the same for SGD / momentum / Adam sweeps (blur_tf.baselines)
on **the same batches in the same order** (one `BatchFn` from `seeded_batches` shared by every
method) and the same initial weights (channel 0 of the same initial synapses).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np
import tensorflow as tf

from blur_tf import baselines
from blur_tf.genome import Genome
from blur_tf.network import BlurNetwork
from blur_tf.rule import Rule

_EVAL_FLOATS = 1 << 24  # max floats of one layer's states per evaluation chunk


def seeded_batches(task, seeds: Sequence[int], batch_size: int) -> baselines.BatchFn:
    """BatchFn of a task: step t → one training batch per seed, x [S, B, n], y [S, B].

    Seed s's batch at step t is `task.sample_train([s, t], batch_size)`: pure, in-graph, the
    same for every method evaluated with this function.
    """
    seeds = baselines.check_seeds(seeds)
    if int(batch_size) < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")

    def batch(t):
        t = tf.cast(t, tf.int64)
        pairs = [
            task.sample_train(tf.stack([tf.constant(s, tf.int64), t]), int(batch_size))
            for s in seeds
        ]
        return (
            tf.stack([tf.cast(x, tf.float32) for x, _ in pairs]),
            tf.stack([tf.cast(y, tf.int32) for _, y in pairs]),
        )

    return batch


@dataclasses.dataclass(frozen=True)
class GenomeCurves:
    """accuracy [G, S, H] (configs × seeds × horizons) and final synapses (population G·S)."""

    accuracy: np.ndarray
    synapses: tuple


def _tile_population(t, times: int):
    return t if times == 1 else tf.tile(t, [times] + [1] * (t.shape.rank - 1))


def genome_curves(
    layer_sizes: Sequence[int],
    genome: Genome,
    rule: Rule,
    seeds: Sequence[int],
    batch_fn: baselines.BatchFn,
    eval_x,
    eval_y,
    horizons: Sequence[int],
    eval_chunk: int | None = None,
) -> GenomeCurves:
    """Trains fresh BLUR networks with every genome member from every seed; accuracy per horizon.

    Population member g·S + s runs genome member g from `init_synapses(1, seeds[s])` on seed
    s's batches. Training is one compiled `tf.while_loop` per segment between horizons;
    accuracy is measured on (eval_x [N, n_0], eval_y [N]) in chunks (rules with normalization
    use each chunk's statistics, as BlurModel.predict does).
    """
    horizons = baselines.check_horizons(horizons)
    seeds = baselines.check_seeds(seeds)
    rule.check_genome(genome)
    network = BlurNetwork(layer_sizes, rule)
    g, s = genome.population, len(seeds)
    genome = genome.as_tensors()
    if g > 1:
        genome = genome.take(np.repeat(np.arange(g), s))
    per_seed = [network.init_synapses(1, seed) for seed in seeds]
    synapses = tuple(
        tuple(_tile_population(tf.concat([p[l][i] for p in per_seed], 0), g) for i in range(2))
        for l in range(network.num_layers)
    )

    def batch(t):
        x, y = batch_fn(t)
        return _tile_population(x, g), _tile_population(y, g)

    @tf.function
    def train(synapses, start, stop):
        return network.unroll(genome, synapses, lambda t: batch(start + t), stop - start)

    @tf.function(reduce_retracing=True)
    def correct(synapses, x, y):
        forwards, _ = network.to_channel_major(synapses)
        return count_blur_correct(network, genome, forwards, x, y)

    if eval_chunk is None:
        widest = max(network.layer_sizes) + 1
        eval_chunk = int(np.clip(_EVAL_FLOATS // (g * s * rule.num_states * widest), 100, 2000))
    eval_x = tf.convert_to_tensor(eval_x, tf.float32)
    eval_y = tf.convert_to_tensor(eval_y, tf.int32)
    accuracies, done = [], 0
    for horizon in horizons:
        synapses = train(synapses, tf.constant(done), tf.constant(horizon))
        done = horizon
        acc = baselines.evaluate_accuracy(correct, synapses, eval_x, eval_y, eval_chunk)
        accuracies.append(acc.reshape(g, s))
    return GenomeCurves(accuracy=np.stack(accuracies, axis=-1), synapses=synapses)


def count_blur_correct(network: BlurNetwork, genome: Genome, forwards, x, y):
    """Correct predictions per population member of x [B, n_0] (shared by all members)."""
    logits = network.predict_channel_major(genome, forwards, x[None])
    return baselines.count_correct(logits, y)


def baseline_curves(
    layer_sizes: Sequence[int],
    optimizer: str,
    activations: Sequence[str],
    learning_rates: Sequence[float],
    seeds: Sequence[int],
    batch_fn: baselines.BatchFn,
    eval_x,
    eval_y,
    horizons: Sequence[int],
    init_rule: Rule | None = None,
) -> tuple[np.ndarray, tuple]:
    """One optimizer swept over activations × learning rates: (accuracy [A·L, S, H], configs).

    Config index a·L + l is (activations[a], learning_rates[l]).
    """
    accuracy, configs = [], []
    for activation in activations:
        result = baselines.sweep_curves(
            layer_sizes,
            optimizer,
            activation,
            learning_rates,
            seeds,
            batch_fn,
            eval_x,
            eval_y,
            horizons,
            init_rule,
        )
        accuracy.append(result.accuracy)
        configs += [{"activation": activation, "learning_rate": lr} for lr in learning_rates]
    return np.concatenate(accuracy, axis=0), tuple(configs)

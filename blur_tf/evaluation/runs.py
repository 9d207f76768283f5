"""One evaluation run: a learner and the baselines on one task and architecture."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import numpy as np
import tensorflow as tf

from blur_tf import baselines
from blur_tf.evaluation.curves import baseline_curves, genome_curves, seeded_batches
from blur_tf.evaluation.selection import best_per_horizon
from blur_tf.evaluation.sources import BACKPROP, Learner

METHOD_BLUR = "blur"  # the learner's method name in results (the baselines: their optimizer)


def evaluate_run(
    task,
    hidden_sizes: Sequence[int],
    horizons: Sequence[int],
    seeds: Sequence[int],
    batch_size: int,
    learner: Learner | None = None,
    optimizers: Sequence[str] = baselines.OPTIMIZERS,
    activations: Sequence[str] = baselines.ACTIVATIONS,
    learning_rates: Sequence[float] = baselines.DEFAULT_LEARNING_RATES,
    max_eval_examples: int | None = None,
    log: Callable[[str], None] = lambda message: None,
    method_done: Callable[[], None] = lambda: None,
) -> dict:
    """A learner and the baselines on one task and architecture; a JSON-ready dict.

    The network is [task.input_size, *hidden_sizes, task.num_classes]; every method sees
    `seeded_batches(task, seeds, batch_size)` and `task.eval_set(max_eval_examples)` (the full
    test split for image tasks). Baseline initial weights are channel 0 of the learner's
    initial synapses (its rule; `Rule.backprop()` without a learner). `method_done()` is
    called after each method (the learner, each optimizer), e.g. to advance a progress bar.
    Returns {'task', 'layer_sizes', 'eval_examples', 'methods': {name: {'per_horizon': [...]
    (`HorizonBest.to_dict()`), 'accuracy': [[...]] (configs × seeds × horizons), 'configs':
    [...], 'seconds': …}}}.
    """
    horizons = baselines.check_horizons(horizons)
    layer_sizes = [int(task.input_size), *[int(n) for n in hidden_sizes], int(task.num_classes)]
    batch_fn = seeded_batches(task, seeds, batch_size)
    eval_x, eval_y = task.eval_set(max_eval_examples)
    eval_x = tf.convert_to_tensor(eval_x, tf.float32)
    eval_y = tf.convert_to_tensor(eval_y, tf.int32)
    methods = {}
    if learner is not None:
        start = time.perf_counter()
        curves = genome_curves(
            layer_sizes, learner.genome, learner.rule, seeds, batch_fn, eval_x, eval_y, horizons
        )
        grid = (
            [c["learning_rate"] for c in learner.configs]
            if learner.name == BACKPROP and len(learner.configs) > 1
            else None
        )
        methods[METHOD_BLUR] = _method_entry(
            curves.accuracy,
            learner.configs,
            horizons,
            grid,
            time.perf_counter() - start,
            genome=learner.name,
            rule=learner.rule.to_dict(),
        )
        log(f"{METHOD_BLUR} ({learner.name}): {methods[METHOD_BLUR]['seconds']:.1f}s")
        method_done()
    init_rule = learner.rule if learner is not None else None
    for optimizer in optimizers:
        start = time.perf_counter()
        accuracy, configs = baseline_curves(
            layer_sizes,
            optimizer,
            activations,
            learning_rates,
            seeds,
            batch_fn,
            eval_x,
            eval_y,
            horizons,
            init_rule,
        )
        methods[optimizer] = _method_entry(
            accuracy, configs, horizons, learning_rates, time.perf_counter() - start
        )
        log(f"{optimizer}: {methods[optimizer]['seconds']:.1f}s")
        method_done()
    return {
        "task": getattr(task, "spec", str(task)),
        "layer_sizes": layer_sizes,
        "horizons": list(horizons),
        "seeds": list(seeds),
        "batch_size": int(batch_size),
        "eval_examples": int(eval_x.shape[0]),
        "methods": methods,
    }


def _method_entry(accuracy, configs, horizons, grid, seconds, **extra) -> dict:
    return {
        **extra,
        "per_horizon": [
            row.to_dict() for row in best_per_horizon(accuracy, configs, horizons, grid)
        ],
        "configs": [dict(c) for c in configs],
        "accuracy": np.round(np.asarray(accuracy, np.float64), 6).tolist(),
        "seconds": round(float(seconds), 3),
    }

"""Evaluation of genomes against gradient baselines: accuracy per inner step, tables, plots.

A *learner* is a genome (one or several population members, each a configuration) with its
rule. `genome_curves` trains fresh BLUR networks from every seed for max(horizons) inner steps
(all configurations × seeds as one population, one compiled `tf.while_loop` per segment between
consecutive horizons) and measures test accuracy at every horizon on the same held-out
examples. `baseline_curves` does the same for SGD / momentum / Adam sweeps (blur_tf.baselines)
on **the same batches in the same order** (one `BatchFn` shared by every method) and the same
initial weights (channel 0 of the same initial synapses).

Selection: for every horizon the configuration (learning rate, activation; or genome member)
with the best mean accuracy over seeds **at that horizon** is reported, with its mean and
standard deviation over seeds — as learned-optimizer papers do. The selection uses the same
held-out examples it reports on, which favours the swept baselines (and a swept backprop
genome), never a single learned genome.

Genome sources (`load_learner`):
  * `backprop`: `Genome.backprop(lr)` with `Rule.backprop(activation)`; with no fixed lr, the
    lr is swept over the baselines' grid like SGD (each lr one population member, selected per
    horizon), so its curve reproduces SGD with that activation (a fairness check).
  * a `genome.json` path: the rule is `metadata.rule` from the file when present (written by
    the meta-trainer), else `Rule(num_states=K)`; explicit overrides (`parse_rule_overrides`)
    are applied on top. Of a genome with population P > 1, one member is evaluated (`member`,
    default 0), or with `member=None` every member as a configuration (best per horizon).
"""

from __future__ import annotations

import csv
import dataclasses
import io
import os
import time
from typing import Callable, Sequence

import numpy as np
import tensorflow as tf

from blur_tf import baselines
from blur_tf.config import parse_rule_overrides  # re-exported: evaluate/export --rule
from blur_tf.files import atomic_write
from blur_tf.genome import Genome
from blur_tf.network import BlurNetwork
from blur_tf.rule import Rule

BACKPROP = "backprop"
METHOD_BLUR = "blur"
_EVAL_FLOATS = 1 << 24  # max floats of one layer's states per evaluation chunk


# ------------------------------------------------------------------------------- learners
@dataclasses.dataclass(frozen=True)
class Learner:
    """A genome to evaluate: G configurations (population members) sharing one rule.

    Attributes:
      name: 'backprop' or the genome file path.
      genome: Genome with population G.
      rule: the static rule every member runs with.
      configs: G dicts describing each member (e.g. {'learning_rate': 0.1}).
    """

    name: str
    genome: Genome
    rule: Rule
    configs: tuple


def read_genome_file(path: str) -> tuple[Genome, dict | None]:
    """(genome, metadata rule dict or None) from a genome.json; ValueError if malformed."""
    genome, metadata = Genome.load_with_metadata(path)
    rule = metadata.get("rule")
    if rule is not None and not isinstance(rule, dict):
        raise ValueError(f"genome file {path}: metadata.rule must be a dict, got {rule!r}")
    return genome, rule


def load_learner(source: str, rule_overrides: dict | None = None, member: int | None = 0,
                 backprop_learning_rates: Sequence[float] = baselines.DEFAULT_LEARNING_RATES,
                 backprop_activation: str = "tanh") -> Learner:
    """The learner named by `source` ('backprop' or a genome.json path); see module docstring."""
    overrides = dict(rule_overrides or {})
    if source == BACKPROP:
        rates = baselines.check_learning_rates(backprop_learning_rates)
        rule = dataclasses.replace(Rule.backprop(backprop_activation), **overrides)
        genome = Genome.concat([Genome.backprop(lr) for lr in rates])
        configs = tuple({"learning_rate": lr, "activation": backprop_activation} for lr in rates)
        learner = Learner(BACKPROP, genome, rule, configs)
    else:
        genome, rule_dict = read_genome_file(source)
        try:
            base = Rule.from_dict(rule_dict) if rule_dict else Rule(num_states=genome.num_states)
            rule = dataclasses.replace(base, **overrides)
        except (TypeError, ValueError) as e:
            raise ValueError(f"genome file {source}: bad rule: {e}") from None
        if member is not None:
            if not 0 <= member < genome.population:
                raise ValueError(f"genome member {member} out of range: {source} holds "
                                 f"{genome.population} genome(s)")
            members = [member]
        else:
            members = list(range(genome.population))
        genome = genome.take(members)
        learner = Learner(source, genome, rule, tuple({"member": m} for m in members))
    learner.rule.check_genome(learner.genome)
    return learner


# ------------------------------------------------------------------------------- data
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
        pairs = [task.sample_train(tf.stack([tf.constant(s, tf.int64), t]), int(batch_size))
                 for s in seeds]
        return (tf.stack([tf.cast(x, tf.float32) for x, _ in pairs]),
                tf.stack([tf.cast(y, tf.int32) for _, y in pairs]))

    return batch


# ------------------------------------------------------------------------------- curves
@dataclasses.dataclass(frozen=True)
class GenomeCurves:
    """accuracy [G, S, H] (configs × seeds × horizons) and final synapses (population G·S)."""

    accuracy: np.ndarray
    synapses: tuple


def _tile_population(t, times: int):
    return t if times == 1 else tf.tile(t, [times] + [1] * (t.shape.rank - 1))


def genome_curves(layer_sizes: Sequence[int], genome: Genome, rule: Rule,
                  seeds: Sequence[int], batch_fn: baselines.BatchFn, eval_x, eval_y,
                  horizons: Sequence[int], eval_chunk: int | None = None) -> GenomeCurves:
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
        for l in range(network.num_layers))

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


def baseline_curves(layer_sizes: Sequence[int], optimizer: str, activations: Sequence[str],
                    learning_rates: Sequence[float], seeds: Sequence[int],
                    batch_fn: baselines.BatchFn, eval_x, eval_y, horizons: Sequence[int],
                    init_rule: Rule | None = None) -> tuple[np.ndarray, tuple]:
    """One optimizer swept over activations × learning rates: (accuracy [A·L, S, H], configs).

    Config index a·L + l is (activations[a], learning_rates[l]).
    """
    accuracy, configs = [], []
    for activation in activations:
        result = baselines.sweep_curves(layer_sizes, optimizer, activation, learning_rates,
                                        seeds, batch_fn, eval_x, eval_y, horizons, init_rule)
        accuracy.append(result.accuracy)
        configs += [{"activation": activation, "learning_rate": lr} for lr in learning_rates]
    return np.concatenate(accuracy, axis=0), tuple(configs)


# ------------------------------------------------------------------------------- selection
def best_per_horizon(accuracy: np.ndarray, configs: Sequence[dict], horizons: Sequence[int],
                     learning_rates: Sequence[float] | None = None) -> list[dict]:
    """For every horizon, the config with the best mean accuracy over seeds at that horizon.

    accuracy [C, S, H]. Returns one dict per horizon: horizon, mean, std (over seeds, ddof 0),
    config, and at_edge (whether the winner's learning rate is the smallest or largest of
    `learning_rates`, and so is that of every config tied with it; None when no grid is
    given). Ties go to the first config.
    """
    accuracy = np.asarray(accuracy, np.float64)
    if accuracy.ndim != 3 or accuracy.shape[0] != len(configs) or \
            accuracy.shape[2] != len(horizons):
        raise ValueError(f"accuracy shape {accuracy.shape} does not match {len(configs)} "
                         f"configs and {len(horizons)} horizons")
    means, stds = accuracy.mean(axis=1), accuracy.std(axis=1)
    rows = []
    for h, horizon in enumerate(horizons):
        best = int(np.argmax(means[:, h]))
        config = dict(configs[best])
        at_edge = None
        if learning_rates is not None and "learning_rate" in config:
            edges = (min(learning_rates), max(learning_rates))
            tied = np.flatnonzero(means[:, h] == means[best, h])
            at_edge = all(configs[i].get("learning_rate") in edges for i in tied)
        rows.append({"horizon": int(horizon), "mean": float(means[best, h]),
                     "std": float(stds[best, h]), "config": config, "at_edge": at_edge})
    return rows


# ------------------------------------------------------------------------------- one run
def evaluate_run(task, hidden_sizes: Sequence[int], horizons: Sequence[int],
                 seeds: Sequence[int], batch_size: int, learner: Learner | None = None,
                 optimizers: Sequence[str] = baselines.OPTIMIZERS,
                 activations: Sequence[str] = baselines.ACTIVATIONS,
                 learning_rates: Sequence[float] = baselines.DEFAULT_LEARNING_RATES,
                 max_eval_examples: int | None = None,
                 log: Callable[[str], None] = lambda message: None) -> dict:
    """A learner and the baselines on one task and architecture; a JSON-ready dict.

    The network is [task.input_size, *hidden_sizes, task.num_classes]; every method sees
    `seeded_batches(task, seeds, batch_size)` and `task.eval_set(max_eval_examples)` (the full
    test split for image tasks). Baseline initial weights are channel 0 of the learner's
    initial synapses (its rule; `Rule.backprop()` without a learner).
    Returns {'task', 'layer_sizes', 'eval_examples', 'methods': {name: {'per_horizon': [...],
    'accuracy': [[...]] (configs × seeds × horizons), 'configs': [...], 'seconds': …}}}.
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
        curves = genome_curves(layer_sizes, learner.genome, learner.rule, seeds, batch_fn,
                               eval_x, eval_y, horizons)
        grid = ([c["learning_rate"] for c in learner.configs]
                if learner.name == BACKPROP and len(learner.configs) > 1 else None)
        methods[METHOD_BLUR] = _method_entry(curves.accuracy, learner.configs, horizons, grid,
                                             time.perf_counter() - start,
                                             genome=learner.name, rule=learner.rule.to_dict())
        log(f"{METHOD_BLUR} ({learner.name}): {methods[METHOD_BLUR]['seconds']:.1f}s")
    init_rule = learner.rule if learner is not None else None
    for optimizer in optimizers:
        start = time.perf_counter()
        accuracy, configs = baseline_curves(layer_sizes, optimizer, activations, learning_rates,
                                            seeds, batch_fn, eval_x, eval_y, horizons, init_rule)
        methods[optimizer] = _method_entry(accuracy, configs, horizons, learning_rates,
                                           time.perf_counter() - start)
        log(f"{optimizer}: {methods[optimizer]['seconds']:.1f}s")
    return {"task": getattr(task, "spec", str(task)), "layer_sizes": layer_sizes,
            "horizons": list(horizons), "seeds": list(seeds), "batch_size": int(batch_size),
            "eval_examples": int(eval_x.shape[0]), "methods": methods}


def _method_entry(accuracy, configs, horizons, grid, seconds, **extra) -> dict:
    return {**extra, "per_horizon": best_per_horizon(accuracy, configs, horizons, grid),
            "configs": [dict(c) for c in configs],
            "accuracy": np.round(np.asarray(accuracy, np.float64), 6).tolist(),
            "seconds": round(float(seconds), 3)}


# ------------------------------------------------------------------------------- reports
def architecture_name(layer_sizes: Sequence[int]) -> str:
    return "-".join(str(n) for n in layer_sizes)


def result_rows(runs: Sequence[dict]) -> list[dict]:
    """Flat rows (one per task × architecture × method × horizon) for CSV and tables."""
    rows = []
    for run in runs:
        for method, entry in run["methods"].items():
            for row in entry["per_horizon"]:
                config = row["config"]
                rows.append({
                    "task": run["task"], "layer_sizes": architecture_name(run["layer_sizes"]),
                    "method": method, "horizon": row["horizon"],
                    "mean_accuracy": round(row["mean"], 6), "std_accuracy": round(row["std"], 6),
                    "learning_rate": config.get("learning_rate", ""),
                    "activation": config.get("activation", ""),
                    "member": config.get("member", ""),
                    "lr_at_grid_edge": "" if row["at_edge"] is None else row["at_edge"]})
    return rows


def format_table(run: dict) -> str:
    """A text table of one run: horizons × methods, 'mean±std [winning config]'."""
    methods = list(run["methods"])
    header = ["steps"] + methods
    lines = []
    for h, horizon in enumerate(run["horizons"]):
        cells = [str(horizon)]
        for method in methods:
            row = run["methods"][method]["per_horizon"][h]
            cfg = row["config"]
            detail = ""
            if "learning_rate" in cfg and len(run["methods"][method]["configs"]) > 1:
                detail = f" lr={cfg['learning_rate']:g}"
                if cfg.get("activation") and method != METHOD_BLUR:
                    detail += f",{cfg['activation']}"
                if row["at_edge"]:
                    detail += "!"
            cells.append(f"{row['mean']:.4f}±{row['std']:.4f}{detail}")
        lines.append(cells)
    widths = [max(len(r[i]) for r in [header] + lines) for i in range(len(header))]
    fmt = lambda cells: "  ".join(c.ljust(w) for c, w in zip(cells, widths))  # noqa: E731
    title = f"{run['task']}  [{architecture_name(run['layer_sizes'])}]  " \
            f"seeds={run['seeds']} batch={run['batch_size']} eval={run['eval_examples']}"
    return "\n".join([title, fmt(header), fmt(["-" * w for w in widths])] +
                     [fmt(cells) for cells in lines])


def generalization_table(runs: Sequence[dict]) -> str:
    """One line per task × architecture: BLUR's mean accuracy per horizon, and in brackets the
    best baseline's (the best over every baseline and configuration at that horizon)."""
    if not runs:
        return ""
    horizons = runs[0]["horizons"]
    header = ["task", "layer_sizes"] + [f"@{h}" for h in horizons]
    lines = []
    for run in runs:
        if list(run["horizons"]) != list(horizons):
            raise ValueError("generalization_table needs runs with the same horizons")
        cells = [run["task"], architecture_name(run["layer_sizes"])]
        others = [m for m in run["methods"] if m != METHOD_BLUR]
        for h in range(len(horizons)):
            blur = run["methods"].get(METHOD_BLUR)
            text = f"{blur['per_horizon'][h]['mean']:.3f}" if blur else "-"
            if others:
                best = max(run["methods"][m]["per_horizon"][h]["mean"] for m in others)
                text += f" ({best:.3f})"
            cells.append(text)
        lines.append(cells)
    widths = [max(len(r[i]) for r in [header] + lines) for i in range(len(header))]
    fmt = lambda cells: "  ".join(c.ljust(w) for c, w in zip(cells, widths))  # noqa: E731
    return "\n".join(["BLUR test accuracy (best baseline) per horizon", fmt(header)] +
                     [fmt(cells) for cells in lines])


def write_csv_atomic(path: str, rows: Sequence[dict]) -> None:
    """Writes rows (dicts with equal keys) as CSV via a temporary file and an atomic rename."""
    buffer = io.StringIO()
    if rows:
        writer = csv.DictWriter(buffer, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    atomic_write(path, lambda f: f.write(buffer.getvalue()))


def plot_curves(runs: Sequence[dict], path: str) -> None:
    """Accuracy vs inner steps (log-x), one panel per task × architecture; atomic PNG write.

    Every method's per-horizon best is drawn as mean with a ±std band over seeds; BLUR solid,
    baselines dashed.
    """
    import matplotlib
    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    n = len(runs)
    cols = min(n, 3)
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(5.2 * cols, 4.0 * rows), squeeze=False)
    styles = {METHOD_BLUR: ("C3", "-", "o"), "sgd": ("C0", "--", "s"),
              "momentum": ("C1", "--", "^"), "adam": ("C2", "--", "D")}
    for ax, run in zip(axes.flat, runs):
        for method, entry in run["methods"].items():
            color, line, marker = styles.get(method, ("k", ":", "x"))
            hs = [r["horizon"] for r in entry["per_horizon"]]
            mean = np.array([r["mean"] for r in entry["per_horizon"]])
            std = np.array([r["std"] for r in entry["per_horizon"]])
            if method == METHOD_BLUR:
                swept = ", best lr per horizon" if len(entry["configs"]) > 1 else ""
                label = f"BLUR ({os.path.basename(entry.get('genome', ''))}{swept})"
            else:
                label = f"{method} (best lr, activation per horizon)"
            ax.plot(hs, mean, line, color=color, marker=marker, markersize=4, label=label)
            ax.fill_between(hs, mean - std, mean + std, color=color, alpha=0.15, linewidth=0)
        ax.set_xscale("log")
        ax.set_xlabel("inner steps (training batches seen)")
        ax.set_ylabel("test accuracy")
        ax.set_title(f"{run['task']}  [{architecture_name(run['layer_sizes'])}]", fontsize=10)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8, loc="best")
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    fig.tight_layout()
    atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=110), binary=True)
    plt.close(fig)


SWEEP_OPTIMIZERS = ("sgd", "momentum")


def plot_sweep(runs: Sequence[dict], path: str) -> bool:
    """The paper's Fig. 6: the learner against SGD and momentum at *every* grid configuration.

    One row per task × architecture, one panel per optimizer of `SWEEP_OPTIMIZERS` present in
    the runs: every (learning rate, activation) configuration's mean accuracy over seeds as a
    thin line (colour: learning rate on a log scale; solid tanh, dotted relu), and the learner's
    per-horizon best as a thick red line. Atomic PNG write; returns False (nothing written)
    when no run has both a learner and one of those optimizers.
    """
    import matplotlib
    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    runs = [r for r in runs if METHOD_BLUR in r["methods"]]
    optimizers = [o for o in SWEEP_OPTIMIZERS if any(o in r["methods"] for r in runs)]
    if not runs or not optimizers:
        return False
    fig, axes = plt.subplots(len(runs), len(optimizers), squeeze=False,
                             figsize=(5.6 * len(optimizers), 4.2 * len(runs)))
    for row, run in zip(axes, runs):
        blur = run["methods"][METHOD_BLUR]
        hs = [r["horizon"] for r in blur["per_horizon"]]
        for ax, optimizer in zip(row, optimizers):
            entry = run["methods"].get(optimizer)
            if entry is not None:
                rates = sorted({c["learning_rate"] for c in entry["configs"]})
                colors = plt.cm.viridis(np.linspace(0.0, 0.9, len(rates)))
                color_of = dict(zip(rates, colors))
                mean = np.asarray(entry["accuracy"], np.float64).mean(axis=1)
                for config, curve in zip(entry["configs"], mean):
                    style = ":" if config.get("activation") == "relu" else "-"
                    ax.plot(hs, curve, style, color=color_of[config["learning_rate"]],
                            linewidth=0.9, alpha=0.85)
                for lr in rates:  # one legend entry per learning rate
                    ax.plot([], [], "-", color=color_of[lr], label=f"{optimizer} lr={lr:g}")
            ax.plot(hs, [r["mean"] for r in blur["per_horizon"]], "-o", color="C3",
                    linewidth=2.5, markersize=4,
                    label=f"BLUR ({os.path.basename(blur.get('genome', ''))})")
            ax.set_xscale("log")
            ax.set_xlabel("inner steps (training batches seen)")
            ax.set_ylabel("test accuracy")
            ax.set_ylim(0.0, 1.0)
            ax.set_title(f"{run['task']}  [{architecture_name(run['layer_sizes'])}]\n"
                         f"{optimizer}: every learning rate (solid tanh, dotted relu)",
                         fontsize=9)
            ax.grid(True, which="both", alpha=0.3)
            ax.legend(fontsize=6, loc="lower right", ncol=2)
    fig.tight_layout()
    atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=100), binary=True)
    plt.close(fig)
    return True


def write_tensorboard(runs: Sequence[dict], logdir: str) -> None:
    """Scalars '<task>/<architecture>/<method>/accuracy' (and _std) at step = horizon."""
    writer = tf.summary.create_file_writer(logdir)
    with writer.as_default():
        for run in runs:
            prefix = f"{run['task']}/{architecture_name(run['layer_sizes'])}"
            for method, entry in run["methods"].items():
                for row in entry["per_horizon"]:
                    tf.summary.scalar(f"{prefix}/{method}/accuracy", row["mean"],
                                      step=row["horizon"])
                    tf.summary.scalar(f"{prefix}/{method}/accuracy_std", row["std"],
                                      step=row["horizon"])
    writer.flush()
    writer.close()

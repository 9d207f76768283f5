"""Reports of evaluation runs (the dicts of `evaluate_run`, as in results.json): text tables,
results.csv rows, curves.png / sweep.png and TensorBoard scalars.

Text tables and CSV go through `blur_tf.tables`, figures through `blur_tf.plotting`.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence

import numpy as np
import tensorflow as tf

from blur_tf import plotting
from blur_tf.evaluation.runs import METHOD_BLUR
from blur_tf.tables import text_table, write_csv_atomic  # noqa: F401  write_csv_atomic re-exported

SWEEP_OPTIMIZERS = ("sgd", "momentum")
STEPS_LABEL = "inner steps (training batches seen)"


def architecture_name(layer_sizes: Sequence[int]) -> str:
    return "-".join(str(n) for n in layer_sizes)


def _run_title(run: dict) -> str:
    return f"{run['task']}  [{architecture_name(run['layer_sizes'])}]"


@dataclasses.dataclass(frozen=True)
class ResultRow:
    """One line of results.csv (the fields are its columns, in order): the best configuration
    of one method at one horizon of one task × architecture. Absent settings are ''."""

    task: str
    layer_sizes: str
    method: str
    horizon: int
    mean_accuracy: float
    std_accuracy: float
    learning_rate: float | str
    activation: str
    member: int | str
    lr_at_grid_edge: bool | str


def result_rows(runs: Sequence[dict]) -> list[ResultRow]:
    """Flat rows (one per task × architecture × method × horizon) for CSV and tables."""
    rows = []
    for run in runs:
        for method, entry in run["methods"].items():
            for row in entry["per_horizon"]:
                config = row["config"]
                rows.append(
                    ResultRow(
                        task=run["task"],
                        layer_sizes=architecture_name(run["layer_sizes"]),
                        method=method,
                        horizon=row["horizon"],
                        mean_accuracy=round(row["mean"], 6),
                        std_accuracy=round(row["std"], 6),
                        learning_rate=config.get("learning_rate", ""),
                        activation=config.get("activation", ""),
                        member=config.get("member", ""),
                        lr_at_grid_edge="" if row["at_edge"] is None else row["at_edge"],
                    )
                )
    return rows


def format_table(run: dict) -> str:
    """A text table of one run: horizons × methods, 'mean±std [winning config]'."""
    methods = list(run["methods"])
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
    title = (
        f"{_run_title(run)}  "
        f"seeds={run['seeds']} batch={run['batch_size']} eval={run['eval_examples']}"
    )
    return text_table(["steps"] + methods, lines, title=[title], rule=True)


def generalization_table(runs: Sequence[dict]) -> str:
    """One line per task × architecture: BLUR's mean accuracy per horizon, and in brackets the
    best baseline's (the best over every baseline and configuration at that horizon)."""
    if not runs:
        return ""
    horizons = runs[0]["horizons"]
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
    return text_table(
        ["task", "layer_sizes"] + [f"@{h}" for h in horizons],
        lines,
        title=["BLUR test accuracy (best baseline) per horizon"],
    )


def _genome_label(entry: dict) -> str:
    return os.path.basename(entry.get("genome", ""))


def plot_curves(runs: Sequence[dict], path: str) -> None:
    """Accuracy vs inner steps (log-x), one panel per task × architecture; atomic PNG write.

    Every method's per-horizon best is drawn as mean with a ±std band over seeds; BLUR solid,
    baselines dashed.
    """
    n = len(runs)
    cols = min(n, 3)
    rows = (n + cols - 1) // cols
    fig, axes = plotting.pyplot().subplots(
        rows, cols, figsize=(5.2 * cols, 4.0 * rows), squeeze=False
    )
    styles = {
        METHOD_BLUR: ("C3", "-", "o"),
        "sgd": ("C0", "--", "s"),
        "momentum": ("C1", "--", "^"),
        "adam": ("C2", "--", "D"),
    }
    for ax, run in zip(axes.flat, runs):
        for method, entry in run["methods"].items():
            color, line, marker = styles.get(method, ("k", ":", "x"))
            hs = [r["horizon"] for r in entry["per_horizon"]]
            mean = np.array([r["mean"] for r in entry["per_horizon"]])
            std = np.array([r["std"] for r in entry["per_horizon"]])
            if method == METHOD_BLUR:
                swept = ", best lr per horizon" if len(entry["configs"]) > 1 else ""
                label = f"BLUR ({_genome_label(entry)}{swept})"
            else:
                label = f"{method} (best lr, activation per horizon)"
            ax.plot(hs, mean, line, color=color, marker=marker, markersize=4, label=label)
            ax.fill_between(hs, mean - std, mean + std, color=color, alpha=0.15, linewidth=0)
        plotting.accuracy_axes(
            ax,
            _run_title(run),
            fontsize=10,
            xlabel=STEPS_LABEL,
            ylabel="test accuracy",
            log_x=True,
            legend={"fontsize": 8, "loc": "best"},
        )
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    plotting.save_png(fig, path, dpi=110)


def plot_sweep(runs: Sequence[dict], path: str) -> bool:
    """The paper's Fig. 6: the learner against SGD and momentum at *every* grid configuration.

    One row per task × architecture, one panel per optimizer of `SWEEP_OPTIMIZERS` present in
    the runs: every (learning rate, activation) configuration's mean accuracy over seeds as a
    thin line (colour: learning rate on a log scale; solid tanh, dotted relu), and the learner's
    per-horizon best as a thick red line. Atomic PNG write; returns False (nothing written)
    when no run has both a learner and one of those optimizers.
    """
    runs = [r for r in runs if METHOD_BLUR in r["methods"]]
    optimizers = [o for o in SWEEP_OPTIMIZERS if any(o in r["methods"] for r in runs)]
    if not runs or not optimizers:
        return False
    plt = plotting.pyplot()
    fig, axes = plt.subplots(
        len(runs), len(optimizers), squeeze=False, figsize=(5.6 * len(optimizers), 4.2 * len(runs))
    )
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
                    ax.plot(
                        hs,
                        curve,
                        style,
                        color=color_of[config["learning_rate"]],
                        linewidth=0.9,
                        alpha=0.85,
                    )
                for lr in rates:  # one legend entry per learning rate
                    ax.plot([], [], "-", color=color_of[lr], label=f"{optimizer} lr={lr:g}")
            ax.plot(
                hs,
                [r["mean"] for r in blur["per_horizon"]],
                "-o",
                color="C3",
                linewidth=2.5,
                markersize=4,
                label=f"BLUR ({_genome_label(blur)})",
            )
            plotting.accuracy_axes(
                ax,
                f"{_run_title(run)}\n{optimizer}: every learning rate (solid tanh, dotted relu)",
                fontsize=9,
                xlabel=STEPS_LABEL,
                ylabel="test accuracy",
                log_x=True,
                unit_y=True,
                legend={"fontsize": 6, "loc": "lower right", "ncol": 2},
            )
    plotting.save_png(fig, path, dpi=100)
    return True


def write_tensorboard(runs: Sequence[dict], logdir: str) -> None:
    """Scalars '<task>/<architecture>/<method>/accuracy' (and _std) at step = horizon."""
    writer = tf.summary.create_file_writer(logdir)
    with writer.as_default():
        for run in runs:
            prefix = f"{run['task']}/{architecture_name(run['layer_sizes'])}"
            for method, entry in run["methods"].items():
                for row in entry["per_horizon"]:
                    tf.summary.scalar(
                        f"{prefix}/{method}/accuracy", row["mean"], step=row["horizon"]
                    )
                    tf.summary.scalar(
                        f"{prefix}/{method}/accuracy_std", row["std"], step=row["horizon"]
                    )
    writer.flush()
    writer.close()

r"""The validation curves of meta-training runs, side by side: a Markdown table and a plot.

    python -m launchers.validation_report --runs=runs/a --runs=runs/b --out_png=/tmp/v.png

Reads scalar `--tag` (default `validation/score`, the best genome's validation score) from every
run's `tb/` folder. A run given as `STAGE1+STAGE2` (two out_dirs joined by '+') is drawn as one
curve, the second stage's meta-steps following the first's.
"""

from __future__ import annotations

import os

from absl import app, flags

from blur_tf import plotting
from blur_tf.meta.run_history import read_scalars
from launchers import exit_with_error, flag_parser

flags.DEFINE_multi_string(
    "runs",
    [],
    "Run folders (out_dir of meta_train / cma_train); 'A+B' chains two stages into one curve.",
)
flags.DEFINE_string("tag", "validation/score", "TensorBoard scalar to read.")
flags.DEFINE_string("out_png", None, "Also draw the curves into this PNG.")
FLAGS = flags.FLAGS


def chained_curve(spec: str, tag: str) -> list[tuple[int, float]]:
    """The curve of 'A' or of 'A+B+…' (later stages shifted past the earlier ones' last step)."""
    curve, offset = [], 0
    for folder in spec.split("+"):
        points = read_scalars(os.path.join(folder, "tb"), tag)
        curve += [(offset + step, value) for step, value in points]
        offset = curve[-1][0] if curve else offset
    return curve


def markdown_table(curves: dict[str, list[tuple[int, float]]]) -> str:
    steps = sorted({step for curve in curves.values() for step, _ in curve})
    lines = ["| meta-step | " + " | ".join(curves) + " |", "|---|" + "---|" * len(curves)]
    for step in steps:
        cells = [next((f"{v:.4f}" for s, v in curve if s == step), "") for curve in curves.values()]
        lines.append(f"| {step} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(curves: dict[str, list[tuple[int, float]]], tag: str, path: str) -> None:
    fig, ax = plotting.pyplot().subplots(figsize=(6.4, 4.0))
    for name, curve in curves.items():
        ax.plot([s for s, _ in curve], [v for _, v in curve], "-o", markersize=3, label=name)
    plotting.accuracy_axes(ax, xlabel="meta-step", ylabel=tag, legend={"fontsize": 7})
    plotting.save_png(fig, path, dpi=100)


def main(argv):
    if len(argv) > 1:
        exit_with_error("validation_report", f"unexpected arguments: {argv[1:]}")
    if not FLAGS.runs:
        exit_with_error("validation_report", "give at least one --runs folder")
    try:
        curves = {spec: chained_curve(spec, FLAGS.tag) for spec in FLAGS.runs}
    except ValueError as e:
        exit_with_error("validation_report", e)
    print(markdown_table(curves))
    if FLAGS.out_png:
        plot(curves, FLAGS.tag, FLAGS.out_png)


def cli():
    """Entry point of `blur-validation-report` (pyproject.toml) and of `python -m`."""
    app.run(main, flags_parser=flag_parser("validation_report"))


if __name__ == "__main__":
    cli()

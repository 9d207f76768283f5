r"""The main job: meta-train a BLUR genome on toy 2-D tasks from a few seeds, then print its
held-out accuracy and the spread over the seeds.

    python -m launchers.main                      # = make run (seeds 0, 1, 2)
    python -m launchers.main --seeds=0            # one meta-training seed
    python -m launchers.main --meta_steps=200     # any meta_train flag overrides the config

Runs `launchers/meta_train.py` with the flags of `launchers/configs/toy2d.cfg` once per seed of
`--seeds` into `runs/toy2d/seedN` (rerunning resumes / reuses the finished runs), prints after
each the accuracy of its learned genome after T inner steps on toy tasks it never trained on,
next to a random genome (that seed's starting point) and the majority-class rate, and ends with
the headline: the held-out mean of the learned genomes over the seeds (mean, min, max). The
headline does not hinge on one meta-training trajectory, which floating-point differences
between CPU types can change (docs/reproducibility.md).
"""

from __future__ import annotations

import os
import sys

import numpy as np
from absl import app, flags

from blur_tf import training
from launchers import exit_with_error, flag_parser, parse_ints, training_flags

CONFIG = os.path.join(os.path.dirname(os.path.abspath(__file__)), "configs", "toy2d.cfg")
DEFAULT_OUT_DIR = "runs/toy2d"
FLAGS = flags.FLAGS
flags.DEFINE_list(
    "seeds",
    ["0", "1", "2"],
    "Meta-training seeds; each run goes to OUT_DIR/seedN (each run's --seed comes from this list).",
)


def learned_mean(summary: dict) -> float:
    """Mean over the held-out tasks of the learned genome's accuracy in a run's table."""
    return float(np.mean([row["learned"] for row in summary["table"]["accuracy"].values()]))


def main(argv):
    try:
        seeds = parse_ints(FLAGS.seeds, "seeds")
    except ValueError as e:
        exit_with_error("main", e)
    if not seeds or min(seeds) < 0 or len(set(seeds)) != len(seeds):
        exit_with_error("main", f"--seeds must be distinct integers >= 0, got {FLAGS.seeds}")
    if not FLAGS.print_table:
        exit_with_error("main", "--print_table=false leaves the main job without its headline")
    base, means = FLAGS.out_dir, {}
    for seed in seeds:
        FLAGS.seed, FLAGS.out_dir = seed, os.path.join(base, f"seed{seed}")
        print(f"meta-training seed {seed} -> {FLAGS.out_dir}", flush=True)
        summary = training_flags.run_or_exit(
            "main",
            training.GRADIENT,
            training_flags.GRADIENT_NAMES,
            training_flags.GRADIENT_RESUMABLE,
            argv,
        )
        rate = summary["meta_steps_per_second"]
        print(
            f"meta-steps: {summary['meta_steps']}, {rate or 0.0:.2f} meta-steps/s, skipped "
            f"{summary['skipped_meta_steps']} meta-steps and "
            f"{summary['skipped_genome_updates']} genome updates, peak RSS "
            f"{summary['peak_rss_mb']:.0f} MiB\n",
            flush=True,
        )
        means[seed] = learned_mean(summary)
    values = np.array(list(means.values()))
    per_seed = ", ".join(f"seed {s}: {m:.3f}" for s, m in means.items())
    print(
        f"held-out mean of the learned genome over {len(means)} meta-training seed(s): "
        f"{values.mean():.3f} (min {values.min():.3f}, max {values.max():.3f}; {per_seed})",
        flush=True,
    )


def cli():
    """Entry point of `blur-main` (pyproject.toml) and of `python -m`."""
    app.run(
        main,
        argv=[sys.argv[0], f"--flagfile={CONFIG}", f"--out_dir={DEFAULT_OUT_DIR}", *sys.argv[1:]],
        flags_parser=flag_parser("main"),
    )


if __name__ == "__main__":
    cli()

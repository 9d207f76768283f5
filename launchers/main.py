r"""The main job: meta-train a BLUR genome on toy 2-D tasks, then print its held-out accuracy.

    python -m launchers.main                      # = make run
    python -m launchers.main --meta_steps=200     # any meta_train flag overrides the config

Runs `launchers/meta_train.py` with the flags of `launchers/configs/toy2d.cfg` into
`runs/toy2d` (rerunning resumes / reuses the finished run), then prints the accuracy of the
learned genome after T inner steps on toy tasks it never trained on, next to a random genome
(the starting point of meta-training) and the majority-class rate.
"""

from __future__ import annotations

import os
import sys

from absl import app

from blur_tf import training
from launchers import training_flags

CONFIG = os.path.join(os.path.dirname(os.path.abspath(__file__)), "configs", "toy2d.cfg")
DEFAULT_OUT_DIR = "runs/toy2d"


def main(argv):
    summary = training_flags.run_or_exit("main", training.GRADIENT,
                                         training_flags.GRADIENT_NAMES,
                                         training_flags.GRADIENT_RESUMABLE, argv)
    rate = summary["meta_steps_per_second"]
    print(f"meta-steps: {summary['meta_steps']}, {rate or 0.0:.2f} meta-steps/s, skipped "
          f"{summary['skipped_meta_steps']} meta-steps and {summary['skipped_genome_updates']} "
          f"genome updates, peak RSS {summary['peak_rss_mb']:.0f} MiB", flush=True)


if __name__ == "__main__":
    app.run(main, argv=[sys.argv[0], f"--flagfile={CONFIG}", f"--out_dir={DEFAULT_OUT_DIR}",
                        *sys.argv[1:]])

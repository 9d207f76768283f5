r"""Meta-trains BLUR genomes by gradient descent through the unrolled inner loop.

    python -m launchers.meta_train --flagfile=launchers/configs/toy2d.cfg --out_dir=runs/toy2d

Writes into --out_dir:
  genome.json   the best genome (population 1) with provenance metadata (command, flags, rule,
                layer sizes, validation accuracies);
  summary.json  final validation accuracies per task and unroll length, wall time,
                meta-steps/s, skipped meta-steps and skipped genome updates, peak RSS (a
                rerun that finds the run finished keeps the timing of the call that trained);
  tb/           TensorBoard events (see blur_tf/meta/summaries.py for the tags);
  ckpt/         checkpoints; rerunning the same command resumes from the latest one.
  flags.json    the flags of the run (a rerun with different training flags is refused).

Distributed (docs/distributed.md): `--strategy=mirrored` splits every meta-step
over this machine's GPUs (or `--cpu_devices=N` logical CPU devices), `--strategy=multi_worker`
over the workers of `TF_CONFIG` (run the same command on every worker); `--meta_batch` must be
divisible by the number of replicas. Only the chief writes into --out_dir.

SIGTERM / SIGINT save a checkpoint and exit with status 128 + signal. Bad flags (including an
--out_dir that cannot be written) exit with status 2 and a one-line message before any task is
built; a run that diverges (`--max_consecutive_skips` meta-steps in a row without a genome
update) exits with status 1 and a one-line message, writing no genome. Task flags take spec
strings (`toy.xor`, `mnist:crop=20,size=10,classes=0-4`) and may be repeated or separated by
';' (specs themselves contain commas).
"""

from __future__ import annotations

from absl import app, flags

from blur_tf import training
from launchers import flag_parser, training_flags

flags.adopt_module_key_flags(training_flags)
NAMES, RESUMABLE = training_flags.GRADIENT_NAMES, training_flags.GRADIENT_RESUMABLE
FlagError = ValueError  # what bad flag values raise (before any work)


def flag_values() -> dict:
    """The values of this launcher's flags (the run's configuration)."""
    return training_flags.flag_values(NAMES)


def build_config(values: dict) -> training.Config:
    """Validates flag values (no work); ValueError naming the problem."""
    return training.GRADIENT.check(values, training.check_config(values))


def run(values: dict | None = None, argv=None) -> dict:
    """Runs meta-training with flag `values` (default: the current flags); the summary dict."""
    return training_flags.run(training.GRADIENT, NAMES, RESUMABLE, values, argv)


def main(argv):
    training_flags.run_or_exit("meta_train", training.GRADIENT, NAMES, RESUMABLE, argv)


def cli():
    """Entry point of `blur-meta-train` (pyproject.toml) and of `python -m`."""
    app.run(main, flags_parser=flag_parser("meta_train"))


if __name__ == "__main__":
    cli()

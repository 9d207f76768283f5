r"""Runs an experiment: its arms, an evaluation of every arm, a table and a figure.

    python -m launchers.experiment --spec=experiments/fig8_normalization.cfg \
        --out_dir=runs/fig8 --tfds_manual_dir=../shared/data

The spec (an INI file; format in blur_tf/study/spec.py and experiments/README.md) lists arms:
meta_train or cma_train runs, each with its launcher flags, or existing genomes; and
evaluations applied to the arms (accuracy per inner step on test tasks, or the Jacobian
asymmetry of paper Fig. 2). Each arm runs in OUT/arms/<name> through its launcher.

Resumable: rerunning the command reuses finished arms and evaluations and resumes unfinished
arms from their checkpoints (SIGTERM / SIGINT stop the running arms at a checkpoint). A failing
arm is recorded (status, error) and the experiment goes on; `--retry_failed` runs failed arms
again. `--parallel=N` runs N arms at once; `--arms=a,b` runs only those (spread arms over
machines sharing OUT; every run aggregates all arms found in OUT).

Writes OUT/results.json, OUT/results.csv (arm x metric), OUT/results.md, OUT/<figure>.png and,
per arm, TensorBoard events (tb/ of the launcher, tb_eval/ of the evaluations):
`tensorboard --logdir=OUT/arms` overlays every arm. Bad flags or a bad spec exit with status 2
and one line before any work.
"""

from __future__ import annotations

import signal

from absl import app, flags

from launchers import call_or_exit, flag_parser, settings_or_exit


def define_flags(fv: flags.FlagValues = flags.FLAGS) -> None:
    """Defines this launcher's flags on `fv` (the global FLAGS when run as a program)."""
    flags.DEFINE_string(
        "spec",
        None,
        "Experiment spec (INI), e.g. experiments/fig2_not_a_gradient.cfg.",
        flag_values=fv,
    )
    flags.DEFINE_string("out_dir", None, "Output folder (required).", flag_values=fv)
    flags.DEFINE_string(
        "tfds_manual_dir",
        None,
        "Folder with <dataset>/<original files>, "
        "passed to every arm and evaluation (default: env "
        "BLUR_TFDS_MANUAL_DIR).",
        flag_values=fv,
    )
    flags.DEFINE_integer("parallel", 1, "Launcher arms run at once.", lower_bound=1, flag_values=fv)
    flags.DEFINE_list(
        "arms", [], "Run (and evaluate) only these arms; default: all.", flag_values=fv
    )
    flags.DEFINE_bool("retry_failed", False, "Run arms recorded as failed again.", flag_values=fv)


def check(fv: flags.FlagValues):
    """(spec, absolute out_dir) of parsed flags; ValueError naming the problem (no work done)."""
    from blur_tf.experiment import RunDirectory  # pylint: disable=g-import-not-at-top
    from blur_tf.study import runner  # pylint: disable=g-import-not-at-top
    from blur_tf.study import spec as spec_lib

    if not fv.spec:
        raise ValueError("--spec is required")
    spec = spec_lib.parse_spec(fv.spec)
    runner.check_evaluations(spec)
    runner.select_arms(spec, fv.arms)
    return spec, RunDirectory(fv.out_dir).path


def _stop(signum, frame):
    """SIGTERM: unwind (the running arms are stopped at a checkpoint), exit 128 + signal."""
    del frame
    raise SystemExit(128 + signum)


def main(argv, fv: flags.FlagValues = flags.FLAGS):
    from blur_tf.study import runner  # pylint: disable=g-import-not-at-top

    spec, out_dir = settings_or_exit("experiment", argv, check, fv)
    signal.signal(signal.SIGTERM, _stop)
    results = call_or_exit(
        "experiment",
        runner.run_experiment,
        spec,
        out_dir,
        fv.tfds_manual_dir,
        fv.parallel,
        fv.arms,
        fv.retry_failed,
        lambda m: print(m, flush=True),
    )
    print(runner.markdown_table(results), flush=True)


def cli():
    """Entry point of `blur-experiment` (pyproject.toml) and of `python -m`."""
    define_flags(flags.FLAGS)
    app.run(main, flags_parser=flag_parser("experiment"))


if __name__ == "__main__":
    cli()

r"""Searches a BLUR genome with CMA-ES on held-out accuracy (paper §4.4; `blur_tf.CmaTrainer`).

    python -m launchers.cma_train --flagfile=launchers/configs/cma_mnist14.cfg \
        --out_dir=runs/cma_mnist14 --tfds_manual_dir=../shared/data

Flags follow `meta_train` (both use launchers/training_flags.py: `--tasks`, `--layer_sizes`
(hidden only), `--num_states` and the rule flags, `--unroll`, `--batch_size`, `--init_genome`,
`--seed`, the validation, checkpoint, output and data flags; periods count generations here),
with `--population` the CMA-ES population λ (>= 2), plus `--generations`, `--sigma0`,
`--fields`, `--networks`, `--average_steps`, `--eval_batches` and `--test_tasks`. Fitness is
measured on `--eval_batches` held-out batches of `--eval_batch_size` examples (default
`--batch_size`) per network. meta_train's gradient-only flags (`--learning_rate`,
`--meta_steps`, …) are refused.

Writes into --out_dir:
  genome.json   the best genome so far (population 1) with provenance metadata (command, flags,
                rule, searched fields and their vector layout, generation, validation);
  summary.json  the fitness curve (generation -> best / mean / worst accuracy, sigma), wall
                time, generations/s, non-finite candidates, peak RSS, validation accuracy and
                the final table (on --test_tasks, else the validation tasks);
  tb/           TensorBoard events (tags: blur_tf/meta/summaries.py);
  ckpt/         checkpoints; rerunning the same command resumes from the latest one;
  flags.json    the flags of the run (a rerun with different search flags is refused).

`--strategy`/`--cpu_devices` (meta_train's) split each generation's candidates over replicas;
only the chief writes into --out_dir.

SIGTERM / SIGINT save a checkpoint and exit with status 128 + signal; bad flags exit with
status 2 and a one-line message before any work.
"""

from __future__ import annotations

from absl import app, flags

from blur_tf import config, training
from launchers import exit_with_error, flag_parser, training_flags

FLAGS = flags.FLAGS
flags.adopt_module_key_flags(training_flags)

SEARCH = config.FlagGroup(FLAGS, __name__)
SEARCH.define(
    flags.DEFINE_float,
    "sigma0",
    0.1,
    "Initial CMA-ES step size (> 0), the same in every coordinate of the genome vector.",
)
SEARCH.define(
    flags.DEFINE_list,
    "fields",
    [],
    "Genome fields to search (default: those the "
    "rule reads); the others keep the start genome's values.",
)
SEARCH.define(
    flags.DEFINE_integer,
    "networks",
    1,
    "Networks per candidate per generation (fitness averaged).",
    lower_bound=1,
)
SEARCH.define(
    flags.DEFINE_integer,
    "average_steps",
    1,
    "Fitness = accuracy averaged over the last N inner steps of the unroll.",
    lower_bound=1,
)
SEARCH.define(
    flags.DEFINE_integer,
    "eval_batches",
    1,
    "Held-out batches (of --eval_batch_size examples) the fitness is measured on, per network.",
    lower_bound=1,
)
SEARCH_RUN = config.FlagGroup(FLAGS, __name__)
SEARCH_RUN.define(
    flags.DEFINE_integer, "generations", 100, "Total CMA-ES generations.", lower_bound=0
)
SEARCH_RUN.define(
    flags.DEFINE_multi_string,
    "test_tasks",
    [],
    "Task specs of the final report "
    "table only (never used for selection); default: the validation tasks.",
)

NAMES = (*training_flags.COMMON, *SEARCH.names, *SEARCH_RUN.names)
RESUMABLE = (*training_flags.RUN.names, *SEARCH_RUN.names)
FlagError = ValueError  # what bad flag values raise (before any work)


def flag_values() -> dict:
    """The run's configuration: the shared training flags and this module's flags."""
    return training_flags.flag_values(NAMES)


def build_config(values: dict) -> training.Config:
    """Validates flag values (no work); ValueError naming the problem."""
    return training.CMA.check(values, training.check_config(values))


def refused_flags_given() -> list[str]:
    """Gradient meta-training flags given on the command line (or a flagfile)."""
    return sorted(
        name
        for name in (*training_flags.GRADIENT.names, *training_flags.GRADIENT_RUN.names)
        if FLAGS[name].present
    )


def main(argv):
    refused = refused_flags_given()
    if refused:
        exit_with_error(
            "cma_train",
            ", ".join(f"--{n}" for n in refused) + " belong(s) to "
            "gradient meta-training (launchers/meta_train.py); CMA-ES does not use "
            "them",
        )
    training_flags.run_or_exit("cma_train", training.CMA, NAMES, RESUMABLE, argv)


def cli():
    """Entry point of `blur-cma-train` (pyproject.toml) and of `python -m`."""
    FLAGS.set_default("population", 16)  # meta_train's default (1 genome) is no CMA-ES population
    app.run(main, flags_parser=flag_parser("cma_train"))


if __name__ == "__main__":
    cli()

"""The flags of the training launchers (meta_train, cma_train, main), defined once on FLAGS.

Groups (`blur_tf.config.FlagGroup`) say what a flag is for; the lists launchers need are
derived from them, never kept by hand:

* RULE: one flag per `Rule` field (`blur_tf.config.define_rule_flags`);
* SHARED: the problem, the schedule, the start genome and the seed;
* RUN: periods, validation, output, data, strategy: a resumed run may change them;
* GRADIENT and GRADIENT_RUN (resumable): gradient meta-training only (cma_train refuses them).

`run_or_exit(program, application, names, resumable, argv)` is the whole of a training
launcher: the flag values → `blur_tf.training.run` → exit status (launchers/__init__.py: 2 and
one line when the command cannot run as given, 1 when the run failed, 128 + signal when
stopped).
"""

from __future__ import annotations

import shlex
import sys

from absl import flags, logging

from blur_tf import allocator, config
from launchers import exit_with_error, write_error_line

FLAGS = flags.FLAGS

RULE = config.FlagGroup(FLAGS, __name__)
config.define_rule_flags(RULE)

SHARED = config.FlagGroup(FLAGS, __name__)
SHARED.define(
    flags.DEFINE_multi_string,
    "tasks",
    ["toy.and", "toy.xor"],
    "Training task specs (repeat the flag or separate with ';').",
)
SHARED.define(
    flags.DEFINE_list, "layer_sizes", ["24"], "Hidden layer sizes (input/output come from tasks)."
)
SHARED.define(
    flags.DEFINE_integer,
    "population",
    1,
    "G, genomes meta-trained side by side (CMA-ES: λ, candidates per generation).",
    lower_bound=1,
)
SHARED.define(
    flags.DEFINE_string,
    "unroll",
    "constant:10",
    "Unroll schedule: constant:T or curriculum:START,INCREMENT,EVERY,MAX, optionally ',jitter=F'.",
)
SHARED.define(
    flags.DEFINE_integer,
    "batch_size",
    64,
    "Examples per inner step.",
    lower_bound=2,
    upper_bound=2**31 - 1,
)
SHARED.define(
    flags.DEFINE_integer,
    "eval_batch_size",
    None,
    "Held-out examples per network for the meta-loss or fitness (default: batch_size).",
    lower_bound=2,
    upper_bound=2**31 - 1,
)
SHARED.define(
    flags.DEFINE_float, "transform_std", 0.5, "Std of the random initial genome's transforms."
)
SHARED.define(flags.DEFINE_float, "synapse_update", 0.05, "Initial genome synapse update gate.")
SHARED.define(
    flags.DEFINE_string,
    "init_genome",
    None,
    "Start from this genome JSON (a path or a "
    "shipped genome name, e.g. mnist_fast) instead of random, or from 'backprop:LR' "
    "(Genome.backprop(LR); K = 2).",
)
SHARED.define(
    flags.DEFINE_integer, "seed", 0, "Run seed (all randomness derives from it).", lower_bound=0
)
SHARED.define(
    flags.DEFINE_integer,
    "validation_unroll",
    None,
    "Inner steps of validation (default: the schedule's current length).",
    lower_bound=1,
)
SHARED.define(
    flags.DEFINE_enum,
    "validation_score",
    "final",
    "Rank genomes by held-out "
    "accuracy after the validation unroll (final) or averaged over its steps (mean).",
    enum_values=["final", "mean"],
)
SHARED.define(flags.DEFINE_bool, "deterministic", True, "Enable TensorFlow op determinism.")

RUN = config.FlagGroup(FLAGS, __name__)
RUN.define(flags.DEFINE_multi_string, "validation_tasks", [], "Held-out validation task specs.")
RUN.define(
    flags.DEFINE_integer,
    "validate_every",
    100,
    "Validate every N steps (0: only at stages and at the end).",
    lower_bound=0,
)
RUN.define(
    flags.DEFINE_integer,
    "validation_networks",
    4,
    "Networks per genome and validation task.",
    lower_bound=1,
)
RUN.define(
    flags.DEFINE_integer,
    "validation_examples",
    512,
    "Held-out examples per validation network.",
    lower_bound=2,
)
RUN.define(
    flags.DEFINE_integer, "checkpoint_every", 100, "Checkpoint every N steps.", lower_bound=0
)
RUN.define(flags.DEFINE_integer, "keep_checkpoints", 3, "Checkpoints kept.", lower_bound=1)
RUN.define(flags.DEFINE_integer, "log_every", 20, "Log every N steps.", lower_bound=0)
RUN.define(flags.DEFINE_string, "out_dir", None, "Output folder (required).")
RUN.define(
    flags.DEFINE_integer,
    "malloc_arenas",
    allocator.DEFAULT_ARENAS,
    allocator.FLAG_HELP,
    lower_bound=0,
)
RUN.define(
    flags.DEFINE_string,
    "tfds_manual_dir",
    None,
    "Folder with <dataset>/<original files> (default: env BLUR_TFDS_MANUAL_DIR).",
)
RUN.define(
    flags.DEFINE_string, "data_dir", None, "tfds data folder (default: env BLUR_TFDS_DATA_DIR)."
)
RUN.define(
    flags.DEFINE_string,
    "strategy",
    "none",
    "tf.distribute strategy: none (one "
    "device), mirrored (this machine's GPUs, or --cpu_devices logical CPU devices) or "
    "multi_worker (MultiWorkerMirroredStrategy; the cluster comes from TF_CONFIG). Only "
    "the chief writes outputs and checkpoints.",
)
RUN.define(
    flags.DEFINE_integer,
    "cpu_devices",
    None,
    "With --strategy=mirrored: split the host "
    "CPU into this many logical devices (>= 1), one replica each.",
)
RUN.define(
    flags.DEFINE_bool,
    "print_table",
    True,
    "Print held-out accuracy of the learned genome next to its start at the end.",
)

GRADIENT = config.FlagGroup(FLAGS, __name__)
GRADIENT.define(
    flags.DEFINE_integer, "meta_batch", 4, "Networks per genome per meta-step.", lower_bound=1
)
GRADIENT.define(flags.DEFINE_float, "learning_rate", 3e-3, "Adam learning rate of the genome.")
GRADIENT.define(
    flags.DEFINE_float, "clip_norm", 1.0, "Per-genome meta-gradient clipping norm (0: none)."
)
GRADIENT.define(
    flags.DEFINE_float, "logit_scale", 1.0, "Meta-loss: cross-entropy of logit_scale * state 0."
)
GRADIENT.define(
    flags.DEFINE_enum,
    "estimator",
    "full",
    "Meta-gradient estimator: full (tape "
    "through the whole unroll), segmented (the same gradient, memory O(T/S + S), XLA "
    "segments), truncated (persistent networks, --truncation_length steps per "
    "meta-step, horizon = --unroll).",
    enum_values=["full", "segmented", "truncated"],
)
GRADIENT.define(
    flags.DEFINE_integer,
    "segment_length",
    10,
    "S: inner steps per recomputed segment (segmented and truncated estimators).",
    lower_bound=1,
)
GRADIENT.define(
    flags.DEFINE_integer,
    "truncation_length",
    10,
    "U: inner steps differentiated per meta-step (truncated estimator).",
    lower_bound=1,
)
GRADIENT.define(
    flags.DEFINE_enum,
    "meta_loss",
    "final",
    "Held-out loss after the last inner "
    "step (final) or averaged after every segment (trajectory); segmented and "
    "truncated estimators.",
    enum_values=["final", "trajectory"],
)
GRADIENT.define(
    flags.DEFINE_bool, "xla", True, "Compile the segments with XLA (segmented, truncated)."
)
GRADIENT.define(
    flags.DEFINE_bool, "identical_init", False, "Start every genome of the population equal."
)

GRADIENT_RUN = config.FlagGroup(FLAGS, __name__)
GRADIENT_RUN.define(flags.DEFINE_integer, "meta_steps", 1000, "Total meta-steps.", lower_bound=0)
GRADIENT_RUN.define(
    flags.DEFINE_integer,
    "max_consecutive_skips",
    20,
    "Stop (exit 1, no genome "
    "written) after this many meta-steps in a row in which no genome update was "
    "applied (0: never).",
    lower_bound=0,
)

COMMON = (*RULE.names, *SHARED.names, *RUN.names)
GRADIENT_NAMES = (*COMMON, *GRADIENT.names, *GRADIENT_RUN.names)
GRADIENT_RESUMABLE = (*RUN.names, *GRADIENT_RUN.names)


def flag_values(names) -> dict:
    """{name: value} of the flags `names`, sorted by name (the run's configuration)."""
    return {name: FLAGS[name].value for name in sorted(names)}


def run(application, names, resumable, values=None, argv=None) -> dict:
    """`blur_tf.training.run` on `values` (default: the current values of the flags `names`)."""
    from blur_tf import training  # pylint: disable=g-import-not-at-top

    command = " ".join(shlex.quote(a) for a in (argv or sys.argv))
    return training.run(
        application,
        values or flag_values(names),
        command,
        {name: FLAGS[name].default for name in names},
        resumable,
    )


def run_or_exit(program: str, application, names, resumable, argv) -> dict:
    """`run`; its summary, or one line on stderr and exit status 2 (bad flags, unexpected
    arguments, folder in use), 1 (meta-training diverged, a write failed, no checkpoint
    restores) or 128 + signal (stopped, checkpoint saved)."""
    from blur_tf.experiment import Interrupted  # pylint: disable=g-import-not-at-top
    from blur_tf.meta.checkpoint import CheckpointError  # pylint: disable=g-import-not-at-top
    from blur_tf.meta.trainer import MetaTrainingDiverged  # pylint: disable=g-import-not-at-top

    if len(argv) > 1:
        exit_with_error(program, f"unexpected arguments: {argv[1:]}")
    try:
        return run(application, names, resumable, argv=sys.argv)
    except ValueError as e:
        exit_with_error(program, e)
    except (MetaTrainingDiverged, CheckpointError) as e:
        exit_with_error(program, e, status=1)
    except OSError as e:
        exit_with_error(program, write_error_line(e), status=1)
    except Interrupted as e:
        logging.warning("%s", e)
        raise SystemExit(e.status) from None

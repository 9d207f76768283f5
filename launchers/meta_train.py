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

Distributed (README, "Distributed meta-training"): `--strategy=mirrored` splits every meta-step
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

import json
import os
import resource
import shlex
import sys
import time

from absl import app, flags, logging

from launchers import exit_with_error

FLAGS = flags.FLAGS

flags.DEFINE_multi_string("tasks", ["toy.and", "toy.xor"], "Training task specs (repeat the "
                          "flag or separate with ';').")
flags.DEFINE_multi_string("validation_tasks", [], "Held-out validation task specs.")
flags.DEFINE_list("layer_sizes", ["24"], "Hidden layer sizes (input/output come from tasks).")
flags.DEFINE_integer("num_states", 2, "K, states per neuron.", lower_bound=2)
flags.DEFINE_string("activation", "tanh", "Rule.activation.")
flags.DEFINE_string("output_activation", "tanh", "Rule.output_activation.")
flags.DEFINE_string("backward_activation", None, "Rule.backward_activation (unset or empty: "
                    "the same as --activation).")
flags.DEFINE_string("backward_mode", "additive", "Rule.backward_mode.")
flags.DEFINE_bool("symmetric", False, "Rule.symmetric (tied backward synapses).")
flags.DEFINE_bool("multichannel", True, "Rule.multichannel.")
flags.DEFINE_bool("normalize_forward", True, "Rule.normalize_forward.")
flags.DEFINE_bool("normalize_backward", True, "Rule.normalize_backward.")
flags.DEFINE_bool("normalize_output", True, "Rule.normalize_output (with normalize_forward).")
flags.DEFINE_bool("oja", False, "Rule.oja.")
flags.DEFINE_bool("saturation", False, "Rule.saturation.")
flags.DEFINE_string("feedback", "label", "Rule.feedback: label or error.")
flags.DEFINE_integer("population", 1, "G, genomes meta-trained side by side.", lower_bound=1)
flags.DEFINE_integer("meta_batch", 4, "Networks per genome per meta-step.", lower_bound=1)
flags.DEFINE_string("unroll", "constant:10", "Unroll schedule: constant:T or "
                    "curriculum:START,INCREMENT,EVERY,MAX, optionally ',jitter=F'.")
flags.DEFINE_integer("meta_steps", 1000, "Total meta-steps.", lower_bound=0)
flags.DEFINE_integer("batch_size", 64, "Examples per inner step.", lower_bound=2)
flags.DEFINE_integer("eval_batch_size", None, "Held-out examples per network for the "
                     "meta-loss (default: batch_size).", lower_bound=2)
flags.DEFINE_float("learning_rate", 3e-3, "Adam learning rate of the genome.")
flags.DEFINE_float("clip_norm", 1.0, "Per-genome meta-gradient clipping norm (0: none).")
flags.DEFINE_integer("max_consecutive_skips", 20, "Stop (exit 1, no genome written) after this "
                     "many meta-steps in a row in which no genome update was applied (0: "
                     "never).", lower_bound=0)
flags.DEFINE_float("logit_scale", 1.0, "Meta-loss: cross-entropy of logit_scale * state 0.")
flags.DEFINE_enum("estimator", "full", ["full", "segmented", "truncated"],
                  "Meta-gradient estimator: full (tape through the whole unroll), segmented "
                  "(the same gradient, memory O(T/S + S), XLA segments), truncated (persistent "
                  "networks, --truncation_length steps per meta-step, horizon = --unroll).")
flags.DEFINE_integer("segment_length", 10, "S: inner steps per recomputed segment "
                     "(segmented and truncated estimators).", lower_bound=1)
flags.DEFINE_integer("truncation_length", 10, "U: inner steps differentiated per meta-step "
                     "(truncated estimator).", lower_bound=1)
flags.DEFINE_enum("meta_loss", "final", ["final", "trajectory"], "Held-out loss after the "
                  "last inner step (final) or averaged after every segment (trajectory); "
                  "segmented and truncated estimators.")
flags.DEFINE_bool("xla", True, "Compile the segments with XLA (segmented, truncated).")
flags.DEFINE_float("transform_std", 0.5, "Std of the random initial genome's transforms.")
flags.DEFINE_float("synapse_update", 0.05, "Initial genome synapse update gate.")
flags.DEFINE_bool("identical_init", False, "Start every genome of the population equal.")
flags.DEFINE_string("init_genome", None, "Start from this genome JSON instead of random, or "
                    "from 'backprop:LR' (Genome.backprop(LR); K = 2).")
flags.DEFINE_integer("seed", 0, "Run seed (all randomness derives from it).", lower_bound=0)
flags.DEFINE_integer("validate_every", 100, "Validate every N meta-steps (0: only at stages "
                     "and at the end).", lower_bound=0)
flags.DEFINE_integer("validation_unroll", None, "Inner steps of validation (default: the "
                     "schedule's current length).", lower_bound=1)
flags.DEFINE_enum("validation_score", "final", ["final", "mean"], "Rank genomes by held-out "
                  "accuracy after the validation unroll (final) or averaged over its steps "
                  "(mean).")
flags.DEFINE_integer("validation_networks", 4, "Networks per genome and validation task.",
                     lower_bound=1)
flags.DEFINE_integer("validation_examples", 512, "Held-out examples per validation network.",
                     lower_bound=2)
flags.DEFINE_integer("checkpoint_every", 100, "Checkpoint every N meta-steps.", lower_bound=0)
flags.DEFINE_integer("keep_checkpoints", 3, "Checkpoints kept.", lower_bound=1)
flags.DEFINE_integer("log_every", 20, "Log every N meta-steps.", lower_bound=0)
flags.DEFINE_string("out_dir", None, "Output folder (required).")
flags.DEFINE_string("tfds_manual_dir", None, "Folder with <dataset>/<original files> "
                    "(default: env BLUR_TFDS_MANUAL_DIR).")
flags.DEFINE_string("data_dir", None, "tfds data folder (default: env BLUR_TFDS_DATA_DIR).")
flags.DEFINE_bool("deterministic", True, "Enable TensorFlow op determinism.")
flags.DEFINE_string("strategy", "none", "tf.distribute strategy: none (one device), mirrored "
                    "(this machine's GPUs, or --cpu_devices logical CPU devices) or multi_worker "
                    "(MultiWorkerMirroredStrategy; the cluster comes from TF_CONFIG). Only the "
                    "chief writes outputs and checkpoints.")
flags.DEFINE_integer("cpu_devices", None, "With --strategy=mirrored: split the host CPU into "
                     "this many logical devices (>= 1), one replica each.")
flags.DEFINE_bool("print_table", True, "Print held-out accuracy of the learned genome next to "
                  "a random genome at the end.")

# Flags that may change between a run and its resumption.
RESUMABLE_FLAGS = ("meta_steps", "validate_every", "checkpoint_every", "keep_checkpoints",
                   "log_every", "out_dir", "tfds_manual_dir", "data_dir", "print_table",
                   "validation_tasks", "validation_networks", "validation_examples",
                   "max_consecutive_skips", "strategy", "cpu_devices")


class FlagError(ValueError):
    """A bad flag value, reported before any work is done."""


def split_specs(values) -> list[str]:
    """Task specs from a multi-string flag whose values may hold several specs joined by ';'."""
    return [s.strip() for v in values or [] for s in v.split(";") if s.strip()]


def flag_values() -> dict:
    """The values of this module's flags (the run's configuration)."""
    names = [f.name for f in FLAGS.get_flags_for_module(__name__)]
    return {name: FLAGS[name].value for name in sorted(names)}


def build_config(values: dict):
    """Validates flag values and builds (rule, schedule, hidden sizes, task specs) — no work.

    Raises FlagError naming the problem.
    """
    from blur_tf.meta import distribute  # pylint: disable=g-import-not-at-top
    from blur_tf.meta.schedules import parse_schedule  # pylint: disable=g-import-not-at-top
    from blur_tf.rule import Rule  # pylint: disable=g-import-not-at-top
    from blur_tf.tasks.spec import parse_spec  # pylint: disable=g-import-not-at-top
    if not values["out_dir"]:
        raise FlagError("--out_dir is required")
    try:
        distribute.check_strategy(values.get("strategy", "none"), values.get("cpu_devices"))
    except ValueError as e:
        raise FlagError(e) from None
    if values.get("strategy", "none") != "none" and values.get("estimator") == "truncated":
        raise FlagError("--estimator=truncated keeps per-network state between meta-steps and "
                        "is not distributed; use --estimator=full or segmented with --strategy")
    try:
        hidden = [int(n) for n in values["layer_sizes"]]
    except ValueError:
        raise FlagError(f"--layer_sizes must be ints, got {values['layer_sizes']}") from None
    if any(n < 1 for n in hidden):
        raise FlagError(f"--layer_sizes must be positive, got {hidden}")
    tasks, validation_tasks = split_specs(values["tasks"]), split_specs(values["validation_tasks"])
    if not tasks:
        raise FlagError("--tasks: give at least one training task")
    for flag, specs in (("tasks", tasks), ("validation_tasks", validation_tasks)):
        for spec in specs:
            try:
                parse_spec(spec)
            except ValueError as e:
                raise FlagError(f"--{flag}: {e}") from None
    for name in ("learning_rate", "logit_scale"):
        if not values[name] > 0:
            raise FlagError(f"--{name} must be > 0, got {values[name]}")
    if values["clip_norm"] < 0:
        raise FlagError(f"--clip_norm must be >= 0, got {values['clip_norm']}")
    if values["init_genome"] and backprop_init_lr(values["init_genome"]) is None \
            and not os.path.isfile(values["init_genome"]):
        raise FlagError(f"--init_genome: no such file {values['init_genome']}")
    try:
        rule = Rule(num_states=values["num_states"], activation=values["activation"],
                    output_activation=values["output_activation"],
                    backward_activation=values["backward_activation"] or None,
                    backward_mode=values["backward_mode"], symmetric=values["symmetric"],
                    multichannel=values["multichannel"],
                    normalize_forward=values["normalize_forward"],
                    normalize_backward=values["normalize_backward"],
                    normalize_output=values["normalize_output"], oja=values["oja"],
                    saturation=values["saturation"], feedback=values["feedback"])
    except ValueError as e:
        raise FlagError(f"rule flags: {e}") from None
    try:
        schedule = parse_schedule(values["unroll"], seed=values["seed"])
    except ValueError as e:
        raise FlagError(f"--unroll: {e}") from None
    return rule, schedule, hidden, tasks, validation_tasks


def backprop_init_lr(text: str) -> float | None:
    """LR of an `--init_genome=backprop:LR` value (None for a file path; FlagError if bad)."""
    if not text.startswith("backprop:"):
        return None
    try:
        lr = float(text.split(":", 1)[1])
    except ValueError:
        lr = float("nan")
    if not lr > 0:
        raise FlagError(f"--init_genome=backprop:LR needs a learning rate > 0, got {text!r}")
    return lr


def initial_genome(text: str | None):
    """The genome of `--init_genome` (None: the trainer's random default)."""
    from blur_tf.genome import Genome  # pylint: disable=g-import-not-at-top
    if not text:
        return None
    lr = backprop_init_lr(text)
    return Genome.load(text) if lr is None else Genome.backprop(lr)


def make_estimator(values: dict, problem):
    """The meta-gradient estimator of the flags (ValueError on a bad combination)."""
    from blur_tf import meta  # pylint: disable=g-import-not-at-top
    if values["estimator"] == "full":
        if values["meta_loss"] != "final":
            raise ValueError("--meta_loss=trajectory needs --estimator=segmented or truncated")
        return meta.FullUnrollGradient(problem, values["meta_batch"])
    if values["estimator"] == "segmented":
        return meta.SegmentedUnrollGradient(problem, values["meta_batch"],
                                            values["segment_length"], values["meta_loss"],
                                            values["xla"])
    return meta.TruncatedUnrollGradient(problem, values["population"], values["meta_batch"],
                                        values["truncation_length"], values["meta_loss"],
                                        values["xla"], values["segment_length"])


def check_resume(out_dir: str, values: dict, resumable=RESUMABLE_FLAGS) -> None:
    """Refuses to resume a run in `out_dir` whose flags differ from `values` outside `resumable`."""
    path = os.path.join(out_dir, "flags.json")
    if not os.path.exists(path):
        return
    with open(path) as f:
        previous = json.load(f).get("flags", {})
    changed = sorted(k for k in set(previous) | set(values)
                     if k not in resumable and previous.get(k) != values.get(k))
    if changed:
        details = "; ".join(f"--{k}: {previous.get(k)!r} -> {values.get(k)!r}" for k in changed)
        raise FlagError(f"{out_dir} holds a run with different training flags ({details}); "
                        "use another --out_dir or the original flags to resume")


def make_strategy(values: dict, meta_batch: int | None = None):
    """The strategy of `--strategy`/`--cpu_devices` (None for none), made before anything runs
    TensorFlow ops; FlagError if it cannot be made or its replicas do not divide `meta_batch`."""
    from blur_tf.meta import distribute  # pylint: disable=g-import-not-at-top
    try:
        strategy = distribute.make_strategy(values["strategy"], values["cpu_devices"])
        if meta_batch is not None:
            distribute.replica_share(meta_batch, strategy, "--meta_batch")
    except ValueError as e:
        raise FlagError(e) from None
    return strategy


def peak_rss_mb() -> float:
    """Peak resident set size of this process in MiB (Linux ru_maxrss is in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def run(values: dict, argv=None) -> dict:
    """Runs meta-training with flag `values`; returns the summary dict (see module doc).

    Raises FlagError before any work on bad flags or an incompatible existing run.
    """
    rule, schedule, hidden, task_specs, validation_specs = build_config(values)
    from blur_tf.files import check_output_folder  # pylint: disable=g-import-not-at-top
    from blur_tf.files import write_json_atomic  # pylint: disable=g-import-not-at-top
    try:
        out_dir = check_output_folder(values["out_dir"])
    except ValueError as e:
        raise FlagError(f"--out_dir: {e}") from None
    check_resume(out_dir, values)
    strategy = make_strategy(values, values["meta_batch"])
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    from blur_tf.genome import Genome  # pylint: disable=g-import-not-at-top
    from blur_tf import meta  # pylint: disable=g-import-not-at-top
    from blur_tf.meta.distribute import is_chief  # pylint: disable=g-import-not-at-top
    from blur_tf.meta import report  # pylint: disable=g-import-not-at-top
    from blur_tf.tasks import get_task  # pylint: disable=g-import-not-at-top
    if values["deterministic"]:
        tf.config.experimental.enable_op_determinism()
    task_kwargs = dict(tfds_manual_dir=values["tfds_manual_dir"], data_dir=values["data_dir"])
    try:
        tasks = [get_task(s, **task_kwargs) for s in task_specs]
        validation_tasks = [get_task(s, **task_kwargs) for s in validation_specs]
        problem = meta.InnerProblem(tasks, hidden, rule, values["batch_size"],
                                    values["eval_batch_size"], values["logit_scale"])
        validator = make_validator(values, validation_tasks, hidden, rule)
        genome = initial_genome(values["init_genome"])
        trainer = meta.MetaTrainer(
            problem, schedule, population=values["population"],
            meta_batch=values["meta_batch"], learning_rate=values["learning_rate"],
            clip_norm=values["clip_norm"], seed=values["seed"], genome=genome,
            identical_init=values["identical_init"], transform_std=values["transform_std"],
            synapse_update=values["synapse_update"], validator=validator,
            validation_length=values["validation_unroll"],
            validate_every=values["validate_every"],
            checkpoint_every=values["checkpoint_every"], log_every=values["log_every"],
            checkpoint_dir=os.path.join(out_dir, "ckpt"),
            summary_dir=os.path.join(out_dir, "tb"),
            keep_checkpoints=values["keep_checkpoints"],
            max_consecutive_skips=values["max_consecutive_skips"],
            estimator=make_estimator(values, problem), strategy=strategy)
    except ValueError as e:
        raise FlagError(str(e)) from None
    command = " ".join(shlex.quote(a) for a in (argv or sys.argv))
    chief = is_chief(strategy)
    if chief:
        write_flags(trainer, out_dir, command, values)
    logging.info("meta-training %d genome(s) x %d networks on %s; validation on %s; "
                 "unroll %s; %d meta-steps -> %s", values["population"], values["meta_batch"],
                 problem.task_names, validator.names if validator else [], schedule,
                 values["meta_steps"], out_dir)
    result = train_or_exit(trainer, values["meta_steps"])
    best = trainer.best_genome()
    validation = result.validation
    best_index = int(trainer.best_index.numpy())
    final = ({task: float(acc[best_index]) for task, acc in validation.final().items()}
             if validation else {})
    summary = {
        "meta_steps": result.steps,
        "final_unroll_length": schedules_length(schedule, result.steps),
        "validation": {"unroll_length": validation.length if validation else None,
                       "accuracy": final,
                       "curves": ({t: c[best_index].round(4).tolist()
                                   for t, c in validation.curves.items()} if validation else {})},
        "wall_seconds_this_call": result.seconds,
        "meta_steps_this_call": result.steps_run,
        "meta_steps_per_second": (result.steps_run / result.step_seconds
                                  if result.step_seconds else None),
        "skipped_meta_steps": result.skipped_meta_steps,
        "skipped_genome_updates": result.skipped,
        "peak_rss_mb": peak_rss_mb(),
    }
    if not result.steps_run:  # a rerun of a finished run: keep the training call's timing
        summary.update(previous_timing(os.path.join(out_dir, "summary.json")))
    metadata = {"command": command, "flags": values, "rule": rule.to_dict(),
                "hidden_sizes": hidden, "tasks": task_specs,
                "validation_tasks": validation_specs, "meta_steps": result.steps,
                "validation_accuracy": final,
                "validation_unroll_length": validation.length if validation else None}
    if not chief:
        logging.info("meta-training done on this worker; the chief writes %s", out_dir)
        return summary
    best.save(os.path.join(out_dir, "genome.json"), metadata=metadata)
    if values["print_table"] and validation_tasks:
        random = Genome.random(rule.num_states, seed=values["seed"],
                               transform_std=values["transform_std"],
                               synapse_update=values["synapse_update"])
        length = validation.length
        table = report.accuracy_table({"learned": best, "random": random}, validation_tasks,
                                      hidden, rule, length, values["batch_size"])
        summary["table"] = {"unroll_length": length, "accuracy": table}
        majority = {report.task_name(t): report.majority_rate(t) for t in validation_tasks}
        summary["table"]["majority_class"] = majority
        print(report.format_table(table, f"held-out accuracy after {length} inner steps "
                                         "(mean of 8 networks; chance = majority class)",
                                  chance=majority), flush=True)
    write_json_atomic(os.path.join(out_dir, "summary.json"), summary)
    logging.info("wrote %s/genome.json and summary.json (%.1f s, %.2f meta-steps/s, "
                 "skipped %d meta-steps and %d genome updates, peak RSS %.0f MiB)", out_dir,
                 result.seconds, summary["meta_steps_per_second"] or 0.0,
                 result.skipped_meta_steps, result.skipped, summary["peak_rss_mb"])
    return summary


def write_flags(trainer, out_dir: str, command: str, values: dict) -> None:
    """flags.json and the flags as TensorBoard text (the chief's first writes of a run)."""
    from blur_tf.files import write_json_atomic  # pylint: disable=g-import-not-at-top
    write_json_atomic(os.path.join(out_dir, "flags.json"), {"command": command, "flags": values})
    trainer.summaries.flags("\n".join(f"--{k}={v}" for k, v in values.items()) +
                            f"\n\ncommand: {command}")


TIMING_KEYS = ("wall_seconds_this_call", "meta_steps_this_call", "meta_steps_per_second",
               "peak_rss_mb")


def previous_timing(path: str) -> dict:
    """The TIMING_KEYS of an existing summary.json ({} if there is none or it is unreadable)."""
    try:
        with open(path) as f:
            previous = json.load(f)
    except (OSError, ValueError):
        return {}
    return {k: previous[k] for k in TIMING_KEYS if k in previous}


def make_validator(values: dict, tasks, hidden, rule):
    """The `Validator` of the validation flags on `tasks` (None if there are none)."""
    from blur_tf.meta import Validator  # pylint: disable=g-import-not-at-top
    if not tasks:
        return None
    return Validator(tasks, hidden, rule, values["batch_size"],
                     networks=values["validation_networks"],
                     eval_examples=values["validation_examples"], seed=values["seed"],
                     score=values["validation_score"])


def train_or_exit(trainer, total: int):
    """`trainer.train(total)` resuming from its checkpoint, with SIGTERM/SIGINT turned into a
    checkpoint and exit status 128 + signal; the train result otherwise (any trainer)."""
    from blur_tf.meta.checkpoint import StopRequest  # pylint: disable=g-import-not-at-top
    with StopRequest() as stop:
        result = trainer.train(total, resume=True, stop=stop)
    if result.interrupted:
        logging.warning("interrupted by signal %d; checkpoint saved, rerun the same command to "
                        "resume", result.signum)
        raise SystemExit(128 + int(result.signum))
    return result


def schedules_length(schedule, steps: int) -> int:
    from blur_tf.meta.schedules import length_at  # pylint: disable=g-import-not-at-top
    return length_at(schedule, max(steps - 1, 0))


def run_or_exit(program: str, argv) -> dict:
    """`run` with this module's flags; the summary, or one line on stderr and exit status 2
    (bad flags, unexpected arguments) or 1 (meta-training diverged)."""
    from blur_tf.meta.trainer import MetaTrainingDiverged  # pylint: disable=g-import-not-at-top
    if len(argv) > 1:
        exit_with_error(program, f"unexpected arguments: {argv[1:]}")
    try:
        return run(flag_values(), argv=sys.argv)
    except FlagError as e:
        exit_with_error(program, e)
    except MetaTrainingDiverged as e:
        exit_with_error(program, e, status=1)


def main(argv):
    run_or_exit("meta_train", argv)


if __name__ == "__main__":
    app.run(main)

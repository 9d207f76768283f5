r"""Searches a BLUR genome with CMA-ES on held-out accuracy (paper §4.4; `blur_tf.CmaTrainer`).

    python -m launchers.cma_train --flagfile=launchers/configs/cma_mnist14.cfg \
        --out_dir=runs/cma_mnist14 --tfds_manual_dir=../shared/data

Flags follow `meta_train` (whose definitions this launcher shares: `--tasks`, `--layer_sizes`
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

import math
import os
import shlex
import sys

from absl import app, flags, logging

from launchers import exit_with_error, meta_train

FLAGS = flags.FLAGS

flags.DEFINE_integer("generations", 100, "Total CMA-ES generations.", lower_bound=0)
flags.DEFINE_float("sigma0", 0.1, "Initial CMA-ES step size (> 0), the same in every "
                   "coordinate of the genome vector.")
flags.DEFINE_list("fields", [], "Genome fields to search (default: those the rule reads); the "
                  "others keep the start genome's values.")
flags.DEFINE_integer("networks", 1, "Networks per candidate per generation (fitness averaged).",
                     lower_bound=1)
flags.DEFINE_integer("average_steps", 1, "Fitness = accuracy averaged over the last N inner "
                     "steps of the unroll.", lower_bound=1)
flags.DEFINE_integer("eval_batches", 1, "Held-out batches (of --eval_batch_size examples) the "
                     "fitness is measured on, per network.", lower_bound=1)
flags.DEFINE_multi_string("test_tasks", [], "Task specs of the final report table only (never "
                          "used for selection); default: the validation tasks.")

# meta_train flags this launcher uses (the others are gradient-only and refused).
SHARED_FLAGS = (
    "tasks", "validation_tasks", "layer_sizes", "num_states", "activation", "output_activation",
    "backward_activation", "backward_mode", "symmetric", "multichannel", "normalize_forward",
    "normalize_backward", "normalize_output", "oja", "saturation", "feedback", "population", "unroll",
    "batch_size", "eval_batch_size", "transform_std", "synapse_update", "init_genome", "seed",
    "validate_every", "validation_unroll", "validation_score", "validation_networks",
    "validation_examples",
    "checkpoint_every", "keep_checkpoints", "log_every", "out_dir", "tfds_manual_dir",
    "data_dir", "deterministic", "print_table", "strategy", "cpu_devices")
RESUMABLE_FLAGS = ("generations", "validate_every", "checkpoint_every", "keep_checkpoints",
                   "log_every", "out_dir", "tfds_manual_dir", "data_dir", "print_table",
                   "validation_tasks", "validation_networks", "validation_examples",
                   "test_tasks", "strategy", "cpu_devices")
FlagError = meta_train.FlagError


def flag_values() -> dict:
    """The run's configuration: the shared meta_train flags and this module's flags."""
    names = SHARED_FLAGS + tuple(f.name for f in FLAGS.get_flags_for_module(__name__))
    return {name: FLAGS[name].value for name in sorted(names)}


def refused_flags_given() -> list[str]:
    """meta_train flags given on the command line (or a flagfile) that CMA-ES does not use."""
    return sorted(f.name for f in FLAGS.get_flags_for_module(meta_train.__name__)
                  if f.present and f.name not in SHARED_FLAGS)


def build_config(values: dict):
    """Validates flag values (meta_train's checks, then CMA-ES's) — no work.

    Returns (rule, schedule, hidden sizes, task specs, validation specs, test specs, fields).
    Raises FlagError naming the problem.
    """
    if values["population"] < 2:
        raise FlagError(f"--population (CMA-ES λ) must be >= 2, got {values['population']}")
    sigma0 = values["sigma0"]
    if not (math.isfinite(sigma0) and sigma0 > 0):
        raise FlagError(f"--sigma0 must be a finite number > 0, got {sigma0}")
    defaults = {f.name: f.default for f in FLAGS.get_flags_for_module(meta_train.__name__)}
    rule, schedule, hidden, tasks, validation_tasks = meta_train.build_config(
        {**defaults, **values})
    from blur_tf.meta.genome_vector import check_fields  # pylint: disable=g-import-not-at-top
    from blur_tf.tasks.spec import parse_spec  # pylint: disable=g-import-not-at-top
    fields = None
    if values["fields"]:
        try:
            fields = check_fields([f.strip() for f in values["fields"]])
        except ValueError as e:
            raise FlagError(f"--fields: {e}") from None
    jitter = getattr(schedule, "fraction", 0.0)  # a jittered unroll can be shorter than its base
    shortest = max(1, round(schedule.base_length(0) * (1.0 - jitter)))
    if values["average_steps"] > shortest:
        raise FlagError(f"--average_steps={values['average_steps']} exceeds the shortest unroll "
                        f"({shortest} inner steps) of --unroll={values['unroll']}")
    test_tasks = meta_train.split_specs(values["test_tasks"])
    for spec in test_tasks:
        try:
            parse_spec(spec)
        except ValueError as e:
            raise FlagError(f"--test_tasks: {e}") from None
    if values["init_genome"]:
        try:
            genome = meta_train.initial_genome(values["init_genome"])
        except ValueError as e:
            raise FlagError(f"--init_genome: {e}") from None
        if genome.num_states != rule.num_states or genome.population != 1:
            raise FlagError(f"--init_genome: {values['init_genome']} has K={genome.num_states}, "
                            f"population {genome.population}; need K={rule.num_states} "
                            "(--num_states), population 1")
    return rule, schedule, hidden, tasks, validation_tasks, test_tasks, fields


def run(values: dict, argv=None) -> dict:
    """Runs the CMA-ES search with flag `values`; returns the summary dict (module doc).

    Raises FlagError before any work on bad flags or an incompatible existing run.
    """
    rule, schedule, hidden, task_specs, validation_specs, test_specs, fields = \
        build_config(values)
    out_dir = os.path.abspath(values["out_dir"])
    meta_train.check_resume(out_dir, values, RESUMABLE_FLAGS)
    strategy = meta_train.make_strategy(values)
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    from blur_tf import meta  # pylint: disable=g-import-not-at-top
    from blur_tf.meta.distribute import is_chief  # pylint: disable=g-import-not-at-top
    from blur_tf.files import write_json_atomic  # pylint: disable=g-import-not-at-top
    from blur_tf.meta import report  # pylint: disable=g-import-not-at-top
    from blur_tf.tasks import get_task  # pylint: disable=g-import-not-at-top
    if values["deterministic"]:
        tf.config.experimental.enable_op_determinism()
    task_kwargs = dict(tfds_manual_dir=values["tfds_manual_dir"], data_dir=values["data_dir"])
    eval_batch = values["eval_batch_size"] or values["batch_size"]
    try:
        tasks = [get_task(s, **task_kwargs) for s in task_specs]
        validation_tasks = [get_task(s, **task_kwargs) for s in validation_specs]
        test_tasks = [get_task(s, **task_kwargs) for s in test_specs]
        problem = meta.InnerProblem(tasks, hidden, rule, values["batch_size"],
                                    eval_batch * values["eval_batches"])
        validator = meta_train.make_validator(values, validation_tasks, hidden, rule)
        start = meta_train.initial_genome(values["init_genome"])
        trainer = meta.CmaTrainer(
            problem, schedule, population=values["population"], sigma0=values["sigma0"],
            seed=values["seed"], genome=start, fields=fields,
            transform_std=values["transform_std"], synapse_update=values["synapse_update"],
            networks=values["networks"], average_steps=values["average_steps"],
            eval_batches=values["eval_batches"], validator=validator,
            validation_length=values["validation_unroll"],
            validate_every=values["validate_every"],
            checkpoint_every=values["checkpoint_every"], log_every=values["log_every"],
            checkpoint_dir=os.path.join(out_dir, "ckpt"),
            summary_dir=os.path.join(out_dir, "tb"),
            keep_checkpoints=values["keep_checkpoints"], strategy=strategy)
    except ValueError as e:
        raise FlagError(str(e)) from None
    command = " ".join(shlex.quote(a) for a in (argv or sys.argv))
    chief = is_chief(strategy)
    if chief:
        meta_train.write_flags(trainer, out_dir, command, values)
    logging.info("CMA-ES: population %d x %d networks, %d-dimensional genome vector (%s) on "
                 "%s; validation on %s; unroll %s; %d generations -> %s", values["population"],
                 values["networks"], trainer.mapping.size, ", ".join(trainer.mapping.fields),
                 problem.task_names, validator.names if validator else [], schedule,
                 values["generations"], out_dir)
    result = meta_train.train_or_exit(trainer, values["generations"])
    best = trainer.best_genome()
    validation = result.validation
    final = ({task: float(acc[0]) for task, acc in validation.final().items()}
             if validation else {})
    summary = {
        "generations": result.generations,
        "population": values["population"],
        "dimensions": trainer.mapping.size,
        "best": {"score": (trainer.best_score if math.isfinite(trainer.best_score) else None),
                 "generation": trainer.best_generation,
                 "selected_by": "validation" if validator else "fitness"},
        "validation": {"unroll_length": validation.length if validation else None,
                       "accuracy": final,
                       "curves": ({t: c[0].round(4).tolist()
                                   for t, c in validation.curves.items()} if validation else {})},
        "curve": trainer.history,
        "final_sigma": float(trainer.es.sigma),
        "pycma_stop": {k: str(v) for k, v in dict(trainer.es.stop()).items()},
        "wall_seconds_this_call": result.seconds,
        "generations_this_call": result.generations_run,
        "generations_per_second": (result.generations_run / result.generation_seconds
                                   if result.generation_seconds else None),
        "non_finite_candidates": result.non_finite,
        "peak_rss_mb": meta_train.peak_rss_mb(),
    }
    metadata = {"command": command, "flags": values, "rule": rule.to_dict(),
                "hidden_sizes": hidden, "tasks": task_specs,
                "validation_tasks": validation_specs, "trainer": "CmaTrainer",
                "generations": result.generations, "fields": list(trainer.mapping.fields),
                "vector_layout": trainer.mapping.layout(), "best": summary["best"],
                "validation_accuracy": final,
                "validation_unroll_length": summary["validation"]["unroll_length"]}
    if not chief:
        logging.info("CMA-ES done on this worker; the chief writes %s", out_dir)
        return summary
    best.save(os.path.join(out_dir, "genome.json"), metadata=metadata)
    report_tasks = test_tasks or validation_tasks
    if values["print_table"] and report_tasks:
        length = (validation.length if validation else
                  schedule.base_length(max(result.generations - 1, 0)))
        initial = trainer.mapping.decode(trainer.mapping.initial())
        table = report.accuracy_table({"cma": best, "start": initial}, report_tasks, hidden,
                                      rule, length, values["batch_size"])
        majority = {report.task_name(t): report.majority_rate(t) for t in report_tasks}
        summary["table"] = {"unroll_length": length, "accuracy": table,
                            "majority_class": majority}
        print(report.format_table(table, f"held-out accuracy after {length} inner steps "
                                         "(mean of 8 networks; chance = majority class)",
                                  chance=majority), flush=True)
    write_json_atomic(os.path.join(out_dir, "summary.json"), summary)
    logging.info("wrote %s/genome.json and summary.json (%.1f s, %.3f generations/s, %d "
                 "non-finite candidates, peak RSS %.0f MiB)", out_dir, result.seconds,
                 summary["generations_per_second"] or 0.0, result.non_finite,
                 summary["peak_rss_mb"])
    return summary


def main(argv):
    if len(argv) > 1:
        exit_with_error("cma_train", f"unexpected arguments: {argv[1:]}")
    try:
        refused = refused_flags_given()
        if refused:
            raise FlagError(", ".join(f"--{n}" for n in refused) + " belong(s) to gradient "
                            "meta-training (launchers/meta_train.py); CMA-ES does not use them")
        run(flag_values(), argv=sys.argv)
    except FlagError as e:
        exit_with_error("cma_train", e)


if __name__ == "__main__":
    FLAGS.set_default("population", 16)  # meta_train's default (1 genome) is no CMA-ES population
    app.run(main)

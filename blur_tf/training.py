"""The training applications behind `launchers.meta_train` and `launchers.cma_train`.

`run(algorithm, values, …)` takes the flag values of a launcher (a read-only mapping) and:
checks them and the --out_dir (`RunDirectory`) before any work; holds the folder's lock for
the whole run (a second run on it is refused); refuses to resume a folder
whose recorded flags differ outside the resumable ones; builds the strategy, tasks, inner
problem, validator and trainer; records the flags; trains (SIGTERM / SIGINT: checkpoint and
`Interrupted`); and, on the chief, writes genome.json (with provenance metadata), an accuracy
table on held-out tasks and summary.json. Bad values raise `ValueError` naming the flag.
What differs between gradient meta-training and CMA-ES is in `_GRADIENT` / `_CMA`: the
trainer, the summary and the genome metadata.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import os
from collections.abc import Callable, Mapping

from blur_tf import allocator, config
from blur_tf.experiment import RunDirectory, peak_rss_mb
from blur_tf.progress import Progress

log = logging.getLogger(__name__)


def split_specs(values) -> list[str]:
    """Task specs from a multi-string flag whose values may hold several specs joined by ';'."""
    return [s.strip() for v in values or [] for s in v.split(";") if s.strip()]


def backprop_init_lr(text: str) -> float | None:
    """LR of an `--init_genome=backprop:LR` value (None for a file path; ValueError if bad)."""
    if not text.startswith("backprop:"):
        return None
    try:
        lr = float(text.split(":", 1)[1])
    except ValueError:
        lr = float("nan")
    if not lr > 0:
        raise ValueError(f"--init_genome=backprop:LR needs a learning rate > 0, got {text!r}")
    return lr


def initial_genome(text: str | None):
    """The genome of `--init_genome` (None: the trainer's random default)."""
    from blur_tf.genome import Genome  # pylint: disable=g-import-not-at-top

    if not text:
        return None
    lr = backprop_init_lr(text)
    return Genome.load(text) if lr is None else Genome.backprop(lr)


@dataclasses.dataclass(frozen=True)
class Config:
    """What the flag values describe, checked: no task is built yet."""

    rule: object
    schedule: object
    hidden: list
    tasks: list
    validation_tasks: list
    test_tasks: list
    fields: tuple | None = None


def _check_specs(flag: str, specs) -> None:
    from blur_tf.tasks.spec import parse_spec  # pylint: disable=g-import-not-at-top

    for spec in specs:
        try:
            parse_spec(spec)
        except ValueError as e:
            raise ValueError(f"--{flag}: {e}") from None


def check_config(values: Mapping) -> Config:
    """Validates the flag values shared by both applications; ValueError naming the flag."""
    from blur_tf.meta import distribute  # pylint: disable=g-import-not-at-top
    from blur_tf.meta.schedules import parse_schedule  # pylint: disable=g-import-not-at-top

    if not values["out_dir"]:
        raise ValueError("--out_dir is required")
    distribute.check_strategy(values.get("strategy", "none"), values.get("cpu_devices"))
    if values.get("strategy", "none") != "none" and values.get("estimator") == "truncated":
        raise ValueError(
            "--estimator=truncated keeps per-network state between meta-steps "
            "and is not distributed; use --estimator=full or segmented with "
            "--strategy"
        )
    try:
        hidden = [int(n) for n in values["layer_sizes"]]
    except ValueError:
        raise ValueError(f"--layer_sizes must be ints, got {values['layer_sizes']}") from None
    if any(n < 1 for n in hidden):
        raise ValueError(f"--layer_sizes must be positive, got {hidden}")
    tasks, validation = split_specs(values["tasks"]), split_specs(values["validation_tasks"])
    test = split_specs(values.get("test_tasks"))
    if not tasks:
        raise ValueError("--tasks: give at least one training task")
    for flag, specs in (("tasks", tasks), ("validation_tasks", validation), ("test_tasks", test)):
        _check_specs(flag, specs)
    if values["init_genome"] and backprop_init_lr(values["init_genome"]) is None:
        from blur_tf.genome import resolve_genome_path  # pylint: disable=g-import-not-at-top

        try:
            resolve_genome_path(values["init_genome"])
        except ValueError as e:
            raise ValueError(f"--init_genome: {e}") from None
    try:
        rule = config.rule_from_values(values)
    except ValueError as e:
        raise ValueError(f"rule flags: {e}") from None
    try:
        schedule = parse_schedule(values["unroll"], seed=values["seed"])
    except ValueError as e:
        raise ValueError(f"--unroll: {e}") from None
    _check_memory(values, hidden, rule.num_states)
    return Config(rule, schedule, hidden, tasks, validation, test)


def _check_memory(values: Mapping, hidden, num_states: int) -> None:
    """ValueError if one inner step of the batch cannot fit in this machine's memory.

    A lower bound, so no run that fits is refused: every network of a step holds at least its
    hidden states, batch × Σ hidden sizes × K float32 values (inputs, outputs, the tape of
    the unroll and the synapses come on top).
    """
    networks = values.get("population", 1) * values.get("meta_batch", values.get("networks", 1))
    batch = max(values.get("batch_size") or 0, values.get("eval_batch_size") or 0)
    needed = 4 * batch * sum(hidden) * num_states * networks
    try:
        available = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError):
        return
    if needed > available:
        raise ValueError(
            f"--batch_size={values.get('batch_size')}: one inner step needs at "
            f"least {needed / 2**30:.1f} GiB of hidden states ({networks} networks), "
            f"more than this machine's {available / 2**30:.1f} GiB; use a smaller "
            "batch"
        )


def make_strategy(values: Mapping, meta_batch: int | None = None):
    """The strategy of `--strategy`/`--cpu_devices` (None for none), made before anything runs
    TensorFlow ops; ValueError if its replicas do not divide `meta_batch`."""
    from blur_tf.meta import distribute  # pylint: disable=g-import-not-at-top

    strategy = distribute.make_strategy(values["strategy"], values["cpu_devices"])
    if meta_batch is not None:
        distribute.replica_share(meta_batch, strategy, "--meta_batch")
    return strategy


def make_validator(values: Mapping, tasks, hidden, rule):
    """The `Validator` of the validation flags on `tasks` (None if there are none)."""
    from blur_tf.meta import Validator  # pylint: disable=g-import-not-at-top

    if not tasks:
        return None
    return Validator(
        tasks,
        hidden,
        rule,
        values["batch_size"],
        networks=values["validation_networks"],
        eval_examples=values["validation_examples"],
        seed=values["seed"],
        score=values["validation_score"],
    )


@dataclasses.dataclass(frozen=True)
class Application:
    """What one training application adds to the shared run (module doc)."""

    name: str
    total_flag: str  # the flag of the number of outer steps
    check: Callable  # (values, Config) -> Config: its own flag checks
    meta_batch: Callable  # values -> meta-batch the strategy must divide (or None)
    trainer: Callable  # (values, Config, problem, validator, strategy, run_dir) -> trainer
    report: Callable  # (values, Config, trainer, result, run_dir) -> (summary, metadata, genomes)


def run(app: Application, values: Mapping, command: str, defaults: Mapping, resumable) -> dict:
    """Runs `app` with flag `values` (module doc); returns the summary dict."""
    run_dir = RunDirectory(values["out_dir"])
    cfg = app.check(values, check_config(values))
    allocator.limit_arenas(values.get("malloc_arenas", allocator.DEFAULT_ARENAS))
    strategy = make_strategy(values, app.meta_batch(values))
    from blur_tf.meta.distribute import is_chief  # pylint: disable=g-import-not-at-top

    chief = is_chief(strategy)
    with run_dir.lock() if chief else contextlib.nullcontext():  # only the chief writes
        run_dir.check_resume(dict(values), dict(defaults), resumable)
        return _run(app, values, command, cfg, strategy, chief, run_dir)


def _run(
    app: Application,
    values: Mapping,
    command: str,
    cfg: Config,
    strategy,
    chief: bool,
    run_dir: RunDirectory,
) -> dict:
    """`run` once the flags are checked and the folder is locked."""
    import tensorflow as tf  # pylint: disable=g-import-not-at-top

    from blur_tf.meta import InnerProblem  # pylint: disable=g-import-not-at-top
    from blur_tf.tasks import get_source, get_task  # pylint: disable=g-import-not-at-top

    if values["deterministic"]:
        tf.config.experimental.enable_op_determinism()
    kwargs = dict(tfds_manual_dir=values["tfds_manual_dir"], data_dir=values["data_dir"])
    tasks = [get_source(s, **kwargs) for s in cfg.tasks]
    validation_tasks = [get_task(s, **kwargs) for s in cfg.validation_tasks]
    test_tasks = [get_task(s, **kwargs) for s in cfg.test_tasks]
    eval_batch = (values["eval_batch_size"] or values["batch_size"]) * values.get("eval_batches", 1)
    problem = InnerProblem(
        tasks,
        cfg.hidden,
        cfg.rule,
        values["batch_size"],
        eval_batch,
        values.get("logit_scale", 1.0),
    )
    validator = make_validator(values, validation_tasks, cfg.hidden, cfg.rule)
    trainer = app.trainer(values, cfg, problem, validator, strategy, run_dir)
    if chief:
        run_dir.record_flags(command, dict(values), trainer.summaries)
    log.info(
        "%s: %s on %s; validation on %s; unroll %s; %d %s -> %s",
        app.name,
        type(trainer.algorithm).__name__,
        problem.task_names,
        validator.names if validator else [],
        cfg.schedule,
        values[app.total_flag],
        f"{trainer.algorithm.unit}s",
        run_dir.path,
    )
    with Progress(trainer.algorithm.unit, app.name) as progress:
        result = run_dir.train(trainer, values[app.total_flag], progress.update if chief else None)
    summary, metadata, genomes = app.report(values, cfg, trainer, result, run_dir)
    metadata = {
        "command": command,
        "flags": dict(values),
        "rule": cfg.rule.to_dict(),
        "hidden_sizes": cfg.hidden,
        "tasks": cfg.tasks,
        "validation_tasks": cfg.validation_tasks,
        **metadata,
    }
    if not chief:
        log.info("%s done on this worker; the chief writes %s", app.name, run_dir.path)
        return summary
    run_dir.write_genome(trainer.best_genome(), metadata)
    report_tasks = test_tasks or validation_tasks
    if values["print_table"] and report_tasks:
        summary["table"] = accuracy_report(
            genomes, report_tasks, cfg, values, summary["validation"]["unroll_length"], result
        )
    run_dir.write_json("summary.json", summary)
    log.info(
        "wrote %s/genome.json and summary.json (%.1f s in this call, peak RSS %.0f MiB)",
        run_dir.path,
        result.seconds,
        summary["peak_rss_mb"],
    )
    return summary


def accuracy_report(genomes: dict, tasks, cfg: Config, values: Mapping, length, result) -> dict:
    """Prints and returns the held-out accuracy table of `genomes` after `length` steps."""
    from blur_tf.meta import report  # pylint: disable=g-import-not-at-top

    length = length or cfg.schedule.base_length(max(result.steps - 1, 0))
    table = report.accuracy_table(
        genomes, tasks, cfg.hidden, cfg.rule, length, values["batch_size"]
    )
    majority = {report.task_name(t): report.majority_rate(t) for t in tasks}
    print(
        report.format_table(
            table,
            f"held-out accuracy after {length} inner steps (mean of 8 "
            "networks; chance = majority class)",
            chance=majority,
        ),
        flush=True,
    )
    return {"unroll_length": length, "accuracy": table, "majority_class": majority}


def _validation_summary(validation, member: int) -> tuple[dict, dict]:
    """(summary["validation"], final accuracies) of validation curves' `member`."""
    final = (
        {task: float(acc[member]) for task, acc in validation.final().items()} if validation else {}
    )
    return {
        "unroll_length": validation.length if validation else None,
        "accuracy": final,
        "curves": (
            {t: c[member].round(4).tolist() for t, c in validation.curves.items()}
            if validation
            else {}
        ),
    }, final


def _periods(values: Mapping, run_dir: RunDirectory) -> dict:
    """The outer loop's arguments of the flags."""
    return dict(
        validation_length=values["validation_unroll"],
        validate_every=values["validate_every"],
        checkpoint_every=values["checkpoint_every"],
        log_every=values["log_every"],
        checkpoint_dir=run_dir.file("ckpt"),
        summary_dir=run_dir.file("tb"),
        keep_checkpoints=values["keep_checkpoints"],
    )


# ----------------------------------------------------------------------------- gradient
def _gradient_check(values: Mapping, cfg: Config) -> Config:
    for name in ("learning_rate", "logit_scale"):
        if not values[name] > 0:
            raise ValueError(f"--{name} must be > 0, got {values[name]}")
    if values["clip_norm"] < 0:
        raise ValueError(f"--clip_norm must be >= 0, got {values['clip_norm']}")
    return cfg


def _gradient_trainer(values, cfg, problem, validator, strategy, run_dir):
    from blur_tf.meta import MetaTrainer, make_estimator  # pylint: disable=g-import-not-at-top

    estimator = make_estimator(
        values["estimator"],
        problem,
        values["population"],
        values["meta_batch"],
        segment_length=values["segment_length"],
        truncation_length=values["truncation_length"],
        meta_loss=values["meta_loss"],
        jit_compile=values["xla"],
    )
    return MetaTrainer(
        problem,
        cfg.schedule,
        population=values["population"],
        meta_batch=values["meta_batch"],
        learning_rate=values["learning_rate"],
        clip_norm=values["clip_norm"],
        seed=values["seed"],
        genome=initial_genome(values["init_genome"]),
        identical_init=values["identical_init"],
        transform_std=values["transform_std"],
        synapse_update=values["synapse_update"],
        validator=validator,
        max_consecutive_skips=values["max_consecutive_skips"],
        estimator=estimator,
        strategy=strategy,
        **_periods(values, run_dir),
    )


def _gradient_report(values, cfg, trainer, result, run_dir):
    from blur_tf.genome import Genome  # pylint: disable=g-import-not-at-top
    from blur_tf.meta.schedules import length_at  # pylint: disable=g-import-not-at-top

    validation, final = _validation_summary(result.validation, int(trainer.best_index.numpy()))
    summary = {
        "meta_steps": result.steps,
        "final_unroll_length": length_at(cfg.schedule, max(result.steps - 1, 0)),
        "validation": validation,
        "wall_seconds_this_call": result.seconds,
        "meta_steps_this_call": result.steps_run,
        "meta_steps_per_second": (
            result.steps_run / result.step_seconds if result.step_seconds else None
        ),
        "skipped_meta_steps": result.skipped_meta_steps,
        "skipped_genome_updates": result.skipped,
        "peak_rss_mb": peak_rss_mb(),
    }
    if not result.steps_run:  # a rerun of a finished run: keep the training call's timing
        summary.update(run_dir.previous_timing())
    metadata = {
        "meta_steps": result.steps,
        "validation_accuracy": final,
        "validation_unroll_length": validation["unroll_length"],
    }
    random = Genome.random(
        cfg.rule.num_states,
        seed=values["seed"],
        transform_std=values["transform_std"],
        synapse_update=values["synapse_update"],
    )
    return summary, metadata, {"learned": trainer.best_genome(), "random": random}


GRADIENT = Application(
    "meta_train",
    "meta_steps",
    _gradient_check,
    lambda values: values["meta_batch"],
    _gradient_trainer,
    _gradient_report,
)


# ----------------------------------------------------------------------------- CMA-ES
def _cma_check(values: Mapping, cfg: Config) -> Config:
    from blur_tf.meta import genome_vector  # pylint: disable=g-import-not-at-top

    if values["population"] < 2:
        raise ValueError(f"--population (CMA-ES λ) must be >= 2, got {values['population']}")
    if not (math.isfinite(values["sigma0"]) and values["sigma0"] > 0):
        raise ValueError(f"--sigma0 must be a finite number > 0, got {values['sigma0']}")
    fields = None
    if values["fields"]:
        try:
            fields = genome_vector.check_fields([f.strip() for f in values["fields"]])
        except ValueError as e:
            raise ValueError(f"--fields: {e}") from None
        read = genome_vector.rule_fields(cfg.rule)
        unread = [f for f in fields if f not in read]
        if unread:
            raise ValueError(
                f"--fields: the rule does not read {', '.join(unread)} (every "
                "candidate would get the same fitness); it reads "
                f"{', '.join(read)}"
            )
    jitter = getattr(cfg.schedule, "fraction", 0.0)  # a jittered unroll can be shorter
    shortest = max(1, round(cfg.schedule.base_length(0) * (1.0 - jitter)))
    if values["average_steps"] > shortest:
        raise ValueError(
            f"--average_steps={values['average_steps']} exceeds the shortest "
            f"unroll ({shortest} inner steps) of --unroll={values['unroll']}"
        )
    if values["init_genome"]:
        genome = initial_genome(values["init_genome"])
        if genome.num_states != cfg.rule.num_states or genome.population != 1:
            raise ValueError(
                f"--init_genome: {values['init_genome']} has K="
                f"{genome.num_states}, population {genome.population}; need "
                f"K={cfg.rule.num_states} (--num_states), population 1"
            )
    return dataclasses.replace(cfg, fields=fields)


def _cma_trainer(values, cfg, problem, validator, strategy, run_dir):
    from blur_tf.meta import CmaTrainer  # pylint: disable=g-import-not-at-top

    return CmaTrainer(
        problem,
        cfg.schedule,
        population=values["population"],
        sigma0=values["sigma0"],
        seed=values["seed"],
        genome=initial_genome(values["init_genome"]),
        fields=cfg.fields,
        transform_std=values["transform_std"],
        synapse_update=values["synapse_update"],
        networks=values["networks"],
        average_steps=values["average_steps"],
        eval_batches=values["eval_batches"],
        validator=validator,
        strategy=strategy,
        **_periods(values, run_dir),
    )


def _cma_report(values, cfg, trainer, result, run_dir):
    del run_dir
    validation, final = _validation_summary(result.validation, 0)
    best = {
        "score": trainer.best_score if math.isfinite(trainer.best_score) else None,
        "generation": trainer.best_generation,
        "selected_by": "validation" if trainer.validator else "fitness",
    }
    summary = {
        "generations": result.generations,
        "population": values["population"],
        "dimensions": trainer.mapping.size,
        "best": best,
        "validation": validation,
        "curve": trainer.history,
        "final_sigma": float(trainer.es.sigma),
        "pycma_stop": {k: str(v) for k, v in dict(trainer.es.stop()).items()},
        "wall_seconds_this_call": result.seconds,
        "generations_this_call": result.generations_run,
        "generations_per_second": (
            result.generations_run / result.generation_seconds
            if result.generation_seconds
            else None
        ),
        "non_finite_candidates": result.non_finite,
        "peak_rss_mb": peak_rss_mb(),
    }
    metadata = {
        "trainer": "CmaTrainer",
        "generations": result.generations,
        "fields": list(trainer.mapping.fields),
        "vector_layout": trainer.mapping.layout(),
        "best": best,
        "validation_accuracy": final,
        "validation_unroll_length": validation["unroll_length"],
    }
    start = trainer.mapping.decode(trainer.mapping.initial())
    return summary, metadata, {"cma": trainer.best_genome(), "start": start}


CMA = Application(
    "cma_train", "generations", _cma_check, lambda values: None, _cma_trainer, _cma_report
)

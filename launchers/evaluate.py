r"""Evaluates a genome against SGD / momentum / Adam: test accuracy per inner step.

    python -m launchers.evaluate --genome=backprop --tasks=mnist --layer_sizes=128 \
        --steps=1,5,10,20,50,100,200 --seeds=3 --batch_size=128 --out_dir=/tmp/eval

For every task (repeat `--tasks`, or separate specs with ';') and every architecture (repeat
`--layer_sizes`, hidden sizes only, e.g. `--layer_sizes=128 --layer_sizes=64,64`), fresh networks
are trained from `--seeds` seeds on the same batches in the same order, and test accuracy on the
task's full held-out split is recorded at every horizon of `--steps`. BLUR runs the genome; each
baseline is swept over `--activations` × `--learning_rates` and reported with the best
configuration at each horizon (see blur_tf/evaluation/selection.py).

`--genome`: a genome.json (rule from its `metadata.rule`, else `Rule(num_states=K)`; `--rule`
overrides fields, e.g. `--rule=activation=relu,normalize_backward=false`), `backprop` (the
analytic genome under `Rule.backprop(--backprop_activation)`, lr swept over `--learning_rates`
unless `--backprop_lr` fixes it), or `none` (baselines only).

Writes OUT/results.json, OUT/results.csv, OUT/curves.png (one panel per task × architecture),
OUT/sweep.png (the paper's Fig. 6: the genome against SGD and momentum at every learning rate of
the grid, when both run) and TensorBoard scalars under OUT/tensorboard; prints one table per
run. Bad flags (including an --out_dir that cannot be written) exit with status 2 and a
one-line message before any work; the flag help is printed only on --help.
"""

from __future__ import annotations

import dataclasses
import itertools
import os
import time

from absl import app, flags, logging

from blur_tf import baselines, evaluation
from blur_tf.files import check_output_folder, write_json_atomic
from blur_tf.progress import Progress
from launchers import call_or_exit, flag_parser, parse_ints, settings_or_exit

DEFAULT_STEPS = (1, 5, 10, 20, 50, 100, 200)


def define_flags(fv: flags.FlagValues = flags.FLAGS) -> None:
    """Defines this launcher's flags on `fv` (the global FLAGS when run as a program)."""
    flags.DEFINE_string(
        "genome",
        "backprop",
        "genome.json path, shipped genome name (e.g. mnist_fast), 'backprop' or 'none'.",
        flag_values=fv,
    )
    flags.DEFINE_integer(
        "genome_member",
        0,
        "Population member of the genome file to "
        "evaluate; -1 evaluates every member (best per horizon).",
        flag_values=fv,
    )
    flags.DEFINE_string(
        "rule",
        "",
        "Rule field overrides 'key=value,...' applied on top of the genome's metadata rule.",
        flag_values=fv,
    )
    flags.DEFINE_float(
        "backprop_lr",
        None,
        "Fixed lr of --genome=backprop (default: swept over --learning_rates, best per horizon).",
        flag_values=fv,
    )
    flags.DEFINE_enum(
        "backprop_activation",
        "tanh",
        list(baselines.ACTIVATIONS),
        "Hidden activation of --genome=backprop.",
        flag_values=fv,
    )
    flags.DEFINE_multi_string(
        "tasks",
        ["mnist"],
        "Task spec(s); repeat the flag or separate with ';' (specs may contain commas).",
        flag_values=fv,
    )
    flags.DEFINE_multi_string(
        "layer_sizes",
        ["128"],
        "Hidden layer sizes of one "
        "architecture, e.g. 128 or 64,64; repeat for several; 'none' "
        "for no hidden layer.",
        flag_values=fv,
    )
    flags.DEFINE_list(
        "steps", [str(s) for s in DEFAULT_STEPS], "Inner-step horizons.", flag_values=fv
    )
    flags.DEFINE_list(
        "baselines",
        list(baselines.OPTIMIZERS),
        f"Baselines, any of {','.join(baselines.OPTIMIZERS)}; 'none' for no baseline.",
        flag_values=fv,
    )
    flags.DEFINE_list(
        "activations",
        list(baselines.ACTIVATIONS),
        "Hidden activations swept by the baselines.",
        flag_values=fv,
    )
    flags.DEFINE_list(
        "learning_rates",
        [f"{r:g}" for r in baselines.DEFAULT_LEARNING_RATES],
        "Learning-rate grid of the baselines (and of --genome=backprop).",
        flag_values=fv,
    )
    flags.DEFINE_integer(
        "seeds", 3, "Number of seeds (initial networks and batch streams).", flag_values=fv
    )
    flags.DEFINE_integer(
        "first_seed", 0, "Seeds are first_seed … first_seed+seeds-1.", flag_values=fv
    )
    flags.DEFINE_integer("batch_size", 128, "Training batch size.", flag_values=fv)
    flags.DEFINE_integer(
        "eval_examples",
        None,
        "Evaluate on the first N held-out examples (default: the full test split).",
        flag_values=fv,
    )
    flags.DEFINE_string("out_dir", None, "Output folder (required).", flag_values=fv)
    flags.DEFINE_string(
        "tfds_manual_dir",
        None,
        "Folder with <builder>/<original files> (default: env BLUR_TFDS_MANUAL_DIR).",
        flag_values=fv,
    )
    flags.DEFINE_string(
        "data_dir",
        None,
        "tfds data folder (default: env BLUR_TFDS_DATA_DIR or ~/tensorflow_datasets).",
        flag_values=fv,
    )
    flags.DEFINE_bool("download", False, "Let tfds download missing datasets.", flag_values=fv)


@dataclasses.dataclass(frozen=True)
class Settings:
    """Validated launcher settings (see the flags for meanings)."""

    genome: str
    genome_member: int | None
    rule_overrides: dict
    backprop_lr: float | None
    backprop_activation: str
    tasks: tuple
    architectures: tuple
    steps: tuple
    baselines: tuple
    activations: tuple
    learning_rates: tuple
    seeds: tuple
    batch_size: int
    eval_examples: int | None
    out_dir: str
    tfds_manual_dir: str | None
    data_dir: str | None
    download: bool


def _architecture(text: str) -> tuple[int, ...]:
    text = text.strip()
    if text.lower() in ("none", ""):
        return ()
    sizes = parse_ints([v for v in text.split(",")], "layer_sizes")
    if any(n < 1 for n in sizes):
        raise ValueError(f"--layer_sizes must be positive, got {text!r}")
    return tuple(sizes)


def settings_from_flags(fv: flags.FlagValues = flags.FLAGS) -> Settings:
    """Validates parsed flags; ValueError naming the first problem (nothing is done yet)."""
    if not fv.out_dir:
        raise ValueError("--out_dir is required")
    check_output_folder(fv.out_dir)
    steps = baselines.check_horizons(parse_ints(fv.steps, "steps"))
    names = [b.strip() for b in fv.baselines if b.strip()]
    names = [] if names == ["none"] else names
    for name in names:
        baselines.check_optimizer(name)
    if len(set(names)) != len(names):
        raise ValueError(f"--baselines lists a method twice: {names}")
    activations = tuple(baselines.check_activation(a.strip()) for a in fv.activations)
    if not activations and names:
        raise ValueError("--activations is empty")
    try:
        rates = baselines.check_learning_rates(float(r) for r in fv.learning_rates)
    except ValueError:
        raise ValueError(
            f"--learning_rates must be positive numbers, got {fv.learning_rates}"
        ) from None
    if fv.seeds < 1 or fv.first_seed < 0:
        raise ValueError(
            f"--seeds must be >= 1 and --first_seed >= 0, got {fv.seeds}, {fv.first_seed}"
        )
    if fv.batch_size < 1:
        raise ValueError(f"--batch_size must be >= 1, got {fv.batch_size}")
    if fv.eval_examples is not None and fv.eval_examples < 1:
        raise ValueError(f"--eval_examples must be >= 1, got {fv.eval_examples}")
    if fv.backprop_lr is not None and not fv.backprop_lr > 0:
        raise ValueError(f"--backprop_lr must be positive, got {fv.backprop_lr}")
    tasks = tuple(s.strip() for value in fv.tasks for s in value.split(";") if s.strip())
    if not tasks:
        raise ValueError("--tasks is empty")
    from blur_tf.tasks import parse_spec  # spec syntax only; datasets load later

    for spec in tasks:
        parse_spec(spec)
    architectures = tuple(_architecture(a) for a in fv.layer_sizes)
    if not architectures:
        raise ValueError("--layer_sizes is empty")
    genome = fv.genome.strip()
    if genome.lower() == "none" and not names:
        raise ValueError("--genome=none and --baselines=none: nothing to evaluate")
    settings = Settings(
        genome=genome,
        genome_member=None if fv.genome_member == -1 else fv.genome_member,
        rule_overrides=evaluation.parse_rule_overrides(fv.rule),
        backprop_lr=fv.backprop_lr,
        backprop_activation=fv.backprop_activation,
        tasks=tasks,
        architectures=architectures,
        steps=steps,
        baselines=tuple(names),
        activations=activations,
        learning_rates=rates,
        seeds=tuple(range(fv.first_seed, fv.first_seed + fv.seeds)),
        batch_size=fv.batch_size,
        eval_examples=fv.eval_examples,
        out_dir=fv.out_dir,
        tfds_manual_dir=fv.tfds_manual_dir,
        data_dir=fv.data_dir,
        download=fv.download,
    )
    load_learner(settings)  # fails early on a missing or malformed genome
    return settings


def load_learner(settings: Settings):
    """The Learner of the settings, or None for --genome=none."""
    if settings.genome.lower() == "none":
        return None
    rates = (settings.backprop_lr,) if settings.backprop_lr is not None else settings.learning_rates
    return evaluation.load_learner(
        settings.genome,
        settings.rule_overrides,
        settings.genome_member,
        rates,
        settings.backprop_activation,
    )


def run(settings: Settings, log=logging.info) -> dict:
    """Evaluates every task × architecture; writes results.json/csv, curves.png, TensorBoard.

    Holds the --out_dir's lock (`RunDirectory.lock`: a second run on the folder is refused).
    Tasks are built (datasets prepared) before any training, so a bad spec fails early.
    Returns the results dict written to OUT/results.json.
    """
    from blur_tf.experiment import RunDirectory

    with RunDirectory(settings.out_dir).lock():
        return _run(settings, log)


def _run(settings: Settings, log) -> dict:
    from blur_tf.tasks import get_task

    learner = load_learner(settings)
    tasks = [
        get_task(
            spec,
            tfds_manual_dir=settings.tfds_manual_dir,
            data_dir=settings.data_dir,
            download=settings.download,
        )
        for spec in settings.tasks
    ]
    settings_dict = {
        k: (list(v) if isinstance(v, tuple) else v) for k, v in dataclasses.asdict(settings).items()
    }
    results = {"settings": settings_dict, "runs": []}
    start = time.perf_counter()
    methods = (learner is not None) + len(settings.baselines)
    total, done = len(tasks) * len(settings.architectures) * methods, itertools.count(1)
    with Progress("method", "evaluate") as progress:
        for task in tasks:
            for hidden in settings.architectures:
                run_start = time.perf_counter()
                log(f"evaluating {task.spec} hidden={list(hidden)} …")
                result = evaluation.evaluate_run(
                    task,
                    hidden,
                    settings.steps,
                    settings.seeds,
                    settings.batch_size,
                    learner,
                    settings.baselines,
                    settings.activations,
                    settings.learning_rates,
                    settings.eval_examples,
                    log=log,
                    method_done=lambda: progress.update(next(done), total),
                )
                result["seconds"] = round(time.perf_counter() - run_start, 3)
                results["runs"].append(result)
                progress.print(evaluation.format_table(result) + f"\n({result['seconds']:.1f}s)\n")
                write_json_atomic(os.path.join(settings.out_dir, "results.json"), results)
    results["seconds"] = round(time.perf_counter() - start, 3)
    if len(results["runs"]) > 1:
        print(evaluation.generalization_table(results["runs"]) + "\n", flush=True)
    write_json_atomic(os.path.join(settings.out_dir, "results.json"), results)
    evaluation.write_csv_atomic(
        os.path.join(settings.out_dir, "results.csv"), evaluation.result_rows(results["runs"])
    )
    evaluation.plot_curves(results["runs"], os.path.join(settings.out_dir, "curves.png"))
    sweep = evaluation.plot_sweep(results["runs"], os.path.join(settings.out_dir, "sweep.png"))
    evaluation.write_tensorboard(results["runs"], os.path.join(settings.out_dir, "tensorboard"))
    edges = [
        (r["task"], m, row["horizon"])
        for r in results["runs"]
        for m, e in r["methods"].items()
        for row in e["per_horizon"]
        if row["at_edge"]
    ]
    if edges:
        log(
            f"WARNING: best learning rate at the edge of the grid for {edges}; widen "
            f"--learning_rates"
        )
    log(
        f"wrote {settings.out_dir}/results.json, results.csv, curves.png, "
        f"{'sweep.png, ' if sweep else ''}tensorboard/ "
        f"in {results['seconds']:.1f}s"
    )
    return results


def main(argv, fv: flags.FlagValues | None = None):
    """One line on stderr and the launchers' exit status (launchers/__init__.py): 2 when the
    command cannot run as given (bad flags, a spec that does not fit its dataset, a dataset
    not available offline, the folder in use), 1 when a write failed."""
    settings = settings_or_exit("evaluate", argv, settings_from_flags, fv or flags.FLAGS)
    call_or_exit("evaluate", run, settings)
    return 0


def cli():
    """Entry point of `blur-evaluate` (pyproject.toml) and of `python -m`."""
    define_flags(flags.FLAGS)
    app.run(main, flags_parser=flag_parser("evaluate"))


if __name__ == "__main__":
    cli()

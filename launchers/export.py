r"""Exports a genome as a SavedModel learner that plain TensorFlow can load (blur_tf/export.py).

    python -m launchers.export --genome=genomes/toy2d.json --task=toy.xor --batch_size=64 \
        --out_dir=/tmp/toy2d_learner
    python -m launchers.export --genome=backprop --backprop_lr=0.1 --layer_sizes=128 \
        --input_size=784 --num_classes=10 --out_dir=/tmp/sgd_learner

`--genome`: a genome.json (rule from its `metadata.rule`, else `Rule(num_states=K)`; `--rule`
overrides fields) or `backprop` (SGD with `--backprop_lr` under
`Rule.backprop(--backprop_activation)`). `--layer_sizes` are the hidden sizes (default: the
genome's `metadata.hidden_sizes`; `none` for no hidden layer); the input size and number of
classes come from `--task` or from `--input_size` and `--num_classes`. `--batch_size` fixes
the batch size of `learn` (default: any; `predict` always takes any). `--time_batches=N` then
loads the folder and times `learn` per batch against the in-framework step on the same random
batches.

Bad flags exit non-zero with a message before any work; an existing non-empty `--out_dir` is
refused unless `--overwrite`.
"""

from __future__ import annotations

import dataclasses
import statistics
import time

import numpy as np
from absl import app, flags, logging

from blur_tf import baselines, evaluation
from blur_tf.export import export_learner
from blur_tf.files import check_output_directory
from blur_tf.genome import Genome
from launchers import call_or_exit, flag_parser, settings_or_exit


def define_flags(fv: flags.FlagValues = flags.FLAGS) -> None:
    """Defines this launcher's flags on `fv` (the global FLAGS when run as a program)."""
    flags.DEFINE_string(
        "genome",
        None,
        "genome.json path, shipped genome name (e.g. mnist_fast) or 'backprop' (required).",
        flag_values=fv,
    )
    flags.DEFINE_integer(
        "genome_member", 0, "Population member of the genome file.", flag_values=fv
    )
    flags.DEFINE_string(
        "rule",
        "",
        "Rule field overrides 'key=value,...' on top of the genome's metadata rule.",
        flag_values=fv,
    )
    flags.DEFINE_float("backprop_lr", 0.1, "Learning rate of --genome=backprop.", flag_values=fv)
    flags.DEFINE_enum(
        "backprop_activation",
        "tanh",
        list(baselines.ACTIVATIONS),
        "Hidden activation of --genome=backprop.",
        flag_values=fv,
    )
    flags.DEFINE_string(
        "layer_sizes",
        None,
        "Hidden sizes, e.g. 32 or 64,64; 'none' for no "
        "hidden layer (default: the genome's metadata.hidden_sizes).",
        flag_values=fv,
    )
    flags.DEFINE_string(
        "task", None, "Task spec giving the input size and number of classes.", flag_values=fv
    )
    flags.DEFINE_integer("input_size", None, "Input size (instead of --task).", flag_values=fv)
    flags.DEFINE_integer(
        "num_classes", None, "Number of classes (instead of --task).", flag_values=fv
    )
    flags.DEFINE_string(
        "tfds_manual_dir",
        None,
        "For image --task: folder with <builder>/"
        "<original files> (default: env BLUR_TFDS_MANUAL_DIR).",
        flag_values=fv,
    )
    flags.DEFINE_integer(
        "batch_size",
        None,
        "Static batch size of learn (default: any; predict always takes any).",
        flag_values=fv,
    )
    flags.DEFINE_integer(
        "seed", 0, "Initial synapses: BlurNetwork.init_synapses(1, seed).", flag_values=fv
    )
    flags.DEFINE_string("out_dir", None, "Output SavedModel folder (required).", flag_values=fv)
    flags.DEFINE_bool(
        "overwrite", False, "Replace an existing non-empty --out_dir.", flag_values=fv
    )
    flags.DEFINE_integer(
        "time_batches",
        0,
        "After export, time N learn calls against the in-framework step (0: no timing).",
        flag_values=fv,
    )


@dataclasses.dataclass(frozen=True)
class Settings:
    """Validated launcher settings: what to export, where, and how to time it."""

    learner: evaluation.Learner
    metadata: dict
    layer_sizes: tuple
    batch_size: int | None
    seed: int
    out_dir: str
    overwrite: bool
    time_batches: int


def _hidden_sizes(text: str | None, metadata: dict) -> tuple[int, ...]:
    if text is None:
        if "hidden_sizes" not in metadata:
            raise ValueError("--layer_sizes is required (the genome has no metadata.hidden_sizes)")
        return tuple(int(n) for n in metadata["hidden_sizes"])
    if text.strip().lower() in ("none", ""):
        return ()
    try:
        sizes = tuple(int(n) for n in text.split(","))
    except ValueError:
        raise ValueError(f"--layer_sizes must be comma-separated integers, got {text!r}") from None
    if any(n < 1 for n in sizes):
        raise ValueError(f"--layer_sizes must be positive, got {text!r}")
    return sizes


def _io_sizes(fv: flags.FlagValues) -> tuple[int, int]:
    """(input size, number of classes) from --task, or from --input_size and --num_classes."""
    if fv.task:
        if fv.input_size is not None or fv.num_classes is not None:
            raise ValueError("give either --task or --input_size/--num_classes, not both")
        from blur_tf.tasks import get_task

        task = get_task(fv.task, tfds_manual_dir=fv.tfds_manual_dir)
        return task.input_size, task.num_classes
    if fv.input_size is None or fv.num_classes is None:
        raise ValueError("--task, or both --input_size and --num_classes, are required")
    if fv.input_size < 1 or fv.num_classes < 2:
        raise ValueError(
            f"--input_size must be >= 1 and --num_classes >= 2, got "
            f"{fv.input_size}, {fv.num_classes}"
        )
    return fv.input_size, fv.num_classes


def settings_from_flags(fv: flags.FlagValues = flags.FLAGS) -> Settings:
    """Validates parsed flags; ValueError naming the first problem (nothing is written yet)."""
    if not fv.out_dir:
        raise ValueError("--out_dir is required")
    if not fv.genome:
        raise ValueError("--genome is required (a genome.json path or 'backprop')")
    check_output_directory(fv.out_dir, fv.overwrite)
    if fv.batch_size is not None and fv.batch_size < 1:
        raise ValueError(f"--batch_size must be >= 1, got {fv.batch_size}")
    if fv.time_batches < 0:
        raise ValueError(f"--time_batches must be >= 0, got {fv.time_batches}")
    if fv.genome == evaluation.BACKPROP:
        if not fv.backprop_lr > 0:
            raise ValueError(f"--backprop_lr must be positive, got {fv.backprop_lr}")
        metadata = {
            "genome": "backprop",
            "learning_rate": fv.backprop_lr,
            "activation": fv.backprop_activation,
        }
    else:
        metadata = {**Genome.load_with_metadata(fv.genome)[1], "genome_file": fv.genome}
    learner = evaluation.load_learner(
        fv.genome,
        evaluation.parse_rule_overrides(fv.rule),
        fv.genome_member,
        [fv.backprop_lr],
        fv.backprop_activation,
    )
    hidden = _hidden_sizes(fv.layer_sizes, metadata)
    input_size, num_classes = _io_sizes(fv)
    return Settings(
        learner=learner,
        metadata=metadata,
        layer_sizes=(input_size, *hidden, num_classes),
        batch_size=fv.batch_size,
        seed=fv.seed,
        out_dir=fv.out_dir,
        overwrite=fv.overwrite,
        time_batches=fv.time_batches,
    )


def run(settings: Settings, log=logging.info) -> str:
    """Writes the learner; times it if asked. Returns the folder's absolute path."""
    start = time.perf_counter()
    path = export_learner(
        settings.learner.genome,
        settings.out_dir,
        layer_sizes=settings.layer_sizes,
        rule=settings.learner.rule,
        batch_size=settings.batch_size,
        seed=settings.seed,
        metadata=settings.metadata,
        overwrite=settings.overwrite,
    )
    log(
        f"wrote {path} (layers {list(settings.layer_sizes)}, batch size "
        f"{settings.batch_size or 'any'}) in {time.perf_counter() - start:.1f}s"
    )
    if settings.time_batches:
        print(format_timing(time_learner(path, settings), settings), flush=True)
    return path


def time_learner(path: str, settings: Settings, repeats: int = 5) -> dict:
    """Median ms per batch: the loaded SavedModel's `learn` vs the in-framework steps.

    In-framework: `BlurNetwork.step` (pure, compiled; synapses in and out) and
    `BlurModel.train_on_batch` (Keras, synapses in variables, like `learn`). All run the same
    `settings.time_batches` random batches (batch `--batch_size`, or 64) in a Python loop, one
    call per batch, after one warm-up pass; the median over `repeats` passes.
    """
    import tensorflow as tf

    from blur_tf.network import BlurModel, BlurNetwork

    sizes, batch = settings.layer_sizes, settings.batch_size or 64
    rng = np.random.default_rng(0)
    xs = rng.normal(size=(settings.time_batches, batch, sizes[0])).astype(np.float32)
    ys = rng.integers(0, sizes[-1], size=(settings.time_batches, batch)).astype(np.int32)
    loaded = tf.saved_model.load(path)
    network = BlurNetwork(sizes, settings.learner.rule)
    genome = settings.learner.genome

    def exported():
        for x, y in zip(xs, ys):
            loaded.learn(x, y)["logits"].numpy()

    def framework():
        synapses = network.init_synapses(1, settings.seed)
        for x, y in zip(xs, ys):
            synapses = network.step(genome, synapses, x, y)
        synapses[0][0].numpy()

    model = BlurModel(sizes, genome, settings.learner.rule, seed=settings.seed)

    def keras_model():
        for x, y in zip(xs, ys):
            model.train_on_batch(x, y)

    def ms_per_batch(fn):
        fn()
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
        return 1000 * statistics.median(times) / settings.time_batches

    return {
        "batch_size": batch,
        "exported_learn_ms": ms_per_batch(exported),
        "blur_network_step_ms": ms_per_batch(framework),
        "blur_model_train_on_batch_ms": ms_per_batch(keras_model),
        "repeats": repeats,
    }


def format_timing(timing: dict, settings: Settings) -> str:
    return (
        f"ms per batch (batch {timing['batch_size']}, layers {list(settings.layer_sizes)}, "
        f"median of {timing['repeats']} passes of {settings.time_batches} batches)\n"
        f"SavedModel learn             {timing['exported_learn_ms']:.3f}\n"
        f"BlurNetwork.step             {timing['blur_network_step_ms']:.3f}\n"
        f"BlurModel.train_on_batch     {timing['blur_model_train_on_batch_ms']:.3f}"
    )


def main(argv, fv: flags.FlagValues | None = None):
    """Bad flags: one line on stderr (no flag help), exit status 2, before any work; the
    launchers' convention after that (launchers/__init__.py): 2 when the command cannot run
    as given (e.g. a dataset not available), 1 when a write failed. The folder is written
    atomically, so a failed or concurrent export never leaves a mixed one."""
    settings = settings_or_exit("export", argv, settings_from_flags, fv or flags.FLAGS)
    call_or_exit("export", run, settings)
    return 0


def cli():
    """Entry point of `blur-export` (pyproject.toml) and of `python -m`."""
    define_flags(flags.FLAGS)
    app.run(main, flags_parser=flag_parser("export"))


if __name__ == "__main__":
    cli()

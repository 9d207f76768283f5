r"""Meta-step speed and memory: meta-steps/s and peak memory per estimator, compile option and T.

    python -m launchers.meta_benchmark --tfds_manual_dir=../shared/data   # docs/meta-training.md
    python -m launchers.meta_benchmark --lengths=10 --estimators=segmented --xla=true

Default setting: the mnist_curriculum flagfile's (launchers/configs/mnist_curriculum.cfg) — 4
genomes × 2 networks of 100-64-10, K = 4, batch 64, 10×10 MNIST (all digits, 0–4, 5–9) — with
no validation. Each configuration (estimator × XLA × unroll length T) runs in a fresh subprocess
(`--nofresh_process`: all in this process, one after the other): one meta-step to compile
(timed separately) and 2 more, then meta-steps of a `MetaTrainer` (host bookkeeping included)
and the reference inner steps, timed in turn for about `--seconds` each over 3 interleaved
rounds (medians, so a drift of the machine hits both), then the memory measurement.

Memory, two figures:
- **process peak**: the subprocess's whole peak RSS (`ru_maxrss`) after its first 3 meta-steps,
  with the launchers' allocator settings (`--malloc_arenas`) — what the operating system sees
  for a user's `meta_train` run of that configuration (compilation included);
- **added**: the peak above the level just before 2 further meta-steps, sampled every
  millisecond by a thread, with glibc's mmap threshold at 128 KiB and freed heap trimmed first
  (so freed buffers leave the process): what the meta-step itself holds. Speed is timed with
  the threshold at 32 MiB (where glibc's dynamic threshold settles), since mapping every buffer
  anew slows small meta-steps down.

FLOPs per meta-step count the matmuls and state mixings of every inner step (see
launchers/benchmark.py: `blur_flops`) × networks × T × 3 (forward, and a backward pass that
costs about twice the forward), plus one forward per recomputed inner step for the segmented
estimator (all segments but the last are run twice): the work of the exact meta-gradient and
of the checkpointing. The segmented vjp's one-step recomputation (one more forward per inner
step, blur_tf/meta/estimators.py) is overhead, not counted. Elementwise work is left out. The
reference **inner GFLOP/s** is the rate of the same networks' T inner steps alone (no tape, the
same in-graph data sampling and compile option), timed in the same process; the table gives
the meta-step's GFLOP/s as a share of it.

**Scaling** (`--devices=1,2`): meta-steps/s of the same configurations with the meta-step split
over N replicas (docs/distributed.md), one subprocess per N (logical devices
must be configured before TensorFlow initializes): N = 1 is the single-device trainer (no
strategy), N > 1 `MirroredStrategy` over N logical CPU devices (`--replicas=N`, the flag those
subprocesses get). Every N must divide `--meta_batch`. On a machine with GPUs the same code
path runs `MirroredStrategy` over GPUs (`meta_train --strategy=mirrored`).

Flags are checked before any work; a bad value exits with status 2 and a one-line message.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import os
import statistics
import subprocess
import sys
import threading
import time

from absl import app, flags

from launchers import exit_with_error, flag_parser, parse_ints

ESTIMATORS = ("full", "segmented")
TIMING_ROUNDS = 3
DEFAULT_TASKS = (
    "mnist:crop=20,size=10;mnist:crop=20,size=10,classes=0-4;mnist:crop=20,size=10,classes=5-9"
)


def define_flags(fv: flags.FlagValues = flags.FLAGS) -> None:
    flags.DEFINE_multi_string(
        "tasks", [DEFAULT_TASKS], "Training task specs (';'-separated or repeated).", flag_values=fv
    )
    flags.DEFINE_list("layer_sizes", ["64"], "Hidden layer sizes.", flag_values=fv)
    flags.DEFINE_integer("num_states", 4, "K.", flag_values=fv)
    flags.DEFINE_integer("population", 4, "G, genomes.", flag_values=fv)
    flags.DEFINE_integer("meta_batch", 2, "M, networks per genome.", flag_values=fv)
    flags.DEFINE_integer("batch_size", 64, "Examples per inner step.", flag_values=fv)
    flags.DEFINE_list("lengths", ["10", "50", "200", "1000"], "Unroll lengths T.", flag_values=fv)
    flags.DEFINE_list(
        "estimators", list(ESTIMATORS), f"Any of {','.join(ESTIMATORS)}.", flag_values=fv
    )
    flags.DEFINE_list(
        "xla",
        ["false", "true"],
        "Segmented estimator without (false) and/or "
        "with (true) XLA; the full estimator runs without XLA only.",
        flag_values=fv,
    )
    flags.DEFINE_integer("segment_length", 10, "S of the segmented estimator.", flag_values=fv)
    flags.DEFINE_integer(
        "max_full_length",
        200,
        "Skip the full estimator above this T (its tape grows ~10 MB per inner step here).",
        flag_values=fv,
    )
    flags.DEFINE_float(
        "seconds",
        4.0,
        "Time each configuration's meta-steps, and its inner steps, for about this long "
        "(at least 2 calls per round).",
        flag_values=fv,
    )
    flags.DEFINE_string(
        "tfds_manual_dir",
        None,
        "Folder with <dataset>/<original files> (default: env BLUR_TFDS_MANUAL_DIR).",
        flag_values=fv,
    )
    flags.DEFINE_list(
        "devices",
        [],
        "Scaling mode: device counts N to compare, each in a "
        "subprocess (1: single device; N > 1: MirroredStrategy over N logical "
        "CPU devices).",
        flag_values=fv,
    )
    flags.DEFINE_integer(
        "replicas",
        None,
        "Run this process's configurations over this many replicas (what --devices runs).",
        flag_values=fv,
    )
    flags.DEFINE_boolean(
        "fresh_process",
        True,
        "Run each configuration in a fresh subprocess and report that process's whole peak RSS.",
        flag_values=fv,
    )
    flags.DEFINE_integer(
        "malloc_arenas",
        0,
        "glibc malloc arenas of each measuring process (0: glibc's default, 8 per core); "
        "the training launchers' flag of the same name and default.",
        lower_bound=0,
        flag_values=fv,
    )
    flags.DEFINE_boolean(
        "json",
        False,
        "Print this process's rows as JSON (what --fresh_process and --devices run).",
        flag_values=fv,
    )


@dataclasses.dataclass(frozen=True)
class Config:
    estimator: str
    xla: bool
    length: int


def configs_from_flags(fv=flags.FLAGS) -> list[Config]:
    """Validated configurations (ValueError naming the first bad flag; nothing run yet)."""
    lengths = parse_ints(fv.lengths, "lengths")
    if not lengths or any(t < 1 for t in lengths):
        raise ValueError(f"--lengths must be integers >= 1, got {list(fv.lengths)}")
    estimators = [e.strip() for e in fv.estimators]
    if not estimators or any(e not in ESTIMATORS for e in estimators):
        raise ValueError(f"--estimators takes {', '.join(ESTIMATORS)}, got {list(fv.estimators)}")
    xla = [x.strip().lower() for x in fv.xla]
    if not xla or any(x not in ("true", "false") for x in xla):
        raise ValueError(f"--xla takes true and/or false, got {list(fv.xla)}")
    hidden = parse_ints(fv.layer_sizes, "layer_sizes")
    for name, value, low in (
        ("num_states", fv.num_states, 2),
        ("population", fv.population, 1),
        ("meta_batch", fv.meta_batch, 1),
        ("batch_size", fv.batch_size, 2),
        ("segment_length", fv.segment_length, 1),
        ("max_full_length", fv.max_full_length, 1),
        *(("layer_sizes", n, 1) for n in hidden),
    ):
        if value < low:
            raise ValueError(f"--{name} must be >= {low}, got {value}")
    if not fv.seconds > 0:
        raise ValueError(f"--seconds must be > 0, got {fv.seconds}")
    for n in device_counts(fv) + ([fv.replicas] if fv.replicas is not None else []):
        if n < 1 or fv.meta_batch % n:
            raise ValueError(
                f"device counts must be >= 1 and divide --meta_batch={fv.meta_batch}, got {n}"
            )
    configs = []
    for estimator in estimators:
        for use_xla in xla if estimator == "segmented" else ["false"]:
            configs += [
                Config(estimator, use_xla == "true", t)
                for t in lengths
                if estimator != "full" or t <= fv.max_full_length
            ]
    return configs


def device_counts(fv) -> list[int]:
    return parse_ints(fv.devices, "devices")


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096


class PeakMemory:
    """Peak RSS above the level at entry, sampled every millisecond by a thread."""

    def __enter__(self):
        from blur_tf import allocator  # pylint: disable=g-import-not-at-top

        allocator.trim()
        self.start = self.peak = _rss_bytes()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self):
        while not self._stop.wait(0.001):
            self.peak = max(self.peak, _rss_bytes())

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, _rss_bytes())
        self.added_mb = (self.peak - self.start) / 2**20


def meta_step_flops(inner_flops: int, networks: int, config: Config, segment: int) -> float:
    """Counted FLOPs of one meta-step (see the module doc)."""
    recomputed = 0
    if config.estimator == "segmented":
        recomputed = max(-(-config.length // segment) - 1, 0) * segment
    return float(inner_flops) * networks * (3 * config.length + recomputed)


@dataclasses.dataclass(frozen=True)
class Row:
    """One configuration's measurements (see the module doc)."""

    config: Config
    rate: float  # meta-steps/s
    added_mb: float  # peak RSS above the level before the measured meta-steps (trimmed heap)
    process_mb: float  # whole-process peak RSS after the first 3 meta-steps, launchers' allocator
    compile_seconds: float  # the first meta-step
    flops: float  # counted FLOPs per meta-step
    inner_gflops: float  # GFLOP/s of the same networks' inner steps alone, same process

    @property
    def gflops(self) -> float:
        return self.flops * self.rate / 1e9

    def to_json(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, d: dict) -> Row:
        return cls(**{**d, "config": Config(**d["config"])})


def run(fv=flags.FLAGS) -> str:
    configs = configs_from_flags(fv)
    if fv.devices:
        return scaling(fv)
    if fv.fresh_process and not fv.json:
        from blur_tf.progress import Progress  # pylint: disable=g-import-not-at-top

        rows = []
        with Progress("configuration", "meta_benchmark") as progress:
            for config in configs:
                rows += _child_rows(
                    fv,
                    [
                        f"--lengths={config.length}",
                        f"--estimators={config.estimator}",
                        f"--xla={str(config.xla).lower()}",
                    ],
                    str(config),
                    progress.print,
                )
                progress.update(len(rows), len(configs))
        return format_table(rows, fv, fresh=True)
    strategy = None
    if fv.replicas and fv.replicas > 1:
        from blur_tf.meta.distribute import make_strategy  # pylint: disable=g-import-not-at-top

        strategy = make_strategy("mirrored", fv.replicas)
    rows = measure(configs, fv, strategy)
    if fv.json:
        return json.dumps([r.to_json() for r in rows])
    return format_table(rows, fv, fresh=False)


CHILD_FLAGS = (
    "--devices",
    "--replicas",
    "--fresh_process",
    "--nofresh_process",
    "--json",
    "--nojson",
    "--lengths",
    "--estimators",
    "--xla",
    "--noxla",
)


def _child_rows(fv, extra_args, what: str, echo=print) -> list[Row]:
    """The rows of `launchers.meta_benchmark` rerun in a fresh subprocess with `extra_args`."""
    argv = [a for a in sys.argv[1:] if a.split("=")[0] not in CHILD_FLAGS]
    if not any(a.startswith("--lengths") for a in extra_args):
        argv += [
            f"--lengths={','.join(fv.lengths)}",
            f"--estimators={','.join(fv.estimators)}",
            f"--xla={','.join(fv.xla)}",
        ]
    command = [
        sys.executable,
        "-m",
        "launchers.meta_benchmark",
        *argv,
        *extra_args,
        "--nofresh_process",
        "--json",
    ]
    result = subprocess.run(
        command,
        stdout=subprocess.PIPE,
        text=True,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"),
        check=False,
    )
    if result.returncode:
        raise RuntimeError(f"the subprocess for {what} failed (status {result.returncode})")
    *progress, rows = result.stdout.strip().splitlines()
    if progress:
        echo("\n".join(progress))
    return [Row.from_json(d) for d in json.loads(rows)]


def scaling(fv) -> str:
    """Runs `measure` once per device count in a subprocess; a table of meta-steps/s."""
    rates = {}
    counts = device_counts(fv)
    for n in counts:
        for row in _child_rows(fv, [f"--replicas={n}"], f"{n} device(s)"):
            c = row.config
            rates[(c.estimator, c.xla, c.length, n)] = row.rate
    lines = [
        f"{fv.population} genomes x {fv.meta_batch} networks, layers "
        f"{','.join(fv.layer_sizes)} hidden, K = {fv.num_states}, batch {fv.batch_size}; "
        f"meta-steps/s (speed-up vs {counts[0]} device(s))",
        "| estimator | XLA | T | " + " | ".join(f"{n} device(s)" for n in counts) + " |",
        "|---|---|---|" + "---|" * len(counts),
    ]
    for estimator, xla, length in dict.fromkeys(k[:3] for k in rates):
        base = rates[(estimator, xla, length, counts[0])]
        cells = [
            f"{rates[(estimator, xla, length, n)]:.2f} "
            f"({rates[(estimator, xla, length, n)] / base:.2f}×)"
            for n in counts
        ]
        lines.append(
            f"| {estimator} | {'on' if xla else 'off'} | {length} | " + " | ".join(cells) + " |"
        )
    return "\n".join(lines)


def inner_unroll(problem, networks: int, length: int, jit: bool):
    """A callable running `length` inner steps of `networks` networks once (no tape), data
    sampled in-graph as in the meta-step: the reference of the meta-step at the same shape.
    Compiled on creation."""
    import tensorflow as tf  # pylint: disable=g-import-not-at-top

    from blur_tf import Genome  # pylint: disable=g-import-not-at-top

    genome = Genome.random(problem.rule.num_states, population=networks)
    synapses = problem.init_synapses(networks, seed=0)
    calls = itertools.count()

    @tf.function(jit_compile=jit)
    def unroll(seed):
        _, batch_fn, _ = problem.sample(seed, networks)
        return problem.network.unroll(genome, synapses, batch_fn, length)

    def run():
        seed = tf.constant([0, next(calls)])
        tf.nest.map_structure(lambda v: v.numpy(), unroll(seed))

    run()
    return run


def calls_per_second(fn, seconds: float) -> float:
    """fn() called for about `seconds` (at least twice); calls per second."""
    calls, elapsed = 0, 0.0
    start = time.perf_counter()
    while calls < 2 or elapsed < seconds:
        fn()
        calls += 1
        elapsed = time.perf_counter() - start
    return calls / elapsed


def measure(configs, fv, strategy=None) -> list[Row]:
    """One `Row` per configuration, measured in this process one after the other."""
    from blur_tf import MetaTrainer, Rule, allocator  # pylint: disable=g-import-not-at-top
    from blur_tf.experiment import peak_rss_mb  # pylint: disable=g-import-not-at-top
    from blur_tf.meta import ConstantSchedule, InnerProblem  # pylint: disable=g-import-not-at-top
    from blur_tf.meta.estimators import FullUnrollGradient, SegmentedUnrollGradient  # pylint: disable=g-import-not-at-top
    from blur_tf.tasks import get_task  # pylint: disable=g-import-not-at-top
    from launchers.benchmark import blur_flops  # pylint: disable=g-import-not-at-top

    allocator.limit_arenas(fv.malloc_arenas)
    specs = [s.strip() for v in fv.tasks for s in v.split(";") if s.strip()]
    tasks = [get_task(s, tfds_manual_dir=fv.tfds_manual_dir) for s in specs]
    hidden = parse_ints(fv.layer_sizes, "layer_sizes")
    rule = Rule(num_states=fv.num_states)
    problem = InnerProblem(tasks, hidden, rule, fv.batch_size, logit_scale=3.0)
    networks = fv.population * fv.meta_batch
    inner = blur_flops(problem.network.layer_sizes, rule, fv.batch_size)
    rows = []
    for config in configs:
        if config.estimator == "full":
            estimator = FullUnrollGradient(problem, fv.meta_batch)
        else:
            estimator = SegmentedUnrollGradient(
                problem, fv.meta_batch, fv.segment_length, jit_compile=config.xla
            )
        trainer = MetaTrainer(
            problem,
            ConstantSchedule(config.length),
            population=fv.population,
            meta_batch=fv.meta_batch,
            estimator=estimator,
            log_every=0,
            validate_every=0,
            checkpoint_every=0,
            strategy=strategy,
        )
        start = time.perf_counter()
        trainer.step()
        compile_seconds = time.perf_counter() - start
        for _ in range(2):  # a user's run: the launchers' allocator, nothing trimmed
            trainer.step()
        process_mb = peak_rss_mb()
        allocator.set_mmap_threshold(32 << 20)
        reference_unroll = inner_unroll(problem, networks, config.length, config.xla)
        rates, inner_rates = [], []
        for _ in range(TIMING_ROUNDS):  # interleaved, so a drift of the machine hits both
            rates.append(calls_per_second(trainer.step, fv.seconds / TIMING_ROUNDS))
            inner_rates.append(calls_per_second(reference_unroll, fv.seconds / TIMING_ROUNDS))
        rate = statistics.median(rates)
        reference = statistics.median(inner_rates) * inner * networks * config.length / 1e9
        allocator.set_mmap_threshold(128 << 10)
        with PeakMemory() as memory:
            for _ in range(2):
                trainer.step()
        row = Row(
            config,
            rate,
            memory.added_mb,
            process_mb,
            compile_seconds,
            meta_step_flops(inner, networks, config, fv.segment_length),
            reference,
        )
        rows.append(row)
        print(
            f"{config}: {rate:.2f} meta-steps/s ({row.gflops:.1f} GFLOP/s; inner steps "
            f"{reference:.1f}), +{memory.added_mb:.0f} MiB trimmed, process peak "
            f"{process_mb:.0f} MiB, first step {compile_seconds:.1f} s",
            flush=True,
        )
    return rows


def format_table(rows: list[Row], fv, fresh: bool) -> str:
    baseline = {r.config.length: r.rate for r in rows if r.config.estimator == "full"}
    peak = (
        "whole-process peak RSS of its own fresh process, after 3 meta-steps (MiB)"
        if fresh
        else "this process's peak RSS so far (cumulative over the rows above; MiB)"
    )
    lines = [
        f"{fv.population} genomes x {fv.meta_batch} networks, layers "
        f"{','.join(fv.layer_sizes)} hidden, K = {fv.num_states}, batch {fv.batch_size}, "
        "segment S = "
        f"{fv.segment_length}. 'process peak': {peak}; 'added': peak above the level before "
        "2 meta-steps with the heap trimmed (what the meta-step itself holds); 'inner': the "
        "GFLOP/s of the same networks' inner steps alone (no tape), same process.",
        "| estimator | XLA | T | meta-steps/s | vs full | GFLOP/meta-step | GFLOP/s | "
        "inner GFLOP/s | meta / inner | process peak (MiB) | added (MiB) | first step (s) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        c = r.config
        speedup = f"{r.rate / baseline[c.length]:.1f}×" if c.length in baseline else "—"
        lines.append(
            f"| {c.estimator} | {'on' if c.xla else 'off'} | {c.length} | {r.rate:.2f} "
            f"| {speedup} | {r.flops / 1e9:.3g} | {r.gflops:.3g} | {r.inner_gflops:.3g} "
            f"| {r.gflops / r.inner_gflops:.0%} | {r.process_mb:.0f} | "
            f"{r.added_mb:.0f} | {r.compile_seconds:.1f} |"
        )
    return "\n".join(lines)


def main(argv):
    if len(argv) > 1:
        exit_with_error("meta_benchmark", f"unexpected arguments: {argv[1:]}")
    try:
        table = run()
    except ValueError as e:
        exit_with_error("meta_benchmark", e)
    print(table, flush=True)


def cli():
    """Entry point of `blur-meta-benchmark` (pyproject.toml) and of `python -m`."""
    define_flags()
    app.run(main, flags_parser=flag_parser("meta_benchmark"))


if __name__ == "__main__":
    cli()

r"""Meta-step speed and memory: meta-steps/s and peak memory per estimator, compile option and T.

    python -m launchers.meta_benchmark --tfds_manual_dir=../shared/data   # docs/meta-training.md
    python -m launchers.meta_benchmark --lengths=10 --estimators=segmented --xla=true

Default setting: the mnist_curriculum flagfile's (launchers/configs/mnist_curriculum.cfg) — 4
genomes × 2 networks of 100-64-10, K = 4, batch 64, 10×10 MNIST (all digits, 0–4, 5–9) — with
no validation. Every configuration (estimator × XLA × unroll length T) runs in this one
process, one after the other: one meta-step to compile (timed separately), then `--steps`
timed meta-steps of a `MetaTrainer` (host bookkeeping included).

Memory: a thread samples this process's resident set size every millisecond while the timed
meta-steps run; the table gives the peak above the level just before them (what the
meta-step's tape, boundaries and buffers add), and the whole process's peak RSS at the end.
So that freed buffers leave the process (and the next peak is seen), memory is measured over
2 extra meta-steps with glibc's mmap threshold at 128 KiB and freed heap memory trimmed first;
speed is timed with the threshold at 32 MiB (where glibc's dynamic threshold settles), since
mapping every buffer anew slows small meta-steps down.

FLOPs per meta-step count the matmuls and state mixings of every inner step (see
launchers/benchmark.py: `blur_flops`) × networks × T × 3 (forward, and a backward pass that
costs about twice the forward), plus one forward per recomputed inner step for the segmented
estimator (all segments but the last are run twice). Elementwise work is left out.

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
import json
import os
import subprocess
import sys
import threading
import time

from absl import app, flags

from launchers import exit_with_error, flag_parser, parse_ints

ESTIMATORS = ("full", "segmented")
DEFAULT_TASKS = ("mnist:crop=20,size=10;mnist:crop=20,size=10,classes=0-4;"
                 "mnist:crop=20,size=10,classes=5-9")


def define_flags(fv: flags.FlagValues = flags.FLAGS) -> None:
    flags.DEFINE_multi_string("tasks", [DEFAULT_TASKS], "Training task specs (';'-separated "
                              "or repeated).", flag_values=fv)
    flags.DEFINE_list("layer_sizes", ["64"], "Hidden layer sizes.", flag_values=fv)
    flags.DEFINE_integer("num_states", 4, "K.", flag_values=fv)
    flags.DEFINE_integer("population", 4, "G, genomes.", flag_values=fv)
    flags.DEFINE_integer("meta_batch", 2, "M, networks per genome.", flag_values=fv)
    flags.DEFINE_integer("batch_size", 64, "Examples per inner step.", flag_values=fv)
    flags.DEFINE_list("lengths", ["10", "50", "200", "1000"], "Unroll lengths T.",
                      flag_values=fv)
    flags.DEFINE_list("estimators", list(ESTIMATORS), f"Any of {','.join(ESTIMATORS)}.",
                      flag_values=fv)
    flags.DEFINE_list("xla", ["false", "true"], "Segmented estimator without (false) and/or "
                      "with (true) XLA; the full estimator runs without XLA only.",
                      flag_values=fv)
    flags.DEFINE_integer("segment_length", 10, "S of the segmented estimator.", flag_values=fv)
    flags.DEFINE_integer("max_full_length", 200, "Skip the full estimator above this T (its "
                         "tape grows ~10 MB per inner step here).", flag_values=fv)
    flags.DEFINE_float("seconds", 4.0, "Time each configuration for about this long (at least "
                       "2 meta-steps).", flag_values=fv)
    flags.DEFINE_string("tfds_manual_dir", None, "Folder with <dataset>/<original files> "
                        "(default: env BLUR_TFDS_MANUAL_DIR).", flag_values=fv)
    flags.DEFINE_list("devices", [], "Scaling mode: device counts N to compare, each in a "
                      "subprocess (1: single device; N > 1: MirroredStrategy over N logical "
                      "CPU devices).", flag_values=fv)
    flags.DEFINE_integer("replicas", None, "Run this process's configurations over this many "
                         "replicas and print them as JSON (what --devices runs).",
                         flag_values=fv)


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
    for name, value, low in (("num_states", fv.num_states, 2), ("population", fv.population, 1),
                             ("meta_batch", fv.meta_batch, 1), ("batch_size", fv.batch_size, 2),
                             ("segment_length", fv.segment_length, 1),
                             ("max_full_length", fv.max_full_length, 1),
                             *(("layer_sizes", n, 1) for n in hidden)):
        if value < low:
            raise ValueError(f"--{name} must be >= {low}, got {value}")
    if not fv.seconds > 0:
        raise ValueError(f"--seconds must be > 0, got {fv.seconds}")
    for n in device_counts(fv) + ([fv.replicas] if fv.replicas is not None else []):
        if n < 1 or fv.meta_batch % n:
            raise ValueError(f"device counts must be >= 1 and divide --meta_batch="
                             f"{fv.meta_batch}, got {n}")
    configs = []
    for estimator in estimators:
        for use_xla in (xla if estimator == "segmented" else ["false"]):
            configs += [Config(estimator, use_xla == "true", t) for t in lengths
                        if estimator != "full" or t <= fv.max_full_length]
    return configs


def device_counts(fv) -> list[int]:
    return parse_ints(fv.devices, "devices")


def _libc():
    import ctypes  # pylint: disable=g-import-not-at-top
    return ctypes.CDLL("libc.so.6")


def set_mmap_threshold(size: int) -> None:
    """mallopt(M_MMAP_THRESHOLD, size): buffers ≥ size are mapped, and unmapped when freed."""
    _libc().mallopt(-3, size)


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096


class PeakMemory:
    """Peak RSS above the level at entry, sampled every millisecond by a thread."""

    def __enter__(self):
        _libc().malloc_trim(0)
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


def run(fv=flags.FLAGS) -> str:
    configs = configs_from_flags(fv)
    if fv.devices:
        return scaling(fv)
    strategy = None
    if fv.replicas and fv.replicas > 1:
        from blur_tf.meta.distribute import make_strategy  # pylint: disable=g-import-not-at-top
        strategy = make_strategy("mirrored", fv.replicas)
    rows = measure(configs, fv, strategy)
    if fv.replicas is not None:
        return json.dumps([[dataclasses.asdict(r[0]), *r[1:]] for r in rows])
    return format_table(rows, fv)


def scaling(fv) -> str:
    """Runs `measure` once per device count in a subprocess; a table of meta-steps/s."""
    argv = [a for a in sys.argv[1:] if not a.startswith(("--devices", "--replicas"))]
    rates = {}
    for n in device_counts(fv):
        command = [sys.executable, "-m", "launchers.meta_benchmark", *argv, f"--replicas={n}"]
        result = subprocess.run(command, stdout=subprocess.PIPE, text=True,
                                env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"), check=False)
        if result.returncode:
            raise RuntimeError(f"the {n}-device run failed (status {result.returncode})")
        *progress, rows = result.stdout.strip().splitlines()
        for config, rate, *_ in json.loads(rows):
            rates[(config["estimator"], config["xla"], config["length"], n)] = rate
        print("\n".join(f"{n} device(s): {line}" for line in progress), flush=True)
    counts = device_counts(fv)
    lines = [f"{fv.population} genomes x {fv.meta_batch} networks, layers "
             f"{','.join(fv.layer_sizes)} hidden, K = {fv.num_states}, batch {fv.batch_size}; "
             f"meta-steps/s (speed-up vs {counts[0]} device(s))",
             "| estimator | XLA | T | " + " | ".join(f"{n} device(s)" for n in counts) + " |",
             "|---|---|---|" + "---|" * len(counts)]
    for estimator, xla, length in dict.fromkeys(k[:3] for k in rates):
        base = rates[(estimator, xla, length, counts[0])]
        cells = [f"{rates[(estimator, xla, length, n)]:.2f} "
                 f"({rates[(estimator, xla, length, n)] / base:.2f}×)" for n in counts]
        lines.append(f"| {estimator} | {'on' if xla else 'off'} | {length} | "
                     + " | ".join(cells) + " |")
    return "\n".join(lines)


def measure(configs, fv, strategy=None) -> list:
    """(config, meta-steps/s, MiB added, first-step seconds, FLOPs) per configuration."""
    from blur_tf import Rule  # pylint: disable=g-import-not-at-top
    from blur_tf.meta import InnerProblem  # pylint: disable=g-import-not-at-top
    from blur_tf.progress import Progress  # pylint: disable=g-import-not-at-top
    from blur_tf.tasks import get_task  # pylint: disable=g-import-not-at-top
    from launchers.benchmark import blur_flops  # pylint: disable=g-import-not-at-top
    specs = [s.strip() for v in fv.tasks for s in v.split(";") if s.strip()]
    tasks = [get_task(s, tfds_manual_dir=fv.tfds_manual_dir) for s in specs]
    hidden = parse_ints(fv.layer_sizes, "layer_sizes")
    rule = Rule(num_states=fv.num_states)
    problem = InnerProblem(tasks, hidden, rule, fv.batch_size, logit_scale=3.0)
    networks = fv.population * fv.meta_batch
    inner = blur_flops(problem.network.layer_sizes, rule, fv.batch_size)
    rows = []
    with Progress("configuration", "meta_benchmark") as progress:
        for config in configs:
            rows.append(measure_one(config, fv, problem, strategy, networks, inner))
            progress.print(f"{rows[-1][0]}: {rows[-1][1]:.2f} meta-steps/s, +{rows[-1][2]:.0f} "
                           f"MiB, first step {rows[-1][3]:.1f} s")
            progress.update(len(rows), len(configs))
    return rows


def measure_one(config, fv, problem, strategy, networks, inner) -> tuple:
    """`measure`'s row of one configuration."""
    from blur_tf import MetaTrainer  # pylint: disable=g-import-not-at-top
    from blur_tf.meta import ConstantSchedule  # pylint: disable=g-import-not-at-top
    from blur_tf.meta.estimators import FullUnrollGradient, SegmentedUnrollGradient  # pylint: disable=g-import-not-at-top
    if config.estimator == "full":
        estimator = FullUnrollGradient(problem, fv.meta_batch)
    else:
        estimator = SegmentedUnrollGradient(problem, fv.meta_batch, fv.segment_length,
                                            jit_compile=config.xla)
    trainer = MetaTrainer(problem, ConstantSchedule(config.length),
                          population=fv.population, meta_batch=fv.meta_batch,
                          estimator=estimator, log_every=0, validate_every=0,
                          checkpoint_every=0, strategy=strategy)
    start = time.perf_counter()
    trainer.step()
    compile_seconds = time.perf_counter() - start
    set_mmap_threshold(32 << 20)
    steps, elapsed = 0, 0.0
    start = time.perf_counter()
    while steps < 2 or elapsed < fv.seconds:
        trainer.step()
        steps += 1
        elapsed = time.perf_counter() - start
    rate = steps / elapsed
    set_mmap_threshold(128 << 10)
    with PeakMemory() as memory:
        for _ in range(2):
            trainer.step()
    flops = meta_step_flops(inner, networks, config, fv.segment_length)
    return config, rate, memory.added_mb, compile_seconds, flops


def format_table(rows, fv) -> str:
    import resource  # pylint: disable=g-import-not-at-top
    baseline = {r[0].length: r[1] for r in rows if r[0].estimator == "full"}
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    lines = [f"{fv.population} genomes x {fv.meta_batch} networks, layers "
             f"{','.join(fv.layer_sizes)} hidden, K = {fv.num_states}, batch {fv.batch_size}, "
             f"segment S = {fv.segment_length}; peak RSS of the process {peak_mb:.0f} MiB",
             "| estimator | XLA | T | meta-steps/s | vs full | peak memory added (MiB) | "
             "GFLOP/meta-step | GFLOP/s | first step (s) |",
             "|---|---|---|---|---|---|---|---|---|"]
    for config, rate, added, compile_seconds, flops in rows:
        speedup = (f"{rate / baseline[config.length]:.1f}×" if config.length in baseline
                   else "—")
        lines.append(f"| {config.estimator} | {'on' if config.xla else 'off'} | "
                     f"{config.length} | {rate:.2f} | {speedup} | {added:.0f} | "
                     f"{flops / 1e9:.2f} | {flops * rate / 1e9:.1f} | {compile_seconds:.1f} |")
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

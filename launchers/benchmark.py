"""Times one BLUR inner step against one plain compiled SGD step of the same MLP.

Both run inside compiled loops (`tf.while_loop` over pre-generated batches) in one process; each
figure is the median over `--repeats` runs of `--steps` steps. FLOPs count the multiply-adds of
every matmul and state mixing (2 per multiply-add) in each step, as implemented; elementwise
work (activations, normalization, gates) is left out of both counts.

    python -m launchers.benchmark            # the table of docs/benchmarks.md
    python -m launchers.benchmark --layer_sizes=100,64,10 --num_states=2 --xla=false

Flags are checked before any timing; a bad value exits with status 2 and a one-line message.
"""

from __future__ import annotations

import dataclasses
import itertools
import time

import numpy as np
import tensorflow as tf
from absl import app, flags

from blur_tf import BlurNetwork, Genome, Rule
from blur_tf.progress import Progress
from launchers import flag_parser, parse_ints, settings_or_exit

MIN_NETWORK_SIZES = 2  # input and output


def define_flags(fv: flags.FlagValues = flags.FLAGS) -> None:
    """Defines this launcher's flags on `fv` (the global FLAGS when run as a program)."""
    flags.DEFINE_multi_string(
        "layer_sizes",
        ["100,64,10", "784,256,10"],
        "One network to time: its layer sizes, input first and classes last, separated by ',' "
        "or '-' (100,64,10 or 100-64-10); repeat the flag or separate networks with ';' to "
        "time several.",
        flag_values=fv,
    )
    flags.DEFINE_list("num_states", ["2", "4"], "K values to time (each >= 2).", flag_values=fv)
    flags.DEFINE_integer("batch_size", 128, "Batch size (>= 1).", flag_values=fv)
    flags.DEFINE_integer("steps", 50, "Inner steps per timed run (>= 1).", flag_values=fv)
    flags.DEFINE_integer("repeats", 7, "Timed runs (>= 1); the median is reported.", flag_values=fv)
    flags.DEFINE_list(
        "xla", ["false", "true"], "Time without (false) and/or with (true) XLA.", flag_values=fv
    )


@dataclasses.dataclass(frozen=True)
class Settings:
    """Validated flags (see their help)."""

    networks: tuple  # of layer-size tuples
    num_states: tuple
    batch_size: int
    steps: int
    repeats: int
    xla: tuple  # of bools


def _network(text: str) -> tuple[int, ...]:
    try:
        sizes = [int(v) for v in text.replace("-", ",").split(",")]
    except ValueError:
        sizes = []
    if len(sizes) < MIN_NETWORK_SIZES or any(n < 1 for n in sizes):
        raise ValueError(
            f"--layer_sizes: a network is >= 2 positive integer sizes, input "
            f"first and classes last, separated by ',' or '-' (e.g. 100,64,10), "
            f"got {text!r}"
        )
    return tuple(sizes)


def settings_from_flags(fv: flags.FlagValues = flags.FLAGS) -> Settings:
    """Validates parsed flags; ValueError naming the first problem (nothing is timed yet)."""
    networks = tuple(_network(t) for value in fv.layer_sizes for t in value.split(";") if t.strip())
    if not networks:
        raise ValueError("--layer_sizes is empty")
    num_states = tuple(parse_ints(fv.num_states, "num_states"))
    if not num_states or any(k < 2 for k in num_states):
        raise ValueError(f"--num_states must be integers >= 2, got {list(fv.num_states)}")
    for name in ("batch_size", "steps", "repeats"):
        if fv[name].value < 1:
            raise ValueError(f"--{name} must be >= 1, got {fv[name].value}")
    xla = [x.strip().lower() for x in fv.xla]
    if not xla or any(x not in ("true", "false") for x in xla):
        raise ValueError(f"--xla takes true and/or false, got {list(fv.xla)}")
    return Settings(
        networks, num_states, fv.batch_size, fv.steps, fv.repeats, tuple(x == "true" for x in xla)
    )


def sgd_flops(sizes, batch):
    """Forward, input-gradient (not for the first layer) and weight-gradient matmuls."""
    total = 0
    for l, (n, m) in enumerate(zip(sizes[:-1], sizes[1:])):
        total += 2 * batch * n * m * (3 if l > 0 else 2)
    return total


def blur_flops(sizes, rule, batch):
    """Matmuls and K×K state mixings of one BLUR step (rule.py, channel-major)."""
    k = rule.num_states
    channels = k if rule.multichannel else 1
    total = 0
    for l, (n, m) in enumerate(zip(sizes[:-1], sizes[1:])):
        total += 2 * k * k * batch * (n + 1) + 2 * k * batch * (n + 1) * m  # forward
        if l > 0:  # backward into layer l (the input layer is never updated)
            total += 2 * k * k * batch * m + 2 * k * batch * m * (n + 1 if rule.symmetric else n)
        mixes = 2 * channels * k * batch * ((n + 1) + m)
        total += mixes + 2 * channels * batch * (n + 1) * m  # Hebbian ΔW
        if not rule.symmetric:
            total += 2 * channels * k * batch * (n + m) + 2 * channels * batch * n * m  # ΔV
    return total


def _median_time(fn, repeats):
    fn()  # trace / compile
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def time_sgd(sizes, xs, ys, steps, repeats, jit):
    rng = np.random.default_rng(0)
    params = []
    for n, m in zip(sizes[:-1], sizes[1:]):
        params += [tf.constant(rng.normal(0, n**-0.5, (n, m)), tf.float32), tf.zeros([m])]

    @tf.function(jit_compile=jit)
    def run(params):
        def body(t, params):
            with tf.GradientTape() as tape:
                tape.watch(params)
                h = xs[t]
                for i in range(0, len(params), 2):
                    h = tf.matmul(h, params[i]) + params[i + 1]
                    if i + 2 < len(params):
                        h = tf.tanh(h)
                loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(ys[t], h))
            grads = tape.gradient(loss, params)
            return t + 1, [p - 0.1 * g for p, g in zip(params, grads)]

        return tf.while_loop(lambda t, _: t < steps, body, (tf.constant(0), params))[1]

    return _median_time(lambda: [p.numpy() for p in run(params)], repeats) / steps


def time_blur(sizes, rule, xs, ys, steps, repeats, jit):
    net = BlurNetwork(sizes, rule, jit_compile=jit)
    genome = Genome.random(rule.num_states, seed=0)
    synapses = net.init_synapses(1, seed=0)
    run = lambda: [w.numpy() for w, _ in net.unroll(genome, synapses, (xs, ys), steps)]
    return _median_time(run, repeats) / steps


def run(settings: Settings) -> None:
    """Times every network × K × XLA setting and prints the table."""
    print(
        f"batch {settings.batch_size}, median of {settings.repeats} runs of {settings.steps} "
        f"steps; Rule(num_states=K) (asymmetric, multi-channel, normalization) vs SGD "
        f"(tanh MLP)"
    )
    header = (
        "| layers | K | XLA | SGD ms/step | BLUR ms/step | time ratio | FLOP ratio | time/FLOP |"
    )
    print(header + "\n|" + "---|" * 8)
    rng = np.random.default_rng(0)
    batch, steps, repeats = settings.batch_size, settings.steps, settings.repeats
    total = len(settings.networks) * len(settings.xla) * len(settings.num_states)
    done = itertools.count(1)
    with Progress("row", "benchmark") as progress:
        for sizes in settings.networks:
            xs = tf.constant(rng.normal(size=(steps, batch, sizes[0])), tf.float32)
            ys = tf.constant(rng.integers(0, sizes[-1], (steps, batch)), tf.int32)
            for jit in settings.xla:
                sgd = time_sgd(sizes, xs, ys, steps, repeats, jit)
                for k in settings.num_states:
                    rule = Rule(num_states=k)
                    blur = time_blur(sizes, rule, xs, ys, steps, repeats, jit)
                    flop_ratio = blur_flops(sizes, rule, batch) / sgd_flops(sizes, batch)
                    progress.print(
                        f"| {'-'.join(map(str, sizes))} | {k} | "
                        f"{'on' if jit else 'off'} | {sgd * 1e3:.3f} | "
                        f"{blur * 1e3:.3f} | {blur / sgd:.2f} | {flop_ratio:.2f} | "
                        f"{blur / sgd / flop_ratio:.2f} |"
                    )
                    progress.update(next(done), total)


def main(argv, fv: flags.FlagValues | None = None):
    run(settings_or_exit("benchmark", argv, settings_from_flags, fv or flags.FLAGS))


def cli():
    """Entry point of `blur-benchmark` (pyproject.toml) and of `python -m`."""
    define_flags(flags.FLAGS)
    app.run(main, flags_parser=flag_parser("benchmark"))


if __name__ == "__main__":
    cli()

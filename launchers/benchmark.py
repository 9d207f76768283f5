"""Times one BLUR inner step against one plain compiled SGD step of the same MLP.

Both run inside compiled loops (`tf.while_loop` over pre-generated batches) in one process; each
figure is the median over `--repeats` runs of `--steps` steps. FLOPs count the multiply-adds of
every matmul and state mixing (2 per multiply-add) in each step, as implemented; elementwise
work (activations, normalization, gates) is left out of both counts.

    python -m launchers.benchmark            # the README table
"""

import time

import numpy as np
import tensorflow as tf
from absl import app, flags

from blur_tf import BlurNetwork, Genome, Rule

FLAGS = flags.FLAGS
flags.DEFINE_list("layer_sizes", ["100,64,10", "784,256,10"],
                  "Networks to time; each entry is comma-separated sizes joined by ';' or given "
                  "as separate --layer_sizes entries with '-' between sizes (e.g. 784-256-10).")
flags.DEFINE_list("num_states", ["2", "4"], "K values to time.")
flags.DEFINE_integer("batch_size", 128, "Batch size.")
flags.DEFINE_integer("steps", 50, "Inner steps per timed run.")
flags.DEFINE_integer("repeats", 7, "Timed runs; the median is reported.")
flags.DEFINE_list("xla", ["false", "true"], "Whether to time without and/or with XLA.")


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
        params += [tf.constant(rng.normal(0, n ** -0.5, (n, m)), tf.float32), tf.zeros([m])]

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


def main(argv):
    del argv
    print(f"batch {FLAGS.batch_size}, median of {FLAGS.repeats} runs of {FLAGS.steps} steps; "
          f"Rule(num_states=K) (asymmetric, multi-channel, normalization) vs SGD (tanh MLP)")
    header = f"| layers | K | XLA | SGD ms/step | BLUR ms/step | time ratio | FLOP ratio | time/FLOP |"
    print(header + "\n|" + "---|" * 8)
    rng = np.random.default_rng(0)
    for spec in FLAGS.layer_sizes:
        sizes = [int(s) for s in spec.replace("-", ",").split(",")]
        xs = tf.constant(rng.normal(size=(FLAGS.steps, FLAGS.batch_size, sizes[0])), tf.float32)
        ys = tf.constant(rng.integers(0, sizes[-1], (FLAGS.steps, FLAGS.batch_size)), tf.int32)
        for jit in (x.lower() == "true" for x in FLAGS.xla):
            sgd = time_sgd(sizes, xs, ys, FLAGS.steps, FLAGS.repeats, jit)
            for k in (int(k) for k in FLAGS.num_states):
                rule = Rule(num_states=k)
                blur = time_blur(sizes, rule, xs, ys, FLAGS.steps, FLAGS.repeats, jit)
                flop_ratio = blur_flops(sizes, rule, FLAGS.batch_size) / sgd_flops(
                    sizes, FLAGS.batch_size)
                print(f"| {'-'.join(map(str, sizes))} | {k} | {'on' if jit else 'off'} | "
                      f"{sgd * 1e3:.3f} | {blur * 1e3:.3f} | {blur / sgd:.2f} | "
                      f"{flop_ratio:.2f} | {blur / sgd / flop_ratio:.2f} |", flush=True)


if __name__ == "__main__":
    app.run(main)

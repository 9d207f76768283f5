r"""Benchmarks blur_tf.tasks: MNIST preparation time and in-graph batch sampling speed.

  python -m launchers.tasks_benchmark --tfds_manual_dir ../shared/data

(a) wall time to prepare MNIST from the manual folder into a fresh temporary data dir
    (tfds download_and_prepare from the original .gz files), and to load it into memory;
(b) time per sampled batch (``--batch_size``, default 128) inside a compiled
    ``--steps``-step (default 50) tf.while_loop, for ``mnist`` (28x28),
    ``mnist:crop=20,size=10`` and ``toy.xor``.
"""

import os
import shutil
import tempfile
import time

from absl import app, flags

from launchers import flag_parser

_MANUAL_DIR = flags.DEFINE_string(
    "tfds_manual_dir",
    None,
    "Folder with <builder>/<original files>; default env BLUR_TFDS_MANUAL_DIR, else "
    "<repo>/../shared/data.",
)
_STEPS = flags.DEFINE_integer("steps", 50, "Steps of the compiled sampling loop.")
_BATCH = flags.DEFINE_integer("batch_size", 128, "Batch size.")
_REPEATS = flags.DEFINE_integer("repeats", 5, "Timed calls of the compiled loop (best kept).")


def _time_sampling(task, steps, batch_size, repeats):
    import tensorflow as tf  # pylint: disable=g-import-not-at-top

    @tf.function
    def loop(seed, num_steps):
        def body(i, total):
            x, y = task.sample_train(tf.random.experimental.stateless_fold_in(seed, i), batch_size)
            return i + 1, total + tf.reduce_sum(x) + tf.cast(tf.reduce_sum(y), tf.float32)

        return tf.while_loop(lambda i, _: i < num_steps, body, (tf.constant(0), tf.constant(0.0)))

    seed, num_steps = tf.constant([0, 1]), tf.constant(steps)
    start = time.perf_counter()
    loop(seed, num_steps)[1].numpy()
    first = time.perf_counter() - start
    best = float("inf")
    for r in range(repeats):
        start = time.perf_counter()
        loop(tf.constant([r + 1, 1]), num_steps)[1].numpy()
        best = min(best, time.perf_counter() - start)
    return first, best / steps


def main(argv):
    del argv
    import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top

    from blur_tf import tasks  # pylint: disable=g-import-not-at-top

    tfds.disable_progress_bar()
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    manual = (
        _MANUAL_DIR.value
        or os.environ.get("BLUR_TFDS_MANUAL_DIR")
        or os.path.join(os.path.dirname(repo), "shared", "data")
    )
    data_dir = tempfile.mkdtemp(prefix="blur_tasks_benchmark_")
    try:
        start = time.perf_counter()
        tasks.prepare_dataset("mnist", tfds_manual_dir=manual, data_dir=data_dir)
        prepare = time.perf_counter() - start
        start = time.perf_counter()
        tasks.get_task("mnist", tfds_manual_dir=manual, data_dir=data_dir)
        load = time.perf_counter() - start
        print(
            f"(a) prepare MNIST from {manual} into a fresh data dir: {prepare:.1f} s; "
            f"load into memory: {load:.1f} s"
        )
        for spec in ("mnist", "mnist:crop=20,size=10", "toy.xor"):
            task = tasks.get_task(spec, tfds_manual_dir=manual, data_dir=data_dir)
            first, per_batch = _time_sampling(task, _STEPS.value, _BATCH.value, _REPEATS.value)
            print(
                f"(b) {spec:24s} batch {_BATCH.value}, {_STEPS.value}-step compiled while_loop: "
                f"{per_batch * 1e6:8.1f} us/batch (first call incl. tracing {first:.2f} s)"
            )
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)


def cli():
    """Entry point of `blur-tasks-benchmark` (pyproject.toml) and of `python -m`."""
    app.run(main, flags_parser=flag_parser("tasks_benchmark"))


if __name__ == "__main__":
    cli()

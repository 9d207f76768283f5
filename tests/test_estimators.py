"""Meta-gradient estimators: segmented recomputation == full tape, the trajectory meta-loss,
the XLA path == today's path in training, no retrace as T grows, and truncated unrolls over
persistent networks (staggered resets, checkpoint/resume bit-identical after SIGKILL)."""

import json

import numpy as np
import pytest
import tensorflow as tf

from blur_tf import Genome, MetaTrainer, Rule
from blur_tf.meta import (
    FullUnrollGradient,
    InnerProblem,
    SegmentedUnrollGradient,
    TruncatedUnrollGradient,
    parse_schedule,
)
from blur_tf.tasks import TaskFamily, get_task
from tests.test_meta import LAUNCHER_ARGS, kill_after_checkpoint, launch

SEED = tf.constant([3, 4], tf.int64)


def _problem(num_states=3):
    return InnerProblem(
        [get_task("toy.and"), get_task("toy.xor")], [8], Rule(num_states=num_states), batch_size=16
    )


def _relative_error(expected, actual):
    return max(
        float(np.max(np.abs(a - b)) / (np.max(np.abs(a)) + 1e-12)) for a, b in zip(expected, actual)
    )


def _gradient(estimator, problem, length, genome=None):
    genome = genome or Genome.random(problem.rule.num_states, seed=1, population=2)
    synapses = problem.init_synapses(4, 0)
    losses, gradients, diagnostics = tf.function(estimator)(
        genome.as_variables(), synapses, SEED, tf.constant(length)
    )
    return losses.numpy(), [g.numpy() for g in gradients], diagnostics["accuracy"].numpy()


def test_full_tape_gradient_matches_finite_differences():
    """The meta-gradient (through the rule's closed-form normalization gradient) against a
    central difference of the meta-loss along a random direction of the genome."""
    problem = _problem()
    estimator = FullUnrollGradient(problem, 2)
    genome = Genome.random(problem.rule.num_states, seed=1, population=2)
    synapses = problem.init_synapses(4, 0)
    rng = np.random.default_rng(0)
    direction = [rng.normal(size=np.shape(v)).astype(np.float32) for v in genome]

    def loss(t):
        moved = Genome(*(np.asarray(v, np.float32) + t * d for v, d in zip(genome, direction)))
        losses, gradients, _ = estimator(moved.as_tensors(), synapses, SEED, tf.constant(4))
        return float(tf.reduce_sum(losses)), gradients

    _, gradients = loss(0.0)
    analytic = sum(float(np.sum(g * d)) for g, d in zip(gradients, direction))
    step = 1e-2
    numeric = (loss(step)[0] - loss(-step)[0]) / (2 * step)
    assert abs(analytic) > 1e-2  # a directional derivative that could differ
    assert abs(numeric - analytic) <= 2e-2 * abs(analytic)


@pytest.mark.parametrize(
    "length,segment,jit",
    [(7, 3, False), pytest.param(5, 2, True, marks=pytest.mark.slow), (4, 6, False), (1, 2, False)],
)
def test_segmented_gradient_equals_the_full_tape(length, segment, jit):
    problem = _problem()
    full = _gradient(FullUnrollGradient(problem, 2), problem, length)
    segmented = _gradient(
        SegmentedUnrollGradient(problem, 2, segment, jit_compile=jit), problem, length
    )
    np.testing.assert_allclose(segmented[0], full[0], rtol=1e-5)
    assert _relative_error(full[1], segmented[1]) <= 1e-4
    np.testing.assert_array_equal(segmented[2], full[2])
    assert max(np.abs(g).max() for g in full[1]) > 0  # a gradient that could differ


def test_two_level_checkpoints_give_the_one_level_gradient():
    """max_boundaries=2 over n = 9 segments of 2 steps: blocks of R = 5 segments, the last
    block short and its last segment short (T = 17), the trajectory meta-loss (every
    segment's loss and adjoint crosses a block boundary). The stored
    boundaries change, the arithmetic may not: same losses, gradient and final accuracy as
    the one-level scheme, which equals the full tape (test above)."""
    problem = _problem()
    one_level, two_level = (
        _gradient(
            SegmentedUnrollGradient(
                problem, 2, 2, meta_loss="trajectory", jit_compile=False, max_boundaries=b
            ),
            problem,
            17,
        )
        for b in (64, 2)
    )
    np.testing.assert_allclose(two_level[0], one_level[0], rtol=1e-6)
    assert _relative_error(one_level[1], two_level[1]) <= 1e-5
    np.testing.assert_array_equal(two_level[2], one_level[2])
    with pytest.raises(ValueError, match="max_boundaries"):
        SegmentedUnrollGradient(problem, 2, max_boundaries=0)


def test_trajectory_loss_is_the_mean_of_full_unrolls_at_segment_ends():
    """Oracle: the trajectory objective with segments of S over T = 7 is the mean of the
    full-unroll objectives at T = 3, 6 and 7 (same data: step t's batch is fixed)."""
    problem = _problem()
    lengths = (3, 6, 7)
    fulls = [_gradient(FullUnrollGradient(problem, 2), problem, t) for t in lengths]
    trajectory = _gradient(
        SegmentedUnrollGradient(problem, 2, 3, meta_loss="trajectory", jit_compile=False),
        problem,
        7,
    )
    np.testing.assert_allclose(trajectory[0], np.mean([f[0] for f in fulls], axis=0), rtol=1e-5)
    expected = [np.mean([f[1][i] for f in fulls], axis=0) for i in range(len(fulls[0][1]))]
    assert _relative_error(expected, trajectory[1]) <= 1e-4
    with pytest.raises(ValueError, match="meta_loss"):
        SegmentedUnrollGradient(problem, 2, meta_loss="average")
    with pytest.raises(ValueError, match="segment_length"):
        SegmentedUnrollGradient(problem, 2, segment_length=0)


def _trainer(problem, estimator, schedule="constant:6", population=2, **kwargs):
    return MetaTrainer(
        problem,
        parse_schedule(schedule),
        population=population,
        meta_batch=2,
        seed=2,
        learning_rate=1e-2,
        estimator=estimator,
        log_every=0,
        validate_every=0,
        checkpoint_every=0,
        **kwargs,
    )


@pytest.mark.slow  # XLA-compiles and trains both estimators
def test_xla_segmented_training_matches_the_full_path_and_never_retraces():
    problem = _problem()
    genomes = []
    for estimator in (
        FullUnrollGradient(problem, 2),
        SegmentedUnrollGradient(problem, 2, 2, jit_compile=True),
    ):
        trainer = _trainer(problem, estimator, schedule="curriculum:3,2,2,9")
        lengths = [trainer.step().length for _ in range(6)]
        genomes.append(trainer.genome.numpy())
    assert lengths == [3, 3, 5, 5, 7, 7]
    assert trainer.trace_count == 1
    # Each compiled segment function (forward and gradient) traced once.
    assert [f.experimental_get_tracing_count() for f in (estimator._forward, estimator._vjp)] == [
        1,
        1,
    ]
    # Adam divides by √v: in gradient components near zero, float rounding can move a step by
    # a fraction of the learning rate (1e-2), so the tolerance is a tenth of one step.
    for full, fast in zip(*genomes):
        np.testing.assert_allclose(fast, full, rtol=1e-3, atol=1e-3)


# ------------------------------------------------------------------------------ truncated
def test_truncated_networks_persist_reset_staggered_and_cover_every_age():
    problem = _problem(num_states=2)
    estimator = TruncatedUnrollGradient(
        problem, population=2, meta_batch=2, truncation_length=2, jit_compile=False
    )
    trainer = _trainer(problem, estimator, schedule="constant:8")
    ages = []
    for _ in range(8):
        before = [w.numpy() for w in estimator.forwards]
        trainer.step()
        ages.append(estimator.ages.numpy() - 2)  # ages before this meta-step's truncation
        if len(ages) > 1:  # networks that did not reset continued from their synapses
            continued = ages[-1] > 0
            assert continued.any()
    ages = np.stack(ages)
    assert ages.max() == 6 and ages.min() == 0  # 4 truncations of 2 per episode of 8 steps
    assert len(set(ages[0])) == 1 and len(set(ages[-1])) > 1  # staggered after the start
    assert set(np.unique(ages[4:])) == {0, 2, 4, 6}  # every age is in the meta-batch
    del before
    with pytest.raises(ValueError, match="task families"):
        family = TaskFamily([get_task("toy.and"), get_task("toy.xor")])
        TruncatedUnrollGradient(InnerProblem([family], [8], Rule(), 16), 1, 2)


@pytest.mark.slow  # end to end: three launcher processes, one killed
def test_truncated_estimator_resumes_bit_identically_after_sigkill(tmp_path):
    args = [
        "--estimator=truncated",
        "--truncation_length=2",
        "--unroll=constant:6",
        "--meta_steps=30",
        "--checkpoint_every=10",
        "--xla=false",
    ]
    straight = launch("meta_train", tmp_path / "straight", [*LAUNCHER_ARGS, *args])
    assert straight.returncode == 0, straight.stderr[-3000:]
    killed = tmp_path / "killed"
    kill_after_checkpoint(
        launch("meta_train", killed, [*LAUNCHER_ARGS, *args], wait=False), killed / "ckpt", 10
    )
    resumed = launch("meta_train", killed, [*LAUNCHER_ARGS, *args])
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resumed from" in resumed.stderr
    a, b = (
        json.load(open(d / "genome.json"))["coefficients"] for d in (tmp_path / "straight", killed)
    )
    for name in a:
        np.testing.assert_array_equal(np.asarray(b[name]), np.asarray(a[name]), err_msg=name)


@pytest.mark.slow  # three launcher processes
def test_segmented_process_peak_does_not_grow_with_the_unroll(tmp_path):
    """Issue 23's bound as the OS sees it: a whole `meta_train` process at T = 2000 with the
    segmented estimator (XLA, the default) peaks at most 512 MiB above the same setting at
    T = 10 with the full estimator, and at most 128 MiB above its own T = 10 run (the 54
    stored boundaries hold 57 MiB). Storing the synapses at every segment boundary (200 of
    them) would add 210 MiB, at every inner step 2 GB: 2 networks × 2 × 4 × 129×128 floats."""
    common = [
        "--tasks=toy.and",
        "--layer_sizes=128,128",
        "--num_states=4",
        "--population=2",
        "--meta_batch=1",
        "--batch_size=16",
        "--meta_steps=1",
        "--validate_every=0",
        "--log_every=1",
    ]
    peaks = {}
    for name, extra in (
        ("full_10", ["--unroll=constant:10", "--estimator=full"]),
        ("segmented_10", ["--unroll=constant:10", "--estimator=segmented", "--xla"]),
        ("segmented_2000", ["--unroll=constant:2000", "--estimator=segmented", "--xla"]),
    ):
        result = launch("meta_train", tmp_path / name, common + extra)
        assert result.returncode == 0, result.stderr[-2000:]
        summary = json.loads((tmp_path / name / "summary.json").read_text())
        peaks[name] = summary["peak_rss_mb"]
    assert peaks["segmented_2000"] - peaks["full_10"] <= 512, peaks
    assert peaks["segmented_2000"] - peaks["segmented_10"] <= 128, peaks

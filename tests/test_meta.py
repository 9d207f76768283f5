"""MetaTrainer and the meta_train launcher: schedules, compiled step, skipping, sync,
determinism and flag errors (the trainer contract: tests/test_trainer_contract.py)."""

import os
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf

from blur_tf import Genome, MetaTrainer, Rule
from blur_tf.meta import (
    ConstantSchedule,
    CurriculumSchedule,
    InnerProblem,
    Jittered,
    PopulationAdam,
    Validator,
    length_at,
    parse_schedule,
    schedules,
)
from blur_tf.tasks import get_task

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HIDDEN = [8]


def _tasks(*specs):
    return [get_task(s) for s in specs]


def _trainer(
    tmp_path=None,
    schedule="constant:3",
    population=1,
    meta_batch=2,
    seed=0,
    validation=True,
    genome=None,
    **kwargs,
):
    rule = Rule()
    problem = InnerProblem(_tasks("toy.and", "toy.xor"), HIDDEN, rule, batch_size=16)
    validator = (
        Validator(
            _tasks("toy.nxor"), HIDDEN, rule, batch_size=16, networks=2, eval_examples=64, seed=seed
        )
        if validation
        else None
    )
    dirs = {}
    if tmp_path is not None:
        dirs = dict(checkpoint_dir=str(tmp_path / "ckpt"), summary_dir=str(tmp_path / "tb"))
    return MetaTrainer(
        problem,
        parse_schedule(schedule, seed),
        population=population,
        meta_batch=meta_batch,
        seed=seed,
        validator=validator,
        genome=genome,
        learning_rate=1e-2,
        **dirs,
        **kwargs,
    )


# ------------------------------------------------------------------------------ schedules
def test_constant_and_curriculum_schedules():
    assert [length_at(ConstantSchedule(7), s) for s in (0, 10, 10**6)] == [7, 7, 7]
    c = CurriculumSchedule(10, 5, 100, 30)
    assert [length_at(c, s) for s in (0, 99, 100, 199, 200, 350, 10**6)] == [
        10,
        10,
        15,
        15,
        20,
        25,
        30,
    ]
    assert [c.stage(s) for s in (0, 99, 100, 10**6)] == [0, 0, 1, 4]
    assert c.max_length == 30
    assert not schedules.stage_starts(c, 0) and schedules.stage_starts(c, 100)
    assert not schedules.stage_starts(c, 10**6)  # no new stage once at the maximum
    assert parse_schedule("curriculum:10,5,100,30") == c
    assert parse_schedule(" constant: 20 ") == ConstantSchedule(20)


def test_jitter_is_pure_bounded_and_varies():
    s = parse_schedule("constant:20,jitter=0.25", seed=3)
    assert isinstance(s, Jittered)
    lengths = [length_at(s, i) for i in range(200)]
    assert lengths == [length_at(s, i) for i in range(200)]  # pure in (seed, step)
    assert min(lengths) >= 15 and max(lengths) <= 25 and len(set(lengths)) > 5
    other = [length_at(parse_schedule("constant:20,jitter=0.25", seed=4), i) for i in range(200)]
    assert other != lengths
    assert s.stage(50) == 0 and s.max_length == 25


@pytest.mark.parametrize(
    "spec",
    [
        "",
        "constant",
        "constant:0",
        "constant:x",
        "linear:5",
        "curriculum:10,5,100",
        "curriculum:10,5,100,5",
        "constant:10,jitter=1.5",
        "constant:10,jitter=abc",
    ],
)
def test_bad_schedules_raise(spec):
    with pytest.raises(ValueError):
        parse_schedule(spec)


# ------------------------------------------------------------------------------ learner
def test_population_adam_clips_skips_and_syncs_per_genome():
    params = [tf.Variable([[1.0, 1.0], [2.0, 2.0], [3.0, 3.0]])]
    adam = PopulationAdam(params, learning_rate=0.1, clip_norm=1.0)
    grads = [tf.constant([[3.0, 4.0], [np.nan, 0.0], [0.3, 0.4]])]
    applied, norms = adam.apply(grads, tf.constant([1.0, 1.0, 1.0]))
    np.testing.assert_array_equal(applied.numpy(), [True, False, True])
    np.testing.assert_allclose(norms.numpy()[[0, 2]], [5.0, 0.5], rtol=1e-6)
    new = params[0].numpy()
    np.testing.assert_array_equal(new[1], [2.0, 2.0])  # the NaN genome is untouched
    assert np.all(new[0] < 1.0) and np.all(new[2] < 3.0)
    np.testing.assert_array_equal(adam.second_moments[0].numpy()[1], [0.0, 0.0])
    # Non-finite loss with finite gradient: skipped as well.
    applied, _ = adam.apply([tf.ones([3, 2])], tf.constant([np.inf, 1.0, 1.0]))
    np.testing.assert_array_equal(applied.numpy(), [False, True, True])
    adam.sync(2)
    for variable in [*params, *adam.first_moments, *adam.second_moments]:
        v = variable.numpy()
        np.testing.assert_array_equal(v[0], v[2])
        np.testing.assert_array_equal(v[1], v[2])


# ------------------------------------------------------------------------------ trainer
def test_meta_step_traces_once_while_the_curriculum_grows():
    trainer = _trainer(
        schedule="curriculum:2,1,2,6",
        validation=False,
        log_every=0,
        validate_every=0,
        checkpoint_every=0,
    )
    lengths = [trainer.step().length for _ in range(8)]
    assert lengths == [2, 2, 3, 3, 4, 4, 5, 5]
    assert trainer.trace_count == 1


def test_meta_training_changes_the_genome_and_is_deterministic():
    results = []
    for _ in range(2):
        trainer = _trainer(
            validation=False, seed=5, log_every=0, validate_every=0, checkpoint_every=0
        )
        initial = trainer.genome.numpy()
        for _ in range(3):
            trainer.step()
        results.append(trainer.genome.numpy())
    for a, b in zip(results[0], results[1]):
        np.testing.assert_array_equal(a, b)
    assert any(not np.allclose(a, c) for a, c in zip(results[0], initial))


def test_non_finite_genome_is_skipped_counted_and_not_applied(tmp_path):
    good = Genome.random(2, seed=1)
    bad = good.numpy()._replace(norm_gain=np.array([[np.nan, 1.0]], np.float32))
    genome = Genome.concat([good, Genome(*[tf.constant(v) for v in bad])])
    trainer = _trainer(
        population=2,
        genome=genome,
        validation=False,
        log_every=1,
        validate_every=0,
        checkpoint_every=0,
    )
    before = trainer.genome.numpy()
    result = trainer.step()
    assert not np.isfinite(result.losses[1]) and np.isfinite(result.losses[0])
    np.testing.assert_array_equal(result.applied, [True, False])
    assert int(trainer.skipped.numpy()) == 1
    after = trainer.genome.numpy()
    for name, b, a in zip(Genome._fields, before, after):
        np.testing.assert_array_equal(a[1], b[1], err_msg=name)  # not applied
    assert any(not np.array_equal(a[0], b[0]) for b, a in zip(before, after))
    trainer.step()
    assert int(trainer.skipped.numpy()) == 2


def test_population_is_synchronized_to_the_best_genome_at_a_new_stage():
    trainer = _trainer(
        schedule="curriculum:2,1,3,4",
        population=3,
        log_every=0,
        validate_every=0,
        checkpoint_every=0,
    )
    trainer.train(3, resume=False)
    values = trainer.genome.numpy()
    assert not np.allclose(values.forward_transform[0], values.forward_transform[1])
    scores = trainer.validator(trainer.genome, 2).scores()
    expected_best = trainer.genome.numpy().forward_transform[int(np.argmax(scores))]
    trainer._maybe_sync(3)  # pylint: disable=protected-access
    synced = trainer.genome.numpy()
    for field in synced:
        np.testing.assert_array_equal(field[0], field[1])
        np.testing.assert_array_equal(field[0], field[2])
    np.testing.assert_array_equal(synced.forward_transform[0], expected_best)
    assert int(trainer.synced_stage.numpy()) == 1


def _event_tags(logdir):
    tags = set()
    for root, _, files in os.walk(logdir):
        for name in files:
            if "tfevents" in name:
                for event in tf.compat.v1.train.summary_iterator(os.path.join(root, name)):
                    tags.update(v.tag for v in event.summary.value)
    return tags


# ------------------------------------------------------------------------------ launcher
LAUNCHER_ARGS = [
    "--tasks=toy.and;toy.xor",
    "--validation_tasks=toy.nxor",
    "--layer_sizes=8",
    "--population=2",
    "--meta_batch=2",
    "--batch_size=16",
    "--unroll=curriculum:2,1,12,4",
    "--validate_every=10",
    "--checkpoint_every=5",
    "--log_every=10",
    "--validation_networks=2",
    "--validation_examples=64",
    "--print_table=false",
    "--seed=3",
]


def launch(module, out_dir, args, wait=True):
    """`python -m launchers.MODULE --out_dir=OUT ARGS…`: the finished run (output captured), or
    the running process (output discarded) if not `wait`."""
    command = [sys.executable, "-m", f"launchers.{module}", f"--out_dir={out_dir}", *args]
    env = dict(os.environ, PYTHONPATH=REPO, TF_CPP_MIN_LOG_LEVEL="2")
    if not wait:
        return subprocess.Popen(
            command, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
    return subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=240)


def _launch(out_dir, *extra, wait=True):
    return launch("meta_train", out_dir, [*LAUNCHER_ARGS, *extra], wait)


def kill_after_checkpoint(process, checkpoint_dir, at_least: int, timeout: float = 180):
    """SIGKILLs the running `process` once `checkpoint_dir` holds checkpoint number ≥ at_least
    (fails if the run ends first)."""
    index = checkpoint_dir / "checkpoint"
    deadline = time.time() + timeout
    while time.time() < deadline and process.poll() is None:
        if index.exists() and "ckpt-" in index.read_text():
            if int(index.read_text().split("ckpt-")[1].split('"')[0]) >= at_least:
                break
        time.sleep(0.02)
    assert process.poll() is None, "the run ended before it could be killed"
    process.send_signal(signal.SIGKILL)
    process.wait()


def _config(**overrides):
    from launchers import meta_train  # pylint: disable=g-import-not-at-top

    values = {
        "out_dir": "/nonexistent/out",
        "layer_sizes": ["8"],
        "tasks": ["toy.and"],
        "validation_tasks": [],
        "learning_rate": 1e-2,
        "logit_scale": 1.0,
        "clip_norm": 1.0,
        "init_genome": None,
        "num_states": 2,
        "activation": "tanh",
        "output_activation": "tanh",
        "backward_activation": None,
        "backward_mode": "additive",
        "symmetric": False,
        "multichannel": True,
        "normalize_forward": True,
        "normalize_backward": True,
        "normalize_output": True,
        "oja": False,
        "saturation": False,
        "feedback": "label",
        "unroll": "constant:5",
        "seed": 0,
    }
    values.update(overrides)
    return meta_train.build_config(values)


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(unroll="linear:5"), "--unroll"),
        (dict(tasks=["toy.xor:seed"]), "--tasks"),
        (dict(tasks=[]), "at least one training task"),
        (dict(layer_sizes=["8", "x"]), "--layer_sizes"),
        (dict(activation="softsign"), "activation"),
        (dict(learning_rate=-1.0), "--learning_rate"),
        (dict(out_dir=None), "--out_dir"),
        (dict(init_genome="/nonexistent/genome.json"), "--init_genome"),
    ],
)
def test_bad_flag_values_are_rejected(overrides, message):
    from launchers import meta_train  # pylint: disable=g-import-not-at-top

    with pytest.raises(meta_train.FlagError, match=re.escape(message)):
        _config(**overrides)
    assert _config().hidden == [8]


@pytest.mark.parametrize(
    "flag, message",
    [
        ("--tasks=toy.nope", "toy.nope"),  # unknown task: caught when tasks are built
        ("--population=0", "population"),  # absl bound
    ],
)
def test_bad_flags_exit_nonzero_before_any_work(tmp_path, flag, message):
    out_dir = tmp_path / "out"
    start = time.time()
    result = _launch(out_dir, "--meta_steps=5", flag)
    assert result.returncode != 0
    assert message in result.stderr
    assert not out_dir.exists()
    assert time.time() - start < 60


def test_validation_scores_rank_by_final_accuracy_or_by_the_whole_curve():
    from blur_tf.meta import ValidationResult  # pylint: disable=g-import-not-at-top

    # Genome 0 learns fast then drops; genome 1 learns slowly and ends higher.
    curves = {"t": np.array([[0.1, 0.9, 0.9, 0.6], [0.1, 0.3, 0.5, 0.7]])}
    assert ValidationResult(3, curves, "final").best() == 1
    np.testing.assert_allclose(ValidationResult(3, curves, "mean").scores(), [0.8, 0.5])
    assert ValidationResult(3, curves, "mean").best() == 0
    with pytest.raises(ValueError, match="validation score"):
        Validator(_tasks("toy.nxor"), HIDDEN, Rule(), batch_size=16, score="auc")

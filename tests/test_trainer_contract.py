"""The trainer contract, run over every outer algorithm (MetaTrainer and CmaTrainer):
a resumed run equals an uninterrupted one (in process and after SIGKILL through the
launcher), a stop request saves a checkpoint, TensorBoard tags, only the chief writes, bad
arguments are refused."""

import json
import signal

import numpy as np
import pytest

from blur_tf.meta import StopRequest, outer_loop
from tests import test_cma, test_meta

GRADIENT_TAGS = {
    "meta/loss",
    "meta/train_accuracy/toy.and",
    "meta/train_accuracy/toy.xor",
    "meta/unroll_length",
    "meta/skipped_steps",
    "meta/steps_per_second",
    "validation/accuracy/toy.nxor",
    "validation/curve/toy.nxor",
    "genome/forward_transform",
    "genome/synapse_update",
    "genome_heatmap/forward_transform",
    "genome_heatmap/synapse_post",
    "flags",
}
CMA_TAGS = {
    "cma/fitness_best",
    "cma/fitness_mean",
    "cma/fitness_worst",
    "cma/sigma",
    "cma/non_finite",
    "cma/unroll_length",
    "cma/generations_per_second",
    "validation/accuracy/toy.nxor",
    "validation/curve/toy.nxor",
    "genome/forward_transform",
    "genome_heatmap/synapse_post",
}


def _gradient(tmp_path=None, **kwargs):
    options = dict(population=2, log_every=2, validate_every=2, checkpoint_every=0)
    return test_meta._trainer(tmp_path, **{**options, **kwargs})  # pylint: disable=protected-access


def _cma(tmp_path=None, **kwargs):
    return test_cma._trainer(tmp_path, **kwargs)  # pylint: disable=protected-access


def _gradient_state(trainer):
    return [*trainer.genome.numpy(), *[m.numpy() for m in trainer.learner.second_moments]]


def _cma_state(trainer):
    return [trainer.best_vector, trainer.es.mean, np.array(trainer.best_score)]


# name: (trainer factory, state that must match, TensorBoard tags, total of the in-process run)
ALGORITHMS = {
    "gradient": (_gradient, _gradient_state, GRADIENT_TAGS, 4),
    "cma": (_cma, _cma_state, CMA_TAGS, 6),
}


@pytest.mark.slow  # trains, stops, resumes and trains again, for both trainers
@pytest.mark.parametrize("name", ALGORITHMS)
def test_stop_saves_a_checkpoint_and_a_resumed_run_equals_an_uninterrupted_one(name, tmp_path):
    make, state, tags, total = ALGORITHMS[name]
    straight = make()
    straight.train(total, resume=False)
    first = make(tmp_path)
    first.summaries.flags("--seed=0")
    first.train(total // 2)
    stop = StopRequest()
    stop.signum = signal.SIGTERM
    result = first.train(total, stop=stop)  # a requested stop saves a checkpoint and returns
    counts = (
        (result.steps, result.steps_run)
        if name == "gradient"
        else (result.generations, result.generations_run)
    )
    assert result.interrupted and counts == (total // 2, 0)
    resumed = make(tmp_path)
    assert resumed.restore() and resumed.step_count == total // 2
    for a, b in zip(state(resumed), state(first)):
        np.testing.assert_array_equal(a, b)
    resumed.train(total)
    for a, b in zip(state(resumed), state(straight)):
        np.testing.assert_array_equal(a, b)
    found = test_meta._event_tags(str(tmp_path / "tb"))  # pylint: disable=protected-access
    assert tags - {"flags"} <= found and "flags" in found, tags - found


@pytest.mark.slow  # two CMA-ES runs end to end
def test_cma_resume_keeps_the_history_and_refuses_another_run(tmp_path):
    straight = _cma()
    straight.train(6, resume=False)
    _cma(tmp_path).train(3)
    resumed = _cma(tmp_path)
    resumed.train(6)
    assert resumed.history == straight.history and len(straight.history) == 6
    assert resumed.best_score == straight.best_score > 0
    with pytest.raises(ValueError, match="belongs to another run"):
        _cma(tmp_path, fields=["forward_transform"]).restore()


@pytest.mark.parametrize("name", ALGORITHMS)
def test_only_the_chief_writes(name, tmp_path, monkeypatch):
    monkeypatch.setattr(outer_loop.distribute, "is_chief", lambda strategy: False)
    trainer = ALGORITHMS[name][0](tmp_path, checkpoint_every=1)
    assert trainer.summaries is None
    trainer.train(2)
    assert not (tmp_path / "tb").exists()
    assert not (tmp_path / "ckpt").exists() or not any(
        p.name.startswith("ckpt-") for p in (tmp_path / "ckpt").iterdir()
    )


BAD_ARGUMENTS = [
    ("gradient", dict(population=0), "population must be an int >= 1"),
    ("gradient", dict(validate_every=-1), "validate_every must be an int >= 0"),
    ("gradient", dict(max_consecutive_skips=-1), "max_consecutive_skips must be an int >= 0"),
    ("cma", dict(population=1), "population must be an int >= 2"),
    ("cma", dict(sigma0=0.0), "sigma0 must be"),
    ("cma", dict(fields=["nope"]), "unknown genome field"),
    ("cma", dict(eval_batches=3), "cannot be split into 3"),
    ("cma", dict(validate_every=-1), "validate_every must be an int >= 0"),
]


@pytest.mark.parametrize("name, kwargs, message", BAD_ARGUMENTS)
def test_bad_arguments_raise(name, kwargs, message):
    with pytest.raises(ValueError, match=message):
        ALGORITHMS[name][0](validation=False, **kwargs)


# ------------------------------------------------------------------------------ launchers
def _json(path):
    with open(path) as f:
        return json.load(f)


def _gradient_checks(straight, resumed):
    summary = _json(straight / "summary.json")
    assert summary["skipped_meta_steps"] == summary["skipped_genome_updates"] == 0
    assert summary["validation"]["unroll_length"] == 4
    assert set(summary["validation"]["accuracy"]) == {"toy.nxor"}
    assert _json(resumed / "genome.json")["metadata"]["meta_steps"] == 120


def _cma_checks(straight, resumed):
    a, b = _json(straight / "genome.json"), _json(resumed / "genome.json")
    assert a["metadata"]["generations"] == b["metadata"]["generations"] == 150
    assert a["metadata"]["vector_layout"][0] == {
        "field": "forward_transform",
        "start": 0,
        "stop": 4,
        "shape": [2, 2],
    }
    summary, resumed_summary = _json(straight / "summary.json"), _json(resumed / "summary.json")
    assert summary["curve"] == resumed_summary["curve"] and len(summary["curve"]) == 150
    assert summary["non_finite_candidates"] == 0 and summary["dimensions"] == 24
    assert set(summary["validation"]["accuracy"]) == {"toy.nxor"}


# name: (launcher, its flags, total, a changed training flag, tolerance, specific checks)
LAUNCHERS = {
    "gradient": (
        "meta_train",
        test_meta.LAUNCHER_ARGS,
        "--meta_steps=120",
        "--learning_rate=0.5",
        1e-6,
        _gradient_checks,
    ),
    "cma": (
        "cma_train",
        test_cma.LAUNCHER_ARGS,
        "--generations=150",
        "--sigma0=0.5",
        0.0,
        _cma_checks,
    ),
}


@pytest.mark.slow  # end to end: three launcher processes per trainer, one killed
@pytest.mark.parametrize("name", LAUNCHERS)
def test_sigkill_and_resume_gives_the_uninterrupted_genome(name, tmp_path):
    module, args, total, changed_flag, tolerance, checks = LAUNCHERS[name]
    launch = lambda out_dir, *extra, wait=True: test_meta.launch(
        module, out_dir, [*args, total, *extra], wait
    )
    straight_dir, killed_dir = tmp_path / "straight", tmp_path / "killed"
    straight = launch(straight_dir)
    assert straight.returncode == 0, straight.stderr[-3000:]
    # SIGKILL once a mid-run checkpoint exists, then rerun the same command.
    test_meta.kill_after_checkpoint(launch(killed_dir, wait=False), killed_dir / "ckpt", 20)
    assert not (killed_dir / "genome.json").exists()
    resumed = launch(killed_dir)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resumed from" in resumed.stderr
    a, b = _json(straight_dir / "genome.json"), _json(killed_dir / "genome.json")
    for field, values in a["coefficients"].items():
        np.testing.assert_allclose(
            b["coefficients"][field], values, rtol=tolerance, atol=tolerance, err_msg=field
        )
    checks(straight_dir, killed_dir)
    # Rerunning with different training flags is refused, before any work.
    changed = launch(killed_dir, changed_flag)
    assert changed.returncode != 0 and "different training flags" in changed.stderr

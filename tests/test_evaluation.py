"""Tests of blur_tf.evaluation and launchers/evaluate.py: fairness, selection, flags, outputs."""

import dataclasses
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from absl import flags

from blur_tf import baselines, evaluation
from blur_tf.genome import Genome
from blur_tf.rule import Rule
from launchers import evaluate as launcher

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class Blobs:
    """A tiny in-memory task with the tasks API used here (no datasets needed)."""

    spec = "test.blobs"
    input_size = 6
    num_classes = 3

    def sample_train(self, seed, n):
        seed = tf.cast(seed, tf.int32)
        y = tf.random.stateless_uniform([n], seed, 0, 3, dtype=tf.int32)
        centers = tf.constant(np.random.default_rng(0).normal(size=(3, 6)), tf.float32)
        return tf.gather(centers, y) + tf.random.stateless_normal([n, 6], seed + 7), y

    def eval_set(self, max_examples=None):
        return self.sample_train(tf.constant([99, 99]), max_examples or 300)


def test_backprop_genome_reproduces_sgd_baseline():
    """Same batches, same initial weights: the backprop genome *is* the SGD baseline."""
    task, seeds, lrs, horizons = Blobs(), [0, 5], [0.05, 0.5], [1, 3, 8]
    layers = [6, 9, 7, 3]
    batch_fn = evaluation.seeded_batches(task, seeds, 16)
    x, y = task.eval_set()
    learner = evaluation.load_learner("backprop", backprop_learning_rates=lrs)
    blur = evaluation.genome_curves(
        layers, learner.genome, learner.rule, seeds, batch_fn, x, y, horizons
    )
    sgd = baselines.sweep_curves(layers, "sgd", "tanh", lrs, seeds, batch_fn, x, y, horizons)
    assert blur.accuracy.shape == sgd.accuracy.shape == (2, 2, 3)
    np.testing.assert_allclose(blur.accuracy, sgd.accuracy, atol=1.5 / len(y))
    for (kernel, bias), (forward, _) in zip(sgd.params, blur.synapses):
        w = forward.numpy()[..., 0].reshape(2, 2, *forward.shape[1:3])  # [G·S] → [L, S]
        np.testing.assert_allclose(w[:, :, :-1], kernel.numpy(), atol=2e-5)
        np.testing.assert_allclose(w[:, :, -1:], bias.numpy(), atol=2e-5)
    assert (
        np.abs(w[:, :, :-1] - baselines.initial_params(layers, seeds)[-1][0][None]).max() > 1e-3
    )  # the networks did train


def test_learned_genome_population_one_broadcasts_over_seeds():
    task, seeds = Blobs(), [1, 2, 3]
    batch_fn = evaluation.seeded_batches(task, seeds, 8)
    x, y = task.eval_set(100)
    curves = evaluation.genome_curves(
        [6, 5, 3], Genome.random(2, seed=1), Rule(), seeds, batch_fn, x, y, [2, 4]
    )
    assert curves.accuracy.shape == (1, 3, 2)
    assert curves.synapses[0][0].shape[0] == 3
    assert np.all((curves.accuracy >= 0) & (curves.accuracy <= 1))


def test_best_per_horizon_selects_per_horizon():
    configs = [{"learning_rate": 0.01}, {"learning_rate": 0.1}, {"learning_rate": 1.0}]
    accuracy = np.array(
        [  # [C=3, S=2, H=3]
            [[0.2, 0.5, 0.9], [0.2, 0.5, 0.8]],
            [[0.4, 0.7, 0.6], [0.6, 0.7, 0.6]],
            [[0.5, 0.6, 0.1], [0.5, 0.6, 0.1]],
        ]
    )
    rows = evaluation.best_per_horizon(accuracy, configs, [1, 10, 100], [0.01, 0.1, 1.0])
    assert [r.config["learning_rate"] for r in rows] == [0.1, 0.1, 0.01]
    assert rows[0].mean == pytest.approx(0.5) and rows[0].std == pytest.approx(0.1)
    assert rows[2].mean == pytest.approx(0.85) and rows[2].std == pytest.approx(0.05)
    assert [r.at_edge for r in rows] == [False, False, True]
    assert list(rows[2].to_dict()) == ["horizon", "mean", "std", "config", "at_edge"]
    tied = np.ones((3, 2, 1))  # every config equal: the first wins, but it is no edge case
    assert evaluation.best_per_horizon(tied, configs, [1], [0.01, 0.1, 1.0])[0].at_edge is False
    with pytest.raises(ValueError, match="does not match"):
        evaluation.best_per_horizon(accuracy, configs[:2], [1, 10, 100])


def test_load_learner_reads_metadata_rule_and_overrides(tmp_path):
    path = str(tmp_path / "genome.json")
    rule = Rule(num_states=3, activation="relu", symmetric=True)
    Genome.random(3, seed=0, population=2).save(path, metadata={"rule": rule.to_dict()})
    learner = evaluation.load_learner(path)
    assert learner.rule == rule and learner.genome.population == 1
    overridden = evaluation.load_learner(
        path, evaluation.parse_rule_overrides("oja=true,backward_activation=none"), member=None
    )
    assert overridden.rule.oja and overridden.rule.activation == "relu"
    assert overridden.genome.population == 2
    with pytest.raises(ValueError, match="member 2 out of range"):
        evaluation.load_learner(path, member=2)
    Genome.random(2, seed=0).save(path)  # no metadata: default rule with the genome's K
    assert evaluation.load_learner(path).rule == Rule(num_states=2)
    with pytest.raises(ValueError, match="does not exist"):
        evaluation.load_learner(str(tmp_path / "missing.json"))
    with pytest.raises(ValueError, match="expected key=value"):
        evaluation.parse_rule_overrides("colour=red")
    with pytest.raises(ValueError, match="true or false"):
        evaluation.parse_rule_overrides("oja=maybe")


def _settings(argv):
    fv = flags.FlagValues()
    launcher.define_flags(fv)
    fv(["evaluate"] + argv)
    return launcher.settings_from_flags(fv)


@pytest.mark.parametrize(
    "argv,message",
    [
        (["--steps=0,5"], "horizons"),
        (["--steps=1,x"], "--steps must be integers"),
        (["--baselines=sgd,rmsprop"], "unknown optimizer 'rmsprop'"),
        (["--learning_rates=0.1,-3"], "--learning_rates"),
        (["--seeds=0"], "--seeds"),
        (["--batch_size=0"], "--batch_size"),
        (["--layer_sizes=12,a"], "--layer_sizes"),
        (["--tasks=mnist:crop"], "key=value"),
        (["--genome=/nonexistent/genome.json"], "does not exist"),
        (["--rule=colour=red"], "expected key=value"),
        (["--genome=none", "--baselines=none"], "nothing to evaluate"),
    ],
)
def test_launcher_rejects_bad_flags(tmp_path, argv, message):
    with pytest.raises(ValueError, match=message):
        _settings(argv + [f"--out_dir={tmp_path}"])


def test_launcher_requires_out_dir():
    with pytest.raises(ValueError, match="--out_dir is required"):
        _settings([])


def test_launcher_bad_flag_exits_nonzero_before_work(tmp_path):
    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, "-m", "launchers.evaluate", "--steps=5,5", f"--out_dir={out}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": ROOT},
    )
    assert proc.returncode != 0
    assert "horizons must be distinct" in proc.stderr
    assert not out.exists()


def test_launcher_writes_results_csv_png(tmp_path, capsys):
    settings = _settings(
        [
            "--tasks=toy.xor;toy.circles",
            "--layer_sizes=6",
            "--steps=1,4",
            "--seeds=2",
            "--batch_size=8",
            "--learning_rates=0.03,0.3",
            "--activations=tanh",
            "--baselines=sgd,adam",
            "--eval_examples=200",
            f"--out_dir={tmp_path}",
        ]
    )
    results = launcher.run(settings, log=lambda message: None)
    with open(tmp_path / "results.json") as f:
        written = json.load(f)
    assert written["runs"] == json.loads(json.dumps(results["runs"]))
    assert [r["task"] for r in written["runs"]] == ["toy.xor", "toy.circles"]
    run = written["runs"][0]
    assert run["layer_sizes"] == [2, 6, 2] and run["eval_examples"] == 200
    assert set(run["methods"]) == {"blur", "sgd", "adam"}
    assert [r["horizon"] for r in run["methods"]["adam"]["per_horizon"]] == [1, 4]
    assert run["methods"]["sgd"]["per_horizon"][0]["config"]["learning_rate"] in (0.03, 0.3)
    # The swept backprop genome (tanh) and SGD with tanh are the same curves.
    assert np.allclose(
        run["methods"]["blur"]["accuracy"], run["methods"]["sgd"]["accuracy"], atol=1.5 / 200
    )
    lines = (tmp_path / "results.csv").read_text().strip().splitlines()
    assert lines[0].startswith("task,layer_sizes,method,horizon,mean_accuracy,std_accuracy")
    assert len(lines) == 1 + 2 * 3 * 2  # tasks × methods × horizons
    import matplotlib.image

    image = matplotlib.image.imread(str(tmp_path / "curves.png"))
    assert image.shape[1] > image.shape[0] > 100  # two panels side by side
    # Fig. 6: one row per run, one panel per swept optimizer among sgd / momentum (adam is not).
    sweep = matplotlib.image.imread(str(tmp_path / "sweep.png"))
    assert sweep.shape[0] > 1.5 * image.shape[0] and sweep.shape[1] < image.shape[1]
    assert not evaluation.plot_sweep(
        [{**run, "methods": {"sgd": run["methods"]["sgd"]}}], str(tmp_path / "none.png")
    )
    assert not (tmp_path / "none.png").exists()
    assert os.listdir(tmp_path / "tensorboard")
    assert not [n for n in os.listdir(tmp_path) if n.startswith(".tmp-")]
    printed = capsys.readouterr().out
    assert "toy.circles" in printed and "BLUR test accuracy (best baseline)" in printed


def test_one_table_writer_keeps_both_layouts():
    """blur_tf.tables.text_table lays out evaluation's tables and meta/report's (unchanged)."""
    from blur_tf.meta import report
    from blur_tf.tables import text_table

    assert (
        text_table(["steps", "sgd"], [["1", "0.5"], ["20", "0.75"]], title=["t"], rule=True)
        == "t\nsteps  sgd \n-----  ----\n1      0.5 \n20     0.75"
    )
    table = {
        "mnist": {"learned": 0.81234, "random": 0.1},
        "fashion_mnist": {"learned": 0.7, "random": 0.12},
    }
    assert report.format_table(table, "T", {"mnist": 0.11, "fashion_mnist": 0.1}) == "\n".join(
        [
            "T",
            "task              learned    random    chance",
            "mnist               0.812     0.100     0.110",
            "fashion_mnist       0.700     0.120     0.100",
            "mean                0.756     0.110     0.105",
        ]
    )
    assert [f.name for f in dataclasses.fields(evaluation.ResultRow)] == [
        "task",
        "layer_sizes",
        "method",
        "horizon",
        "mean_accuracy",
        "std_accuracy",
        "learning_rate",
        "activation",
        "member",
        "lr_at_grid_edge",
    ]

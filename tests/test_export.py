"""SavedModel export (blur_tf/export.py, launchers/export.py, BlurModel.export).

The exported folders are loaded in a subprocess that has only tensorflow and numpy (blur_tf is
not importable there) and checked against independent oracles: `BlurNetwork.step`/`unroll`/
`predict` for a meta-learned genome, Keras SGD (tests.test_network.sgd_reference) for the
backprop genome, and the BlurModel itself for its exports.
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from absl import flags

from blur_tf import BlurModel, BlurNetwork, Genome, Rule
from blur_tf.export import export_learner
from blur_tf.tasks import get_task
from launchers import export as launcher
from tests.test_network import _data, sgd_reference

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOY2D = os.path.join(ROOT, "genomes", "toy2d.json")
STEPS, RESET_SEED = 20, 7
BACKPROP_SIZES, BACKPROP_LR = [6, 10, 3], 0.3

# Runs in a fresh interpreter (-I: no PYTHONPATH, no script folder on sys.path) from a folder
# without blur_tf: loads every exported folder with tf.saved_model.load and records outputs.
PLAIN_TF = r"""
import importlib.util, json, sys
import numpy as np
import tensorflow as tf
assert importlib.util.find_spec("blur_tf") is None, "blur_tf is importable"
jobs, out = json.load(open(sys.argv[1])), {}
for name, job in jobs.items():
    data, model = np.load(job["data"]), tf.saved_model.load(job["path"])
    out[name + "/signatures"] = np.array(sorted(model.signatures))
    if job["kind"] == "serving":
        out[name + "/serve"] = model.serve(data["x_eval"])
        serving = model.signatures["serving_default"]
        out[name + "/serving_default"] = serving(x=data["x_eval"])["output_0"]
        continue
    out[name + "/predict_before"] = model.predict(data["x_eval"])["logits"]
    if job["kind"] == "continue":
        out[name + "/learn"] = model.learn(data["xs"][0], data["ys"][0])["logits"]
        out[name + "/predict"] = model.predict(data["x_eval"])["logits"]
        continue
    for x, y in zip(data["xs"][:3], data["ys"][:3]):  # wiped by the reset below
        model.learn(x, y)
    out[name + "/reset_steps"] = model.reset(tf.constant(job["reset_seed"], tf.int64))["steps"]
    results = [model.learn(x, y) for x, y in zip(data["xs"], data["ys"])]
    out[name + "/learn_logits"] = np.stack([r["logits"] for r in results])
    out[name + "/learn_accuracy"] = np.stack([r["accuracy"] for r in results])
    out[name + "/steps"] = model.steps
    out[name + "/predict"] = model.predict(data["x_eval"])["logits"]
    out[name + "/serving_default"] = model.signatures["serving_default"](x=data["x_eval"])["logits"]
    for l, w in enumerate(model.forward_synapses):
        out[f"{name}/forward_{l}"] = w
    meta = json.loads(model.metadata()["json"].numpy().decode())
    with open(model.genome_asset.asset_path.numpy().decode()) as f:
        asset = json.load(f)
    assert asset == meta, "metadata signature and assets/genome.json differ"
    out[name + "/metadata"] = np.array(json.dumps(meta))
assert not any(m.startswith("blur_tf") for m in sys.modules)
np.savez(sys.argv[2], **{k: np.asarray(v) for k, v in out.items()})
"""


def _settings(argv):
    fv = flags.FlagValues()
    launcher.define_flags(fv)
    fv(["export"] + argv)
    return launcher.settings_from_flags(fv)


def _toy_batches():
    task = get_task("toy.xor")
    xs, ys = task.train_batches(tf.constant([0, 0]), STEPS, 64)
    x_eval, _ = task.sample_eval(tf.constant([1, 0]), 256)
    return {"xs": xs.numpy(), "ys": ys.numpy(), "x_eval": x_eval.numpy()}


def _backprop_batches():
    xs, ys = _data(STEPS, 32, BACKPROP_SIZES, seed=1)
    return {"xs": xs, "ys": ys, "x_eval": _data(1, 64, BACKPROP_SIZES, seed=2)[0][0]}


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """Exports four folders, runs PLAIN_TF on them once; (outputs, data, objects for oracles)."""
    root = tmp_path_factory.mktemp("export")
    data = {"toy2d": _toy_batches(), "backprop": _backprop_batches()}
    toy_path = launcher.run(
        _settings([f"--genome={TOY2D}", "--task=toy.xor", f"--out_dir={root / 'toy2d'}"]),
        log=lambda m: None,
    )
    backprop_path = launcher.run(
        _settings(
            [
                "--genome=backprop",
                f"--backprop_lr={BACKPROP_LR}",
                "--layer_sizes=10",
                "--input_size=6",
                "--num_classes=3",
                "--batch_size=32",
                "--seed=3",
                f"--out_dir={root / 'backprop'}",
            ]
        ),
        log=lambda m: None,
    )
    genome, metadata = Genome.load_with_metadata(TOY2D)
    model = BlurModel([2, 16, 2], genome, Rule.from_dict(metadata["rule"]), seed=1)
    toy = data["toy2d"]
    model.fit(
        toy["xs"][1:6].reshape(-1, 2),
        toy["ys"][1:6].reshape(-1),
        batch_size=64,
        shuffle=False,
        verbose=0,
    )
    model.export(root / "serving")
    export_learner(model, str(root / "from_model"))
    jobs = {
        "toy2d": {"path": toy_path, "kind": "learner", "reset_seed": RESET_SEED},
        "backprop": {"path": backprop_path, "kind": "learner", "reset_seed": RESET_SEED},
        "serving": {"path": str(root / "serving"), "kind": "serving"},
        "from_model": {"path": str(root / "from_model"), "kind": "continue"},
    }
    for name, job in jobs.items():
        job["data"] = str(root / f"{name}.npz")
        np.savez(job["data"], **data["backprop" if name == "backprop" else "toy2d"])
    with open(root / "jobs.json", "w") as f:
        json.dump(jobs, f)
    proc = subprocess.run(
        [sys.executable, "-I", "-c", PLAIN_TF, str(root / "jobs.json"), str(root / "out.npz")],
        cwd=str(root),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return dict(np.load(root / "out.npz")), data, model


def test_toy2d_learner_in_plain_tensorflow_matches_blur_network(exported):
    out, data, _ = exported
    genome, metadata = Genome.load_with_metadata(TOY2D)
    network = BlurNetwork([2, 32, 2], Rule.from_dict(metadata["rule"]))
    d = data["toy2d"]
    synapses = network.init_synapses(1, RESET_SEED)
    for t in range(STEPS):  # learn's logits are those of the forward pass before the update
        logits = network.predict(genome, synapses, d["xs"][t])[0]
        np.testing.assert_allclose(out["toy2d/learn_logits"][t], logits, rtol=1e-5, atol=1e-5)
        assert out["toy2d/learn_accuracy"][t] == pytest.approx(
            np.mean(np.argmax(logits, -1) == d["ys"][t])
        )
        synapses = network.step(genome, synapses, d["xs"][t], d["ys"][t])
    unrolled = network.unroll(
        genome, network.init_synapses(1, RESET_SEED), (d["xs"], d["ys"]), STEPS
    )
    final = network.predict(genome, unrolled, d["x_eval"])[0]
    np.testing.assert_allclose(out["toy2d/predict"], final, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(out["toy2d/serving_default"], out["toy2d/predict"])
    assert int(out["toy2d/reset_steps"]) == 0 and int(out["toy2d/steps"]) == STEPS
    # Not vacuous: the learner learned (xor labels of x_eval: x0·x1 > 0).
    labels = (d["x_eval"][:, 0] * d["x_eval"][:, 1] > 0).astype(int)
    assert np.mean(np.argmax(out["toy2d/predict"], -1) == labels) > 0.85
    assert np.max(np.abs(out["toy2d/predict"] - out["toy2d/predict_before"])) > 0.1
    assert sorted(out["toy2d/signatures"]) == [
        "learn",
        "metadata",
        "predict",
        "reset",
        "serving_default",
    ]


def test_toy2d_learner_carries_genome_rule_and_sizes(exported):
    out, _, _ = exported
    document = json.loads(str(out["toy2d/metadata"]))
    genome, metadata = Genome.load_with_metadata(TOY2D)
    assert Genome.from_dict(document).to_dict() == genome.to_dict()
    assert Rule.from_dict(document["metadata"]["rule"]) == Rule.from_dict(metadata["rule"])
    assert document["metadata"]["layer_sizes"] == [2, 32, 2]
    assert document["metadata"]["validation_accuracy"] == metadata["validation_accuracy"]
    assert document["metadata"]["export"]["batch_size"] is None


def test_backprop_learner_in_plain_tensorflow_is_keras_sgd(exported):
    out, data, _ = exported
    d = data["backprop"]
    network = BlurNetwork(BACKPROP_SIZES, Rule.backprop("tanh"))
    weights = sgd_reference(
        BACKPROP_SIZES, network.init_synapses(1, RESET_SEED), d["xs"], d["ys"], BACKPROP_LR
    )
    hidden = np.tanh(d["x_eval"] @ weights[0][0] + weights[0][1])
    np.testing.assert_allclose(
        out["backprop/predict"], hidden @ weights[1][0] + weights[1][1], rtol=1e-4, atol=1e-5
    )
    for l, (kernel, bias) in enumerate(weights):
        w = out[f"backprop/forward_{l}"]
        np.testing.assert_allclose(w[:-1, :, 0], kernel, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(w[-1, :, 0], bias, rtol=1e-4, atol=1e-5)
    assert out["backprop/learn_logits"].shape == (STEPS, 32, 3)  # static batch size
    assert np.max(np.abs(out["backprop/predict"] - out["backprop/predict_before"])) > 0.1


def test_blur_model_exports_serve_and_learner(exported):
    out, data, model = exported
    d = data["toy2d"]
    expected = model.predict(d["x_eval"], batch_size=len(d["x_eval"]), verbose=0)
    np.testing.assert_allclose(out["serving/serve"], expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(out["serving/serving_default"], expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(out["from_model/predict_before"], expected, rtol=1e-5, atol=1e-5)
    # The learner exported from the trained model continues exactly as the model would.
    before = model.predict(d["xs"][0], batch_size=64, verbose=0)
    np.testing.assert_allclose(out["from_model/learn"], before, rtol=1e-5, atol=1e-5)
    model.train_on_batch(d["xs"][0], d["ys"][0])
    after = model.predict(d["x_eval"], batch_size=256, verbose=0)
    np.testing.assert_allclose(out["from_model/predict"], after, rtol=1e-5, atol=1e-5)
    assert np.max(np.abs(after - expected)) > 1e-3


# ----------------------------------------------------------------------------- refusals
@pytest.fixture
def small():
    return Genome.random(2, seed=0), [3, 4, 2]


def test_refuses_non_empty_folder_then_overwrites_atomically(tmp_path, small):
    genome, sizes = small
    out = tmp_path / "learner"
    out.mkdir()
    (out / "old.txt").write_text("keep me")
    with pytest.raises(ValueError, match="exists and is not empty"):
        export_learner(genome, str(out), layer_sizes=sizes)
    assert (out / "old.txt").read_text() == "keep me"
    export_learner(genome, str(out), layer_sizes=sizes, overwrite=True)
    assert sorted(os.listdir(out)) == ["assets", "fingerprint.pb", "saved_model.pb", "variables"]
    assert os.listdir(tmp_path) == ["learner"]  # no temporary or moved-aside siblings
    loaded = tf.saved_model.load(str(out))
    x = np.ones((8, 3), np.float32)
    with pytest.raises(tf.errors.InvalidArgumentError, match="labels out of range"):
        loaded.learn(x, np.full(8, 2, np.int32))
    with pytest.raises(tf.errors.InvalidArgumentError, match="non-finite"):
        loaded.learn(np.full((8, 3), np.nan, np.float32), np.zeros(8, np.int32))
    with pytest.raises(tf.errors.InvalidArgumentError, match="different batch sizes"):
        loaded.learn(x, np.zeros(7, np.int32))
    assert int(loaded.steps) == 0  # refused calls changed nothing
    np.testing.assert_array_equal(
        loaded.forward_synapses[0], BlurNetwork(sizes, Rule()).init_synapses(1, 0)[0][0][0]
    )


def test_failed_export_leaves_nothing(tmp_path, small, monkeypatch):
    def broken_save(obj, folder, signatures=None):
        open(os.path.join(folder, "saved_model.pb"), "w").write("half")
        raise OSError("disk full")

    monkeypatch.setattr(tf.saved_model, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        export_learner(small[0], str(tmp_path / "learner"), layer_sizes=small[1])
    assert os.listdir(tmp_path) == []


def _nan_genome():
    fields = Genome.random(2, seed=0).numpy()._asdict()
    fields["synapse_keep"] = np.array([np.nan], np.float32)
    return Genome(**fields)


@pytest.mark.parametrize(
    "kwargs,message",
    [
        (dict(rule=Rule(num_states=3)), "K=2 states but the rule has num_states=3"),
        (dict(genome=_nan_genome()), "'synapse_keep' has non-finite values"),
        (dict(genome=Genome.random(2, seed=0, population=2)), "population 1"),
        (dict(batch_size=0), "batch_size must be a positive int"),
        (dict(layer_sizes=None), "layer_sizes is required"),
        (dict(layer_sizes=[3]), "layer_sizes must be >= 2"),
        (dict(path="file.txt/learner"), "is not a writable folder"),
        (dict(path="file.txt"), "exists and is not a folder"),
    ],
)
def test_refuses_bad_input_before_any_work(tmp_path, kwargs, message):
    (tmp_path / "file.txt").write_text("")
    genome = kwargs.pop("genome", Genome.random(2, seed=0))
    path = str(tmp_path / kwargs.pop("path", "learner"))
    with pytest.raises(ValueError, match=message):
        export_learner(genome, path, **{"layer_sizes": [3, 2], **kwargs})
    assert sorted(os.listdir(tmp_path)) == ["file.txt"]


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write into read-only folders")
def test_refuses_read_only_folder(tmp_path, small):
    (tmp_path / "ro").mkdir(mode=0o500)
    with pytest.raises(ValueError, match="is not a writable folder"):
        export_learner(small[0], str(tmp_path / "ro" / "learner"), layer_sizes=small[1])


def test_refuses_model_with_sizes_and_blur_model_export_refuses_non_empty(tmp_path, small):
    model = BlurModel(small[1], small[0], seed=0)
    with pytest.raises(ValueError, match="come from the model"):
        export_learner(model, str(tmp_path / "a"), layer_sizes=small[1])
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "x").write_text("")
    with pytest.raises(ValueError, match="exists and is not empty"):
        model.export(tmp_path / "b")
    assert os.listdir(tmp_path / "b") == ["x"]


# ----------------------------------------------------------------------------- launcher
@pytest.mark.parametrize(
    "argv,message",
    [
        (["--genome=backprop", "--input_size=2", "--num_classes=2"], "--out_dir is required"),
        (["--input_size=2", "--num_classes=2", "--out_dir=OUT"], "--genome is required"),
        (
            ["--genome=backprop", "--layer_sizes=4", "--input_size=2", "--out_dir=OUT"],
            "--task, or both --input_size and --num_classes",
        ),
        (
            [
                "--genome=backprop",
                "--layer_sizes=4",
                "--task=toy.xor",
                "--input_size=2",
                "--out_dir=OUT",
            ],
            "either --task or --input_size",
        ),
        (["--genome=backprop", "--task=toy.xor", "--out_dir=OUT"], "--layer_sizes is required"),
        (
            [f"--genome={TOY2D}", "--layer_sizes=4,x", "--task=toy.xor", "--out_dir=OUT"],
            "comma-separated integers",
        ),
        (
            [f"--genome={TOY2D}", "--rule=num_states=3", "--task=toy.xor", "--out_dir=OUT"],
            "num_states=3",
        ),
        (
            ["--genome=/nonexistent/genome.json", "--task=toy.xor", "--out_dir=OUT"],
            "does not exist",
        ),
        (
            [f"--genome={TOY2D}", "--task=toy.xor", "--batch_size=0", "--out_dir=OUT"],
            "--batch_size must be >= 1",
        ),
        ([f"--genome={TOY2D}", "--task=toy.xor", "--out_dir=FULL"], "exists and is not empty"),
    ],
)
def test_launcher_rejects_bad_flags(tmp_path, argv, message):
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("")
    argv = [
        a.replace("=OUT", f"={tmp_path / 'out'}").replace("=FULL", f"={tmp_path / 'full'}")
        for a in argv
    ]
    with pytest.raises(ValueError, match=message):
        _settings(argv)
    assert not (tmp_path / "out").exists()


def test_launcher_times_learn_against_the_framework(tmp_path, capsys):
    settings = _settings(
        [
            "--genome=backprop",
            "--layer_sizes=none",
            "--input_size=3",
            "--num_classes=2",
            "--batch_size=8",
            "--time_batches=2",
            f"--out_dir={tmp_path / 'out'}",
        ]
    )
    launcher.run(settings, log=lambda m: None)
    printed = capsys.readouterr().out
    for row in ("SavedModel learn", "BlurNetwork.step", "BlurModel.train_on_batch"):
        assert float(printed.split(row)[1].split()[0]) > 0

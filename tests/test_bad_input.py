"""The bad-input catalogue: what a hostile new user tries, and what each attempt gets.

Launcher cases go through the launcher's own flags and `main` (in-process): each must end with
one line `PROGRAM: error: …` on stderr (no flag help), the documented exit status, and no work
done. Library cases (BlurModel, tasks, meta-training) raise a one-line error naming the problem
or do the documented thing.
"""

import json
import os
import socket
import stat
import time
import warnings

import numpy as np
import pytest
import tensorflow as tf
from absl import flags

from blur_tf import BlurModel, Genome, Rule
from blur_tf.files import atomic_write
from blur_tf.meta import PopulationAdam
from blur_tf.meta.checkpoint import CheckpointState
from blur_tf.meta.trainer import MetaTrainingDiverged
from blur_tf.tasks import get_task
from blur_tf.tasks import images as images_lib
from launchers import benchmark, cma_train, evaluate, experiment, export, meta_train
from launchers import main as main_job
from tests.test_meta import _trainer
from tests.test_model import xor_data

# A small meta-training run (toy tasks, seconds): its flags.
META_ARGS = [
    "--tasks=toy.and",
    "--layer_sizes=8",
    "--meta_batch=2",
    "--batch_size=16",
    "--unroll=constant:3",
    "--log_every=0",
    "--validate_every=0",
    "--checkpoint_every=0",
    "--print_table=false",
    "--deterministic=false",
]


def _main(launcher, argv):
    """Runs `launcher.main` on flags `argv` in this process; returns its exit status."""
    name = launcher.__name__.rsplit(".", 1)[-1]
    if launcher in (meta_train, cma_train, main_job):  # their flags live on the global FLAGS
        fv = flags.FLAGS
        call = lambda: launcher.main([name])
    else:
        fv = flags.FlagValues()
        launcher.define_flags(fv)
        call = lambda: launcher.main([name], fv)
    fv([name, *argv])
    try:
        with pytest.raises(SystemExit) as exit_info:
            call()
    finally:
        fv.unparse_flags()
    return exit_info.value.code


@pytest.fixture
def folders(tmp_path):
    """{tmp}: a fresh folder; {file}: a regular file (so {file}/x cannot be a folder); {none}: an
    empty tfds manual folder; {data}: an empty tfds data folder."""
    (tmp_path / "file").write_text("not a folder\n")
    (tmp_path / "none").mkdir()
    return {
        "tmp": str(tmp_path),
        "file": str(tmp_path / "file"),
        "none": str(tmp_path / "none"),
        "data": str(tmp_path / "data"),
    }


# (launcher, flags, exit status, message). {…} are the `folders` above.
LAUNCHER_CASES = [
    # benchmark: every flag checked before any timing.
    (benchmark, ["--layer_sizes=0"], 2, "--layer_sizes: a network is >= 2 positive integer"),
    (benchmark, ["--layer_sizes=-3"], 2, "got '-3'"),
    (benchmark, ["--layer_sizes=abc"], 2, "got 'abc'"),
    (benchmark, ["--layer_sizes=100,64,10;784"], 2, "got '784'"),
    (benchmark, ["--num_states=1"], 2, "--num_states must be integers >= 2"),
    (benchmark, ["--num_states=two"], 2, "--num_states must be integers"),
    (benchmark, ["--batch_size=0"], 2, "--batch_size must be >= 1"),
    (benchmark, ["--steps=0"], 2, "--steps must be >= 1"),
    (benchmark, ["--repeats=0"], 2, "--repeats must be >= 1"),
    (benchmark, ["--xla=maybe"], 2, "--xla takes true and/or false, got ['maybe']"),
    # evaluate: one line, no flag help; an unwritable --out_dir before anything else.
    (evaluate, ["--steps=5,5", "--out_dir={tmp}/out"], 2, "horizons must be distinct"),
    (
        evaluate,
        ["--out_dir={file}/x", "--tasks=mnist", "--data_dir={data}"],
        2,
        "{file} is not a writable folder",
    ),
    # a spec that does not fit the dataset: checked before any data is prepared.
    # (the same status in every launcher: 2 when the command cannot run as given)
    (
        evaluate,
        ["--tasks=mnist:crop=99", "--data_dir={data}", "--out_dir={tmp}/out"],
        2,
        "crop=99 is larger than the 28x28 mnist images",
    ),
    # export: the same one line (not absl's UsageError under the whole flag help).
    (
        export,
        ["--genome=backprop", "--task=toy.xor", "--out_dir={tmp}/out"],
        2,
        "--layer_sizes is required",
    ),
    # meta_train: --out_dir checked before the tasks are built (mnist is not available here).
    # (--deterministic=false: op determinism would stay enabled in this process.)
    (
        meta_train,
        [
            "--out_dir={file}/x",
            "--tasks=mnist",
            "--tfds_manual_dir={none}",
            "--data_dir={data}",
            "--deterministic=false",
        ],
        2,
        "--out_dir: cannot write {file}/x",
    ),
    (
        meta_train,
        [
            "--out_dir={tmp}/out",
            "--tasks=mnist:crop=99",
            "--data_dir={data}",
            "--deterministic=false",
        ],
        2,
        "crop=99 is larger than the 28x28 mnist images",
    ),
    # every launcher with an --out_dir refuses an unwritable one before any work.
    (
        cma_train,
        [
            "--out_dir={file}/x",
            "--tasks=mnist",
            "--tfds_manual_dir={none}",
            "--data_dir={data}",
            "--deterministic=false",
            "--population=4",
        ],
        2,
        "--out_dir: cannot write {file}/x",
    ),
    (
        export,
        ["--genome=backprop", "--task=toy.xor", "--layer_sizes=8", "--out_dir={file}/x"],
        2,
        "{file} is not a writable folder",
    ),
    # a batch beyond memory: refused before any work (not a std::bad_alloc abort later)
    (
        meta_train,
        [
            "--out_dir={tmp}/out",
            "--tasks=toy.and",
            "--batch_size=999999999",
            "--deterministic=false",
        ],
        2,
        "--batch_size=999999999: one inner step needs at least",
    ),
    (
        cma_train,
        [
            "--out_dir={tmp}/out",
            "--tasks=toy.and",
            "--fields=saturation",
            "--population=4",
            "--deterministic=false",
        ],
        2,
        "--fields: the rule does not read saturation (every candidate would get the same fitness)",
    ),
    (
        experiment,
        ["--spec={tmp}/none.cfg", "--out_dir={tmp}/out"],
        2,
        "--spec: no such file {tmp}/none.cfg",
    ),
    (experiment, ["--spec={file}", "--out_dir={tmp}/out"], 2, "not an INI spec"),
]


@pytest.mark.parametrize(
    "launcher, argv, status, message",
    LAUNCHER_CASES,
    ids=[f"{c[0].__name__.split('.')[-1]}{c[1]}" for c in LAUNCHER_CASES],
)
def test_launcher_rejects_bad_input_in_one_line(launcher, argv, status, message, folders, capsys):
    start = time.monotonic()
    code = _main(launcher, [a.format(**folders) for a in argv])
    err = capsys.readouterr().err.strip()
    name = launcher.__name__.rsplit(".", 1)[-1]
    assert code == status, err
    assert len(err.splitlines()) == 1, err  # the message alone: no flag help, no traceback
    assert err.startswith(f"{name}: error: ") and message.format(**folders) in err, err
    assert not os.path.exists(os.path.join(folders["tmp"], "out"))  # nothing written
    assert not os.path.exists(os.path.join(folders["data"], "mnist"))  # nothing prepared
    assert time.monotonic() - start < 30


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--batch_size=1"], "flag --batch_size=1: 1 is not an integer in the range [2, "),
        (
            ["--batch_size=99999999999"],
            "99999999999 is not an integer in the range [2, 2147483647]",
        ),
        (["--no_such_flag=3"], "Unknown command line flag 'no_such_flag'"),
    ],
)
def test_flags_absl_refuses_follow_the_launchers_convention(argv, message, capsys):
    from launchers import flag_parser  # pylint: disable=g-import-not-at-top

    try:
        with pytest.raises(SystemExit) as info:
            flag_parser("meta_train")(["meta_train", *argv])
    finally:
        flags.FLAGS.unparse_flags()
    err = capsys.readouterr().err.strip()
    assert info.value.code == 2 and len(err.splitlines()) == 1, err  # absl: 2 lines, status 1
    assert err.startswith("meta_train: error: ") and message in err, err


def test_benchmark_takes_its_documented_layer_format(capsys):
    fv = flags.FlagValues()
    benchmark.define_flags(fv)
    fv(["benchmark", "--layer_sizes=100,64,10"])
    assert benchmark.settings_from_flags(fv).networks == ((100, 64, 10),)
    fv.unparse_flags()
    fv(["benchmark", "--layer_sizes=100-64-10;784,256,10", "--layer_sizes=4,3,2", "--xla=False"])
    settings = benchmark.settings_from_flags(fv)
    assert settings.networks == ((100, 64, 10), (784, 256, 10), (4, 3, 2))
    assert settings.xla == (False,)
    fv.unparse_flags()
    fv(["benchmark"])
    assert benchmark.settings_from_flags(fv).networks == ((100, 64, 10), (784, 256, 10))
    fv.unparse_flags()
    fv(
        [
            "benchmark",
            "--layer_sizes=4,3,2",
            "--num_states=2",
            "--xla=false",
            "--steps=2",
            "--repeats=1",
            "--batch_size=4",
        ]
    )
    benchmark.main(["benchmark"], fv)
    assert "| 4-3-2 | 2 | off |" in capsys.readouterr().out


# ----------------------------------------------------------------------------- Python API
X, Y = xor_data(64, seed=0)
X_NAN = np.where(np.arange(64)[:, None] == 3, np.nan, X).astype(np.float32)


def _batches(x, y=None):
    return tf.data.Dataset.from_tensor_slices(x if y is None else (x, y)).batch(32)


# (case, call on a fresh BlurModel([2, 8, 2]), message of the one-line ValueError)
API_CASES = [
    (
        "fit, tf.data labels out of range",
        lambda m: m.fit(_batches(X, Y + 5), verbose=0),
        "labels out of range: got values from 5 to 6, the network has 2 classes (0 to 1)",
    ),
    ("fit, tf.data NaN inputs", lambda m: m.fit(_batches(X_NAN, Y), verbose=0), "non-finite"),
    (
        "evaluate, tf.data negative labels",
        lambda m: m.evaluate(_batches(X, Y - 1), verbose=0),
        "labels out of range: got values from -1 to 0",
    ),
    ("predict NaN inputs", lambda m: m.predict(X_NAN, verbose=0), "non-finite"),
    ("predict, tf.data NaN inputs", lambda m: m.predict(_batches(X_NAN), verbose=0), "non-finite"),
    ("predict wrong width", lambda m: m.predict(X[:, :1], verbose=0), "input width 2"),
    (
        "predict, tf.data wrong width",
        lambda m: m.predict(_batches(X[:, :1]), verbose=0),
        "input width 2",
    ),
    ("fit wrong label shape", lambda m: m.fit(X, Y[:, None], verbose=0), "labels must have"),
    # the same label check on every path (arrays refuse 0.6 before any work)
    (
        "fit, tf.data float labels",
        lambda m: m.fit(_batches(X, Y + 0.6), verbose=0),
        "labels must be integer class ids",
    ),
    (
        "fit float labels",
        lambda m: m.fit(X, Y + 0.6, verbose=0),
        "labels must be integer class ids",
    ),
    # BLUR has no loss to weight, nothing to optimize
    (
        "fit sample_weight",
        lambda m: m.fit(X, Y, sample_weight=np.ones(64), verbose=0),
        "sample_weight and class_weight cannot apply: BLUR has no loss to weight",
    ),
    (
        "fit class_weight",
        lambda m: m.fit(X, Y, class_weight={0: 1.0, 1: 2.0}, verbose=0),
        "BLUR has no loss to weight (each batch is one inner step of the rule)",
    ),
    (
        "fit, tf.data with weights",
        lambda m: m.fit(
            tf.data.Dataset.from_tensor_slices((X, Y, np.ones(64, np.float32))).batch(32), verbose=0
        ),
        "BLUR has no loss to weight",
    ),
    (
        "evaluate sample_weight",
        lambda m: m.evaluate(X, Y, sample_weight=np.ones(64), verbose=0),
        "BLUR has no loss to weight",
    ),
    (
        "compile optimizer and loss",
        lambda m: m.compile(optimizer="adam", loss="mse"),
        "BlurModel.compile: optimizer, loss cannot apply: a BlurModel learns by its rule",
    ),
    # datasets of the wrong structure
    (
        "fit, tf.data of x only",
        lambda m: m.fit(_batches(X), verbose=0),
        "BlurModel.fit needs (x, y) batches of inputs and class ids; got inputs only",
    ),
    (
        "fit, tf.data of dicts",
        lambda m: m.fit(
            tf.data.Dataset.from_tensor_slices(({"pixels": X}, Y)).batch(32), verbose=0
        ),
        "BlurModel inputs must be one tensor [N, 2], got a dict with keys ['pixels']",
    ),
    ("fit, tf.data (y, x)", lambda m: m.fit(_batches(Y, X), verbose=0), "are x and y swapped?"),
    (
        "predict strings",
        lambda m: m.predict(np.array([["a", "b"]] * 4), verbose=0),
        "BlurModel inputs must be numbers",
    ),
]


@pytest.mark.parametrize("call, message", [c[1:] for c in API_CASES], ids=[c[0] for c in API_CASES])
def test_model_rejects_bad_input_in_one_line(call, message):
    model = BlurModel([2, 8, 2], Genome.random(2, seed=0), Rule(), seed=0)
    before = [w.numpy() for w in model.weights]
    with pytest.raises(ValueError) as info:
        call(model)
    assert message in str(info.value) and "\n" not in str(info.value), str(info.value)
    for b, w in zip(before, model.weights):
        np.testing.assert_array_equal(w.numpy(), b)  # no update applied


def test_model_takes_integer_inputs_as_their_float_values():
    pixels = (np.abs(X) * 100).astype(np.uint8)
    as_float = pixels.astype(np.float32)
    models = [BlurModel([2, 8, 2], Genome.random(2, seed=0), Rule(), seed=0) for _ in range(2)]
    models[0].fit(pixels, Y, batch_size=32, shuffle=False, verbose=0)
    models[1].fit(as_float, Y, batch_size=32, shuffle=False, verbose=0)
    for a, b in zip(*[m.weights for m in models]):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    np.testing.assert_array_equal(
        models[0].predict(pixels.astype(np.int32), verbose=0),
        models[1].predict(as_float, verbose=0),
    )
    np.testing.assert_array_equal(models[0](pixels).numpy(), models[1](as_float).numpy())


def test_exported_learner_refuses_a_batch_of_one(tmp_path):
    from blur_tf.export import ONE_EXAMPLE_MESSAGE, export_learner  # pylint: disable=g-import-not-at-top

    export_learner(
        Genome.random(2, seed=0), str(tmp_path / "l"), layer_sizes=[2, 8, 2], rule=Rule()
    )
    learner = tf.saved_model.load(str(tmp_path / "l"))
    before = [v.numpy() for v in learner.forward_synapses]
    for call in (lambda: learner.predict(X[:1]), lambda: learner.learn(X[:1], Y[:1])):
        with pytest.raises(tf.errors.InvalidArgumentError, match="a batch of 1 example"):
            call()
    assert "same logits for every input" in ONE_EXAMPLE_MESSAGE
    for b, v in zip(before, learner.forward_synapses):
        np.testing.assert_array_equal(v.numpy(), b)
    assert learner.predict(X[:2])["logits"].shape == (2, 2)  # two examples differ again
    export_learner(
        Genome.backprop(0.1), str(tmp_path / "b"), layer_sizes=[2, 8, 2], rule=Rule.backprop()
    )  # no normalization: one example is fine
    plain = tf.saved_model.load(str(tmp_path / "b"))
    assert plain.predict(X[:1])["logits"].shape == (1, 2)


def test_model_predict_empty_and_small_batches():
    model = BlurModel([2, 8, 2], Genome.random(2, seed=0), Rule(), seed=0)
    empty = model.predict(X[:0], verbose=0)
    assert empty.shape == (0, 2) and empty.dtype == np.float32
    with pytest.warns(UserWarning, match="a batch of 1 gives the same output for every input"):
        rows = model.predict(X[:4], batch_size=1, verbose=0)
    assert np.allclose(rows, rows[0])  # what the warning is about
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model.predict(X, batch_size=64, verbose=0)  # full batches: no warning
        BlurModel([2, 8, 2], Genome.backprop(0.1), Rule.backprop()).predict(X[:4], verbose=0)


# ----------------------------------------------------------------------------- meta-training
def test_population_adam_never_applies_a_non_finite_or_absurd_genome():
    params = [tf.Variable([[1.0, 1.0], [99.99, 2.0], [3.0, 3.0]])]
    adam = PopulationAdam(params, learning_rate=0.1, clip_norm=None)
    applied, _ = adam.apply(
        [tf.constant([[1.0, 1.0], [-1.0, 1.0], [np.inf, 1.0]])], tf.constant([1.0, 1.0, 1.0])
    )
    np.testing.assert_array_equal(applied.numpy(), [True, False, False])  # 99.99 -> 100.09
    np.testing.assert_array_equal(params[0].numpy()[1:], np.float32([[99.99, 2.0], [3.0, 3.0]]))
    np.testing.assert_array_equal(adam.steps.numpy(), [1.0, 0.0, 0.0])
    np.testing.assert_array_equal(adam.first_moments[0].numpy()[1:], np.zeros((2, 2)))
    blown = PopulationAdam([tf.Variable([[1.0, 1.0]])], learning_rate=1e6)
    applied, _ = blown.apply([tf.constant([[0.1, -0.1]])], tf.constant([1.0]))
    assert not applied.numpy()[0] and blown.params[0].numpy().tolist() == [[1.0, 1.0]]
    with pytest.raises(ValueError, match="max_abs_value"):
        PopulationAdam(params, max_abs_value=0.0)


def test_skipped_meta_steps_are_counted_apart_and_stop_the_run():
    trainer = _trainer(
        population=2,
        validation=False,
        log_every=1,
        validate_every=0,
        checkpoint_every=0,
        max_consecutive_skips=2,
    )
    nan_row = lambda v: tf.tensor_scatter_nd_update(v, [[1]], tf.fill([1, *v.shape[1:]], np.nan))
    trainer.genome.norm_gain.assign(nan_row(trainer.genome.norm_gain))
    trainer.step()  # genome 1 skipped, genome 0 applied: not a skipped meta-step
    assert (int(trainer.skipped.numpy()), int(trainer.skipped_meta_steps.numpy())) == (1, 0)
    trainer.genome.norm_gain.assign(tf.fill(trainer.genome.norm_gain.shape, np.nan))
    result = trainer.train(2, resume=False)  # one skipped meta-step: below the limit
    assert (result.skipped, result.skipped_meta_steps) == (3, 1)
    with pytest.raises(
        MetaTrainingDiverged, match="no genome update was applied in the last 2 meta-steps"
    ):
        trainer.train(30, resume=False)
    assert trainer.step_count == 3
    assert (int(trainer.skipped.numpy()), int(trainer.skipped_meta_steps.numpy())) == (5, 2)


def test_checkpoints_without_the_new_counters_still_restore(tmp_path):
    old = CheckpointState(str(tmp_path), skipped=tf.Variable(7, dtype=tf.int64))
    old.save(1)
    skipped, run = tf.Variable(0, dtype=tf.int64), tf.Variable(5, dtype=tf.int64)
    new = CheckpointState(
        str(tmp_path), optional=("consecutive_skips",), skipped=skipped, consecutive_skips=run
    )
    assert new.restore_latest()
    assert int(skipped.numpy()) == 7 and int(run.numpy()) == 5


def test_blown_up_meta_training_exits_nonzero_and_writes_no_genome(tmp_path, capsys):
    # Every Adam step of lr 1e6 would take the genome to about ±1e6: none is applied, and a
    # run (shorter than --max_consecutive_skips) that never applied an update fails at its end.
    out = tmp_path / "run"
    code = _main(
        meta_train, [f"--out_dir={out}", *META_ARGS, "--meta_steps=2", "--learning_rate=1e6"]
    )
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert code == 1
    assert last.startswith(
        "meta_train: error: meta-training diverged: no genome update was "
        "applied in the last 2 meta-steps"
    ), last
    assert not (out / "genome.json").exists() and not (out / "summary.json").exists()


def test_meta_train_summary_counts_skips_and_a_rerun_keeps_its_timing(tmp_path):
    out = tmp_path / "run"
    argv = [f"--out_dir={out}", *META_ARGS, "--meta_steps=3"]
    previous = os.umask(0o022)
    try:
        flags.FLAGS(["meta_train", *argv])
        first = meta_train.run(meta_train.flag_values())
        second = meta_train.run(meta_train.flag_values())  # finds the run finished
    finally:
        flags.FLAGS.unparse_flags()
        os.umask(previous)
    assert first["skipped_meta_steps"] == 0 and first["skipped_genome_updates"] == 0
    assert "skipped_steps" not in first
    assert second["meta_steps_this_call"] == 3 and second["meta_steps_per_second"] > 0
    assert second["meta_steps_per_second"] == first["meta_steps_per_second"]
    assert (
        json.loads((out / "summary.json").read_text())["meta_steps_per_second"]
        == first["meta_steps_per_second"]
    )
    for name in ("genome.json", "summary.json", "flags.json"):
        assert stat.S_IMODE(os.stat(out / name).st_mode) == 0o644, name


def test_atomic_writes_follow_the_umask(tmp_path):
    previous = os.umask(0o027)
    try:
        atomic_write(str(tmp_path / "a.txt"), lambda f: f.write("x"))
    finally:
        os.umask(previous)
    assert stat.S_IMODE(os.stat(tmp_path / "a.txt").st_mode) == 0o640


# ----------------------------------------------------------------------------- datasets
def test_image_spec_is_checked_before_any_data_is_prepared(tmp_path):
    start = time.monotonic()
    with pytest.raises(ValueError, match=r"crop=99 is larger than the 28x28 mnist images"):
        get_task("mnist:crop=99", data_dir=str(tmp_path), tfds_manual_dir=str(tmp_path))
    assert time.monotonic() - start < 10 and not os.listdir(tmp_path)


def _hang(*args, **kwargs):
    time.sleep(5)
    raise OSError("gave up")


def _refuse(*args, **kwargs):
    raise ConnectionRefusedError(111, "Connection refused")


@pytest.mark.parametrize(
    "connect, reason", [(_hang, "no answer within 0.5 s"), (_refuse, "Connection refused")]
)
def test_download_without_network_fails_fast_and_says_why(
    connect, reason, folders, capsys, monkeypatch
):
    monkeypatch.setattr(socket, "create_connection", connect)
    monkeypatch.setattr(images_lib, "DOWNLOAD_PROBE_SECONDS", 0.5)
    for name in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY"):
        monkeypatch.delenv(name, raising=False)
    start = time.monotonic()
    code = _main(
        evaluate,
        [
            "--tasks=mnist",
            "--download=true",
            f"--data_dir={folders['data']}",
            f"--tfds_manual_dir={folders['none']}",
            f"--out_dir={folders['tmp']}/out",
        ],
    )
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert code == 2 and time.monotonic() - start < 20
    assert last.startswith(
        "evaluate: error: Dataset 'mnist': download=True but "
        "storage.googleapis.com:443 cannot be reached"
    ), last
    assert reason in last


# ----------------------------------------------------------------------------- one folder, one run
def _hold_lock_and_die(path, conn):
    """Child process: takes `path`'s lock, reports, then dies by SIGKILL (no cleanup)."""
    from blur_tf.experiment import RunDirectory  # pylint: disable=g-import-not-at-top

    with RunDirectory(path).lock():
        conn.send("locked")
        os.kill(os.getpid(), 9)


@pytest.mark.parametrize(
    "launcher, argv",
    [
        (meta_train, META_ARGS + ["--meta_steps=1"]),
        (
            cma_train,
            [
                "--tasks=toy.and",
                "--layer_sizes=4",
                "--population=2",
                "--generations=1",
                "--log_every=0",
                "--validate_every=0",
                "--print_table=false",
                "--deterministic=false",
            ],
        ),
        (
            evaluate,
            [
                "--genome=backprop",
                "--tasks=toy.xor",
                "--layer_sizes=4",
                "--steps=1",
                "--seeds=1",
                "--baselines=none",
            ],
        ),
    ],
    ids=["meta_train", "cma_train", "evaluate"],
)
def test_a_second_run_on_one_out_dir_is_refused_at_once(launcher, argv, tmp_path, capsys):
    from blur_tf.experiment import RunDirectory  # pylint: disable=g-import-not-at-top

    out = tmp_path / "run"
    with RunDirectory(str(out)).lock():  # the first run, still going
        start = time.monotonic()
        code = _main(launcher, [f"--out_dir={out}", *argv])
        err = capsys.readouterr().err.strip()
        assert time.monotonic() - start < 15
        assert sorted(os.listdir(out)) == [".lock"]  # nothing of the second run written
    name = launcher.__name__.rsplit(".", 1)[-1]
    assert code == 2 and len(err.splitlines()) == 1, err
    assert err == (
        f"{name}: error: {out} is in use by another run (process {os.getpid()}); "
        "wait for it to end or use another --out_dir"
    ), err
    assert not out.exists()  # the first run wrote nothing either: no folder left behind


def test_the_out_dir_lock_is_released_by_a_crash(tmp_path):
    import multiprocessing  # pylint: disable=g-import-not-at-top

    from blur_tf.experiment import RunDirectory  # pylint: disable=g-import-not-at-top

    context = multiprocessing.get_context("fork")
    parent, child = context.Pipe()
    process = context.Process(target=_hold_lock_and_die, args=(str(tmp_path), child))
    process.start()
    assert parent.recv() == "locked"
    process.join(10)
    assert process.exitcode == -9  # SIGKILL: no handler ran
    with RunDirectory(str(tmp_path)).lock():  # not stale: no manual cleanup needed
        with pytest.raises(ValueError, match="is in use by another run"):
            with RunDirectory(str(tmp_path)).lock():
                pass


def test_a_holder_whose_folder_was_replaced_leaves_the_new_lock_alone(tmp_path):
    import shutil  # pylint: disable=g-import-not-at-top

    from blur_tf.experiment import RunDirectory  # pylint: disable=g-import-not-at-top

    out = tmp_path / "run"
    with RunDirectory(str(out)).lock():  # an old run, its folder deleted and reused meanwhile
        shutil.rmtree(out)
        second = RunDirectory(str(out)).lock()
        second.__enter__()
    assert (out / ".lock").exists()  # the old run's release did not remove the new lock
    with pytest.raises(ValueError, match="is in use by another run"):
        with RunDirectory(str(out)).lock():
            pass
    second.__exit__(None, None, None)  # and the new run still ends cleanly
    assert not out.exists()


# ----------------------------------------------------------------------------- checkpoints
def test_a_damaged_checkpoint_falls_back_to_the_newest_that_restores(tmp_path, caplog):
    from blur_tf.meta.checkpoint import CheckpointError  # pylint: disable=g-import-not-at-top

    value = tf.Variable(0.0)
    state = CheckpointState(str(tmp_path), value=value)
    for step in (1, 2, 3):
        value.assign(float(step))
        state.save(step)
    with open(tmp_path / "ckpt-3.data-00000-of-00001", "r+b") as f:
        f.truncate(2)  # damaged after the run
    with open(tmp_path / "ckpt-2.index", "r+b") as f:
        f.truncate(5)
    value.assign(-1.0)
    with caplog.at_level("WARNING"):
        assert CheckpointState(str(tmp_path), value=value).restore_latest().endswith("ckpt-1")
    assert float(value.numpy()) == 1.0
    skipped = [r.getMessage() for r in caplog.records if "skipping checkpoint" in r.getMessage()]
    assert [m.split(":")[0] for m in skipped] == [
        f"skipping checkpoint {tmp_path}/ckpt-3",
        f"skipping checkpoint {tmp_path}/ckpt-2",
    ]
    (tmp_path / "checkpoint").write_text("not an index {")  # TensorFlow would list none
    value.assign(-1.0)
    assert CheckpointState(str(tmp_path), value=value).restore_latest().endswith("ckpt-1")
    assert float(value.numpy()) == 1.0
    with open(tmp_path / "ckpt-1.index", "r+b") as f:
        f.truncate(5)
    with pytest.raises(CheckpointError) as info:
        CheckpointState(str(tmp_path), value=value).restore_latest()
    message = str(info.value)
    assert message.startswith(f"no checkpoint in {tmp_path} restores (ckpt-3: ")
    assert "delete that folder to start the run over" in message and "\n" not in message


def _small_file_limit(limit: int):
    """Context: writes beyond `limit` bytes per file fail (EFBIG), as on a full disk."""
    import contextlib  # pylint: disable=g-import-not-at-top
    import resource  # pylint: disable=g-import-not-at-top
    import signal  # pylint: disable=g-import-not-at-top

    @contextlib.contextmanager
    def limited():
        previous = resource.getrlimit(resource.RLIMIT_FSIZE)
        handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, previous[1]))
        try:
            yield
        finally:
            resource.setrlimit(resource.RLIMIT_FSIZE, previous)
            signal.signal(signal.SIGXFSZ, handler)

    return limited()


def test_a_failed_checkpoint_write_leaves_nothing_and_names_the_path(tmp_path):
    value = tf.Variable(tf.zeros([4096]))  # a 16 KiB data file
    state = CheckpointState(str(tmp_path), value=value)
    with _small_file_limit(4096), pytest.raises(OSError) as info:
        state.save(7)
    assert info.value.filename == f"{tmp_path}/ckpt-7" and "\n" not in str(info.value.strerror)
    assert os.listdir(tmp_path) == []  # no ckpt-7.*, no ckpt-7_temp
    atomic = tmp_path / "big.json"
    with _small_file_limit(4096), pytest.raises(OSError) as info:
        atomic_write(str(atomic), lambda f: f.write("x" * 10000))
    assert info.value.filename == str(atomic) and os.listdir(tmp_path) == []


def test_meta_train_on_a_full_disk_exits_1_in_one_line(tmp_path, capsys):
    out = tmp_path / "run"
    with _small_file_limit(4096):
        code = _main(
            meta_train, [f"--out_dir={out}", *META_ARGS, "--meta_steps=1", "--checkpoint_every=1"]
        )
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and err[-1].startswith(f"meta_train: error: cannot write {out}/"), err[-1]
    assert not (out / "genome.json").exists()
    assert not [n for n in os.listdir(out / "ckpt") if n.startswith("ckpt-")]


def test_export_on_a_full_disk_exits_1_in_one_line_and_leaves_nothing(tmp_path, capsys):
    with _small_file_limit(4096):
        code = _main(
            export,
            [
                "--genome=backprop",
                "--task=toy.xor",
                "--layer_sizes=8",
                f"--out_dir={tmp_path}/learner",
            ],
        )
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and err[-1].startswith(f"export: error: cannot write {tmp_path}/learner: ")
    assert os.listdir(tmp_path) == []  # no temporary folder, no half-written learner


# ----------------------------------------------------------------------------- genome files
@pytest.mark.parametrize(
    "change, message",
    [
        ({"synapse_update": [1e39]}, "'synapse_update' holds 1e+39, beyond ±100"),
        ({"synapse_update": [1e30]}, "'synapse_update' holds 1e+30, beyond ±100"),
        ({"norm_gain": [[1.0, -250.0]]}, "'norm_gain' holds -250, beyond ±100"),
        (
            {"version": 99},
            "genome format version 99 is not supported (this blur_tf reads version 1)",
        ),
    ],
    ids=["overflows float32", "1e30", "beyond 100", "version 99"],
)
def test_genome_files_beyond_what_a_genome_holds_are_refused(change, message, tmp_path):
    d = Genome.random(2, seed=0).to_dict()
    for key, value in change.items():
        if key in d["coefficients"]:
            d["coefficients"][key] = value
        else:
            d[key] = value
    path = tmp_path / "genome.json"
    path.write_text(json.dumps(d))
    with pytest.raises(ValueError) as info:
        Genome.load(str(path))
    assert message in str(info.value) and str(path) in str(info.value), str(info.value)


# ----------------------------------------------------------------------------- start-up
def test_a_launcher_error_is_one_line_from_a_fresh_process(folders):
    import subprocess  # pylint: disable=g-import-not-at-top
    import sys  # pylint: disable=g-import-not-at-top

    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    result = subprocess.run(
        [sys.executable, "-m", "launchers.cma_train", f"--out_dir={folders['file']}/x"],
        cwd=repo,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert result.stderr.splitlines() == [  # no TensorFlow start-up logging before it
        f"cma_train: error: --out_dir: cannot write {folders['file']}/x: {folders['file']} "
        "is not a writable folder"
    ], result.stderr


# ----------------------------------------------------------------------------- the main job
def test_main_job_headline_is_the_spread_over_its_seeds(tmp_path, capsys):
    out = tmp_path / "toy"
    args = [
        f"--out_dir={out}",
        *META_ARGS,
        "--meta_steps=1",
        "--print_table=true",
        "--validation_tasks=toy.xor",
        "--seeds=3",
    ]  # one seed: meta-training is slow
    flags.FLAGS(["main", *args])
    try:
        main_job.main(["main"])
    finally:
        flags.FLAGS.unparse_flags()
    last = capsys.readouterr().out.strip().splitlines()[-1]
    summary = json.loads((out / "seed3" / "summary.json").read_text())
    assert json.loads((out / "seed3" / "flags.json").read_text())["flags"]["seed"] == 3
    mean = np.mean([row["learned"] for row in summary["table"]["accuracy"].values()])
    assert last == (
        f"held-out mean of the learned genome over 1 meta-training seed(s): "
        f"{mean:.3f} (min {mean:.3f}, max {mean:.3f}; seed 3: {mean:.3f})"
    ), last
    assert _main(main_job, [f"--out_dir={out}", "--seeds=1,1"]) == 2
    assert "--seeds must be distinct integers >= 0" in capsys.readouterr().err

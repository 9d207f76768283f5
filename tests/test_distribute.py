"""tf.distribute (blur_tf/meta/distribute.py): MetaTrainer and CmaTrainer under MirroredStrategy
on 2 logical CPU devices and MultiWorkerMirroredStrategy with 2 local worker processes give the
single-device genome; only the chief writes; bad strategy flags fail before any work.

Logical devices and the multi-worker collective server must be set up before TensorFlow
initializes, so every distributed run happens in a fresh subprocess, bounded in time.
"""

import json
import os
import socket
import subprocess
import sys
import tempfile

import numpy as np
import pytest

from blur_tf.meta import distribute
from tests.test_meta import REPO, launch

TIMEOUT = 240  # seconds, per subprocess
META_ARGS = [
    "--tasks=toy.and;toy.xor",
    "--validation_tasks=toy.nxor",
    "--layer_sizes=8",
    "--population=2",
    "--meta_batch=2",
    "--batch_size=16",
    "--unroll=constant:3",
    "--meta_steps=4",
    "--checkpoint_every=2",
    "--validate_every=0",
    "--log_every=0",
    "--validation_networks=2",
    "--validation_examples=64",
    "--print_table=false",
    "--seed=3",
]


def _env(**extra):
    return dict(os.environ, PYTHONPATH=REPO, TF_CPP_MIN_LOG_LEVEL="2", **extra)


@pytest.fixture(scope="module")
def mirrored(tmp_path_factory):
    """The JSON report of tests/distributed_check.py (one subprocess for the mirrored tests)."""
    out_dir = tmp_path_factory.mktemp("mirrored")
    result = subprocess.run(
        [sys.executable, "-m", "tests.distributed_check", str(out_dir)],
        cwd=REPO,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.slow  # the `mirrored` subprocess: meta-training and CMA-ES on 2 devices
def test_mirrored_meta_training_gives_the_single_device_genome(mirrored):
    assert mirrored["replicas"] == 2
    assert mirrored["meta_losses"] < 1e-6  # per-genome mean of per-replica means
    assert mirrored["meta_diagnostics_equal"]  # tasks and accuracies gathered back in order
    # Adam divides by √v, so float32 rounding of tiny gradient components shows at ~1e-6.
    assert mirrored["meta_genome"] < 1e-4, mirrored
    assert mirrored["resumed"]  # a checkpoint written under the strategy restores into it
    assert mirrored["replica_copies_equal"] and mirrored["meta_traces"] == 1


@pytest.mark.slow  # the `mirrored` subprocess: meta-training and CMA-ES on 2 devices
def test_cma_candidates_across_replicas_give_the_single_device_search(mirrored):
    assert mirrored["cma_fitness"] == 0.0  # accuracies: counts of correct examples
    assert mirrored["cma_mean"] == 0.0 and mirrored["cma_best"] == 0.0


@pytest.mark.slow  # the `mirrored` subprocess: meta-training and CMA-ES on 2 devices
def test_meta_batch_not_divisible_by_the_replicas_is_refused(mirrored):
    message = mirrored["indivisible_error"]
    assert message and "meta_batch=3 is not divisible by the 2 replicas" in message


def _free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def _coefficients(out_dir):
    with open(os.path.join(out_dir, "genome.json")) as f:
        return json.load(f)["coefficients"]


@pytest.mark.slow  # end to end: two worker processes and a single-device reference run
def test_two_workers_give_the_single_device_genome_and_only_the_chief_writes(tmp_path):
    ports = _free_ports(2)
    cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
    out_dir, reference_dir = tmp_path / "workers", tmp_path / "single"
    scratch_before = set(os.listdir(tempfile.gettempdir()))
    command = [sys.executable, "-m", "launchers.meta_train", *META_ARGS]
    processes, logs = [], []
    try:
        for index in range(2):
            config = json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}})
            logs.append(open(tmp_path / f"worker{index}.log", "w+"))
            processes.append(
                subprocess.Popen(
                    [*command, "--strategy=multi_worker", f"--out_dir={out_dir}"],
                    cwd=REPO,
                    env=_env(TF_CONFIG=config),
                    stdout=logs[-1],
                    stderr=subprocess.STDOUT,
                )
            )
        reference = launch("meta_train", reference_dir, META_ARGS)
        assert reference.returncode == 0, reference.stderr[-3000:]
        for index, process in enumerate(processes):
            status = process.wait(timeout=TIMEOUT)
            logs[index].seek(0)
            assert status == 0, logs[index].read()[-3000:]
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait()
        for log in logs:
            log.close()
    a, b = _coefficients(reference_dir), _coefficients(out_dir)
    for name, values in a.items():
        np.testing.assert_allclose(b[name], values, rtol=0, atol=1e-4, err_msg=name)
    # The chief wrote the outputs and its checkpoints; the other worker's went to a temporary
    # folder that is gone.
    assert sorted(os.listdir(out_dir)) == [
        "ckpt",
        "flags.json",
        "genome.json",
        "summary.json",
        "tb",
    ]
    assert sorted(os.listdir(out_dir / "ckpt")) == sorted(
        ["checkpoint"]
        + [f"ckpt-{n}.{ext}" for n in (2, 4) for ext in ("index", "data-00000-of-00001")]
    )
    assert len(os.listdir(out_dir / "tb")) == 1
    leftovers = {
        n
        for n in set(os.listdir(tempfile.gettempdir())) - scratch_before
        if n.startswith("blur_tf_worker_checkpoint_")
    }
    assert not leftovers


@pytest.mark.parametrize(
    "args, message",
    [
        (["--cpu_devices=0", "--strategy=mirrored"], "--cpu_devices must be an int >= 1, got 0"),
        (
            ["--strategy=mirrored", "--cpu_devices=2", "--meta_batch=3"],
            "--meta_batch=3 is not divisible by the 2 replicas",
        ),
    ],
)
def test_bad_strategy_flags_exit_with_one_line_before_any_work(tmp_path, args, message):
    out_dir = tmp_path / "out"
    result = launch("meta_train", out_dir, [*META_ARGS, *args])
    assert result.returncode == 2
    ours = [line for line in result.stderr.splitlines() if line.startswith("meta_train:")]
    assert len(ours) == 1 and ours[0].startswith(f"meta_train: error: {message}"), ours
    assert "Traceback" not in result.stderr and not out_dir.exists()


@pytest.mark.parametrize(
    "name, cpu_devices, environ, message",
    [
        ("tpu", None, {}, "--strategy must be one of none, mirrored, multi_worker, got 'tpu'"),
        ("none", 2, {}, "--cpu_devices needs --strategy=mirrored"),
        ("mirrored", 0, {}, "--cpu_devices must be an int >= 1, got 0"),
        ("multi_worker", 2, {"TF_CONFIG": "{}"}, "--cpu_devices > 1 needs --strategy=mirrored"),
        ("multi_worker", None, {}, "needs the TF_CONFIG environment variable"),
        ("multi_worker", None, {"TF_CONFIG": "{not json"}, "TF_CONFIG is not a cluster spec"),
        (
            "multi_worker",
            None,
            {
                "TF_CONFIG": json.dumps(
                    {"cluster": {"worker": ["a:1"]}, "task": {"type": "worker", "index": 3}}
                )
            },
            "task index 3 is not one of the 1 workers",
        ),
    ],
)
def test_bad_strategy_choices_are_refused_without_touching_tensorflow(
    name, cpu_devices, environ, message
):
    with pytest.raises(ValueError, match=message):
        distribute.check_strategy(name, cpu_devices, environ)
    distribute.check_strategy("mirrored", 2, {})  # a good one passes


def test_logical_devices_after_tensorflow_initialized_are_refused():
    import tensorflow as tf  # pylint: disable=g-import-not-at-top

    tf.constant(0)  # this process has initialized TensorFlow
    with pytest.raises(ValueError, match="already initialized its devices"):
        distribute.make_strategy("mirrored", 2)


def test_the_truncated_estimator_is_refused_with_a_strategy_before_any_work():
    from launchers import meta_train  # pylint: disable=g-import-not-at-top
    from tests.test_meta import _config  # pylint: disable=g-import-not-at-top

    with pytest.raises(meta_train.FlagError, match="--estimator=truncated .* not distributed"):
        _config(strategy="mirrored", cpu_devices=2, estimator="truncated")
    _config(strategy="mirrored", cpu_devices=2, estimator="segmented")

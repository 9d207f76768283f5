"""Genome: factories, population helpers, dict/JSON round trip and malformed files."""

import json
import os

import numpy as np
import pytest
import tensorflow as tf

from blur_tf import Genome
from blur_tf.genome import shipped_genome_names, shipped_genomes_dir


def _equal(a, b):
    return all(np.array_equal(x, y) for x, y in zip(a.numpy(), b.numpy()))


def test_random_shapes_and_determinism():
    g = Genome.random(3, seed=1, population=4)
    assert g.num_states == 3 and g.population == 4
    assert g.forward_transform.shape == (4, 3, 3) and g.norm_gain.shape == (4, 3)
    assert g.synapse_update.shape == (4,)
    assert _equal(g, Genome.random(3, seed=1, population=4))
    assert not _equal(g, Genome.random(3, seed=2, population=4))
    assert not np.allclose(g.forward_transform[0], g.forward_transform[1])


@pytest.mark.parametrize("k", [0, 1, 2.5])
def test_random_rejects_bad_num_states(k):
    with pytest.raises(ValueError, match="K >= 2"):
        Genome.random(k)


def test_backprop_values():
    g = Genome.backprop(0.25, population=2)
    assert g.num_states == 2 and g.population == 2
    np.testing.assert_array_equal(g.forward_transform[1], [[1, 0], [1, 0]])
    np.testing.assert_array_equal(g.synapse_post[0], [[0, 1], [1, 0]])
    np.testing.assert_allclose(g.synapse_update, [0.25, 0.25])


def test_dict_and_file_round_trip(tmp_path):
    g = Genome.random(4, seed=0, population=2)
    assert _equal(Genome.from_dict(json.loads(json.dumps(g.to_dict()))), g)
    path = tmp_path / "sub" / "g.json"
    g.save(str(path), metadata={"source": "test"})
    assert _equal(Genome.load(str(path)), g)
    assert json.loads(path.read_text())["metadata"] == {"source": "test"}
    assert os.listdir(path.parent) == ["g.json"]  # no temporary file left behind


def test_variables_take_concat():
    g = Genome.random(2, seed=0, population=3)
    v = g.as_variables()
    assert all(isinstance(x, tf.Variable) for x in v)
    v.assign(Genome.backprop(0.1, population=3))
    assert _equal(v, Genome.backprop(0.1, population=3))
    assert _equal(Genome.concat([g.take([0]), g.take([1, 2])]), g)
    with pytest.raises(ValueError, match="different numbers of states"):
        Genome.concat([g, Genome.random(3)])


def _corrupt(d, **changes):
    d = json.loads(json.dumps(d))
    d["coefficients"].update(changes)
    return d


@pytest.mark.parametrize(
    "content, message",
    [
        ("{not json", "not valid JSON"),
        (json.dumps({"format": "other", "coefficients": {}}), "format is 'other'"),
        (json.dumps([1, 2]), "coefficients"),
        ("MISSING", "missing \\['saturation'\\]"),
        ("SHAPE", "'norm_gain' has shape"),
        ("NAN", "'synapse_keep' has non-finite"),
        ("TEXT", "'neuron_keep' is not numeric"),
        ("COUNT", "num_states says 3"),
    ],
)
def test_malformed_files_raise_value_error(tmp_path, content, message):
    good = Genome.random(2, seed=0).to_dict()
    if content == "MISSING":
        good["coefficients"].pop("saturation")
        content = json.dumps(good)
    elif content == "SHAPE":
        content = json.dumps(_corrupt(good, norm_gain=[[1.0, 1.0, 1.0]]))
    elif content == "NAN":
        content = json.dumps(_corrupt(good, synapse_keep=[float("nan")]))
    elif content == "TEXT":
        content = json.dumps(_corrupt(good, neuron_keep=["a"]))
    elif content == "COUNT":
        good["num_states"] = 3
        content = json.dumps(good)
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(ValueError, match=message):
        Genome.load(str(path))


def test_shipped_genomes_by_name_and_by_path():
    names = shipped_genome_names()
    assert {"toy2d", "mnist_fast", "cma_mnist14"} <= set(names)
    path = os.path.join(
        os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "genomes", "mnist_fast.json"
    )
    assert os.path.samefile(os.path.join(shipped_genomes_dir(), "mnist_fast.json"), path)
    assert _equal(Genome.load_shipped("mnist_fast"), Genome.load(path))
    assert _equal(Genome.load("toy2d"), Genome.load(path.replace("mnist_fast", "toy2d")))
    with pytest.raises(ValueError, match=r"no shipped genome 'genomes/toy2d.json' \(shipped: "):
        Genome.load_shipped("genomes/toy2d.json")  # a path is not a name
    with pytest.raises(
        ValueError,
        match=r"mnist_fst does not exist and is not a shipped genome "
        r"\(shipped: cma_mnist14, .*mnist_fast, .*toy2d",
    ):
        Genome.load("mnist_fst")

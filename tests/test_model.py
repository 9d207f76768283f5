"""BlurModel / BlurDense as Keras citizens: fit, callbacks, predict, evaluate, save and load."""

import glob
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from blur_tf import BlurDense, BlurModel, BlurNetwork, Genome, Rule
from blur_tf.tasks import get_task
from tests.test_network import SIZES, _data, _max_rel, sgd_reference


def xor_data(n, seed):
    """n fresh points of toy.xor (x ~ U[-1, 1]², class 1 iff x0·x1 > 0) as numpy arrays."""
    x, y = get_task("toy.xor").sample_train(tf.constant([seed, 0]), n)
    return x.numpy(), y.numpy()


def test_fit_with_backprop_genome_equals_sgd():
    lr = 0.3
    xs, ys = _data(5, 32)
    model = BlurModel(SIZES, Genome.backprop(lr), Rule.backprop(), seed=2)
    initial = BlurNetwork(SIZES, Rule.backprop()).init_synapses(1, seed=2)
    np.testing.assert_array_equal(model.blur_layers[0].forward_synapses, initial[0][0][0])
    expected = sgd_reference(SIZES, initial, xs, ys, lr)
    model.fit(
        xs.reshape(-1, SIZES[0]), ys.reshape(-1), batch_size=32, epochs=1, shuffle=False, verbose=0
    )
    for layer, (kernel, bias) in zip(model.blur_layers, expected):
        w = layer.forward_synapses.numpy()
        assert _max_rel(w[:-1, :, 0], kernel) < 1e-5 and _max_rel(w[-1, :, 0], bias) < 1e-5


class _NoTape:
    def __init__(self, *args, **kwargs):
        raise AssertionError("tf.GradientTape used in the inner loop")


def test_learns_xor_with_backprop_genome_and_no_gradient_tape(monkeypatch):
    """Threshold: test accuracy ≥ 0.9 on xor (chance 0.5) after 300 steps of batch 32."""
    monkeypatch.setattr(tf, "GradientTape", _NoTape)
    x, y = xor_data(300 * 32, seed=0)
    model = BlurModel([2, 32, 2], Genome.backprop(0.5), Rule.backprop(), seed=0)
    history = model.fit(x, y, batch_size=32, epochs=1, verbose=0)
    xt, yt = xor_data(2000, seed=1)
    accuracy = model.evaluate(xt, yt, batch_size=500, verbose=0)
    assert accuracy >= 0.9, accuracy
    assert history.history["accuracy"][0] > 0.6


GENOMES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "genomes")


def test_learns_xor_with_default_rule_and_shipped_genome(monkeypatch):
    """Default Rule() under genomes/toy2d.json (meta-learned for 20 inner steps of batch 64).

    Threshold: test accuracy ≥ 0.85 on xor (chance 0.5) after 20 steps, for each of 3 seeds
    (measured: 0.94–0.96), with no tf.GradientTape anywhere in fit.
    """
    monkeypatch.setattr(tf, "GradientTape", _NoTape)
    genome = Genome.load(os.path.join(GENOMES, "toy2d.json"))
    for seed in range(3):
        x, y = xor_data(20 * 64, seed=seed)
        model = BlurModel([2, 32, 2], genome, Rule(), seed=seed)
        model.fit(x, y, batch_size=64, verbose=0)
        xt, yt = xor_data(2048, seed=100 + seed)
        accuracy = model.evaluate(xt, yt, batch_size=512, verbose=0)
        assert accuracy >= 0.85, (seed, accuracy)


def test_fit_works_with_keras_callbacks(tmp_path):
    x, y = xor_data(256, seed=0)
    model = BlurModel([2, 8, 2], Genome.random(2, seed=0), Rule(), seed=0)
    history = model.fit(
        x,
        y,
        batch_size=64,
        epochs=2,
        verbose=1,
        callbacks=[
            keras.callbacks.TensorBoard(str(tmp_path / "tb")),
            keras.callbacks.ProgbarLogger(),
        ],
    )
    assert len(history.history["accuracy"]) == 2
    assert glob.glob(str(tmp_path / "tb" / "train" / "events.out.tfevents.*"))


def test_call_predict_evaluate_return_logits_and_accuracy():
    x, y = xor_data(128, seed=3)
    model = BlurModel([2, 8, 2], Genome.random(2, seed=0), Rule(), seed=0)
    logits = model(x)
    assert logits.shape == (128, 2)
    np.testing.assert_allclose(
        model.predict(x, batch_size=128, verbose=0), logits, rtol=1e-5, atol=1e-6
    )
    accuracy = model.evaluate(x, y, batch_size=128, verbose=0)
    np.testing.assert_allclose(accuracy, np.mean(np.argmax(logits, -1) == y), rtol=1e-6)


def test_save_and_load_round_trip(tmp_path):
    x, y = xor_data(256, seed=0)
    rule = Rule(num_states=3, oja=True)
    model = BlurModel([2, 8, 2], Genome.random(3, seed=1), rule, seed=4)
    model.fit(x, y, batch_size=64, verbose=0)
    path = str(tmp_path / "m.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    assert isinstance(loaded, BlurModel) and loaded.rule == rule
    np.testing.assert_allclose(
        loaded.predict(x, batch_size=256, verbose=0),
        model.predict(x, batch_size=256, verbose=0),
        rtol=1e-6,
    )
    model.fit(x, y, batch_size=64, shuffle=False, verbose=0)
    loaded.fit(x, y, batch_size=64, shuffle=False, verbose=0)
    np.testing.assert_allclose(
        loaded.blur_layers[0].forward_synapses, model.blur_layers[0].forward_synapses, rtol=1e-6
    )


@pytest.mark.parametrize(
    "bad, message",
    [
        (lambda x, y: (x[:, :1], y), "input width"),
        (lambda x, y: (x, y + 2), "labels out of range"),
        (lambda x, y: (np.where(x > 0.9, np.inf, x), y), "non-finite"),
    ],
)
def test_fit_rejects_bad_input_before_any_change(bad, message):
    x, y = xor_data(64, seed=0)
    model = BlurModel([2, 8, 2], Genome.random(2, seed=0), Rule(), seed=0)
    before = model.blur_layers[0].forward_synapses.numpy()
    with pytest.raises(ValueError, match=message):
        model.fit(*bad(x, y), batch_size=32, verbose=0)
    np.testing.assert_array_equal(model.blur_layers[0].forward_synapses, before)


def test_model_rejects_bad_genomes():
    with pytest.raises(ValueError, match="num_states=3"):
        BlurModel([2, 8, 2], Genome.random(2, seed=0), Rule(num_states=3))
    with pytest.raises(ValueError, match="population 1"):
        BlurModel([2, 8, 2], Genome.random(2, seed=0, population=2), Rule())


def test_blur_dense_layer_config_and_call():
    layer = BlurDense(4, 3, rule=Rule(num_states=3), seed=1)
    out = layer(np.ones((5, 6), np.float32), genome=Genome.random(3, seed=0))
    assert out.shape == (5, 4, 3)
    assert layer.forward_synapses.shape == (7, 4, 3) and layer.backward_synapses.shape == (4, 6, 3)
    clone = BlurDense.from_config(layer.get_config())
    assert clone.rule == layer.rule and clone.units == 4
    with pytest.raises(ValueError, match="num_states"):
        BlurDense(4, 2, rule=Rule(num_states=3))

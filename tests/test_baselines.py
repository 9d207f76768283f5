"""Tests of blur_tf.baselines: vectorized optimizers vs keras.optimizers, init, compiled loops."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from blur_tf import baselines
from blur_tf.network import BlurNetwork
from blur_tf.rule import Rule

LAYERS = [5, 7, 4, 3]


def make_batch_fn(num_seeds, batch_size=8, n_in=LAYERS[0], n_out=LAYERS[-1]):
    """Deterministic in-graph batches: step t → (x [S, B, n_in], y [S, B])."""

    def batch(t):
        seed = tf.stack([tf.constant(17, tf.int32), tf.cast(t, tf.int32)])
        x = tf.random.stateless_normal([num_seeds, batch_size, n_in], seed)
        y = tf.random.stateless_uniform([num_seeds, batch_size], seed + 1, 0, n_out, tf.int32)
        return x, y

    return batch


KERAS_OPTIMIZERS = {
    "sgd": lambda lr: keras.optimizers.SGD(lr),
    "momentum": lambda lr: keras.optimizers.SGD(lr, momentum=0.9),
    "adam": lambda lr: keras.optimizers.Adam(lr),
}


def keras_reference(optimizer, activation, lr, params, batch_fn, steps):
    """The same MLP trained with keras.optimizers and tf.GradientTape (one config)."""
    variables = [tf.Variable(t) for pair in params for t in pair]
    opt = KERAS_OPTIMIZERS[optimizer](lr)
    for t in range(steps):
        x, y = batch_fn(tf.constant(t))
        with tf.GradientTape() as tape:
            pairs = tuple((variables[2 * i], variables[2 * i + 1]) for i in range(len(params)))
            logits = baselines.mlp_logits(pairs, x[0], activation)
            loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(y[0], logits))
        opt.apply_gradients(zip(tape.gradient(loss, variables), variables))
    return [v.numpy() for v in variables]


@pytest.mark.parametrize(
    "optimizer,activation,lr",
    [("sgd", "tanh", 0.3), ("momentum", "relu", 0.05), ("adam", "tanh", 0.01)],
)
def test_vectorized_optimizer_matches_keras(optimizer, activation, lr):
    steps = 6
    batch_fn = make_batch_fn(1)
    # Three learning rates in one sweep: the one under test sits in the middle, so the check
    # also covers the independence of configs along the vectorized lr axis.
    sweep = baselines.BaselineSweep(LAYERS, optimizer, activation, [lr / 10, lr, 3 * lr], batch_fn)
    params, state = sweep.init([4])
    params, state = sweep.train(params, state, tf.constant(0), tf.constant(steps))
    start = baselines.initial_params(LAYERS, [4])
    single = tuple((k[0], b[0]) for k, b in start)
    expected = keras_reference(optimizer, activation, lr, single, batch_fn, steps)
    got = [t.numpy()[1, 0] for pair in params for t in pair]
    for e, g in zip(expected, got):
        np.testing.assert_allclose(g, e, rtol=1e-5, atol=1e-6)
    # Training actually moved the weights (the comparison is not vacuous).
    assert np.abs(got[0] - single[0][0].numpy()).max() > 1e-3


def test_initial_params_are_blur_channel_zero_per_seed():
    params = baselines.initial_params(LAYERS, [3, 8])
    for s, seed in enumerate([3, 8]):
        synapses = BlurNetwork(LAYERS, Rule.backprop()).init_synapses(1, seed)
        for (kernel, bias), (forward, _) in zip(params, synapses):
            np.testing.assert_array_equal(kernel[s], forward[0, :-1, :, 0])
            np.testing.assert_array_equal(bias[s], forward[0, -1:, :, 0])
    assert not np.allclose(params[0][0][0], params[0][0][1])  # seeds differ


def test_segments_do_not_retrace_and_compose():
    batch_fn = make_batch_fn(2)
    sweep = baselines.BaselineSweep(LAYERS, "adam", "relu", [0.01, 0.1], batch_fn)
    params, state = sweep.init([0, 1])
    whole, _ = sweep.train(params, state, tf.constant(0), tf.constant(7))
    for start, stop in [(0, 2), (2, 3), (3, 7)]:
        params, state = sweep.train(params, state, tf.constant(start), tf.constant(stop))
    assert sweep.train.experimental_get_tracing_count() == 1
    # Segments give the same result as one run (Adam's step count carries over via t).
    for a, b in zip(tf.nest.flatten(whole), tf.nest.flatten(params)):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-5, atol=1e-6)


def test_sweep_curves_shapes_and_learning():
    batch_fn = make_batch_fn(2, batch_size=32, n_in=4, n_out=2)
    x = tf.random.stateless_normal([400, 4], [5, 5])
    y = tf.cast(x[:, 0] > 0, tf.int32)

    def separable(t):  # labels = sign of feature 0: learnable
        xs, _ = batch_fn(t)
        return xs, tf.cast(xs[..., 0] > 0, tf.int32)

    result = baselines.sweep_curves(
        [4, 8, 2], "sgd", "tanh", [1e-4, 0.5], [0, 1], separable, x, y, [30, 1]
    )
    assert result.accuracy.shape == (2, 2, 2)
    assert np.all(result.accuracy[1, :, 1] > 0.9)  # lr 0.5 learns in 30 steps
    assert np.all(result.accuracy[1, :, 1] > result.accuracy[0, :, 1])


def test_count_correct_treats_non_finite_as_wrong():
    logits = tf.constant([[[0.0, 1.0], [np.nan, 1.0], [2.0, 0.0]]])
    np.testing.assert_array_equal(baselines.count_correct(logits, tf.constant([1, 1, 0])), [2])


@pytest.mark.parametrize("bad", [[], [0, 5], [3, 3], [1.5], [True]])
def test_check_horizons_rejects(bad):
    with pytest.raises(ValueError, match="horizons"):
        baselines.check_horizons(bad)


def test_bad_names_rejected():
    with pytest.raises(ValueError, match="unknown optimizer 'rmsprop'"):
        baselines.check_optimizer("rmsprop")
    with pytest.raises(ValueError, match="learning rates"):
        baselines.check_learning_rates([0.1, -1.0])

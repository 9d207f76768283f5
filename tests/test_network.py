"""BlurNetwork: the step against a numpy oracle and against backprop, population, unroll."""

import dataclasses

import keras
import numpy as np
import pytest
import tensorflow as tf

from blur_tf import BlurNetwork, Genome, Rule
from tests import oracle

SIZES = [20, 16, 12, 5]


def _data(steps, batch, sizes=SIZES, seed=0):
    rng = np.random.default_rng(seed)
    xs = rng.normal(size=(steps, batch, sizes[0])).astype(np.float32)
    ys = rng.integers(0, sizes[-1], size=(steps, batch)).astype(np.int32)
    return xs, ys


def _max_rel(a, b):
    a, b = np.asarray(a), np.asarray(b)
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-12))


def _mlp(sizes, activation):
    layers = [keras.Input((sizes[0],))]
    layers += [keras.layers.Dense(n, activation) for n in sizes[1:-1]]
    layers += [keras.layers.Dense(sizes[-1])]
    return keras.Sequential(layers)


def sgd_reference(sizes, synapses, xs, ys, lr, activation="tanh"):
    """Kernels and biases of a Keras MLP trained by GradientTape + SGD from the BLUR init."""
    mlp = _mlp(sizes, activation)
    for layer, (w, _) in zip(mlp.layers, synapses):
        layer.set_weights([w[0, :-1, :, 0].numpy(), w[0, -1, :, 0].numpy()])
    optimizer = keras.optimizers.SGD(lr)
    for x, y in zip(xs, ys):
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(
                keras.losses.sparse_categorical_crossentropy(y, mlp(x), from_logits=True)
            )
        grads = tape.gradient(loss, mlp.trainable_variables)
        optimizer.apply_gradients(zip(grads, mlp.trainable_variables))
    return [layer.get_weights() for layer in mlp.layers]


@pytest.mark.parametrize("activation", ["tanh", "relu"])
def test_backprop_genome_equals_sgd_through_unroll(activation):
    lr = 0.3
    xs, ys = _data(5, 32)
    net = BlurNetwork(SIZES, Rule.backprop(activation))
    synapses = net.init_synapses(1, seed=1)
    expected = sgd_reference(SIZES, synapses, xs, ys, lr, activation)
    learned = net.unroll(Genome.backprop(lr), synapses, (xs, ys), 5)
    for (w, v), (kernel, bias) in zip(learned, expected):
        assert _max_rel(w[0, :-1, :, 0], kernel) < 1e-5
        assert _max_rel(w[0, -1, :, 0], bias) < 1e-5
        np.testing.assert_allclose(v[0, :, :, 0], kernel.T, rtol=1e-6, atol=1e-7)
        # single-channel synapses: every channel holds the same weights
        np.testing.assert_array_equal(w[..., 0], w[..., 1])
    # the weights really moved, so the comparison is not vacuous
    assert _max_rel(learned[0][0], synapses[0][0]) > 1e-2


def test_backprop_genome_with_target_feedback_equals_sgd_on_squared_error():
    """Rule(feedback='target') is BLUR's regression readout: with the backprop genome it is
    SGD on ½·mean (ŷ − y)², real targets."""
    lr, sizes = 0.1, [SIZES[0], 7, 1]
    rng = np.random.default_rng(6)
    xs = tf.constant(rng.normal(size=(4, 16, SIZES[0])).astype(np.float32))
    ys = tf.constant(rng.normal(size=(4, 16)).astype(np.float32))
    rule = dataclasses.replace(Rule.backprop("tanh"), feedback="target")
    net = BlurNetwork(sizes, rule)
    synapses = net.init_synapses(1, seed=2)
    mlp = _mlp(sizes, "tanh")
    for layer, (w, _) in zip(mlp.layers, synapses):
        layer.set_weights([w[0, :-1, :, 0].numpy(), w[0, -1, :, 0].numpy()])
    optimizer = keras.optimizers.SGD(lr)
    for x, y in zip(xs, ys):
        with tf.GradientTape() as tape:
            loss = 0.5 * tf.reduce_mean(tf.square(mlp(x)[:, 0] - y))
        grads = tape.gradient(loss, mlp.trainable_variables)
        optimizer.apply_gradients(zip(grads, mlp.trainable_variables))
    learned = net.unroll(Genome.backprop(lr), synapses, (xs, ys), 4)
    for (w, _), layer in zip(learned, mlp.layers):
        kernel, bias = layer.get_weights()
        assert _max_rel(w[0, :-1, :, 0], kernel) < 1e-5
        assert _max_rel(w[0, -1, :, 0], bias) < 1e-5
    assert _max_rel(learned[0][0], synapses[0][0]) > 1e-3  # the weights moved
    with pytest.raises(ValueError, match="output layer must have 1 unit"):
        BlurNetwork([SIZES[0], 3], rule)
    with pytest.raises(ValueError, match="targets must have shape"):
        net.step(Genome.backprop(lr), synapses, xs[0], ys[0][:3])


@pytest.mark.parametrize(
    "rule",
    [
        Rule(num_states=3),
        Rule(num_states=3, symmetric=True, multichannel=False, feedback="error"),
        Rule(
            num_states=4,
            backward_mode="multiplicative",
            oja=True,
            saturation=True,
            activation="relu_tanh",
            output_activation="identity",
        ),
        Rule(
            num_states=3,
            backward_mode="multiplicative_state1",
            normalize_forward=False,
            activation="sigmoid_with_derivative",
            backward_activation="tanh",
            oja=True,
        ),
        dataclasses.replace(
            Rule.backprop("relu"),
            normalize_forward=True,
            normalize_output=False,
            normalize_backward=True,
        ),
    ],
    ids=[
        "default-K3",
        "symmetric-single-error",
        "K4-mult-oja-sat",
        "K3-state1",
        "backprop-hidden-normalized",
    ],
)
def test_step_matches_numpy_oracle(rule):
    sizes = [7, 6, 5, 4]
    genome = Genome.random(rule.num_states, seed=3, population=2)
    net = BlurNetwork(sizes, rule)
    synapses = net.init_synapses(2, seed=4)
    x, y = _data(1, 9, sizes)
    x = np.stack([x[0], x[0][::-1]])
    y = np.stack([y[0], y[0][::-1]])
    got = net.step(genome, synapses, x, y)
    want, _ = oracle.step(genome, rule, synapses, x, y)
    for (w, v), (w_ref, v_ref) in zip(got, want):
        np.testing.assert_allclose(w, w_ref, rtol=2e-4, atol=2e-5)
        np.testing.assert_allclose(v, v_ref, rtol=2e-4, atol=2e-5)
    logits = net.predict(genome, synapses, x)
    _, logits_ref = oracle.step(genome, rule, synapses, x, y)
    np.testing.assert_allclose(logits, logits_ref, rtol=2e-4, atol=2e-5)


def test_population_members_are_independent():
    rule = Rule(num_states=3, oja=True, saturation=True)
    genomes = [Genome.random(3, seed=s) for s in (0, 1, 2)]
    net = BlurNetwork([6, 8, 3], rule)
    synapses = net.init_synapses(3, seed=5)
    xs, ys = _data(4, 16, [6, 8, 3])
    xs = np.stack([xs + i for i in range(3)], axis=1)  # [T, P, B, n]: different data per member
    ys = np.stack([ys] * 3, axis=1)
    together = net.unroll(Genome.concat(genomes), synapses, (xs, ys), 4)
    for p, genome in enumerate(genomes):
        alone = net.unroll(
            genome, [(w[p : p + 1], v[p : p + 1]) for w, v in synapses], (xs[:, p], ys[:, p]), 4
        )
        for (w, v), (w1, v1) in zip(together, alone):
            np.testing.assert_allclose(w[p : p + 1], w1, rtol=1e-6, atol=1e-7)
            np.testing.assert_allclose(v[p : p + 1], v1, rtol=1e-6, atol=1e-7)


FULL = Rule(
    num_states=4,
    symmetric=False,
    multichannel=True,
    normalize_forward=True,
    normalize_backward=True,
    oja=True,
    saturation=True,
)


def test_k4_all_options_finite_over_200_steps():
    sizes = [10, 12, 4]
    net = BlurNetwork(sizes, FULL)
    genome = Genome.random(4, seed=0)
    synapses = net.init_synapses(1, seed=0)
    xs, ys = _data(200, 32, sizes)
    final = net.unroll(genome, synapses, (xs, ys), 200)
    for (w, v), (w0, v0) in zip(final, synapses):
        assert w.shape == w0.shape and v.shape == v0.shape
        assert np.all(np.isfinite(w)) and np.all(np.isfinite(v))
        assert not np.allclose(w, w0)
    assert final[0][0].shape == (1, 11, 12, 4) and final[0][1].shape == (1, 12, 10, 4)
    assert np.all(np.isfinite(net.predict(genome, final, xs[0])))


@pytest.mark.parametrize(
    "change",
    [
        dict(symmetric=True),
        dict(multichannel=False),
        dict(normalize_forward=False),
        dict(normalize_backward=False),
        dict(normalize_output=False),
        dict(oja=False),
        dict(saturation=False),
        dict(backward_mode="multiplicative"),
        dict(backward_mode="multiplicative_state1"),
        dict(feedback="error"),
        dict(activation="relu_tanh"),
        dict(output_activation="identity"),
        dict(backward_activation="identity"),
    ],
)
def test_each_option_changes_the_result(change):
    sizes = [10, 12, 4]
    genome = Genome.random(4, seed=1)
    xs, ys = _data(3, 32, sizes)
    results = []
    for rule in (FULL, dataclasses.replace(FULL, **change)):
        net = BlurNetwork(sizes, rule)
        results.append(net.unroll(genome, net.init_synapses(1, seed=0), (xs, ys), 3))
    assert not np.allclose(results[0][0][0], results[1][0][0], atol=1e-6)


def test_unroll_does_not_retrace_and_equals_steps():
    net = BlurNetwork([6, 8, 3], Rule())
    genome = Genome.random(2, seed=0)
    synapses = net.init_synapses(1, seed=0)
    xs, ys = _data(6, 8, [6, 8, 3])
    for length in (2, 3, 6):
        out = net.unroll(genome, synapses, (xs, ys), length)
    assert net._compiled_unroll.experimental_get_tracing_count() == 1
    stepped = synapses
    for t in range(6):
        stepped = net.step(genome, stepped, xs[t], ys[t])
    for (w, v), (w1, v1) in zip(out, stepped):
        np.testing.assert_allclose(w, w1, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(v, v1, rtol=1e-5, atol=1e-6)


def test_accuracy_curve_matches_predictions_along_the_unroll():
    net = BlurNetwork([6, 8, 3], Rule())
    genome = Genome.random(2, seed=0, population=2)
    synapses = net.init_synapses(2, seed=0)
    xs, ys = _data(4, 16, [6, 8, 3])
    x_eval, y_eval = _data(1, 64, [6, 8, 3], seed=1)
    xs_t, ys_t = tf.constant(xs), tf.constant(ys)
    curve, final = tf.function(
        lambda: net.accuracy_curve(
            genome, synapses, lambda t: (xs_t[t], ys_t[t]), 4, x_eval[0], y_eval[0]
        )
    )()
    assert curve.shape == (2, 5)
    for t in (0, 2, 4):
        after = net.unroll(genome, synapses, (xs, ys), t)
        expected = np.mean(np.argmax(net.predict(genome, after, x_eval[0]), -1) == y_eval[0], -1)
        np.testing.assert_allclose(curve[:, t], expected, atol=1e-6)
    np.testing.assert_allclose(
        final[0][0], net.unroll(genome, synapses, (xs, ys), 4)[0][0], rtol=1e-6
    )


def test_unroll_is_differentiable_in_the_genome():
    net = BlurNetwork([6, 8, 3], Rule())
    genome = Genome.random(2, seed=0).as_variables()
    xs, ys = _data(5, 16, [6, 8, 3])
    with tf.GradientTape() as tape:
        final = net.unroll(genome, net.init_synapses(1, seed=0), (xs, ys), tf.constant(5))
        logits = net.predict(genome, final, xs[0])
        loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(ys[0][None], logits))
    grads = tape.gradient(loss, list(genome))
    for name, grad in zip(Genome._fields, grads):
        if name in ("oja_multiplier", "saturation", "neuron_keep"):
            continue  # oja/saturation off; f multiplies zero-initialised states in forward
        assert grad is not None and np.all(np.isfinite(grad)), name
    assert np.any(np.abs(grads[0]) > 0)


def test_same_seed_same_synapses_and_results():
    net = BlurNetwork([6, 8, 3], Rule())
    a, b, c = (net.init_synapses(2, seed=s) for s in (7, 7, 8))
    for (wa, va), (wb, vb), (wc, _) in zip(a, b, c):
        np.testing.assert_array_equal(wa, wb)
        np.testing.assert_array_equal(va, vb)
        assert not np.allclose(wa, wc)
    assert not np.allclose(a[0][0][0], a[0][0][1])  # population members differ
    genome = Genome.random(2, seed=0)
    xs, ys = _data(3, 8, [6, 8, 3])
    r1 = net.unroll(genome, a, (xs, ys), 3)
    r2 = net.unroll(genome, b, (xs, ys), 3)
    np.testing.assert_array_equal(r1[0][0], r2[0][0])


@pytest.mark.parametrize(
    "bad, message",
    [
        (lambda x, y: (x[:, :5], y), "input width"),
        (lambda x, y: (x, y + 3), "labels out of range"),
        (lambda x, y: (np.where(np.arange(6) == 2, np.nan, x).astype(np.float32), y), "non-finite"),
        (lambda x, y: (x, y[:4]), "labels must have shape"),
    ],
)
def test_bad_batches_raise_value_error(bad, message):
    net = BlurNetwork([6, 8, 3], Rule())
    xs, ys = _data(1, 8, [6, 8, 3])
    x, y = bad(xs[0], ys[0])
    with pytest.raises(ValueError, match=message):
        net.step(Genome.random(2, seed=0), net.init_synapses(), x, y)


def test_unroll_checks_every_batch_and_the_length():
    net = BlurNetwork([6, 8, 3], Rule())
    genome, synapses = Genome.random(2, seed=0), net.init_synapses()
    xs, ys = _data(4, 8, [6, 8, 3])
    xs[3, 0, 0] = np.inf
    with pytest.raises(ValueError, match="non-finite"):
        net.unroll(genome, synapses, (xs, ys), 2)
    with pytest.raises(ValueError, match="exceeds the 4 batches"):
        net.unroll(genome, synapses, (xs, ys), 5)
    with pytest.raises(ValueError, match="batches must be"):
        net.unroll(genome, synapses, (xs, ys[:, :4]), 2)


def test_genome_with_wrong_k_is_rejected():
    net = BlurNetwork([6, 8, 3], Rule(num_states=3))
    xs, ys = _data(1, 8, [6, 8, 3])
    with pytest.raises(ValueError, match="K=2 states but the rule has num_states=3"):
        net.step(Genome.random(2, seed=0), net.init_synapses(), xs[0], ys[0])
    with pytest.raises(ValueError, match="layer_sizes"):
        BlurNetwork([6], Rule())

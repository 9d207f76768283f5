"""Rule options and the pure step functions' special cases."""

import dataclasses

import numpy as np
import pytest
import tensorflow as tf

from blur_tf import Genome, Rule
from blur_tf import rule as rule_lib


def test_default_rule_is_frozen_hashable_and_json_round_trips():
    rule = Rule()
    assert rule.num_states == 2 and rule.backward_mode == "additive" and not rule.symmetric
    assert rule.multichannel and rule.normalize_forward and rule.feedback == "label"
    assert hash(rule) == hash(Rule()) and {rule: 1}[Rule()] == 1
    with pytest.raises(dataclasses.FrozenInstanceError):
        rule.num_states = 3
    for r in (rule, Rule.backprop("relu"), Rule(num_states=5, oja=True)):
        assert Rule.from_json(r.to_json()) == r


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(num_states=1), "num_states"),
        (dict(activation="gelu"), "known activations"),
        (dict(backward_mode="sideways"), "backward_mode"),
        (dict(feedback="reward"), "feedback"),
        (dict(oja=1), "must be a bool"),
    ],
)
def test_bad_options(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Rule(**kwargs)
    with pytest.raises(ValueError, match="unknown Rule options"):
        Rule.from_dict({"colour": "red"})


def test_backprop_rule():
    rule = Rule.backprop("sigmoid")
    assert rule.activation == "sigmoid_with_derivative" and rule.output_activation == "identity"
    assert rule.symmetric and not rule.multichannel and rule.feedback == "error"
    assert rule.backward_mode == "multiplicative_state1"


def test_activation_with_derivative_puts_derivative_in_state_1():
    h = tf.random.stateless_normal([1, 3, 4, 5], seed=[0, 1])
    out = rule_lib.activate("tanh_with_derivative", h)
    np.testing.assert_allclose(out[:, 0], np.tanh(h[:, 0]), rtol=1e-6)
    # 1 − tanh² loses relative precision in float32 for large |h|: an absolute bound too.
    np.testing.assert_allclose(out[:, 1], 1 - np.tanh(h[:, 1]) ** 2, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out[:, 2], np.tanh(h[:, 2]), rtol=1e-6)


def test_single_layer_backprop_messages():
    """Reference parity: forward message = [x, 1]·W; backward state 1 = δ·W[:n]ᵀ; ΔW = x̃ᵀ δ / B."""
    rng = np.random.default_rng(0)
    x, w = rng.random((1, 3, 10)), rng.random((1, 11, 15))
    delta = rng.random((1, 3, 15))
    g = Genome.backprop(1.0)
    lower = rule_lib.input_states(tf.constant(x, tf.float32), 2)
    w_cm = tf.constant(np.stack([w, w], 1), tf.float32)  # [P, K, n+1, m]
    rule = dataclasses.replace(Rule.backprop(), activation="identity")
    out = rule_lib.forward(g, rule, lower, w_cm, is_output=False)
    x1 = np.concatenate([x, np.ones((1, 3, 1))], -1)
    np.testing.assert_allclose(out[:, 0], x1 @ w, rtol=1e-5)
    np.testing.assert_allclose(out[:, 1], x1 @ w, rtol=1e-5)
    upper = tf.constant(np.stack([np.zeros_like(delta), delta], 1), tf.float32)
    lower_fb = tf.concat([lower[:, :1], tf.ones_like(lower[:, 1:])], 1)
    back = rule_lib.backward(g, Rule.backprop(), lower_fb, upper, w_cm)
    np.testing.assert_allclose(back[:, 1], delta @ w[:, :-1].transpose(0, 2, 1), rtol=1e-5)
    np.testing.assert_allclose(back[:, 0], lower[:, 0])
    dw = rule_lib.hebbian(g, rule_lib.with_bias_unit(lower), upper, channels=1)
    np.testing.assert_allclose(dw[:, 0], x1.transpose(0, 2, 1) @ delta / 3, rtol=1e-5)


def test_saturation_and_oja_bound_synapses():
    g = Genome.random(2, seed=0)
    w = tf.fill([1, 2, 4, 3], 2.0)
    delta = tf.fill([1, 2, 4, 3], 100.0)
    saturated = rule_lib.plasticity(g, Rule(saturation=True), w, delta)
    assert np.all(np.abs(saturated) <= 1.0 + 1e-6)  # α = 1
    plain = rule_lib.plasticity(g, Rule(), w, tf.zeros_like(w))
    with_oja = rule_lib.plasticity(g, Rule(oja=True), w, tf.zeros_like(w))
    np.testing.assert_allclose(plain, w)
    np.testing.assert_allclose(with_oja, 2.0 - 0.01 * 2.0 * (4 * 2.0**2), rtol=1e-5)


def _textbook_normalize(h, gain, shift):
    """N(h) as the textbook expression, differentiated by TensorFlow's own gradients."""
    mean, variance = tf.nn.moments(h, axes=[2], keepdims=True)
    gain = tf.reshape(gain, [tf.shape(gain)[0], -1, 1, 1])
    shift = tf.reshape(shift, [tf.shape(shift)[0], -1, 1, 1])
    return (h - mean) / tf.sqrt(variance + rule_lib.NORM_EPSILON) * gain + shift


@pytest.mark.parametrize("h_population,gain_population", [(3, 3), (1, 3), (3, 1)])
def test_normalize_closed_form_gradient_matches_autodiff(h_population, gain_population):
    """The closed-form gradient of `normalize` (and its sums over broadcast populations)
    against TensorFlow's gradient of the textbook expression."""
    h = tf.random.stateless_normal([h_population, 2, 6, 5], seed=[0, 1]) * 2.0 + 0.5
    gain = tf.random.stateless_normal([gain_population, 2], seed=[0, 2])
    shift = tf.random.stateless_normal([gain_population, 2], seed=[0, 3])
    weights = tf.random.stateless_normal([3, 2, 6, 5], seed=[0, 4])
    results = []
    for fn in (rule_lib.normalize, _textbook_normalize):
        with tf.GradientTape() as tape:
            tape.watch([h, gain, shift])
            out = fn(h, gain, shift)
            loss = tf.reduce_sum(out * weights)
        results.append([out, *tape.gradient(loss, [h, gain, shift])])
    for ours, reference in zip(*results):
        assert ours.shape == reference.shape
        np.testing.assert_allclose(ours, reference, rtol=1e-4, atol=1e-5)
    assert np.abs(results[1][1]).max() > 0.1  # a gradient that could differ

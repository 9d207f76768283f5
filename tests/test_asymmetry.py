"""The Jacobian test of paper Fig. 2 (blur_tf/asymmetry.py): the backprop genome's update
Jacobian is −lr times the Hessian of the cross-entropy (an independent autodiff oracle), hence
symmetric; with independent feedback weights it is measurably not."""

import dataclasses

import numpy as np
import pytest
import tensorflow as tf

from blur_tf import BlurNetwork, Genome, Rule
from blur_tf.asymmetry import asymmetry, log_asymmetry, update_jacobian
from blur_tf.tasks import get_task

LR = 0.5


def _batch():
    return get_task("toy.xor").sample_train(tf.constant([0, 0]), 64)


def _hessian_oracle(synapses, x, y):
    """Hessian of the mean cross-entropy of a plain tanh MLP over (W1, W2) flattened."""
    (w1, _), (w2, _) = synapses
    shapes = [w1[0, ..., 0].shape, w2[0, ..., 0].shape]  # [n + 1, m], bias row last
    theta = tf.concat([tf.reshape(w1[0, ..., 0], [-1]), tf.reshape(w2[0, ..., 0], [-1])], 0)
    ones = tf.ones([x.shape[0], 1])
    with tf.GradientTape() as outer:
        outer.watch(theta)
        with tf.GradientTape() as inner:
            inner.watch(theta)
            a, b = tf.split(theta, [int(np.prod(s)) for s in shapes])
            hidden = tf.tanh(tf.concat([x, ones], 1) @ tf.reshape(a, shapes[0]))
            logits = tf.concat([hidden, ones], 1) @ tf.reshape(b, shapes[1])
            loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(y, logits))
        gradient = inner.gradient(loss, theta)
    return outer.jacobian(gradient, theta).numpy()


def test_backprop_update_jacobian_is_minus_lr_times_the_hessian():
    x, y = _batch()
    network = BlurNetwork([2, 6, 2], Rule.backprop("tanh"))
    synapses = network.init_synapses(1, seed=3)
    jacobian = update_jacobian(network, Genome.backprop(LR), synapses, x, y)
    assert jacobian.shape == (3 * 6 + 7 * 2,) * 2  # single-channel rule: channel 0 only
    np.testing.assert_allclose(jacobian, -LR * _hessian_oracle(synapses, x, y), atol=2e-5)
    assert asymmetry(jacobian) < 1e-5
    assert log_asymmetry(jacobian).max() < -10


def test_asymmetric_feedback_and_learned_genomes_are_not_gradients():
    x, y = _batch()
    rule = dataclasses.replace(Rule.backprop("tanh"), symmetric=False)  # feedback alignment
    network = BlurNetwork([2, 20, 2], rule)
    jacobian = update_jacobian(network, Genome.backprop(LR), network.init_synapses(1, 0), x, y)
    assert asymmetry(jacobian) > 0.1
    network = BlurNetwork([2, 20, 2], Rule())  # the paper's rule: 2 channels, 204 weights
    jacobian = update_jacobian(network, Genome.random(2, seed=1), network.init_synapses(1, 0), x, y)
    assert jacobian.shape == (204, 204) and asymmetry(jacobian) > 0.1


def test_bad_input():
    with pytest.raises(ValueError, match="square"):
        asymmetry(np.zeros((2, 3)))
    network = BlurNetwork([2, 4, 2], Rule())
    x, y = _batch()
    with pytest.raises(ValueError, match="population 1"):
        update_jacobian(network, Genome.random(2, population=2), network.init_synapses(1), x, y)

"""BlurDense: a Keras layer whose variables are multi-channel BLUR synapses."""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from blur_tf import rule as rule_lib
from blur_tf.genome import Genome
from blur_tf.rule import Rule


def init_layer_synapses(
    fan_in: int, units: int, rule: Rule, population: int, seed: int, layer_index: int = 0
):
    """Initial synapses of one layer pair in the public (DESIGN) layout.

    Kernels are Glorot-uniform (±sqrt(6 / (fan_in + units)), as Keras Dense), the bias row is 0.
    Every channel draws its own kernel (single-channel rules repeat channel 0); asymmetric
    backward synapses draw independently, symmetric ones are the forward kernel transposed.
    Deterministic in (`seed`, `layer_index`), via stateless random ops; `seed` may be a scalar
    integer tensor (the exported learner's `reset` signature draws in-graph).

    Returns: forward [P, fan_in + 1, units, K] and backward [P, units, fan_in, K].
    """
    k = rule.num_states
    channels = k if rule.multichannel else 1
    limit = float(np.sqrt(6.0 / (fan_in + units)))

    def draw(shape, salt):
        stream = tf.stack(
            [tf.cast(seed, tf.int64), tf.constant(2 * int(layer_index) + salt, tf.int64)]
        )
        values = tf.random.stateless_uniform([population, *shape, channels], stream, -limit, limit)
        return tf.tile(values, [1, 1, 1, k // channels]) if channels == 1 else values

    kernel = draw([fan_in, units], 0)
    forward = tf.concat([kernel, tf.zeros([population, 1, units, k])], axis=1)
    if rule.symmetric:
        backward = tf.transpose(kernel, [0, 2, 1, 3])
    else:
        backward = draw([units, fan_in], 1)
    return forward, backward


def to_channel_major(forward, backward, rule: Rule):
    """Public (W [P, n+1, m, K], V [P, m, n, K]) → rule layout (W [P, K, n+1, m], V or None)."""
    forward = tf.transpose(forward, [0, 3, 1, 2])
    return forward, (None if rule.symmetric else tf.transpose(backward, [0, 3, 1, 2]))


def from_channel_major(forward, backward):
    """Rule layout → public layout; a None backward (symmetric) becomes Wᵀ without the bias row."""
    if backward is None:
        backward = tf.transpose(forward[:, :, :-1, :], [0, 3, 2, 1])
    else:
        backward = tf.transpose(backward, [0, 2, 3, 1])
    return tf.transpose(forward, [0, 2, 3, 1]), backward


@keras.saving.register_keras_serializable(package="blur_tf")
class BlurDense(keras.layers.Layer):
    """A dense layer of multi-state neurons joined by multi-channel synapses.

    Variables (updated by BLUR inner steps, never by gradients, hence non-trainable):
      forward_synapses  [in + 1, units, K]: W, the last row is the bias;
      backward_synapses [units, in, K]: V (equal to Wᵀ without the bias row for symmetric rules).

    `call(states, genome)` runs the forward pass of DESIGN §1 step 2 on neuron states
    [B, in, K] (or plain inputs [B, in], which enter state 0) and returns states [B, units, K].
    The genome must have population 1. Initial synapses come from `init_layer_synapses` with
    (`seed`, `layer_index`), so a BlurModel's layers equal `BlurNetwork.init_synapses(1, seed)`.
    """

    def __init__(
        self,
        units: int,
        num_states: int,
        rule: Rule | dict | None = None,
        is_output: bool = False,
        seed: int = 0,
        layer_index: int = 0,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if isinstance(rule, dict):
            rule = Rule.from_dict(rule)
        rule = rule or Rule(num_states=num_states)
        if rule.num_states != num_states:
            raise ValueError(
                f"BlurDense(num_states={num_states}) with a rule of num_states={rule.num_states}"
            )
        if int(units) < 1:
            raise ValueError(f"BlurDense units must be >= 1, got {units}")
        self.units, self.num_states, self.rule = int(units), num_states, rule
        self.is_output, self.seed, self.layer_index = bool(is_output), int(seed), int(layer_index)

    def build(self, input_shape):
        fan_in = int(input_shape[1])
        forward, backward = init_layer_synapses(
            fan_in, self.units, self.rule, 1, self.seed, self.layer_index
        )
        self.forward_synapses = self.add_weight(
            name="forward_synapses",
            shape=tuple(forward.shape[1:]),
            trainable=False,
            initializer=lambda shape, dtype=None: forward[0],
        )
        self.backward_synapses = self.add_weight(
            name="backward_synapses",
            shape=tuple(backward.shape[1:]),
            trainable=False,
            initializer=lambda shape, dtype=None: backward[0],
        )

    def call(self, states, genome: Genome):
        states = tf.convert_to_tensor(states, tf.float32)
        if states.shape.rank == 2:
            states = rule_lib.input_states(states[None], self.num_states)
        else:
            states = tf.transpose(states, [2, 0, 1])[None]
        forward, _ = self.channel_major_synapses()
        out = rule_lib.forward(genome, self.rule, states, forward, self.is_output)
        return tf.transpose(out[0], [1, 2, 0])

    def channel_major_synapses(self):
        """(W [1, K, in+1, units], V [1, K, units, in] or None) for the rule functions."""
        return to_channel_major(
            self.forward_synapses[None], self.backward_synapses[None], self.rule
        )

    def assign_channel_major(self, forward, backward):
        """Stores synapses given in the rule layout (population 1)."""
        forward, backward = from_channel_major(forward, backward)
        self.forward_synapses.assign(forward[0])
        self.backward_synapses.assign(backward[0])

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.units, self.num_states)

    def get_config(self):
        config = super().get_config()
        config.update(
            units=self.units,
            num_states=self.num_states,
            rule=self.rule.to_dict(),
            is_output=self.is_output,
            seed=self.seed,
            layer_index=self.layer_index,
        )
        return config

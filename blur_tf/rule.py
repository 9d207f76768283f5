"""The rule: static options of a BLUR network and the pure tensor functions of one inner step.

This module is the only place the math of DESIGN §1 lives. Every function is pure, takes the
genome (leading population axis P) and explicit tensors, and works in the **channel-major**
layout, which turns every contraction into a batched matmul (no multi-operand einsum, no
transposes inside the step):

| tensor                | channel-major (here)       | DESIGN layout (public)     |
|-----------------------|----------------------------|----------------------------|
| neuron states a_l     | [P, K, B, n_l]             | [P, B, n_l, K]             |
| forward synapses W_l  | [P, K, n_l + 1, n_{l+1}]   | [P, n_l + 1, n_{l+1}, K]   |
| backward synapses V_l | [P, K, n_{l+1}, n_l]       | [P, n_{l+1}, n_l, K]       |

`BlurNetwork` converts synapses between the two layouts at its
boundary. Any leading P axis may be 1 and broadcast against the others (one genome driving many
networks, or one batch fed to every member).
"""

from __future__ import annotations

import dataclasses
import json

import tensorflow as tf

from blur_tf.genome import Genome

NORM_EPSILON = 1e-3

BACKWARD_MODES = ("additive", "multiplicative", "multiplicative_state1")
FEEDBACK_MODES = ("label", "error", "target")
_BASE_ACTIVATIONS = {
    "identity": (tf.identity, tf.ones_like),
    "tanh": (tf.tanh, lambda h: 1.0 - tf.tanh(h) ** 2),
    "sigmoid": (tf.sigmoid, lambda h: tf.sigmoid(h) * (1.0 - tf.sigmoid(h))),
    "relu": (tf.nn.relu, lambda h: tf.cast(h > 0, h.dtype)),
    "relu_tanh": (
        lambda h: tf.nn.relu(tf.tanh(h)),
        lambda h: tf.cast(h > 0, h.dtype) * (1.0 - tf.tanh(h) ** 2),
    ),
}
DERIVATIVE_SUFFIX = "_with_derivative"
ACTIVATIONS = tuple(_BASE_ACTIVATIONS) + tuple(n + DERIVATIVE_SUFFIX for n in _BASE_ACTIVATIONS)


@dataclasses.dataclass(frozen=True)
class Rule:
    """Static (not learned) options of a BLUR network. Frozen, hashable, JSON-serializable.

    `Rule()` is the paper's default BLUR rule: 2 states, tanh units, additive backward pass,
    asymmetric multi-channel synapses, forward and backward normalization, label feedback.

    Attributes:
      num_states: K ≥ 2, states per neuron (= channels per synapse).
      activation: σ of hidden units in the forward pass (see ACTIVATIONS). A name ending in
        `_with_derivative` maps state 1 to φ′(h) and every other state to φ(h).
      output_activation: σ of the output layer (state 0 is the network's logits).
      backward_activation: σ of the backward pass; None means the same as `activation`.
      backward_mode: 'additive' a ← σ(N(f·a + η·m)); 'multiplicative' a ← σ(N(f·η·a⊙m));
        'multiplicative_state1': only state 1 is updated multiplicatively, other states are kept.
      symmetric: backward synapses are tied to the forward ones (V = Wᵀ without bias row).
      multichannel: every channel of a synapse learns its own weights; False keeps all channels
        equal to channel 0 (single-channel synapses).
      normalize_forward, normalize_backward: batch normalization N with genome gain/shift.
      normalize_output: with `normalize_forward`, normalize the output layer too (True, the
        paper's rule); False normalizes hidden layers only, so the logits keep their scale
        (a softmax whose confidence can grow) while hidden units stay scale-free.
      oja: add the Oja-like inhibitory term −|ω|·W·Σ_r W_r² to synapse updates.
      saturation: squash synapses as α·tanh(W/α) after each update.
      feedback: 'label' injects 2·onehot(y) − 1, 'error' injects onehot(y) − softmax(logits);
        'target' (regression: y are real targets [P, B], one per output) injects y − a_L[0].
    """

    num_states: int = 2
    activation: str = "tanh"
    output_activation: str = "tanh"
    backward_activation: str | None = None
    backward_mode: str = "additive"
    symmetric: bool = False
    multichannel: bool = True
    normalize_forward: bool = True
    normalize_backward: bool = True
    normalize_output: bool = True
    oja: bool = False
    saturation: bool = False
    feedback: str = "label"

    def __post_init__(self):
        if not isinstance(self.num_states, int) or self.num_states < 2:
            raise ValueError(f"Rule.num_states must be an int >= 2, got {self.num_states!r}")
        for field in ("activation", "output_activation", "backward_activation"):
            value = getattr(self, field)
            if value is not None and value not in ACTIVATIONS:
                raise ValueError(f"Rule.{field}={value!r}; known activations: {ACTIVATIONS}")
        if self.backward_mode not in BACKWARD_MODES:
            raise ValueError(f"Rule.backward_mode={self.backward_mode!r}; one of {BACKWARD_MODES}")
        if self.feedback not in FEEDBACK_MODES:
            raise ValueError(f"Rule.feedback={self.feedback!r}; one of {FEEDBACK_MODES}")
        for field in (
            "symmetric",
            "multichannel",
            "normalize_forward",
            "normalize_backward",
            "normalize_output",
            "oja",
            "saturation",
        ):
            if not isinstance(getattr(self, field), bool):
                raise ValueError(f"Rule.{field} must be a bool, got {getattr(self, field)!r}")

    @classmethod
    def backprop(cls, activation: str = "tanh") -> Rule:
        """The rule under which `Genome.backprop(lr)` performs exact SGD on cross-entropy."""
        if activation not in _BASE_ACTIVATIONS:
            raise ValueError(f"activation {activation!r}; one of {tuple(_BASE_ACTIVATIONS)}")
        return cls(
            num_states=2,
            activation=activation + DERIVATIVE_SUFFIX,
            output_activation="identity",
            backward_activation="identity",
            backward_mode="multiplicative_state1",
            symmetric=True,
            multichannel=False,
            normalize_forward=False,
            normalize_backward=False,
            oja=False,
            saturation=False,
            feedback="error",
        )

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> Rule:
        unknown = sorted(set(d) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            raise ValueError(f"unknown Rule options {unknown}")
        return cls(**d)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Rule:
        return cls.from_dict(json.loads(text))

    def check_genome(self, genome: Genome) -> None:
        """ValueError unless the genome's K matches this rule's number of states."""
        if genome.num_states != self.num_states:
            raise ValueError(
                f"genome has K={genome.num_states} states but the rule has "
                f"num_states={self.num_states}"
            )


# --------------------------------------------------------------------------------- primitives
def activate(name: str, h: tf.Tensor) -> tf.Tensor:
    """σ applied to channel-major states h [P, K, B, n]; '*_with_derivative' puts φ′ in state 1."""
    if name.endswith(DERIVATIVE_SUFFIX):
        phi, dphi = _BASE_ACTIVATIONS[name[: -len(DERIVATIVE_SUFFIX)]]
        return tf.concat([phi(h[:, :1]), dphi(h[:, 1:2]), phi(h[:, 2:])], axis=1)
    return _BASE_ACTIVATIONS[name][0](h)


def _gate(value: tf.Tensor) -> tf.Tensor:
    """A per-member scalar gate [P] broadcast against [P, K, B, n] or [P, K, n, m]."""
    return tf.reshape(value, [-1, 1, 1, 1])


def _scaled(gate: tf.Tensor, transform: tf.Tensor) -> tf.Tensor:
    """gate [P] (or a scalar) · transform [P, C, K]: a gate applied to the K×K mixing rather
    than to the tensor the mixing produces (the same product, one pass less over that tensor
    and, under a tape, two to three passes less in its gradient)."""
    return tf.reshape(gate, [-1, 1, 1]) * transform


def mix_states(transform: tf.Tensor, states: tf.Tensor) -> tf.Tensor:
    """out[p, c, b, i] = Σ_d transform[p, c, d] · states[p, d, b, i], as one batched matmul.

    transform [P, C, K], states [P, K, B, n] → [P, C, B, n].
    """
    shape = tf.shape(states)
    flat = tf.reshape(states, [shape[0], shape[1], -1])
    mixed = tf.matmul(transform, flat)
    return tf.reshape(mixed, tf.concat([tf.shape(mixed)[:2], shape[2:]], 0))


def with_bias_unit(states: tf.Tensor) -> tf.Tensor:
    """ã = [a, 1]: appends a bias unit holding 1 in every state. [P, K, B, n] → [P, K, B, n+1]."""
    ones = tf.ones(tf.concat([tf.shape(states)[:-1], [1]], 0), states.dtype)
    return tf.concat([states, ones], axis=-1)


def _sum_to(gradient: tf.Tensor, shape: tf.Tensor) -> tf.Tensor:
    """`gradient` summed over the axes along which a tensor of `shape` was broadcast."""
    axes, _ = tf.raw_ops.BroadcastGradientArgs(s0=shape, s1=tf.shape(gradient))
    return tf.reshape(tf.reduce_sum(gradient, axes), shape)


@tf.custom_gradient
def normalize(h: tf.Tensor, gain: tf.Tensor, shift: tf.Tensor) -> tf.Tensor:
    """N(h)[p, c, b, i] = γ[p, c] · (h − mean_b h) / sqrt(var_b h + ε) + β[p, c].

    Per-(unit, state) normalization over the batch axis with genome gain γ and shift β [P, K].
    Computed as (h − mean)·s + β with s = γ/sqrt(var + ε), and differentiated by the closed
    form of batch normalization, with x̂ = (h − mean)/sqrt(var + ε) and B the batch:
        ∂β = Σ_{b,i} g,   ∂γ = Σ_{b,i} g·x̂,   ∂h = s·(g − mean_b g − x̂·mean_b(g·x̂)),
    which needs only h − mean and the per-unit statistics (TensorFlow's generic gradient of
    the same expression keeps and walks several more tensors of h's size).
    """
    mean, variance = tf.nn.moments(h, axes=[2], keepdims=True)
    rstd = tf.math.rsqrt(variance + NORM_EPSILON)
    gain4 = tf.reshape(gain, [tf.shape(gain)[0], -1, 1, 1])
    scale = rstd * gain4
    centered = h - mean
    out = centered * scale + tf.reshape(shift, tf.shape(gain4))

    def gradient(g):
        batch = tf.cast(tf.shape(h)[2], h.dtype)
        sum_g = tf.reduce_sum(g, axis=2, keepdims=True)
        sum_gx = rstd * tf.reduce_sum(g * centered, axis=2, keepdims=True)  # Σ_b g·x̂
        slope = -scale * rstd * sum_gx / batch  # ∂h = s·g + slope·(h − mean) + offset
        offset = -scale * sum_g / batch
        d_h = g * scale + (centered * slope + offset)
        d_gain = tf.reduce_sum(sum_gx, axis=[2, 3])
        d_shift = tf.reduce_sum(sum_g, axis=[2, 3])
        return (
            _sum_to(d_h, tf.shape(h)),
            _sum_to(d_gain, tf.shape(gain)),
            _sum_to(d_shift, tf.shape(shift)),
        )

    return out, gradient


# --------------------------------------------------------------------------------- one step
def input_states(x: tf.Tensor, num_states: int) -> tf.Tensor:
    """Step 1. a_0[..., 0] = x, every other state 0. x [P, B, n] → a_0 [P, K, B, n]."""
    zeros = tf.zeros_like(x)
    return tf.stack([x] + [zeros] * (num_states - 1), axis=1)


def forward(
    genome: Genome, rule: Rule, lower: tf.Tensor, forward_synapses: tf.Tensor, is_output: bool
) -> tf.Tensor:
    """Step 2, one layer: a_{l+1}^c = σ(N(η · Σ_{i,d} W[i, j, c] · ν[c, d] · ã_l[b, i, d])).

    (N applies when `rule.normalize_forward`, at the output layer only if `normalize_output`.)

    (The f·a_{l+1} term of DESIGN §1 vanishes: neurons above the input are zeroed every step.)
    lower a_l [P, K, B, n], forward_synapses W [P, K, n+1, m] → a_{l+1} [P, K, B, m].
    """
    mixed = mix_states(
        _scaled(genome.neuron_update, genome.forward_transform), with_bias_unit(lower)
    )
    h = tf.matmul(mixed, forward_synapses)
    if rule.normalize_forward and (rule.normalize_output or not is_output):
        h = normalize(h, genome.norm_gain, genome.norm_shift)
    return activate(rule.output_activation if is_output else rule.activation, h)


def feedback(rule: Rule, output: tf.Tensor, labels: tf.Tensor) -> tf.Tensor:
    """Step 3: the ground truth enters state 1 of the output layer; no loss is computed.

    `label`: a_L[1] = 2·onehot(y) − 1. `error`: a_L[1] = onehot(y) − softmax(a_L[0]).
    `target` (regression): a_L[1] = y − a_L[0], y real.
    State 0 keeps the prediction; states ≥ 2 are set to 0.
    output [P, K, B, m], labels int [P, B] (`target`: float [P, B]) → [P, K, B, m].
    """
    logits = output[:, 0]
    if rule.feedback == "target":
        signal = tf.cast(labels, logits.dtype)[..., None] - logits
    elif rule.feedback == "label":
        signal = 2.0 * tf.one_hot(labels, tf.shape(logits)[-1], dtype=logits.dtype) - 1.0
    else:
        signal = tf.one_hot(labels, tf.shape(logits)[-1], dtype=logits.dtype) - tf.nn.softmax(
            logits
        )
    signal = tf.broadcast_to(signal, tf.shape(logits))
    rest = [tf.zeros_like(logits)] * (rule.num_states - 2)
    return tf.stack([logits, signal] + rest, axis=1)


def backward(
    genome: Genome, rule: Rule, lower: tf.Tensor, upper: tf.Tensor, synapses: tf.Tensor
) -> tf.Tensor:
    """Step 4, one layer: the feedback travels from a_{l+1} down to a_l.

    Message m[b, i, c] = Σ_{j,d} V[j, i, c] · μ[c, d] · a_{l+1}[b, j, d], then
      additive:              a_l^c ← σ(N(f·a_l^c + η·m^c))
      multiplicative:        a_l^c ← σ(N(f·η·a_l^c·m^c))
      multiplicative_state1: a_l^1 ← σ(N(f·η·a_l^1·m^1)), other states kept.
    With symmetric synapses V = Wᵀ without the bias row, and `synapses` is W [P, K, n+1, m];
    otherwise it is V [P, K, m, n]. lower a_l [P, K, B, n], upper a_{l+1} [P, K, B, m].
    """
    keep, update = genome.neuron_keep, genome.neuron_update
    if rule.backward_mode != "additive":  # f·η·a·m: both gates on the message
        update = keep * update
    mixed = mix_states(_scaled(update, genome.backward_transform), upper)
    if rule.symmetric:
        message = tf.matmul(mixed, synapses, transpose_b=True)[..., :-1]
    else:
        message = tf.matmul(mixed, synapses)
    sigma = rule.backward_activation or rule.activation
    if rule.backward_mode == "multiplicative_state1":
        h = lower[:, 1:2] * message[:, 1:2]
        if rule.normalize_backward:
            h = normalize(h, genome.norm_gain[:, 1:2], genome.norm_shift[:, 1:2])
        return tf.concat([lower[:, :1], activate(sigma, h), lower[:, 2:]], axis=1)
    if rule.backward_mode == "additive":
        h = _gate(keep) * lower + message
    else:
        h = lower * message
    if rule.normalize_backward:
        h = normalize(h, genome.norm_gain, genome.norm_shift)
    return activate(sigma, h)


def hebbian(
    genome: Genome, pre: tf.Tensor, post: tf.Tensor, channels: int, rate: tf.Tensor | None = None
) -> tf.Tensor:
    """Step 5's Hebbian term: ΔW[i, j, c] = mean_b Σ_{e,d} pre[b,i,e]·ν̃[e,c]·μ̃[c,d]·post[b,j,d].

    pre [P, K, B, n], post [P, K, B, m] → ΔW [P, channels, n, m]; `channels` = 1 computes only
    channel 0 (single-channel synapses). With `rate` [P], returns rate·ΔW (the rate and the
    1/B of the mean are folded into the post mixing: no pass over ΔW).
    """
    scale = 1.0 / tf.cast(tf.shape(pre)[2], pre.dtype)
    scale = scale if rate is None else rate * scale
    pre_mixed = mix_states(tf.linalg.matrix_transpose(genome.synapse_pre)[:, :channels], pre)
    post_mixed = mix_states(_scaled(scale, genome.synapse_post[:, :channels]), post)
    return tf.matmul(pre_mixed, post_mixed, transpose_a=True)


def plasticity(genome: Genome, rule: Rule, synapses: tf.Tensor, update: tf.Tensor) -> tf.Tensor:
    """Step 5's update: W ← f̃·W + U [− |ω|·W·Σ_r W_r²] then [α·tanh(W/α)], U = η̃·ΔW.

    synapses [P, K, n, m] (pre axis −2); update U [P, K or 1, n, m] (1 = shared by every
    channel), the Hebbian term already scaled by η̃ (`hebbian(…, rate=genome.synapse_update)`).
    The Oja-like term (paper Eq. 8, first component, learnable multiplier ω) decays each post
    unit's fan-in by its squared norm; saturation bounds every weight by |α|.
    """
    new = _gate(genome.synapse_keep) * synapses + update
    if rule.oja:
        fan_in_norm = tf.reduce_sum(tf.square(synapses), axis=-2, keepdims=True)
        new -= tf.abs(_gate(genome.oja_multiplier)) * synapses * fan_in_norm
    if rule.saturation:
        alpha = tf.abs(_gate(genome.saturation)) + 1e-6
        new = alpha * tf.tanh(new / alpha)
    return new


def update_synapses(
    genome: Genome,
    rule: Rule,
    lower: tf.Tensor,
    upper: tf.Tensor,
    forward_synapses: tf.Tensor,
    backward_synapses: tf.Tensor | None,
):
    """Step 5 for one layer pair: new (W, V). V is None for symmetric rules (it is Wᵀ).

    W is updated with pre = ã_l (with bias unit), post = a_{l+1}; V with the roles swapped:
    pre = a_{l+1}, post = a_l.
    """
    channels = rule.num_states if rule.multichannel else 1
    rate = genome.synapse_update
    new_forward = plasticity(
        genome,
        rule,
        forward_synapses,
        hebbian(genome, with_bias_unit(lower), upper, channels, rate),
    )
    if rule.symmetric:
        return new_forward, None
    new_backward = plasticity(
        genome, rule, backward_synapses, hebbian(genome, upper, lower, channels, rate)
    )
    return new_forward, new_backward

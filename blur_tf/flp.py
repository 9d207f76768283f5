"""FLP (Lindsey & Litwin-Kumar 2020): feedback and local plasticity, and its gradient baseline.

A stack of dense layers whose last N weight matrices are *plastic* within an episode (the inner
state); everything else is meta-learned and constant within an episode (`FlpParams`, leading
axis P = networks). Layers are row-vector: x_l = ReLU(x_{l−1} W_l + c_l), W_l [n_{l−1}, n_l]
(the paper's W_l transposed); the last layer is linear (regression outputs, or logits).

Inner learners (`LEARNERS`), one inner step each, pure functions below:

* `flp`: `flp_step`, the paper's feedback + Oja rule (its docstring has the equations); with
  N = 1 this is *feature reuse* (only the readout is plastic);
* `gradient`: `sgd_step`, the OML-like baseline: plain SGD of the task loss on the plastic
  weights, first order (the inner gradient is a constant to the meta-gradient).

Meta-learned (`FlpParams`): every W_l and c_l (the front layers too), and for FLP per plastic
layer the feedback B_l [n_out, n_l], b_l [n_l], the per-synapse plasticity α_l (shaped like W_l,
starting at 0) and the feedback strength β_l (per layer, starting at `feedback_strength`).
Biases are never plastic. The gradient learner's params hold no feedback fields (empty tuples).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple

import numpy as np
import tensorflow as tf

LEARNERS = ("flp", "gradient")


class FlpParams(NamedTuple):
    """Meta-learned parameters of P networks; every field a tuple over layers, leading axis P.

    weights, biases: all L layers (W [P, n, m], c [P, m]); feedback, feedback_biases,
    plasticity, feedback_strength: the N plastic layers (B [P, n_out, m], b [P, m],
    α [P, n, m], β [P]); empty for the gradient learner.
    """

    weights: tuple
    biases: tuple
    feedback: tuple
    feedback_biases: tuple
    plasticity: tuple
    feedback_strength: tuple


def forward(weights: Sequence, biases: Sequence, x: tf.Tensor) -> list:
    """Activities [x_0, …, x_L] of x_l = ReLU(x_{l−1} W_l + c_l); the last layer is linear.

    weights [P, n, m] per layer, biases [P, m], x [P, B, n_0].
    """
    activities = [x]
    for l, (w, c) in enumerate(zip(weights, biases)):
        z = tf.einsum("pbn,pnm->pbm", activities[-1], w) + c[:, None, :]
        activities.append(z if l == len(weights) - 1 else tf.nn.relu(z))
    return activities


def feedback_signal(outputs: tf.Tensor, y: tf.Tensor, regression: bool) -> tf.Tensor:
    """s: the error y − ŷ [P, B, C] (regression, y [P, B] or [P, B, C]) or one-hot y."""
    if regression:
        return (y[..., None] if y.shape.rank == 2 else y) - outputs
    return tf.one_hot(y, tf.shape(outputs)[-1], dtype=outputs.dtype)


def flp_step(
    params: FlpParams,
    plastic: tuple,
    x: tf.Tensor,
    y: tf.Tensor,
    regression: bool = True,
    hidden_scale: float = 1.0,
) -> tuple:
    """One FLP inner step on a batch: the new plastic weights (last N layers).

    With the front weights of `params` and the current plastic weights W_l (l > L − N):

        forward      x_l = ReLU(x_{l−1} W_l + c_l)        (x_L linear: ŷ)
        feedback     s = y − ŷ (regression) | one-hot y (classification)
        activity     h_l = β_l·ReLU(s B_l + b_l) + (1 − β_l)·x_l
                     (the classification readout is clamped: h_L = one-hot y)
        Oja update   W_l += α_l ⊙ (x_{l−1}ᵀ h_l − W_l · diag(Σ_b h_l²))

    summed over the batch b, with x_{l−1} the *pre-feedback* presynaptic activity of the
    forward pass. Biases are not plastic. x [P, B, n_0]; y [P, B] (targets or labels).
    `hidden_scale` multiplies the updates of the plastic layers below the readout (the
    authors' classification setting: 100, their readout/penultimate rate ratio of 1e-2).
    """
    num_plastic = len(plastic)
    front = len(params.weights) - num_plastic
    weights = (*params.weights[:front], *plastic)
    activities = forward(weights, params.biases, x)
    signal = feedback_signal(activities[-1], y, regression)
    new = []
    for j, w in enumerate(plastic):
        l = front + j  # weight index: x_{l} -> x_{l+1}
        feedback = tf.nn.relu(
            tf.einsum("pbc,pcm->pbm", signal, params.feedback[j])
            + params.feedback_biases[j][:, None, :]
        )
        beta = params.feedback_strength[j][:, None, None]
        h = beta * feedback + (1.0 - beta) * activities[l + 1]
        if not regression and l == len(weights) - 1:
            h = signal
        pre = activities[l]
        hebbian = tf.einsum("pbn,pbm->pnm", pre, h)
        decay = w * tf.reduce_sum(tf.square(h), axis=1)[:, None, :]
        scale = 1.0 if l == len(weights) - 1 else hidden_scale
        new.append(w + scale * params.plasticity[j] * (hebbian - decay))
    return tuple(new)


def task_loss(outputs: tf.Tensor, y: tf.Tensor, regression: bool) -> tf.Tensor:
    """[P]: mean over the batch of the squared error (regression, summed over outputs) or the
    softmax cross-entropy (classification, y int labels)."""
    if regression:
        target = y[..., None] if y.shape.rank == 2 else y
        return tf.reduce_mean(tf.reduce_sum(tf.square(outputs - target), -1), -1)
    return tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(y, outputs), -1)


def sgd_step(
    params: FlpParams,
    plastic: tuple,
    x: tf.Tensor,
    y: tf.Tensor,
    learning_rate: float,
    regression: bool = True,
) -> tuple:
    """One first-order SGD step on the plastic weights (the OML-like baseline):

        W_l ← W_l − η · sg(∂ℓ/∂W_l),   ℓ = `task_loss` of the network on (x, y), per network,

    where sg(·) stops the meta-gradient (first order: the inner gradient is a constant).
    """
    front = len(params.weights) - len(plastic)
    with tf.GradientTape() as tape:
        tape.watch(plastic)
        outputs = forward((*params.weights[:front], *plastic), params.biases, x)[-1]
        loss = tf.reduce_sum(task_loss(outputs, y, regression))
    gradients = tape.gradient(loss, plastic)
    return tuple(w - learning_rate * tf.stop_gradient(g) for w, g in zip(plastic, gradients))


class FlpNetwork:
    """An FLP (or gradient-learner) network: layer sizes, N plastic layers, the inner rule.

    The network interface of the meta-learning seams (as `BlurNetwork`): `init_synapses`
    (no per-network random state: the plastic weights start at the meta-learned W),
    `unroll(params, state, batch_fn, length)` → final plastic weights and
    `outputs(params, plastic, x)`; plus `initial_params` (Kaiming-normal W and B, zero biases,
    α = 0, β = `feedback_strength`) and `check_params`.

    Args:
      layer_sizes: input size, hidden sizes, output size.
      num_plastic: N, the plastic (last) layers, 1 ≤ N ≤ L (N = 1: feature reuse).
      learner: 'flp' or 'gradient'.
      regression: targets are real (error feedback, squared loss) or labels (one-hot).
      inner_learning_rate: the gradient learner's SGD rate.
      feedback_strength: initial β.
      learn_feedback_strength: False clamps β at `feedback_strength` (no meta-gradient; the
        paper's classification setting, β = 1).
      hidden_plasticity_scale: `flp_step`'s `hidden_scale`.
    """

    def __init__(
        self,
        layer_sizes: Sequence[int],
        num_plastic: int,
        learner: str = "flp",
        regression: bool = True,
        inner_learning_rate: float = 0.003,
        feedback_strength: float = 0.5,
        learn_feedback_strength: bool = True,
        hidden_plasticity_scale: float = 1.0,
    ):
        sizes = tuple(layer_sizes)
        if len(sizes) < 2 or any(not isinstance(n, int) or n < 1 for n in sizes):
            raise ValueError(f"layer sizes must be >= 2 positive ints, got {list(layer_sizes)}")
        if not isinstance(num_plastic, int) or not 1 <= num_plastic <= len(sizes) - 1:
            raise ValueError(
                f"num_plastic must be an int in [1, {len(sizes) - 1}], got {num_plastic!r}"
            )
        if learner not in LEARNERS:
            raise ValueError(f"learner {learner!r}; one of {LEARNERS}")
        for name, value in (
            ("inner_learning_rate", inner_learning_rate),
            ("hidden_plasticity_scale", hidden_plasticity_scale),
        ):
            if not value > 0:
                raise ValueError(f"{name} must be > 0, got {value}")
        self.layer_sizes, self.num_plastic, self.learner = sizes, num_plastic, learner
        self.regression, self.inner_learning_rate = regression, float(inner_learning_rate)
        self.feedback_strength = float(feedback_strength)
        self.learn_feedback_strength = bool(learn_feedback_strength)
        self.hidden_plasticity_scale = float(hidden_plasticity_scale)

    @property
    def num_layers(self) -> int:
        return len(self.layer_sizes) - 1

    def initial_params(self, population: int = 1, seed: int = 0) -> FlpParams:
        """Fresh meta-parameters (class doc), deterministic in `seed`, as float32 arrays."""
        rng = np.random.default_rng(seed)
        kaiming = lambda fan_in, shape: (
            rng.standard_normal((population, *shape)) * np.sqrt(2.0 / fan_in)
        ).astype(np.float32)
        pairs = list(zip(self.layer_sizes[:-1], self.layer_sizes[1:]))
        weights = tuple(kaiming(n, (n, m)) for n, m in pairs)
        biases = tuple(np.zeros((population, m), np.float32) for _, m in pairs)
        plastic = pairs[len(pairs) - self.num_plastic :]
        if self.learner != "flp":
            return FlpParams(weights, biases, (), (), (), ())
        n_out = self.layer_sizes[-1]
        return FlpParams(
            weights,
            biases,
            feedback=tuple(kaiming(n_out, (n_out, m)) for _, m in plastic),
            feedback_biases=tuple(np.zeros((population, m), np.float32) for _, m in plastic),
            plasticity=tuple(np.zeros((population, n, m), np.float32) for n, m in plastic),
            feedback_strength=tuple(
                np.full([population], self.feedback_strength, np.float32) for _ in plastic
            ),
        )

    def check_params(self, params) -> None:
        """ValueError unless `params` are `FlpParams` shaped for this network and learner."""
        if not isinstance(params, FlpParams):
            raise ValueError(f"expected FlpParams, got {type(params).__name__}")
        expected = self.initial_params(1)
        for field, got, want in zip(FlpParams._fields, params, expected):
            if len(got) != len(want) or any(
                tuple(g.shape[1:]) != w.shape[1:] for g, w in zip(got, want)
            ):
                raise ValueError(
                    f"FlpParams.{field} has shapes {[list(g.shape) for g in got]}; this "
                    f"{self.learner} network needs {[['P', *w.shape[1:]] for w in want]}"
                )

    def init_synapses(self, population: int, seed: int = 0) -> tuple:
        """No per-network random state: the plastic weights start at the meta-learned W."""
        del population, seed
        return ()

    def step(self, params: FlpParams, plastic: tuple, x, y) -> tuple:
        """One inner step of the network's learner (`flp_step` or `sgd_step`)."""
        if self.learner == "flp":
            if not self.learn_feedback_strength:
                params = params._replace(
                    feedback_strength=tuple(tf.stop_gradient(b) for b in params.feedback_strength)
                )
            return flp_step(params, plastic, x, y, self.regression, self.hidden_plasticity_scale)
        return sgd_step(params, plastic, x, y, self.inner_learning_rate, self.regression)

    def plastic_weights(self, params: FlpParams, state) -> tuple:
        """The plastic weights of inner state `state`: () (`init_synapses`, before the first
        step) means the meta-learned initial weights."""
        return (
            tuple(state) if state else tuple(params.weights[self.num_layers - self.num_plastic :])
        )

    def unroll(self, params: FlpParams, state, batch_fn: Callable, length) -> tuple:
        """`length` inner steps on `batch_fn(t)` = (x [P, B, n], y [P, B]) in a while loop,
        from the plastic weights of `state` (`plastic_weights`); the final plastic weights."""
        plastic = self.plastic_weights(params, state)

        def body(t, plastic):
            x, y = batch_fn(t)
            return t + 1, self.step(params, plastic, x, y)

        return tf.while_loop(lambda t, _: t < length, body, (tf.constant(0), plastic))[1]

    def outputs(self, params: FlpParams, state: tuple, x: tf.Tensor) -> tf.Tensor:
        """Outputs [P, B, n_L] of the network in inner state `state` (`plastic_weights`)."""
        front = self.num_layers - self.num_plastic
        plastic = self.plastic_weights(params, state)
        return forward((*params.weights[:front], *plastic), params.biases, x)[-1]

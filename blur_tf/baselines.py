"""Gradient baselines: SGD, SGD with momentum and Adam on the BLUR network's MLP (DESIGN §2).

A baseline network is a plain MLP with exactly the BLUR network's layer sizes: hidden layers
`φ(x @ W + b)` (φ = relu or tanh), a linear output layer (logits), trained on softmax
cross-entropy (mean over the batch). Its initial weights are channel 0 of the BLUR network's
initial forward synapses (`BlurNetwork(layer_sizes, init_rule).init_synapses(1, seed)`, kernel =
all rows but the last, bias = last row), so the same seed gives the same initial network as a
BLUR evaluation with a single-channel rule (in particular `Rule.backprop()`).

**Vectorized sweep.** A sweep trains one optimizer with one activation for every learning rate
L and every seed S at once: parameters carry two leading config axes [L, S, …] (kernels
[L, S, n, m], biases [L, S, 1, m]); the batch of step t is the same for every learning rate
(x [S, B, n], broadcast over L by batched matmuls). Gradients come from one `tf.GradientTape`
over the sum of the per-config losses (config c's loss depends only on config c's weights, so
each gradient is that config's own). The optimizer update is implemented here over the config
axes with Keras 3 semantics and default hyper-parameters (tests check it against
`keras.optimizers` to float32 tolerance):

  sgd:      w ← w − lr·g
  momentum: m ← 0.9·m − lr·g;  w ← w + m                       (keras SGD(momentum=0.9))
  adam:     m ← m + (g − m)(1 − β₁);  v ← v + (g² − v)(1 − β₂);
            w ← w − lr·sqrt(1 − β₂ᵗ)/(1 − β₁ᵗ) · m / (sqrt(v) + ε)   (β₁ 0.9, β₂ 0.999, ε 1e-7)

Training runs in a compiled `tf.while_loop` segment by segment between the requested horizons
(start and stop are tensors: no retrace), and test accuracy is measured at every horizon on the
same held-out examples for every config.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

import numpy as np
import tensorflow as tf

from blur_tf.network import BlurNetwork
from blur_tf.rule import Rule

OPTIMIZERS = ("sgd", "momentum", "adam")
ACTIVATIONS = ("relu", "tanh")
MOMENTUM = 0.9
ADAM_BETA_1 = 0.9
ADAM_BETA_2 = 0.999
ADAM_EPSILON = 1e-7
# Half-decades 1e-4 … 10 (11 values, five decades).
DEFAULT_LEARNING_RATES = (1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 0.1, 0.3, 1.0, 3.0, 10.0)
DEFAULT_EVAL_CHUNK = 2000

# A batch function maps a step index (int32 scalar tensor) to (x [S, B, n] f32, y [S, B] i32),
# one batch per seed; it runs inside the compiled training loop.
BatchFn = Callable[[tf.Tensor], "tuple[tf.Tensor, tf.Tensor]"]


@dataclasses.dataclass(frozen=True)
class SweepResult:
    """Outcome of one sweep.

    Attributes:
      accuracy: float64 [L, S, H], test accuracy of every (learning rate, seed) at every horizon.
      params: final parameters, a tuple of (kernel [L, S, n, m], bias [L, S, 1, m]) per layer.
    """

    accuracy: np.ndarray
    params: tuple


# ------------------------------------------------------------------------------- validation
def check_optimizer(name: str) -> str:
    if name not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {name!r}; known: {', '.join(OPTIMIZERS)}")
    return name


def check_activation(name: str) -> str:
    if name not in ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r}; known: {', '.join(ACTIVATIONS)}")
    return name


def check_learning_rates(learning_rates) -> tuple[float, ...]:
    rates = tuple(float(r) for r in learning_rates)
    if not rates or any(not np.isfinite(r) or r <= 0 for r in rates):
        raise ValueError(
            f"learning rates must be a non-empty list of positive finite numbers, "
            f"got {list(learning_rates)}"
        )
    return rates


def check_horizons(horizons) -> tuple[int, ...]:
    """Sorted, distinct, positive inner-step horizons; ValueError otherwise."""
    values = list(horizons)
    if not values or any(isinstance(h, bool) or int(h) != h or h < 1 for h in values):
        raise ValueError(f"horizons must be positive integers, got {values}")
    if len(set(values)) != len(values):
        raise ValueError(f"horizons must be distinct, got {values}")
    return tuple(sorted(int(h) for h in values))


def check_seeds(seeds) -> tuple[int, ...]:
    values = list(seeds)
    if not values or any(int(s) != s or s < 0 for s in values) or len(set(values)) != len(values):
        raise ValueError(f"seeds must be distinct non-negative integers, got {values}")
    return tuple(int(s) for s in values)


# ------------------------------------------------------------------------------- networks
def initial_params(layer_sizes: Sequence[int], seeds: Sequence[int], init_rule: Rule | None = None):
    """Initial MLP parameters of every seed, equal to channel 0 of BLUR's initial synapses.

    Returns a tuple with one (kernel [S, n, m], bias [S, 1, m]) pair per layer; seed s gives
    `BlurNetwork(layer_sizes, init_rule).init_synapses(1, s)` channel 0 (init_rule defaults to
    `Rule.backprop()`).
    """
    network = BlurNetwork(layer_sizes, init_rule or Rule.backprop())
    per_seed = [network.init_synapses(1, int(s)) for s in check_seeds(seeds)]
    params = []
    for l in range(network.num_layers):
        forward = tf.concat([synapses[l][0] for synapses in per_seed], axis=0)[..., 0]
        params.append((forward[:, :-1], forward[:, -1:]))
    return tuple(params)


def mlp_logits(params, x, activation: str):
    """Logits of MLPs with leading config axes: φ(x @ W + b) per hidden layer, linear output.

    params: tuple of (kernel [..., n, m], bias [..., 1, m]); x [..., B, n_0] broadcastable
    against the kernels' leading axes. Returns [..., B, n_L].
    """
    phi = {"relu": tf.nn.relu, "tanh": tf.tanh}[check_activation(activation)]
    h = x
    for l, (kernel, bias) in enumerate(params):
        h = tf.matmul(h, kernel) + bias
        if l < len(params) - 1:
            h = phi(h)
    return h


def count_correct(logits, labels):
    """Correct predictions per config: logits [..., B, C], labels [B] → int32 [...].

    A prediction with any non-finite logit (a diverged network) counts as wrong.
    """
    predicted = tf.argmax(logits, axis=-1, output_type=tf.int32)
    finite = tf.reduce_all(tf.math.is_finite(logits), axis=-1)
    correct = tf.logical_and(tf.equal(predicted, tf.cast(labels, tf.int32)), finite)
    return tf.reduce_sum(tf.cast(correct, tf.int32), axis=-1)


# ------------------------------------------------------------------------------- optimizers
def init_optimizer_state(optimizer: str, params):
    """Optimizer slots shaped like `params`: () for sgd, momenta for momentum, (m, v) for adam."""
    zeros = tf.nest.map_structure(tf.zeros_like, params)
    return {
        "sgd": (),
        "momentum": (zeros,),
        "adam": (zeros, tf.nest.map_structure(tf.zeros_like, params)),
    }[check_optimizer(optimizer)]


def apply_optimizer(optimizer: str, params, grads, state, learning_rates, step):
    """One optimizer update over the config axes (Keras 3 semantics, see module docstring).

    params, grads: matching structures of tensors whose leading axis is the learning-rate axis
    L; learning_rates [L]; step: int32 scalar, the number of updates already applied (Adam's
    bias correction uses step + 1). Returns (new params, new state).
    """
    check_optimizer(optimizer)
    flat_params, flat_grads = tf.nest.flatten(params), tf.nest.flatten(grads)

    def lr_like(t):
        return tf.reshape(learning_rates, [-1] + [1] * (t.shape.rank - 1))

    if optimizer == "sgd":
        new = [w - lr_like(w) * g for w, g in zip(flat_params, flat_grads)]
        return tf.nest.pack_sequence_as(params, new), ()
    if optimizer == "momentum":
        momenta = [
            MOMENTUM * m - lr_like(w) * g
            for w, g, m in zip(flat_params, flat_grads, tf.nest.flatten(state[0]))
        ]
        new = [w + m for w, m in zip(flat_params, momenta)]
        return (tf.nest.pack_sequence_as(params, new), (tf.nest.pack_sequence_as(params, momenta),))
    t = tf.cast(step + 1, tf.float32)
    correction = tf.sqrt(1.0 - ADAM_BETA_2**t) / (1.0 - ADAM_BETA_1**t)
    new, first, second = [], [], []
    for w, g, m, v in zip(
        flat_params, flat_grads, tf.nest.flatten(state[0]), tf.nest.flatten(state[1])
    ):
        m = m + (g - m) * (1.0 - ADAM_BETA_1)
        v = v + (tf.square(g) - v) * (1.0 - ADAM_BETA_2)
        new.append(w - lr_like(w) * correction * m / (tf.sqrt(v) + ADAM_EPSILON))
        first.append(m)
        second.append(v)
    pack = lambda values: tf.nest.pack_sequence_as(params, values)  # noqa: E731
    return pack(new), (pack(first), pack(second))


def cross_entropy(logits, labels):
    """Sum over configs of each config's mean softmax cross-entropy; logits [L, S, B, C]."""
    labels = tf.broadcast_to(tf.cast(labels, tf.int32), tf.shape(logits)[:-1])
    losses = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits)
    return tf.reduce_sum(tf.reduce_mean(losses, axis=-1))


# ------------------------------------------------------------------------------- sweeps
class BaselineSweep:
    """Compiled training and evaluation of one optimizer × activation over L lrs × S seeds.

    Args:
      layer_sizes: input size, hidden sizes…, number of classes (as the BLUR network's).
      optimizer: one of OPTIMIZERS.
      activation: hidden activation, one of ACTIVATIONS.
      learning_rates: the L learning rates.
      batch_fn: step index → (x [S, B, n], y [S, B]), one batch per seed, in-graph.

    `train(params, state, start, stop)` and `correct(params, x, y)` are `tf.function`s that do
    not retrace for new start/stop values or equal-shaped inputs.
    """

    def __init__(
        self,
        layer_sizes: Sequence[int],
        optimizer: str,
        activation: str,
        learning_rates: Sequence[float],
        batch_fn: BatchFn,
    ):
        self.layer_sizes = tuple(int(n) for n in layer_sizes)
        self.optimizer = check_optimizer(optimizer)
        self.activation = check_activation(activation)
        self.learning_rates = check_learning_rates(learning_rates)
        self._lrs = tf.constant(self.learning_rates, tf.float32)
        self._batch_fn = batch_fn
        # Per-instance closures (not bound methods), so TensorFlow's retracing detector sees
        # each sweep's functions as distinct functions; each traces once per input shape.
        self.train = tf.function(
            lambda params, state, start, stop: self._train(params, state, start, stop)
        )
        self.correct = tf.function(
            lambda params, x, y: self._correct(params, x, y), reduce_retracing=True
        )

    def init(self, seeds: Sequence[int], init_rule: Rule | None = None):
        """(params, optimizer state), config axes [L, S]; each lr starts from each seed's net."""
        num_lrs = len(self.learning_rates)
        params = tf.nest.map_structure(
            lambda t: tf.tile(t[None], [num_lrs] + [1] * t.shape.rank),
            initial_params(self.layer_sizes, seeds, init_rule),
        )
        return params, init_optimizer_state(self.optimizer, params)

    def _train(self, params, state, start, stop):
        def body(t, params, state):
            x, y = self._batch_fn(t)
            with tf.GradientTape() as tape:
                tape.watch(params)
                loss = cross_entropy(mlp_logits(params, x[None], self.activation), y[None])
            grads = tape.gradient(loss, params)
            params, state = apply_optimizer(self.optimizer, params, grads, state, self._lrs, t)
            return t + 1, params, state

        _, params, state = tf.while_loop(
            lambda t, *_: t < stop, body, (tf.convert_to_tensor(start, tf.int32), params, state)
        )
        return params, state

    def _correct(self, params, x, y):
        return count_correct(mlp_logits(params, x[None, None], self.activation), y)


def evaluate_accuracy(
    correct_fn: Callable, state, eval_x, eval_y, chunk: int = DEFAULT_EVAL_CHUNK
) -> np.ndarray:
    """Accuracy of every config on (eval_x [N, n], eval_y [N]), in chunks of `chunk` examples.

    correct_fn(state, x_chunk, y_chunk) returns correct counts per config.
    """
    n = int(eval_x.shape[0])
    if n == 0:
        raise ValueError("the evaluation set is empty")
    total = 0
    for begin in range(0, n, chunk):
        total += (
            correct_fn(state, eval_x[begin : begin + chunk], eval_y[begin : begin + chunk])
            .numpy()
            .astype(np.int64)
        )
    return total / n


def sweep_curves(
    layer_sizes: Sequence[int],
    optimizer: str,
    activation: str,
    learning_rates: Sequence[float],
    seeds: Sequence[int],
    batch_fn: BatchFn,
    eval_x,
    eval_y,
    horizons: Sequence[int],
    init_rule: Rule | None = None,
    eval_chunk: int = DEFAULT_EVAL_CHUNK,
) -> SweepResult:
    """Trains every (learning rate, seed) for max(horizons) steps; accuracy at each horizon.

    batch_fn must return one batch per seed, in the order of `seeds`; eval_x [N, n_0], eval_y
    [N] are the held-out examples (the same for every config). Returns a SweepResult with
    accuracy [L, S, H].
    """
    horizons = check_horizons(horizons)
    sweep = BaselineSweep(layer_sizes, optimizer, activation, learning_rates, batch_fn)
    params, state = sweep.init(seeds, init_rule)
    eval_x = tf.convert_to_tensor(eval_x, tf.float32)
    eval_y = tf.convert_to_tensor(eval_y, tf.int32)
    accuracies, done = [], 0
    for horizon in horizons:
        params, state = sweep.train(params, state, tf.constant(done), tf.constant(horizon))
        done = horizon
        accuracies.append(evaluate_accuracy(sweep.correct, params, eval_x, eval_y, eval_chunk))
    return SweepResult(accuracy=np.stack(accuracies, axis=-1), params=params)

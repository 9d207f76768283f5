"""BlurNetwork (pure: synapses in, synapses out) and BlurModel (a keras.Model that learns by BLUR).

Synapses in the public API are a tuple with one `(forward, backward)` pair per layer pair, in the
DESIGN layout: forward [P, n_l + 1, n_{l+1}, K] (last row = bias), backward [P, n_{l+1}, n_l, K].
Inside, they are converted once to the rule's channel-major layout (see rule.py).
"""

from __future__ import annotations

import contextlib
import re
import warnings
from collections.abc import Callable, Sequence

import keras
import numpy as np
import tensorflow as tf

from blur_tf import rule as rule_lib
from blur_tf.files import write_directory_atomic
from blur_tf.genome import Genome
from blur_tf.layers import BlurDense, from_channel_major, init_layer_synapses, to_channel_major
from blur_tf.rule import Rule


def _check_layer_sizes(layer_sizes) -> tuple[int, ...]:
    sizes = tuple(int(n) for n in layer_sizes)
    if len(sizes) < 2 or any(n < 1 for n in sizes) or list(sizes) != list(layer_sizes):
        raise ValueError(
            f"layer_sizes must be >= 2 positive ints (input … output), got {list(layer_sizes)}"
        )
    return sizes


def check_batch(layer_sizes: Sequence[int], x, y=None) -> None:
    """ValueError naming the problem for a malformed batch: x [(P,) B, n_0], labels [(P,) B].

    Shapes are always checked; values (finite inputs, labels in range) when they are concrete.
    """
    x_shape, n_in, n_out = tuple(x.shape), layer_sizes[0], layer_sizes[-1]
    if len(x_shape) not in (2, 3) or x_shape[-1] != n_in:
        raise ValueError(
            f"inputs must have shape [B, {n_in}] or [P, B, {n_in}] "
            f"(input width {n_in}), got {list(x_shape)}"
        )
    concrete = not isinstance(x, tf.Tensor) or hasattr(x, "numpy")
    if concrete and not np.all(np.isfinite(np.asarray(x, np.float32))):
        raise ValueError("inputs contain non-finite values (NaN or Inf)")
    if y is None:
        return
    if tuple(y.shape) != x_shape[:-1]:
        raise ValueError(
            f"labels must have shape {list(x_shape[:-1])} (class ids), got {list(y.shape)}"
        )
    if not isinstance(y, tf.Tensor) or hasattr(y, "numpy"):
        labels = np.asarray(y)
        if labels.size and (
            not np.issubdtype(labels.dtype, np.integer) and np.any(labels != np.round(labels))
        ):
            raise ValueError("labels must be integer class ids")
        if labels.size and (labels.min() < 0 or labels.max() >= n_out):
            raise ValueError(
                f"labels out of range: got values in [{labels.min()}, "
                f"{labels.max()}], the network has {n_out} classes (0…{n_out - 1})"
            )


class BlurNetwork:
    """A stack of BLUR layers as pure functions of (genome, synapses, data).

    Args:
      layer_sizes: neurons per layer, input first and output (number of classes) last.
      rule: the static options; `Rule()` if omitted. `Rule(feedback='target')` makes the
        network a regressor (`regression`): one output, real targets in place of labels.
      jit_compile: compile `step`, `predict` and `unroll` with XLA.
    """

    def __init__(
        self, layer_sizes: Sequence[int], rule: Rule | None = None, jit_compile: bool = False
    ):
        self.layer_sizes = _check_layer_sizes(layer_sizes)
        self.rule = rule or Rule()
        if self.regression and self.layer_sizes[-1] != 1:
            raise ValueError(
                f"Rule(feedback='target') regresses one real target: the output layer must have "
                f"1 unit, got layer sizes {list(self.layer_sizes)}"
            )
        compiled = lambda fn: tf.function(fn, reduce_retracing=True, jit_compile=jit_compile)
        self._compiled_step = compiled(self._step_public)
        self._compiled_predict = compiled(self._predict_public)
        self._compiled_unroll = compiled(self._unroll_tensors)

    @property
    def num_layers(self) -> int:
        """Number of synapse layers (layer pairs)."""
        return len(self.layer_sizes) - 1

    @property
    def regression(self) -> bool:
        """True under `Rule(feedback='target')`: y are real targets, not class ids."""
        return self.rule.feedback == "target"

    def _as_targets(self, y):
        return _as_float(y) if self.regression else _as_labels(y)

    # ----------------------------------------------------------------------------- public API
    def init_synapses(self, population: int = 1, seed: int = 0):
        """Fresh synapses for `population` independent networks, deterministic in `seed`."""
        return tuple(
            init_layer_synapses(n, m, self.rule, population, seed, layer_index=l)
            for l, (n, m) in enumerate(zip(self.layer_sizes[:-1], self.layer_sizes[1:]))
        )

    def step(self, genome: Genome, synapses, x, y):
        """One inner step (DESIGN §1) on batch (x [(P,) B, n_0], y [(P,) B]) → new synapses."""
        self._check(genome, synapses, x, y)
        return self._compiled_step(genome, synapses, _as_float(x), self._as_targets(y))

    def predict(self, genome: Genome, synapses, x):
        """Logits (state 0 of the output layer after a forward pass): [P, B, n_L]."""
        self._check(genome, synapses, x)
        return self._compiled_predict(genome, synapses, _as_float(x))

    def unroll(self, genome: Genome, synapses, batches, length):
        """`length` inner steps in a `tf.while_loop`; returns the final synapses.

        batches: either a pair (xs [T, (P,) B, n_0], ys [T, (P,) B]) of which the first `length`
        steps are used, or a callable `step_index -> (x, y)` evaluated inside the loop (e.g. a
        task sampler). `length` may be a tensor: changing it does not retrace. Differentiable
        with respect to the genome (wrap the call in a `tf.GradientTape`).
        Called inside a `tf.function`, the loop is built inline.
        """
        self.rule.check_genome(genome)
        length = tf.convert_to_tensor(length, tf.int32)
        if callable(batches):
            return self._unroll(genome, synapses, batches, length)
        xs, ys = _as_float(batches[0]), self._as_targets(batches[1])
        if xs.shape[:-1] != ys.shape or xs.shape.rank not in (3, 4):
            raise ValueError(
                f"batches must be xs [T, (P,) B, n] and ys [T, (P,) B], got "
                f"{list(xs.shape)} and {list(ys.shape)}"
            )
        if hasattr(length, "numpy"):
            if int(length) > xs.shape[0]:
                raise ValueError(f"unroll length {int(length)} exceeds the {xs.shape[0]} batches")
            self._check(genome, synapses, tf.reshape(xs, [-1, xs.shape[-1]]), tf.reshape(ys, [-1]))
        return self._compiled_unroll(genome, synapses, xs, ys, length)

    # ----------------------------------------------------------------------------- internals
    def step_channel_major(self, genome: Genome, forwards, backwards, x, y):
        """One inner step in the rule layout; returns (forwards, backwards, logits [P, B, n_L]).

        forwards: tuple of W [P, K, n+1, m]; backwards: tuple of V [P, K, m, n] (empty for
        symmetric rules); x [P, B, n_0]; y [P, B].
        """
        rule = self.rule
        states = [rule_lib.input_states(x, rule.num_states)]
        for l, forward_synapses in enumerate(forwards):
            states.append(
                rule_lib.forward(
                    genome, rule, states[-1], forward_synapses, is_output=l == self.num_layers - 1
                )
            )
        logits = states[-1][:, 0]
        states[-1] = rule_lib.feedback(rule, states[-1], y)
        feedback_synapses = forwards if rule.symmetric else backwards
        for l in range(self.num_layers - 1, 0, -1):
            states[l] = rule_lib.backward(
                genome, rule, states[l], states[l + 1], feedback_synapses[l]
            )
        updated = [
            rule_lib.update_synapses(
                genome,
                rule,
                states[l],
                states[l + 1],
                forwards[l],
                None if rule.symmetric else backwards[l],
            )
            for l in range(self.num_layers)
        ]
        new_forwards = tuple(w for w, _ in updated)
        new_backwards = () if rule.symmetric else tuple(v for _, v in updated)
        return new_forwards, new_backwards, logits

    def predict_channel_major(self, genome: Genome, forwards, x):
        """Forward pass only, rule layout: logits [P, B, n_L]."""
        states = rule_lib.input_states(x, self.rule.num_states)
        for l, forward_synapses in enumerate(forwards):
            states = rule_lib.forward(
                genome, self.rule, states, forward_synapses, is_output=l == self.num_layers - 1
            )
        return states[:, 0]

    def outputs(self, genome: Genome, synapses, x):
        """Logits [P, B, n_L] of synapses in the public layout, built inline (no checks): the
        network interface the estimators use (`FlpNetwork.outputs` is the other)."""
        return self.predict_channel_major(genome, self.to_channel_major(synapses)[0], x)

    def to_channel_major(self, synapses):
        pairs = [to_channel_major(w, v, self.rule) for w, v in synapses]
        forwards = tuple(w for w, _ in pairs)
        backwards = () if self.rule.symmetric else tuple(v for _, v in pairs)
        return forwards, backwards

    def from_channel_major(self, forwards, backwards):
        backwards = backwards or (None,) * len(forwards)
        return tuple(from_channel_major(w, v) for w, v in zip(forwards, backwards))

    def _step_public(self, genome, synapses, x, y):
        forwards, backwards = self.to_channel_major(synapses)
        forwards, backwards, _ = self.step_channel_major(
            genome, forwards, backwards, _with_population(x, 2), _with_population(y, 1)
        )
        return self.from_channel_major(forwards, backwards)

    def _predict_public(self, genome, synapses, x):
        forwards, _ = self.to_channel_major(synapses)
        return self.predict_channel_major(genome, forwards, _with_population(x, 2))

    def _unroll_tensors(self, genome, synapses, xs, ys, length):
        return self._unroll(genome, synapses, lambda t: (xs[t], ys[t]), length)

    def _unroll(self, genome, synapses, batch_fn: Callable, length, observe=None):
        """The inner loop. `observe(forwards)`, if given, is recorded before the first step and
        after every step; returns (final synapses, stacked observations [length + 1, …])."""
        forwards, backwards = self.to_channel_major(synapses)
        observed = tf.TensorArray(tf.float32, size=length + 1)
        if observe is not None:
            observed = observed.write(0, observe(forwards))

        def body(t, forwards, backwards, observed):
            x, y = batch_fn(t)
            forwards, backwards, _ = self.step_channel_major(
                genome, forwards, backwards, _with_population(x, 2), _with_population(y, 1)
            )
            if observe is not None:
                observed = observed.write(t + 1, observe(forwards))
            return t + 1, forwards, backwards, observed

        _, forwards, backwards, observed = tf.while_loop(
            lambda t, *_: t < length, body, (tf.constant(0), forwards, backwards, observed)
        )
        synapses = self.from_channel_major(forwards, backwards)
        return (synapses, observed.stack()) if observe is not None else synapses

    def accuracy_curve(self, genome: Genome, synapses, batch_fn: Callable, length, x, y):
        """Accuracy on the held-out (x [(P,) N, n_0], y [(P,) N]) before the first inner step and
        after each of `length` steps on `batch_fn(t)`; the loop is the one `unroll` runs.

        Returns (curve [P, length + 1], final synapses). Build it inside a `tf.function`.
        """
        x, y = _with_population(_as_float(x), 2), _with_population(_as_labels(y), 1)

        def observe(forwards):
            return accuracy(self.predict_channel_major(genome, forwards, x), y)

        synapses, curve = self._unroll(
            genome, synapses, batch_fn, tf.convert_to_tensor(length, tf.int32), observe=observe
        )
        return tf.transpose(curve), synapses

    def _check(self, genome, synapses, x, y=None):
        self.rule.check_genome(genome)
        if len(synapses) != self.num_layers:
            raise ValueError(
                f"expected synapses for {self.num_layers} layer pairs, got {len(synapses)}"
            )
        for l, (w, v) in enumerate(synapses):
            n, m, k = self.layer_sizes[l], self.layer_sizes[l + 1], self.rule.num_states
            if tuple(w.shape[1:]) != (n + 1, m, k) or tuple(v.shape[1:]) != (m, n, k):
                raise ValueError(
                    f"synapses of layer {l} have shapes {list(w.shape)}, "
                    f"{list(v.shape)}; expected [P, {n + 1}, {m}, {k}], "
                    f"[P, {m}, {n}, {k}]"
                )
        if self.regression and y is not None:
            check_batch(self.layer_sizes, x)
            if tuple(y.shape) != tuple(x.shape[:-1]):
                raise ValueError(
                    f"targets must have shape {list(x.shape[:-1])}, got {list(y.shape)}"
                )
            return
        check_batch(self.layer_sizes, x, y)


def accuracy(logits, labels):
    """Fraction of argmax(logits) == labels over the last axis: logits [..., B, C] → [...]."""
    correct = tf.equal(tf.argmax(logits, -1, output_type=tf.int32), labels)
    return tf.reduce_mean(tf.cast(correct, tf.float32), axis=-1)


def _as_float(x):
    return tf.convert_to_tensor(x, tf.float32)


def _as_labels(y):
    return tf.cast(tf.convert_to_tensor(y), tf.int32)


def _with_population(t, rank_without_population: int):
    """Adds a population axis of 1 to an unbatched-population tensor (x [B, n]: rank 2, y [B]:
    rank 1)."""
    return t[None] if t.shape.rank == rank_without_population else t


MIN_NORMALIZED_BATCH = 32  # BlurModel warns of smaller predict/evaluate batches
_BATCH_ERROR_PREFIX = "BlurModel: bad batch: "
_BATCH_ERROR = re.compile(
    rf"^assertion failed: \[({re.escape(_BATCH_ERROR_PREFIX)}.*)\]$", re.MULTILINE
)


@contextlib.contextmanager
def _batch_errors():
    """Turns a failed in-graph batch check (InvalidArgumentError and a graph trace) into its
    one-line ValueError."""
    try:
        yield
    except tf.errors.InvalidArgumentError as e:
        match = _BATCH_ERROR.search(e.message)
        if match is None:
            raise
        raise ValueError(match.group(1)) from None


_NO_WEIGHTS = (
    "sample_weight and class_weight cannot apply: BLUR has no loss to weight "
    "(each batch is one inner step of the rule); resample the data instead"
)


def _refuse_weights(kwargs: dict, method: str) -> None:
    given = [k for k in ("sample_weight", "class_weight") if kwargs.get(k) is not None]
    if given:
        raise ValueError(f"BlurModel.{method}: {_NO_WEIGHTS} (got {', '.join(given)})")


def _model_inputs(x, n_in: int):
    """BlurModel inputs as float32: integer and boolean inputs (e.g. uint8 pixels) are cast as
    they are; ValueError for a dict or sequence of inputs or a non-numeric dtype."""
    if isinstance(x, (dict, list, tuple)):
        what = f"a dict with keys {sorted(x)}" if isinstance(x, dict) else f"a {type(x).__name__}"
        raise ValueError(f"BlurModel inputs must be one tensor [N, {n_in}], got {what}")
    x = tf.convert_to_tensor(x)
    if not (x.dtype.is_floating or x.dtype.is_integer or x.dtype == tf.bool):
        raise ValueError(f"BlurModel inputs must be numbers, got dtype {x.dtype.name}")
    return tf.cast(x, tf.float32)


def _unpack(data, n_in: int, method: str):
    """(x float32, y int32) of a fit / evaluate batch; the label checks of `check_batch` that
    concern types (integer class ids), in the graph for float labels."""
    x, y, weights = keras.utils.unpack_x_y_sample_weight(data)
    if weights is not None:
        raise ValueError(f"BlurModel.{method}: {_NO_WEIGHTS}")
    if y is None:
        raise ValueError(
            f"BlurModel.{method} needs (x, y) batches of inputs and class ids; got inputs only"
        )
    x = _model_inputs(x, n_in)
    if isinstance(y, (dict, list, tuple)):
        raise ValueError(
            f"BlurModel labels must be one tensor [N] of class ids, got a {type(y).__name__}"
        )
    y = tf.convert_to_tensor(y)
    if y.dtype.is_floating:
        whole = tf.debugging.Assert(
            tf.reduce_all(tf.equal(y, tf.round(y))),
            [_BATCH_ERROR_PREFIX + "labels must be integer class ids"],
        )
        with tf.control_dependencies([whole]):
            y = tf.identity(y)
    elif not (y.dtype.is_integer or y.dtype == tf.bool):
        raise ValueError(f"BlurModel labels must be integer class ids, got dtype {y.dtype.name}")
    return x, tf.cast(y, tf.int32)


@keras.saving.register_keras_serializable(package="blur_tf")
class BlurModel(keras.Model):
    """A keras.Model of BlurDense layers that learns by BLUR inner steps.

    `fit(x, y, batch_size=…)` performs one inner step per batch (forward, feedback, backward,
    Hebbian update) on the layers' synapse variables: no loss, no gradient, no optimizer.
    `model(x)` and `predict(x)` return logits (state 0 of the output layer); `evaluate(x, y)`
    reports accuracy. The training metric `accuracy` is measured on each batch's forward pass
    before its update. With normalization on, predictions use statistics of the batch they are
    computed on (like batch normalization in training mode), so predict with batches of ≳ 32.

    Bad input (decisions where Keras is silent): array inputs to `fit`, `evaluate` and
    `predict` are checked before any work (input width, finite values, labels in range;
    ValueError naming the problem, synapses unchanged); integer inputs (e.g. uint8 pixels) are
    cast to float32 as they are (scale them yourself). Batches that arrive otherwise (a
    `tf.data.Dataset`, a generator) are checked inside the compiled step, before the batch's
    update is applied (earlier batches stay applied), and the failure surfaces as the same
    one-line ValueError; under `jit_compile=True` XLA drops these in-graph value checks.
    Labels are integer class ids on every path (float labels such as 0.6 are refused);
    `sample_weight` / `class_weight` and a `compile` optimizer, loss or metrics are refused:
    BLUR has no loss to weight or optimize.
    `predict` on an empty array returns an empty [0, classes] array; `predict`/`evaluate` on
    arrays warn when forward normalization meets a batch of fewer than MIN_NORMALIZED_BATCH
    examples (a batch of 1 gives the same output for every input).

    Args:
      layer_sizes: input size, hidden sizes…, number of classes.
      genome: a `Genome` (population 1) or its dict.
      rule: the static options; `Rule(num_states=genome.num_states)` if omitted.
      seed: initial synapses equal `BlurNetwork(layer_sizes, rule).init_synapses(1, seed)`.
    """

    def __init__(
        self,
        layer_sizes: Sequence[int],
        genome: Genome | dict,
        rule: Rule | dict | None = None,
        seed: int = 0,
        **kwargs,
    ):
        super().__init__(**kwargs)
        genome = Genome.from_dict(genome) if isinstance(genome, dict) else genome
        rule = Rule.from_dict(rule) if isinstance(rule, dict) else rule
        rule = rule or Rule(num_states=genome.num_states)
        rule.check_genome(genome)
        if genome.population != 1:
            raise ValueError(
                f"BlurModel needs a genome with population 1, got "
                f"{genome.population}; select one with genome.take([i])"
            )
        self.network = BlurNetwork(layer_sizes, rule)
        self.seed = int(seed)
        self._genome_dict = genome.to_dict()
        self.genome = genome.as_tensors()
        sizes = self.network.layer_sizes
        self.blur_layers = [
            BlurDense(
                m,
                rule.num_states,
                rule=rule,
                is_output=l == len(sizes) - 2,
                seed=seed,
                layer_index=l,
                name=f"blur_dense_{l}",
            )
            for l, m in enumerate(sizes[1:])
        ]
        self.accuracy_tracker = keras.metrics.SparseCategoricalAccuracy(name="accuracy")
        self.compile(optimizer=None)
        self.build()

    @property
    def rule(self) -> Rule:
        return self.network.rule

    @property
    def layer_sizes(self) -> tuple[int, ...]:
        return self.network.layer_sizes

    @property
    def metrics(self):
        return [self.accuracy_tracker]

    def build(self, input_shape=None):
        states = keras.KerasTensor((None, self.layer_sizes[0], self.rule.num_states))
        for layer in self.blur_layers:
            layer.build(states.shape)
            states = keras.KerasTensor(layer.compute_output_shape(states.shape))
        self.built = True

    def compile(self, optimizer=None, loss=None, metrics=None, **kwargs):
        """Keras `compile` without what cannot apply: a BlurModel learns by its rule (no loss,
        no optimizer) and reports accuracy, so an optimizer, loss or metrics are refused
        (ValueError); `run_eagerly`, `jit_compile`, `steps_per_execution` pass through."""
        given = [
            name
            for name, value in (
                ("optimizer", optimizer),
                ("loss", loss),
                ("metrics", metrics),
                ("loss_weights", kwargs.pop("loss_weights", None)),
                ("weighted_metrics", kwargs.pop("weighted_metrics", None)),
            )
            if value is not None
        ]
        if given:
            raise ValueError(
                f"BlurModel.compile: {', '.join(given)} cannot apply: a BlurModel "
                "learns by its rule (no loss, no optimizer) and reports accuracy"
            )
        super().compile(optimizer=None, **kwargs)

    def call(self, x):
        states = _model_inputs(x, self.layer_sizes[0])
        self._check_width(states)
        for layer in self.blur_layers:
            states = layer(states, genome=self.genome)
        return states[..., 0]

    def train_step(self, data):
        x, y = self._checked_batch(*_unpack(data, self.layer_sizes[0], "fit"))
        synapses = [layer.channel_major_synapses() for layer in self.blur_layers]
        forwards = tuple(w for w, _ in synapses)
        backwards = () if self.rule.symmetric else tuple(v for _, v in synapses)
        forwards, backwards, logits = self.network.step_channel_major(
            self.genome, forwards, backwards, x[None], y[None]
        )
        backwards = backwards or (None,) * len(forwards)
        for layer, w, v in zip(self.blur_layers, forwards, backwards):
            layer.assign_channel_major(w, v)
        self.accuracy_tracker.update_state(y, logits[0])
        return {"accuracy": self.accuracy_tracker.result()}

    def test_step(self, data):
        x, y = self._checked_batch(*_unpack(data, self.layer_sizes[0], "evaluate"))
        self.accuracy_tracker.update_state(y, self(x))
        return {"accuracy": self.accuracy_tracker.result()}

    def predict_step(self, data):
        x, _, _ = keras.utils.unpack_x_y_sample_weight(data)
        x, _ = self._checked_batch(_model_inputs(x, self.layer_sizes[0]))
        return self(x)

    def fit(self, x=None, y=None, *args, **kwargs):
        """Keras `fit`; array inputs are validated first (ValueError, nothing changed), and
        `sample_weight` / `class_weight` are refused (BLUR has no loss to weight)."""
        _refuse_weights(kwargs, "fit")
        self._validate(x, y)
        with _batch_errors():
            return super().fit(x, y, *args, **kwargs)

    def evaluate(self, x=None, y=None, batch_size=None, *args, **kwargs):
        """Keras `evaluate` (accuracy); inputs checked as in `fit`, small batches warned of."""
        _refuse_weights(kwargs, "evaluate")
        self._validate(x, y, batch_size, "evaluate")
        with _batch_errors():
            return super().evaluate(x, y, batch_size, *args, **kwargs)

    def predict(self, x, batch_size=None, *args, **kwargs):
        """Keras `predict`: logits [N, classes]; array inputs are checked first (width, finite
        values), an empty array gives an empty result, small batches are warned of."""
        if self._validate(x, None, batch_size, "predict") == 0:
            return np.zeros((0, self.layer_sizes[-1]), np.float32)
        with _batch_errors():
            return super().predict(x, batch_size, *args, **kwargs)

    def _validate(self, x, y, batch_size=None, method=None):
        """Checks array inputs before any work (ValueError naming the problem); returns their
        number of examples (None for a dataset or generator). For `method` (predict,
        evaluate), warns when forward normalization meets a batch of < MIN_NORMALIZED_BATCH."""
        if x is None or not (
            isinstance(x, (np.ndarray, list)) or tf.is_tensor(x) or hasattr(x, "__array__")
        ):
            return None
        x = np.asarray(x)
        if x.dtype.kind not in "fiub":
            raise ValueError(f"BlurModel inputs must be numbers, got dtype {x.dtype}")
        if x.dtype != np.float32:  # integers (e.g. uint8 pixels) as they are: scale them first
            x = x.astype(np.float32)
        check_batch(self.layer_sizes, x, None if y is None else np.asarray(y))
        self._check_width(x)
        size = batch_size or 32  # Keras' default
        smallest = len(x) % size or min(size, len(x))
        if method and self.rule.normalize_forward and 0 < smallest < MIN_NORMALIZED_BATCH:
            warnings.warn(
                f"BlurModel.{method}: the rule normalizes over the batch and the smallest batch "
                f"here has {smallest} example(s) ({len(x)} inputs, batch_size {size}); outputs "
                f"depend on the other examples of their batch, and a batch of 1 gives the same "
                f"output for every input: use batches of >= {MIN_NORMALIZED_BATCH}",
                stacklevel=3,
            )
        return len(x)

    def _check_width(self, x):
        """Static shape check, in any mode: inputs must be [N, n_0] (a width unknown while
        tracing passes; `_checked_batch` checks it when the step runs)."""
        shape = tf.TensorShape(x.shape)
        if shape.rank is not None and (
            shape.rank != 2 or shape[-1] not in (None, self.layer_sizes[0])
        ):
            raise ValueError(
                f"BlurModel inputs must be [N, {self.layer_sizes[0]}] (input width "
                f"{self.layer_sizes[0]}), got {list(x.shape)}"
            )

    def _checked_batch(self, x, y=None):
        """(x, y) of a compiled step with the batch checks attached (finite inputs, labels in
        range), so no update of a bad batch is applied; shapes are checked while tracing."""
        if y is not None and x.shape.rank == 1 and y.shape.rank == 2:
            raise ValueError(
                f"BlurModel batches are (x, y): got x of shape {list(x.shape)} and "
                f"y of shape {list(y.shape)}; are x and y swapped?"
            )
        self._check_width(x)
        if y is not None and y.shape.rank not in (None, 1):
            raise ValueError(f"labels must have shape [N] (class ids), got {list(y.shape)}")
        n_in = self.layer_sizes[0]
        checks = [
            tf.debugging.Assert(
                tf.equal(tf.shape(x)[-1], n_in),
                [
                    tf.strings.format(
                        _BATCH_ERROR_PREFIX
                        + f"inputs must be [N, {n_in}] (input width {n_in}), got "
                        "shape {}",
                        tf.shape(x),
                    )
                ],
            )
        ]
        with tf.control_dependencies(checks):  # the value checks need the right width
            checks.append(
                tf.debugging.Assert(
                    tf.reduce_all(tf.math.is_finite(x)),
                    [_BATCH_ERROR_PREFIX + "inputs contain non-finite values (NaN or Inf)"],
                )
            )
        if y is not None:
            n = self.layer_sizes[-1]
            message = tf.strings.format(
                _BATCH_ERROR_PREFIX + "labels out of range: got values from {} to {}, the "
                f"network has {n} classes (0 to {n - 1})",
                (tf.reduce_min(y), tf.reduce_max(y)),
            )
            checks.append(tf.debugging.Assert(tf.reduce_all((y >= 0) & (y < n)), [message]))
        with tf.control_dependencies(checks):
            return tf.identity(x), None if y is None else tf.identity(y)

    def export(
        self,
        filepath,
        format="tf_saved_model",
        verbose=False,
        input_signature=None,
        overwrite=False,
        **kwargs,
    ):
        """Keras export; a `tf_saved_model` is a serving SavedModel of the current synapses.

        Its `serve` (= `serving_default`) signature maps x [B, n_0] float32 to logits [B, n_L]
        (any B unless `input_signature` says otherwise); plain `tf.saved_model.load` runs it.
        The folder is written to a temporary sibling and renamed (nothing half-made on
        failure); an existing non-empty folder is refused unless `overwrite`. `verbose` is off
        by default because Keras would print the temporary folder's name. For a SavedModel that
        keeps learning, see `blur_tf.export.export_learner`. Other formats go to Keras as is.
        """
        if input_signature is None:
            input_signature = [tf.TensorSpec([None, self.layer_sizes[0]], tf.float32, name="x")]
        if format != "tf_saved_model":
            return super().export(filepath, format, verbose, input_signature, **kwargs)
        write_directory_atomic(
            str(filepath),
            lambda folder: keras.Model.export(
                self, folder, format, verbose, input_signature, **kwargs
            ),
            overwrite,
        )

    def get_config(self):
        config = super().get_config()
        config.update(
            layer_sizes=list(self.layer_sizes),
            genome=self._genome_dict,
            rule=self.rule.to_dict(),
            seed=self.seed,
        )
        return config

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    def compile_from_config(self, config):
        """Nothing to restore: a BlurModel compiles itself (no loss, no optimizer)."""

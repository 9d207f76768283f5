"""Meta-gradient estimators: meta-parameters → (meta-loss, its gradient) for one outer step.

`Estimator` is the declared seam. An estimator owns the inner state of an outer step through
an init-state / estimate pair:

* `init_state(networks, seed)` (eager, once per outer step) gives the state the estimate
  starts from: fresh synapses for the full and segmented unrolls; for truncation
  (`truncated.TruncatedUnrollGradient`) the synapses its persistent networks are reset to;
* `estimate(params, state, seed, length)` (inside the trainer's compiled outer step) returns
  per-genome losses [G], gradients with the structure of `params` and diagnostics.

`params` is any pytree (`tf.nest`) of variables or tensors whose leaves carry the population
G as leading axis — a `Genome` here, the initial weights of another learner tomorrow — and
the problem's network consumes it. `length` is always the schedule's length, the horizon of
the inner problem (the full and segmented estimators unroll all of it; truncation covers it
in truncations). The meta-loss itself is the problem's choice (`InnerProblem.loss`).

`FullUnrollGradient` is the paper's estimator: `length` inner steps in a `tf.while_loop`
(`BlurNetwork.unroll`), the meta-loss on held-out examples, and the exact gradient by
`tf.GradientTape` through the whole unroll (memory grows linearly with `length`).

Each of the G genomes drives M networks (the meta-batch), laid out member-major (network
p = g·M + m belongs to genome g). Losses are per genome (mean over its M networks), so the
gradient of genome g's row only depends on its own networks.
"""

from __future__ import annotations

import abc

import tensorflow as tf

from blur_tf.meta.problem import InnerProblem
from blur_tf.network import accuracy


def population_of(params) -> int:
    """G: the leading axis of the leaves of a meta-parameter pytree."""
    return int(tf.nest.flatten(params)[0].shape[0])


def repeat_genome(params, times: int):
    """Each of the G members of a meta-parameter pytree repeated `times` times: G → G·times."""
    if times == 1:
        return tf.nest.map_structure(tf.convert_to_tensor, params)
    return tf.nest.map_structure(
        lambda v: tf.repeat(tf.convert_to_tensor(v), times, axis=0), params
    )


def per_genome_mean(values: tf.Tensor, num_genomes: int) -> tf.Tensor:
    """[G·M] member values → [G] means over each genome's M members."""
    return tf.reduce_mean(tf.reshape(values, [num_genomes, -1]), axis=1)


META_LOSSES = ("final", "trajectory")


def _check_meta_batch(meta_batch) -> None:
    if not isinstance(meta_batch, int) or meta_batch < 1:
        raise ValueError(f"meta_batch must be an int >= 1, got {meta_batch!r}")


class Estimator(abc.ABC):
    """The estimator seam (module doc). Subclasses set `problem` and `meta_batch`."""

    problem: InnerProblem
    meta_batch: int

    def init_state(self, networks: int, seed: int):
        """The inner state of one outer step for `networks` networks: fresh synapses."""
        return self.problem.init_synapses(networks, seed)

    @abc.abstractmethod
    def estimate(self, params, state, seed: tf.Tensor, length: tf.Tensor):
        """(losses [G], gradients like `params`, diagnostics) of one outer step.

        Args:
          params: the G genomes (any pytree of variables or tensors, leading axis G).
          state: `init_state(G·meta_batch, …)`.
          seed: int64 [2], the stateless seed of this outer step.
          length: int32 scalar, the schedule's length.
        Diagnostics hold per-member `task_ids` [G·M] and `accuracy` [G·M], the problem's held-out
        `metric` (accuracy; the query MSE of `episodes.EpisodeProblem`).
        """

    def __call__(self, params, state, seed, length):
        return self.estimate(params, state, seed, length)

    def with_problem(self, problem, meta_batch: int) -> Estimator:
        """This estimator on another problem and meta-batch (a replica's share of a
        distributed outer step: `distribute.DistributedEstimator`); ValueError if it keeps
        per-network state between outer steps and cannot be split."""
        raise ValueError(
            f"{type(self).__name__} cannot be distributed over replicas (it "
            "keeps per-network state between meta-steps); use the full or "
            "segmented estimator with a strategy"
        )


class FullUnrollGradient(Estimator):
    """Exact meta-gradient by backpropagation through the whole unroll (paper §3.3)."""

    def __init__(self, problem: InnerProblem, meta_batch: int):
        _check_meta_batch(meta_batch)
        self.problem = problem
        self.meta_batch = meta_batch

    def with_problem(self, problem, meta_batch: int) -> FullUnrollGradient:
        return FullUnrollGradient(problem, meta_batch)

    def estimate(self, params, state, seed: tf.Tensor, length: tf.Tensor):
        """See `Estimator.estimate`; `state` are the fresh synapses of the G·M networks."""
        num_genomes = population_of(params)
        network = self.problem.network
        task_ids, batch_fn, (x_eval, y_eval) = self.problem.sample(
            seed, num_genomes * self.meta_batch
        )
        leaves = tf.nest.flatten(params)
        with tf.GradientTape() as tape:
            tape.watch([tf.convert_to_tensor(v) for v in leaves if not isinstance(v, tf.Variable)])
            members = repeat_genome(params, self.meta_batch)
            final = network.unroll(members, state, batch_fn, length)
            outputs = network.outputs(members, final, x_eval)
            losses = per_genome_mean(self.problem.loss(outputs, y_eval), num_genomes)
            total = tf.reduce_sum(losses)
        gradients = tape.gradient(total, leaves, unconnected_gradients=tf.UnconnectedGradients.ZERO)
        return (
            losses,
            tf.nest.pack_sequence_as(params, gradients),
            {"task_ids": task_ids, "accuracy": self.problem.metric(outputs, y_eval)},
        )


class SegmentedUnrollGradient(Estimator):
    """The full unroll's meta-gradient with bounded memory: gradient checkpointing.

    The unroll of `length` = T inner steps is cut into n = ⌈T/S⌉ segments of S steps. The
    forward sweep keeps only the synapses at segment boundaries s_0, s_S, s_2S, … (in a
    `TensorArray`, no tape); the backward sweep walks the segments from last to first,
    recomputes each one from its boundary under a tape and pulls the adjoint through it:

        λ_n = 0,   for k = n−1 … 0:
        (λ_k, ∂_k) = vjp of  o_k(s_k, θ) = w_k·L(seg_k(s_k, θ), θ) + ⟨seg_k(s_k, θ), λ_{k+1}⟩
        dL/dθ = Σ_k ∂_k,

    where L is the held-out meta-loss of the synapses after the segment and w_k its weight:
    `meta_loss='final'` scores the synapses after step T only (w_k = 1 for the last segment,
    0 otherwise: exactly `FullUnrollGradient`'s objective and gradient), `'trajectory'`
    averages the held-out loss after every segment (w_k = 1/n), so early speed counts as
    much as the end point. A segment is a `tf.while_loop` of its S steps (fewer in a last
    segment that S does not fill); its forward and its vector-Jacobian product are each one
    `tf.function`, compiled with XLA when `jit_compile`, and every loop is dynamic (changing T
    never retraces). A loop rather than S written-out steps: those (and their gradient) made
    the compiled graphs S times larger, the first meta-step 4× slower and the process peak
    about 1 GB higher (mnist_curriculum setting, T = 10).

    Inside a segment the vjp stores the S states and pulls the adjoint back one step at a
    time, each step recomputed under a one-step tape (`_segment_vjp`), rather than taping the
    segment's loop: that tape keeps every step's intermediates in per-iteration stacks, which
    XLA's CPU backend copies on every iteration and holds in one buffer (XLA's memory report of
    the vjp, memory_check.cfg at T = 10: 216 MiB before, 43 MiB after). The step-wise pull-back
    costs one more forward per step; with XLA the meta-step still rose from 49–52 % to 63–66 %
    of the inner steps' rate (`launchers.meta_benchmark`, docs/meta-training.md).

    Memory: at most `max_boundaries` = B boundaries are stored. When n > B, segments are
    grouped in n_b = ⌈n/R⌉ blocks of R = ⌈n/B⌉ segments (two-level checkpointing): the
    forward sweep stores the synapses at block starts only, and the backward sweep recomputes
    one block's R segment boundaries from its start before walking its segments back. Live
    synapse copies: n_b + R ≤ B + ⌈n/B⌉ (plus one segment's S states and one step's tape),
    for one more forward sweep; n ≤ B (R = 1) is the one-level scheme above, step for step.
    Every loop runs one iteration at a time (`parallel_iterations=1`): by default TensorFlow
    runs up to ten iterations' data and recomputation ahead and holds their buffers.

    Data are those of `FullUnrollGradient` (the same `problem.sample`, the same batch of step
    t), so both estimators give the same gradient up to float rounding.
    """

    def __init__(
        self,
        problem: InnerProblem,
        meta_batch: int,
        segment_length: int = 10,
        meta_loss: str = "final",
        jit_compile: bool = True,
        max_boundaries: int = 64,
    ):
        _check_meta_batch(meta_batch)
        if not isinstance(segment_length, int) or segment_length < 1:
            raise ValueError(f"segment_length must be an int >= 1, got {segment_length!r}")
        if not isinstance(max_boundaries, int) or max_boundaries < 1:
            raise ValueError(f"max_boundaries must be an int >= 1, got {max_boundaries!r}")
        if meta_loss not in META_LOSSES:
            raise ValueError(f"meta_loss={meta_loss!r}; one of {META_LOSSES}")
        self.problem, self.meta_batch = problem, meta_batch
        self.segment_length, self.meta_loss = segment_length, meta_loss
        self.jit_compile, self.max_boundaries = jit_compile, max_boundaries
        self._forward = tf.function(self._segment, jit_compile=jit_compile)
        self._vjp = tf.function(self._segment_vjp, jit_compile=jit_compile)

    def with_problem(self, problem, meta_batch: int) -> SegmentedUnrollGradient:
        return SegmentedUnrollGradient(
            problem,
            meta_batch,
            self.segment_length,
            self.meta_loss,
            self.jit_compile,
            self.max_boundaries,
        )

    # ----------------------------------------------------------------------------- pieces
    def _step(self, genome, state, x, y):
        """One inner step of the G·M networks: (forwards, backwards) after it."""
        members = repeat_genome(genome, self.meta_batch)
        forwards, backwards, _ = self.problem.network.step_channel_major(members, *state, x, y)
        return forwards, backwards

    def _segment(self, genome, state, xs, ys, active):
        """The first `active` of S inner steps on batches xs [S, P, B, n], ys [S, P, B]."""
        return tf.while_loop(
            lambda i, _: i < active,
            lambda i, state: (i + 1, self._step(genome, state, xs[i], ys[i])),
            (tf.constant(0), state),
            parallel_iterations=1,
            maximum_iterations=self.segment_length,
        )[1]

    def _segment_vjp(self, genome, state, xs, ys, active, adjoint, weight, x_eval, y_eval):
        """(λ_k, ∂_k, losses [G], state after segment k, accuracy [P]) of segment k (class doc).

        The segment's `active` states s_0 … s_{a−1} are stored, then the adjoint is pulled
        back one step at a time, each step recomputed under a one-step tape:
            λ ← w·∂L/∂s_a + λ_{k+1};  for i = a−1 … 0: (λ, ∂) ← (λ, ∂) + vjp of step_i at s_i.
        """
        num_genomes = population_of(genome)
        network = self.problem.network
        zero = tf.UnconnectedGradients.ZERO
        flat_state = tf.nest.flatten(state)

        def store(i, current, stored):
            stored = [a.write(i, t) for a, t in zip(stored, tf.nest.flatten(current))]
            return i + 1, self._step(genome, current, xs[i], ys[i]), stored

        _, out, stored = tf.while_loop(
            lambda i, *_: i < active,
            store,
            (
                tf.constant(0),
                state,
                [
                    tf.TensorArray(t.dtype, size=self.segment_length, element_shape=t.shape)
                    for t in flat_state
                ],
            ),
            parallel_iterations=1,
            maximum_iterations=self.segment_length,
        )
        with tf.GradientTape() as tape:
            tape.watch((genome, out))
            logits = network.predict_channel_major(
                repeat_genome(genome, self.meta_batch), out[0], x_eval
            )
            losses = per_genome_mean(self.problem.loss(logits, y_eval), num_genomes)
            objective = weight * tf.reduce_sum(losses)
        d_genome, d_out = tape.gradient(objective, (genome, out), unconnected_gradients=zero)

        def pull_back(i, d_state, d_genome):
            current = tf.nest.pack_sequence_as(state, [a.read(i) for a in stored])
            with tf.GradientTape() as tape:
                tape.watch((genome, current))
                after = self._step(genome, current, xs[i], ys[i])
            d_step, d_state = tape.gradient(
                tf.nest.flatten(after),
                (genome, current),
                output_gradients=tf.nest.flatten(d_state),
                unconnected_gradients=zero,
            )
            return i - 1, d_state, tf.nest.map_structure(tf.add, d_genome, d_step)

        _, d_state, d_genome = tf.while_loop(
            lambda i, *_: i >= 0,
            pull_back,
            (active - 1, tf.nest.map_structure(tf.add, d_out, adjoint), d_genome),
            parallel_iterations=1,
            maximum_iterations=self.segment_length,
        )
        return d_state, d_genome, losses, out, accuracy(logits, y_eval)

    # ----------------------------------------------------------------------------- estimator
    def estimate(self, params, state, seed: tf.Tensor, length: tf.Tensor):
        """See `Estimator.estimate`; `state` are the fresh synapses of the G·M networks."""
        genome = tf.nest.map_structure(tf.convert_to_tensor, params)
        population = population_of(genome) * self.meta_batch
        task_ids, batch_fn, eval_batch = self.problem.sample(seed, population)
        state = self.problem.network.to_channel_major(state)
        losses, gradients, _, final_accuracy = self.unroll_gradient(
            genome, state, batch_fn, eval_batch, length
        )
        return losses, gradients, {"task_ids": task_ids, "accuracy": final_accuracy}

    def unroll_gradient(self, genome, state, batch_fn, eval_batch, length):
        """The estimator's core, for any starting synapses (also used by truncation).

        Args:
          genome: G genomes (tensors); state: (forwards, backwards) of G·M networks in the
            channel-major layout; batch_fn: t -> (x [P, B, n], y [P, B]); eval_batch: the
            held-out (x [P, N, n], y [P, N]); length: int32 scalar T.
        Returns:
          (losses [G], d loss / d genome, the state after T steps, held-out accuracy after T
          steps [P]).
        """
        num_genomes = population_of(genome)
        population = num_genomes * self.meta_batch
        size = self.segment_length
        num_segments = tf.maximum((length + size - 1) // size, 1)
        block = (num_segments + self.max_boundaries - 1) // self.max_boundaries
        num_blocks = (num_segments + block - 1) // block

        def segment_data(k):
            start = k * size
            x, y = batch_fn(start)
            stacks = [
                tf.TensorArray(t.dtype, size=size, element_shape=t.shape).write(0, t)
                for t in (x, y)
            ]
            _, stacks = tf.while_loop(
                lambda i, _: i < size,
                lambda i, stacks: (
                    i + 1,
                    [s.write(i, t) for s, t in zip(stacks, batch_fn(start + i))],
                ),
                (tf.constant(1), stacks),
                parallel_iterations=1,
            )
            active = tf.clip_by_value(length - start, 0, size)
            return stacks[0].stack(), stacks[1].stack(), active

        def forward(k, state):
            xs, ys, active = segment_data(k)
            return self._forward(genome, state, xs, ys, active)

        def stored(count, first_state):
            return [
                tf.TensorArray(t.dtype, size=count, element_shape=t.shape).write(0, t)
                for t in tf.nest.flatten(first_state)
            ]

        def block_forward(j, state, blocks):
            state = tf.while_loop(
                lambda k, _: k < (j + 1) * block,
                lambda k, state: (k + 1, forward(k, state)),
                (j * block, state),
                parallel_iterations=1,
            )[1]
            blocks = [b.write(j + 1, t) for b, t in zip(blocks, tf.nest.flatten(state))]
            return j + 1, state, blocks

        _, _, blocks = tf.while_loop(
            lambda j, *_: j < num_blocks - 1,
            block_forward,
            (tf.constant(0), state, stored(num_blocks, state)),
            parallel_iterations=1,
        )

        def segment_backward(
            k, first, boundaries, adjoint, d_genome, losses, final_state, final_accuracy
        ):
            start_state = tf.nest.pack_sequence_as(state, [b.read(k - first) for b in boundaries])
            is_last = tf.equal(k, num_segments - 1)
            if self.meta_loss == "final":
                weight = tf.cast(is_last, tf.float32)
            else:
                weight = 1.0 / tf.cast(num_segments, tf.float32)
            xs, ys, active = segment_data(k)
            adjoint, d_segment, segment_losses, out, segment_accuracy = self._vjp(
                genome, start_state, xs, ys, active, adjoint, weight, *eval_batch
            )
            d_genome = tf.nest.map_structure(tf.add, d_genome, d_segment)
            final_state = tf.nest.map_structure(
                lambda new, old: tf.where(is_last, new, old), out, final_state
            )
            final_accuracy = tf.where(is_last, segment_accuracy, final_accuracy)
            return (
                k - 1,
                first,
                boundaries,
                adjoint,
                d_genome,
                losses + weight * segment_losses,
                final_state,
                final_accuracy,
            )

        def block_backward(j, *carry):
            first = j * block
            last = tf.minimum(first + block, num_segments)
            start = tf.nest.pack_sequence_as(state, [b.read(j) for b in blocks])

            def recompute(k, state, boundaries):
                state = forward(k, state)
                return (
                    k + 1,
                    state,
                    [b.write(k + 1 - first, t) for b, t in zip(boundaries, tf.nest.flatten(state))],
                )

            boundaries = tf.while_loop(
                lambda k, *_: k < last - 1,
                recompute,
                (first, start, stored(block, start)),
                parallel_iterations=1,
            )[2]
            carry = tf.while_loop(
                lambda k, *_: k >= first,
                segment_backward,
                (last - 1, first, boundaries, *carry),
                parallel_iterations=1,
            )[3:]
            return (j - 1, *carry)

        zeros = lambda structure: tf.nest.map_structure(tf.zeros_like, structure)
        _, _, gradients, losses, final_state, final_accuracy = tf.while_loop(
            lambda j, *_: j >= 0,
            block_backward,
            (
                num_blocks - 1,
                zeros(state),
                zeros(genome),
                tf.zeros([num_genomes]),
                state,
                tf.zeros([population]),
            ),
            parallel_iterations=1,
        )
        return (
            losses,
            tf.nest.pack_sequence_as(genome, tf.nest.flatten(gradients)),
            final_state,
            final_accuracy,
        )

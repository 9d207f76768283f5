"""Meta-gradient estimators: genome → (meta-loss, d meta-loss / d genome) for one meta-step.

`FullUnrollGradient` is the paper's estimator: fresh synapses, `length` inner steps in a
`tf.while_loop` (`BlurNetwork.unroll`), the meta-loss on held-out examples, and the exact
gradient by `tf.GradientTape` through the whole unroll (memory grows linearly with `length`).

An estimator is called inside the trainer's compiled meta-step with the genome variables of a
population of G genomes (leading axis G) and works on G·M networks: each genome drives M
networks (the meta-batch), laid out member-major (network p = g·M + m belongs to genome g).
Losses are returned per genome (mean over its M networks), so the gradient of genome g's row
only depends on its own networks.
"""

from __future__ import annotations

import functools

import tensorflow as tf

from blur_tf.genome import Genome
from blur_tf.meta.problem import InnerProblem
from blur_tf.network import accuracy


def repeat_genome(genome: Genome, times: int) -> Genome:
    """Each of the G genomes repeated `times` times along the population axis: G → G·times."""
    if times == 1:
        return Genome(*[tf.convert_to_tensor(v) for v in genome])
    return Genome(*[tf.repeat(tf.convert_to_tensor(v), times, axis=0) for v in genome])


def per_genome_mean(values: tf.Tensor, num_genomes: int) -> tf.Tensor:
    """[G·M] member values → [G] means over each genome's M members."""
    return tf.reduce_mean(tf.reshape(values, [num_genomes, -1]), axis=1)


META_LOSSES = ("final", "trajectory")


def _check_meta_batch(meta_batch) -> None:
    if not isinstance(meta_batch, int) or meta_batch < 1:
        raise ValueError(f"meta_batch must be an int >= 1, got {meta_batch!r}")


class FullUnrollGradient:
    """Exact meta-gradient by backpropagation through the whole unroll (paper §3.3)."""

    def __init__(self, problem: InnerProblem, meta_batch: int):
        _check_meta_batch(meta_batch)
        self.problem = problem
        self.meta_batch = meta_batch

    def with_problem(self, problem, meta_batch: int) -> "FullUnrollGradient":
        """This estimator on another problem and meta-batch (a replica's share of a
        distributed meta-step: `distribute.DistributedEstimator`)."""
        return FullUnrollGradient(problem, meta_batch)

    def __call__(self, genome_variables: Genome, synapses, seed: tf.Tensor, length: tf.Tensor):
        """Loss, gradient and diagnostics of one meta-step (call inside `tf.function`).

        Args:
          genome_variables: the G genomes (variables or tensors).
          synapses: fresh synapses for G·meta_batch networks.
          seed: int64 [2], the stateless seed of this meta-step.
          length: int32 scalar, inner steps to unroll.
        Returns:
          losses [G], gradients (a Genome of [G, …] tensors), and a dict of per-member
          diagnostics: `task_ids` [G·M], `accuracy` [G·M] (held-out, after the unroll).
        """
        num_genomes = int(genome_variables.forward_transform.shape[0])
        population = num_genomes * self.meta_batch
        network = self.problem.network
        task_ids, batch_fn, (x_eval, y_eval) = self.problem.sample(seed, population)
        with tf.GradientTape() as tape:
            tape.watch([tf.convert_to_tensor(v) for v in genome_variables
                        if not isinstance(v, tf.Variable)])
            genome = repeat_genome(genome_variables, self.meta_batch)
            final = network.unroll(genome, synapses, batch_fn, length)
            forwards, _ = network.to_channel_major(final)
            logits = network.predict_channel_major(genome, forwards, x_eval)
            member_losses = self.problem.loss(logits, y_eval)
            losses = per_genome_mean(member_losses, num_genomes)
            total = tf.reduce_sum(losses)
        gradients = tape.gradient(total, list(genome_variables),
                                  unconnected_gradients=tf.UnconnectedGradients.ZERO)
        return losses, Genome(*gradients), {"task_ids": task_ids,
                                            "accuracy": accuracy(logits, y_eval)}


class SegmentedUnrollGradient:
    """The full unroll's meta-gradient with memory O(T/S + S): gradient checkpointing.

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
    much as the end point. A segment is a Python-unrolled block of S steps (steps past T are
    skipped); its forward and its vector-Jacobian product are each one
    `tf.function`, compiled with XLA when `jit_compile` — the whole meta-step's arithmetic
    then runs in fused XLA kernels, while the loops over segments stay dynamic (changing T
    never retraces). With T ≤ S there is one segment and nothing is recomputed.

    Data are those of `FullUnrollGradient` (the same `problem.sample`, the same batch of step
    t), so both estimators give the same gradient up to float rounding.
    """

    def __init__(self, problem: InnerProblem, meta_batch: int, segment_length: int = 10,
                 meta_loss: str = "final", jit_compile: bool = True):
        _check_meta_batch(meta_batch)
        if not isinstance(segment_length, int) or segment_length < 1:
            raise ValueError(f"segment_length must be an int >= 1, got {segment_length!r}")
        if meta_loss not in META_LOSSES:
            raise ValueError(f"meta_loss={meta_loss!r}; one of {META_LOSSES}")
        self.problem, self.meta_batch = problem, meta_batch
        self.segment_length, self.meta_loss = segment_length, meta_loss
        self.jit_compile = jit_compile
        compiled = lambda fn, guarded: tf.function(functools.partial(fn, guarded=guarded),
                                                   jit_compile=jit_compile)
        self._forward = tuple(compiled(self._segment, g) for g in (False, True))
        self._vjp = tuple(compiled(self._segment_vjp, g) for g in (False, True))

    def with_problem(self, problem, meta_batch: int) -> "SegmentedUnrollGradient":
        """This estimator's options on another problem and meta-batch (see
        `FullUnrollGradient.with_problem`)."""
        return SegmentedUnrollGradient(problem, meta_batch, self.segment_length, self.meta_loss,
                                       self.jit_compile)

    # ----------------------------------------------------------------------------- pieces
    def _segment(self, genome: Genome, state, xs, ys, active, guarded: bool):
        """The first `active` of S inner steps on batches xs [S, P, B, n], ys [S, P, B].

        Unguarded (a full segment, `active` = S), the S steps run straight: one block that XLA
        fuses freely. Guarded (the last segment when S does not divide T), each step runs under
        a `tf.cond`. The choice is made outside the compiled functions (see `_run`).
        """
        network = self.problem.network
        members = repeat_genome(genome, self.meta_batch)

        def step(state, i):
            forwards, backwards, _ = network.step_channel_major(members, *state, xs[i], ys[i])
            return forwards, backwards

        for i in range(self.segment_length):
            if guarded:
                state = tf.cond(i < active, lambda state=state, i=i: step(state, i),
                                lambda state=state: state)
            else:
                state = step(state, i)
        return state

    def _run(self, functions, active, *args):
        """Calls the unguarded compiled function of a pair for a full segment, else the
        guarded one (a `tf.cond` in the outer graph: each is its own XLA cluster)."""
        return tf.cond(active >= self.segment_length, lambda: functions[0](*args),
                       lambda: functions[1](*args))

    def _segment_vjp(self, genome: Genome, state, xs, ys, active, adjoint, weight, x_eval,
                     y_eval, guarded: bool):
        """(λ_k, ∂_k, losses [G], state after the segment, accuracy [P]) of segment k (class doc)."""
        num_genomes = int(genome.forward_transform.shape[0])
        network = self.problem.network
        with tf.GradientTape() as tape:
            tape.watch((genome, state))
            out = self._segment(genome, state, xs, ys, active, guarded)
            logits = network.predict_channel_major(repeat_genome(genome, self.meta_batch),
                                                   out[0], x_eval)
            losses = per_genome_mean(self.problem.loss(logits, y_eval), num_genomes)
            objective = weight * tf.reduce_sum(losses) + tf.add_n(
                [tf.reduce_sum(o * a) for o, a in zip(tf.nest.flatten(out),
                                                     tf.nest.flatten(adjoint))])
        d_genome, d_state = tape.gradient(objective, (genome, state),
                                          unconnected_gradients=tf.UnconnectedGradients.ZERO)
        return d_state, d_genome, losses, out, accuracy(logits, y_eval)

    # ----------------------------------------------------------------------------- estimator
    def __call__(self, genome_variables: Genome, synapses, seed: tf.Tensor, length: tf.Tensor):
        """Loss, gradient and diagnostics of one meta-step; see `FullUnrollGradient.__call__`."""
        genome = Genome(*[tf.convert_to_tensor(v) for v in genome_variables])
        population = int(genome.forward_transform.shape[0]) * self.meta_batch
        task_ids, batch_fn, eval_batch = self.problem.sample(seed, population)
        state = self.problem.network.to_channel_major(synapses)
        losses, gradients, _, final_accuracy = self.unroll_gradient(genome, state, batch_fn,
                                                                   eval_batch, length)
        return losses, gradients, {"task_ids": task_ids, "accuracy": final_accuracy}

    def unroll_gradient(self, genome: Genome, state, batch_fn, eval_batch, length):
        """The estimator's core, for any starting synapses (also used by truncation).

        Args:
          genome: G genomes (tensors); state: (forwards, backwards) of G·M networks in the
            channel-major layout; batch_fn: t -> (x [P, B, n], y [P, B]); eval_batch: the
            held-out (x [P, N, n], y [P, N]); length: int32 scalar T.
        Returns:
          (losses [G], d loss / d genome, the state after T steps, held-out accuracy after T
          steps [P]).
        """
        num_genomes = int(genome.forward_transform.shape[0])
        population = num_genomes * self.meta_batch
        size = self.segment_length
        num_segments = tf.maximum((length + size - 1) // size, 1)

        def segment_data(k):
            start = k * size
            batches = [batch_fn(start + i) for i in range(size)]
            active = tf.clip_by_value(length - start, 0, size)
            return tf.stack([x for x, _ in batches]), tf.stack([y for _, y in batches]), active

        boundaries = [tf.TensorArray(t.dtype, size=num_segments, element_shape=t.shape)
                      .write(0, t) for t in tf.nest.flatten(state)]

        def forward_body(k, state, boundaries):
            xs, ys, active = segment_data(k)
            state = self._run(self._forward, active, genome, state, xs, ys, active)
            boundaries = [b.write(k + 1, t) for b, t in zip(boundaries, tf.nest.flatten(state))]
            return k + 1, state, boundaries

        _, _, boundaries = tf.while_loop(lambda k, *_: k < num_segments - 1, forward_body,
                                         (tf.constant(0), state, boundaries))

        def backward_body(k, adjoint, d_genome, losses, final_state, final_accuracy):
            start_state = tf.nest.pack_sequence_as(state, [b.read(k) for b in boundaries])
            is_last = tf.equal(k, num_segments - 1)
            if self.meta_loss == "final":
                weight = tf.cast(is_last, tf.float32)
            else:
                weight = 1.0 / tf.cast(num_segments, tf.float32)
            xs, ys, active = segment_data(k)
            adjoint, d_segment, segment_losses, out, segment_accuracy = self._run(
                self._vjp, active, genome, start_state, xs, ys, active, adjoint, weight,
                *eval_batch)
            d_genome = tf.nest.map_structure(tf.add, d_genome, d_segment)
            final_state = tf.nest.map_structure(lambda new, old: tf.where(is_last, new, old),
                                                out, final_state)
            final_accuracy = tf.where(is_last, segment_accuracy, final_accuracy)
            return (k - 1, adjoint, d_genome, losses + weight * segment_losses, final_state,
                    final_accuracy)

        zeros = lambda structure: tf.nest.map_structure(tf.zeros_like, structure)
        _, _, gradients, losses, final_state, final_accuracy = tf.while_loop(
            lambda k, *_: k >= 0, backward_body,
            (num_segments - 1, zeros(state), zeros(genome), tf.zeros([num_genomes]),
             state, tf.zeros([population])))
        return losses, Genome(*gradients), final_state, final_accuracy

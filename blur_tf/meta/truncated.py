"""Truncated meta-gradients over persistent networks (learned_optimization's truncated step).

A full unroll differentiates through every inner step from fresh synapses to step T; its cost
and memory grow with T. Truncation keeps the G·M networks of the meta-batch alive *across*
meta-steps: each meta-step continues every network for the next U (`truncation_length`) inner
steps from where it stopped, scores it on held-out examples and differentiates through those U
steps only (the synapses it starts from are treated as constants: the truncation bias).

Episodes. The unroll schedule's length T is the horizon: a network is reset to fresh synapses
(and a new training task) once it has run ⌈T/U⌉·U inner steps (or when its synapses are no
longer finite), so a growing curriculum grows
the horizon without retracing. Resets are staggered: at the first meta-step network p's first
episode is shortened by ⌊p·E/P⌋ truncations (E = truncations per episode), so after one horizon
the meta-batch holds networks of every age from 0 to T, and every meta-step sees early and late
training alike (the meta-loss averages over ages).

Everything that lives between meta-steps — synapses, ages (inner steps done), remaining
truncations and task ids — is in `tf.Variable`s of this module, so the trainer's checkpoint
holds it and a resumed run continues bit-identically. Fresh synapses for resets are the
estimator's `init_state` of the outer step (drawn from (seed, meta_step)); task ids come from
the meta-step's seed.

Task families (sources that draw a new problem every meta-step) are refused: a persistent
network must keep its task for its whole episode.
"""

from __future__ import annotations

import tensorflow as tf

from blur_tf.meta.estimators import Estimator, SegmentedUnrollGradient, population_of
from blur_tf.meta.problem import InnerProblem


class TruncatedUnrollGradient(tf.Module, Estimator):
    """Meta-gradient through the next `truncation_length` steps of persistent networks.

    Args:
      problem: the inner problem.
      population: G, genomes of the trainer (fixes the number of persistent networks G·M).
      meta_batch: M, networks per genome.
      truncation_length: U, inner steps differentiated per meta-step.
      meta_loss, jit_compile, segment_length: of the `SegmentedUnrollGradient` that unrolls
        and differentiates each truncation (segment_length defaults to, and is capped at, U).
    """

    def __init__(
        self,
        problem: InnerProblem,
        population: int,
        meta_batch: int,
        truncation_length: int = 10,
        meta_loss: str = "final",
        jit_compile: bool = True,
        segment_length: int | None = None,
    ):
        super().__init__(name="truncated_unroll")
        if problem.has_families:
            raise ValueError(
                "the truncated estimator needs fixed training tasks (a persistent "
                "network keeps its task for a whole episode); task families draw "
                "a new problem every meta-step"
            )
        if not isinstance(truncation_length, int) or truncation_length < 1:
            raise ValueError(f"truncation_length must be an int >= 1, got {truncation_length!r}")
        if not isinstance(population, int) or population < 1:
            raise ValueError(f"population must be an int >= 1, got {population!r}")
        self.problem, self.population, self.meta_batch = problem, population, meta_batch
        self.truncation_length = truncation_length
        self.unroll = SegmentedUnrollGradient(
            problem,
            meta_batch,
            min(segment_length or truncation_length, truncation_length),
            meta_loss,
            jit_compile,
        )
        networks = population * meta_batch
        forwards, backwards = problem.network.to_channel_major(problem.init_synapses(networks, 0))
        self.forwards = [tf.Variable(w, trainable=False, name="forward") for w in forwards]
        self.backwards = [tf.Variable(v, trainable=False, name="backward") for v in backwards]
        self.ages = tf.Variable(tf.zeros([networks], tf.int32), trainable=False, name="ages")
        self.remaining = tf.Variable(
            tf.zeros([networks], tf.int32), trainable=False, name="remaining"
        )  # truncations left; 0 = reset next
        self.task_ids = tf.Variable(
            tf.zeros([networks], tf.int32), trainable=False, name="task_ids"
        )
        self.started = tf.Variable(False, trainable=False, name="started")

    def estimate(self, params, state, seed: tf.Tensor, length: tf.Tensor):
        """See `Estimator.estimate`: `state` are the fresh synapses networks reset to, `length`
        the horizon T. Diagnostics add `ages` [P]: inner steps each network had done before
        this truncation."""
        genome = tf.nest.map_structure(tf.convert_to_tensor, params)
        networks = self.population * self.meta_batch
        if population_of(genome) != self.population:
            raise ValueError(
                f"genome population {population_of(genome)} differs "
                f"from the estimator's {self.population}"
            )
        per_episode = tf.maximum((length + self.truncation_length - 1) // self.truncation_length, 1)
        stagger = tf.where(self.started, 0, (tf.range(networks) * per_episode) // networks)
        finite = tf.reduce_all(
            tf.stack(
                [
                    tf.reduce_all(tf.math.is_finite(tf.reshape(v, [networks, -1])), axis=1)
                    for v in self.forwards + self.backwards
                ]
            ),
            axis=0,
        )
        reset = tf.equal(self.remaining, 0) | ~finite  # a blown-up network starts over
        fresh_forwards, fresh_backwards = self.problem.network.to_channel_major(state)

        def select(fresh, kept):
            mask = tf.reshape(reset, [-1] + [1] * (kept.shape.rank - 1))
            return tf.where(mask, fresh, kept)

        state = (
            tuple(select(f, v) for f, v in zip(fresh_forwards, self.forwards)),
            tuple(select(f, v) for f, v in zip(fresh_backwards, self.backwards)),
        )
        task_ids = tf.where(reset, self.problem.sample_task_ids(seed, networks), self.task_ids)
        ages = tf.where(reset, 0, self.ages)
        remaining = tf.where(reset, per_episode - stagger, self.remaining)
        _, batch_fn, eval_batch = self.problem.sample(seed, networks, task_ids)
        length = tf.constant(self.truncation_length)
        losses, gradients, (forwards, backwards), final_accuracy = self.unroll.unroll_gradient(
            genome, state, batch_fn, eval_batch, length
        )
        for variable, value in zip(self.forwards + self.backwards, forwards + backwards):
            variable.assign(value)
        self.ages.assign(ages + length)
        self.remaining.assign(remaining - 1)
        self.task_ids.assign(task_ids)
        self.started.assign(True)
        return losses, gradients, {"task_ids": task_ids, "accuracy": final_accuracy, "ages": ages}

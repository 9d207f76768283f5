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


class FullUnrollGradient:
    """Exact meta-gradient by backpropagation through the whole unroll (paper §3.3)."""

    def __init__(self, problem: InnerProblem, meta_batch: int):
        if not isinstance(meta_batch, int) or meta_batch < 1:
            raise ValueError(f"meta_batch must be an int >= 1, got {meta_batch!r}")
        self.problem = problem
        self.meta_batch = meta_batch

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

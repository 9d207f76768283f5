"""CMA-ES fitness: held-out accuracy of a whole population of genomes, in one compiled call.

For λ candidate genomes and M networks per candidate, one call runs P = λ·M networks side by
side — the population axis of one `BlurNetwork.unroll`, laid out candidate-major (network
p = i·M + m belongs to candidate i; no Python loop over candidates) — and returns per candidate

    fitness_i = 1/(M·k) Σ_m Σ_{t = T−k+1}^{T} acc(W_{i,m,t}; x_eval_m, y_eval_m),

the held-out accuracy after inner step t, averaged over the last k = `average_steps` steps of
the T-step unroll and over the candidate's M networks.

**Common random numbers** (how the objective's noise is handled): the M networks' tasks,
training batches, held-out batch and initial synapses are drawn once per call from the
generation's seed (`InnerProblem.sample(seed, M)`) and shared by all λ candidates, so the
candidates of one generation are ranked on the same data and CMA-ES's rank-based update sees
only the genome differences; successive generations draw fresh data (a noisy objective whose
noise the strategy averages out across generations).

**Held-out batches.** The held-out examples of each network (`problem.eval_batch_size`) are
split into `eval_batches` equal forward batches (the paper: 20 batches of 128): normalization
uses batch statistics, so each batch is normalized on its own, and memory grows with one
batch, not with all of them.

**Non-finite candidates.** A candidate is non-finite when any of its networks ends with a
NaN/Inf synapse or logit; its fitness is reported as NaN and `finite` is False (the trainer
gives it the worst fitness and counts it). The other candidates are unaffected: networks never
interact.
"""

from __future__ import annotations

import tensorflow as tf

from blur_tf.genome import Genome
from blur_tf.meta.estimators import repeat_genome
from blur_tf.meta.problem import InnerProblem
from blur_tf.network import accuracy


def _all_finite(tensors, population: int) -> tf.Tensor:
    """[P]: True where every entry of member p of every tensor (leading axis P) is finite."""
    flags = [
        tf.reduce_all(tf.math.is_finite(tf.reshape(t, [population, -1])), axis=1) for t in tensors
    ]
    return tf.reduce_all(tf.stack(flags), axis=0)


class PopulationFitness:
    """Fitness of λ candidate genomes on common data (see the module docstring).

    Args:
      problem: the inner problem (tasks, architecture, batch sizes; `eval_batch_size` is the
        number of held-out examples per network).
      networks: M, networks per candidate (each with its own data and initial synapses).
      average_steps: k, the fitness averages the accuracy after each of the last k inner steps.
      eval_batches: the held-out examples are evaluated in this many equal forward batches.
    """

    def __init__(
        self,
        problem: InnerProblem,
        networks: int = 1,
        average_steps: int = 1,
        eval_batches: int = 1,
    ):
        for name, value in (
            ("networks", networks),
            ("average_steps", average_steps),
            ("eval_batches", eval_batches),
        ):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be an int >= 1, got {value!r}")
        if problem.eval_batch_size % eval_batches:
            raise ValueError(
                f"{problem.eval_batch_size} held-out examples per network cannot "
                f"be split into {eval_batches} equal batches"
            )
        self.problem, self.networks = problem, networks
        self.average_steps, self.eval_batches = average_steps, eval_batches
        self.trace_count = 0
        self._compiled = tf.function(self.evaluate, reduce_retracing=True)

    def __call__(self, genome: Genome, synapses, seed, length: int):
        """(fitness float32 [λ] (NaN where non-finite), finite bool [λ]) as numpy arrays.

        genome: the λ candidates (population λ); synapses: initial synapses of the M networks
        (population M, shared by all candidates); seed: the generation's stateless seed [2];
        length: inner steps T (≥ average_steps).
        """
        self.check_length(length)
        fitness, finite = self._compiled(
            genome.as_tensors(),
            synapses,
            tf.constant(seed, tf.int64),
            tf.constant(int(length), tf.int32),
        )
        return fitness.numpy(), finite.numpy()

    def check_length(self, length: int) -> None:
        """ValueError if the unroll is shorter than the steps the fitness averages over."""
        if not length >= self.average_steps:
            raise ValueError(
                f"unroll length {length} is shorter than the {self.average_steps} "
                "final steps the fitness averages over"
            )

    def evaluate(self, genome: Genome, synapses, seed, length):
        """The in-graph fitness (tensors in, tensors out; what `__call__` compiles, and what
        each replica runs under `distribute.DistributedFitness`)."""
        self.trace_count += 1  # Python side effect: runs once per trace
        candidates = tf.shape(genome.forward_transform)[0]  # dynamic: λ may change, no retrace
        m, population = self.networks, candidates * self.networks
        network = self.problem.network
        _, batch_fn, (x_eval, y_eval) = self.problem.sample(seed, m)

        def tile(t):  # [M, …] → [λ·M, …], candidate-major
            return tf.tile(t, tf.concat([[candidates], tf.ones([t.shape.rank - 1], tf.int32)], 0))

        def tiled_batch(t):
            x, y = batch_fn(t)
            return tile(x), tile(y)

        members = repeat_genome(genome, m)
        chunks = self.eval_batches
        xs = tf.reshape(tile(x_eval), [population, chunks, -1, x_eval.shape[-1]])
        ys = tf.reshape(tile(y_eval), [population, chunks, -1])

        def held_out(synapses):
            """([P] accuracy on all held-out batches, [P] finite) of the current synapses."""
            forwards, _ = network.to_channel_major(synapses)

            def one_batch(c):
                logits = network.predict_channel_major(members, forwards, xs[:, c])
                return accuracy(logits, ys[:, c]), _all_finite([logits], population)

            acc, finite = tf.map_fn(
                one_batch, tf.range(chunks), fn_output_signature=(tf.float32, tf.bool)
            )
            finite = tf.reduce_all(finite, axis=0) & _all_finite(
                tf.nest.flatten(synapses), population
            )
            return tf.reduce_mean(acc, axis=0), finite

        head = length - self.average_steps + 1  # steps before the first averaged accuracy
        synapses = tf.nest.map_structure(tile, synapses)
        synapses = network.unroll(members, synapses, tiled_batch, head)
        total, finite = held_out(synapses)

        def body(j, synapses, total, finite):
            synapses = network.unroll(members, synapses, lambda t: tiled_batch(head + j + t), 1)
            acc, ok = held_out(synapses)
            return j + 1, synapses, total + acc, finite & ok

        if self.average_steps > 1:  # traced only when averaging (one-step unrolls cost layout
            _, _, total, finite = tf.while_loop(  # conversions; the default path has none)
                lambda j, *_: j < self.average_steps - 1,
                body,
                (tf.constant(0), synapses, total, finite),
            )
        per_network = total / self.average_steps
        per_candidate = tf.reduce_mean(tf.reshape(per_network, [candidates, m]), axis=1)
        finite = tf.reduce_all(tf.reshape(finite, [candidates, m]), axis=1)
        return tf.where(finite, per_candidate, float("nan")), finite

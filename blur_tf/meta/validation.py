"""Validation of a population of genomes on held-out tasks: accuracy per inner step.

For each validation task a network of the same hidden sizes is built with the task's own input
and output sizes (the genome does not depend on layer sizes), so a genome meta-trained on 10×10
MNIST is validated on 28×28 MNIST or Fashion-MNIST, or on other toy tasks.

Every genome is scored on the *same* data and the *same* initial synapses (common random numbers,
fixed by the validation seed and independent of the meta-step), so validation scores are
comparable across genomes and across time. For each of `networks` networks per genome the
compiled loop runs `length` inner steps on fresh training batches and records the accuracy on a
fixed held-out batch before the first step and after every step: a curve [G, length + 1].
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np
import tensorflow as tf

from blur_tf.genome import Genome
from blur_tf.meta import seeds
from blur_tf.meta.estimators import repeat_genome
from blur_tf.meta.problem import check_hidden_sizes, sample_members, task_name
from blur_tf.network import BlurNetwork
from blur_tf.rule import Rule

SCORES = ("final", "mean")


@dataclasses.dataclass
class ValidationResult:
    """Curves per task: `curves[name]` is float [G, length + 1] (accuracy after t steps).

    `score` says how a genome is ranked: `final` accuracy after `length` steps, or the `mean`
    accuracy after steps 1 … length (the area under the curve: early speed counts).
    """

    length: int
    curves: dict
    score: str = "final"

    def final(self) -> dict:
        """{task: [G] accuracy after `length` steps}."""
        return {name: curve[:, -1] for name, curve in self.curves.items()}

    def scores(self) -> np.ndarray:
        """[G]: the selection score of each genome (see `score`), averaged over tasks."""
        if self.score == "final":
            per_task = self.final().values()
        else:
            per_task = [curve[:, 1:].mean(axis=1) for curve in self.curves.values()]
        return np.mean(np.stack(list(per_task)), axis=0)

    def best(self) -> int:
        """Index of the genome with the best score (lowest index on ties)."""
        return int(np.argmax(self.scores()))


class Validator:
    """Accuracy-per-inner-step curves of G genomes on held-out tasks.

    Args:
      tasks: validation task sources (`input_size`, `num_classes`, `sample_train`,
        `sample_eval`); shapes may differ from the training tasks and from each other.
      hidden_sizes, rule: the architecture (as meta-training).
      batch_size: examples per inner step.
      networks: networks per genome (different data and initial synapses), averaged.
      eval_examples: held-out examples the accuracy is measured on (one forward batch).
      seed: fixes data and synapses of every validation run.
      score: how genomes are ranked (`ValidationResult.score`): 'final' or 'mean'.
    """

    def __init__(
        self,
        tasks: Sequence,
        hidden_sizes: Sequence[int],
        rule: Rule,
        batch_size: int,
        networks: int = 4,
        eval_examples: int = 512,
        seed: int = 0,
        score: str = "final",
    ):
        if score not in SCORES:
            raise ValueError(f"validation score {score!r}; one of {SCORES}")
        self.score = score
        if not isinstance(networks, int) or networks < 1:
            raise ValueError(f"validation networks must be an int >= 1, got {networks!r}")
        if not isinstance(eval_examples, int) or eval_examples < 2:
            raise ValueError(f"validation eval_examples must be >= 2, got {eval_examples!r}")
        self.tasks = list(tasks)
        self.names = [task_name(t) for t in self.tasks]
        if len(set(self.names)) != len(self.names):
            raise ValueError(f"validation tasks must be distinct, got {self.names}")
        hidden = check_hidden_sizes(hidden_sizes)
        self.networks_per_genome, self.batch_size = networks, batch_size
        self.eval_examples, self.seed, self.rule = eval_examples, int(seed), rule
        self.networks = [
            BlurNetwork([int(t.input_size), *hidden, int(t.num_classes)], rule) for t in self.tasks
        ]
        self._synapses = [
            n.init_synapses(networks, seeds.int_seed(seed, i, seeds.SYNAPSES))
            for i, n in enumerate(self.networks)
        ]
        self._compiled = [
            tf.function(self._make_curve_fn(i), reduce_retracing=True)
            for i in range(len(self.tasks))
        ]

    def _make_curve_fn(self, index: int):
        task, network = self.tasks[index], self.networks[index]
        m, batch = self.networks_per_genome, self.batch_size
        base_seed = tf.constant(seeds.step_seed(self.seed, index, seeds.VALIDATION))

        def curve(genome: Genome, synapses, length):
            num_genomes = int(genome.forward_transform.shape[0])
            members = repeat_genome(genome, m)
            x_eval, y_eval = sample_members(
                task, seeds.fold(base_seed, seeds.EVAL), m, self.eval_examples, "eval"
            )
            tile = lambda t: tf.tile(t, [num_genomes] + [1] * (t.shape.rank - 1))
            x_eval, y_eval = tile(x_eval), tile(y_eval)
            data_seed = seeds.fold(base_seed, seeds.DATA)

            def batch_fn(t):
                x, y = sample_members(task, seeds.fold(data_seed, t), m, batch, "train")
                return tile(x), tile(y)

            synapses = tf.nest.map_structure(tile, synapses)
            curve, _ = network.accuracy_curve(members, synapses, batch_fn, length, x_eval, y_eval)
            return tf.reduce_mean(tf.reshape(curve, [num_genomes, m, -1]), axis=1)  # [G, T + 1]

        return curve

    def __call__(self, genome: Genome, length: int) -> ValidationResult:
        """Curves of every genome of `genome` (population G) on every validation task."""
        if not isinstance(length, (int, np.integer)) or length < 0:
            raise ValueError(f"validation length must be an int >= 0, got {length!r}")
        genome = genome.as_tensors()
        length_t = tf.constant(int(length), tf.int32)
        curves = {
            name: fn(genome, synapses, length_t).numpy()
            for name, fn, synapses in zip(self.names, self._compiled, self._synapses)
        }
        return ValidationResult(int(length), curves, self.score)

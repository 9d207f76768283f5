"""The inner problem of meta-training: which network learns which tasks, and how it is scored.

`InnerProblem` owns the architecture (one `BlurNetwork` whose input and output sizes come from
the tasks), the training tasks and the batch sizes. Everything it does inside the compiled
meta-step is a pure function of a stateless seed:

* `sample(seed, population)` picks one training task per population member and returns a
  batch function `t -> (x [P, B, n], y [P, B])` for the unroll plus the held-out batch the
  meta-loss is computed on;
* `loss(logits, labels)` is the meta-objective, per member, on held-out examples: a choice
  among `OBJECTIVES` (pure functions of scaled state 0 of the output layer and the labels):
  softmax cross-entropy (DESIGN §1, the default) or the squared error to the one-hot labels
  (for learners whose outputs are regressed).

Task choice: every population member (network) gets its own task, drawn uniformly from the
training tasks at each meta-step; members therefore must share shapes. All training tasks must
have the same input size (ValueError otherwise); the network has as many outputs as the task
with the most classes, and tasks with fewer classes simply never use (and always feed −1 back
into) the extra output units. Data for every task are drawn at each inner step and each member
keeps its own task's rows (cheap for toy and image tasks: a gather).

Task sources: `blur_tf.tasks.TaskSource`s (a `Task`, a `TaskFamily`, `NWayEpisodes`); each is
drawn once per meta-step (a task draws itself) and the resulting episode is sampled.
"""

from __future__ import annotations

from collections.abc import Sequence

import tensorflow as tf

from blur_tf.genome import Genome
from blur_tf.meta import seeds
from blur_tf.network import BlurNetwork, accuracy
from blur_tf.rule import Rule
from blur_tf.tasks.base import TaskSource


def cross_entropy(logits: tf.Tensor, labels: tf.Tensor) -> tf.Tensor:
    """[P]: mean softmax cross-entropy over each member's examples (logits [P, N, C])."""
    return tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels, logits), -1)


def squared_error(logits: tf.Tensor, labels: tf.Tensor) -> tf.Tensor:
    """[P]: mean over examples of the squared distance of the outputs to one-hot labels."""
    target = tf.one_hot(labels, tf.shape(logits)[-1], dtype=logits.dtype)
    return tf.reduce_mean(tf.reduce_sum(tf.square(logits - target), -1), -1)


OBJECTIVES = {"cross_entropy": cross_entropy, "squared_error": squared_error}


def task_name(task) -> str:
    """A task's spec string (or name, or repr) for logs and summaries."""
    return str(getattr(task, "spec", None) or getattr(task, "name", None) or repr(task))


def check_hidden_sizes(hidden_sizes) -> tuple[int, ...]:
    sizes = tuple(hidden_sizes)
    if any(not isinstance(n, int) or n < 1 for n in sizes):
        raise ValueError(f"hidden layer sizes must be positive ints, got {list(hidden_sizes)}")
    return sizes


def sample_members(source, seed, population: int, batch_size: int, stream: str):
    """(x [P, B, n], y [P, B]) from one task source: P·B examples, reshaped per member."""
    sampler = source.sample_train if stream == "train" else source.sample_eval
    x, y = sampler(seed, population * batch_size)
    return (
        tf.reshape(tf.cast(x, tf.float32), [population, batch_size, source.input_size]),
        tf.reshape(tf.cast(y, tf.int32), [population, batch_size]),
    )


def random_genome(
    rule: Rule, seed: int, population: int, transform_std: float = 0.5, synapse_update: float = 0.05
) -> Genome:
    """`Genome.random` of the rule's K: where meta-training of a BLUR network starts."""
    return Genome.random(
        rule.num_states,
        seed=seed,
        population=population,
        transform_std=transform_std,
        synapse_update=synapse_update,
    )


class InnerProblem:
    """Training tasks + architecture + batch sizes: the data and loss of one meta-step.

    Args:
      tasks: training task sources (see the module docstring), at least one.
      hidden_sizes: hidden layer sizes; input and output sizes come from the tasks.
      rule: the BLUR rule of the inner networks.
      batch_size: examples per inner step and member.
      eval_batch_size: held-out examples per member for the meta-loss (default batch_size).
      logit_scale: the meta-loss is computed on `logit_scale · state 0` (state 0 is bounded
        by tanh, so > 1 sharpens the softmax); accuracy is unaffected.
      objective: the meta-loss, a key of `OBJECTIVES`.
    """

    def __init__(
        self,
        tasks: Sequence,
        hidden_sizes: Sequence[int],
        rule: Rule,
        batch_size: int,
        eval_batch_size: int | None = None,
        logit_scale: float = 1.0,
        objective: str = "cross_entropy",
    ):
        tasks = list(tasks)
        if not tasks:
            raise ValueError("meta-training needs at least one training task")
        strangers = [task_name(t) for t in tasks if not isinstance(t, TaskSource)]
        if strangers:
            raise ValueError(
                f"training tasks must be task sources (blur_tf.tasks.TaskSource), got {strangers}"
            )
        if objective not in OBJECTIVES:
            raise ValueError(f"meta-loss objective {objective!r}; one of {sorted(OBJECTIVES)}")
        input_sizes = {int(t.input_size) for t in tasks}
        if len(input_sizes) != 1:
            raise ValueError(
                "all training tasks must have the same input size (members of one "
                "compiled meta-step share the network shape), got "
                + ", ".join(f"{task_name(t)}: {t.input_size}" for t in tasks)
            )
        if not isinstance(batch_size, int) or batch_size < 2:
            raise ValueError(
                f"batch_size must be an int >= 2 (normalization needs a batch), got {batch_size!r}"
            )
        eval_batch_size = batch_size if eval_batch_size is None else eval_batch_size
        if not isinstance(eval_batch_size, int) or eval_batch_size < 2:
            raise ValueError(f"eval_batch_size must be an int >= 2, got {eval_batch_size!r}")
        if not logit_scale > 0:
            raise ValueError(f"logit_scale must be > 0, got {logit_scale}")
        self.tasks = tasks
        self.task_names = [task_name(t) for t in tasks]
        self.hidden_sizes = check_hidden_sizes(hidden_sizes)
        self.rule = rule
        self.batch_size, self.eval_batch_size = batch_size, eval_batch_size
        self.logit_scale = float(logit_scale)
        self.objective = OBJECTIVES[objective]
        self.input_size = input_sizes.pop()
        self.num_classes = max(int(t.num_classes) for t in tasks)
        self.network = BlurNetwork([self.input_size, *self.hidden_sizes, self.num_classes], rule)

    metric_name = "acc"

    @property
    def num_tasks(self) -> int:
        return len(self.tasks)

    def initial_params(self, seed: int, population: int, **kwargs) -> Genome:
        """The meta-parameters meta-training starts from: `random_genome` of the rule."""
        return random_genome(self.rule, seed, population, **kwargs)

    def check_params(self, genome) -> None:
        """ValueError unless `genome` is a genome for this problem's rule."""
        self.rule.check_genome(genome)

    def init_synapses(self, population: int, seed: int):
        """Fresh synapses for `population` networks (eager; passed into the compiled step)."""
        return self.network.init_synapses(population, seed)

    @property
    def has_families(self) -> bool:
        """True if a task source draws a new problem every meta-step (not `fixed`)."""
        return not all(t.fixed for t in self.tasks)

    def sample_task_ids(self, seed: tf.Tensor, population: int) -> tf.Tensor:
        """int32 [P]: the training task of each member at the meta-step of `seed`."""
        return tf.random.stateless_uniform(
            [population], seeds.fold(seed, seeds.TASKS), 0, len(self.tasks), dtype=tf.int32
        )

    def sample(self, seed: tf.Tensor, population: int, task_ids: tf.Tensor | None = None):
        """In-graph data of one meta-step; `task_ids` [P] overrides the drawn task choice.

        Returns (task_ids int32 [P], batch_fn t -> (x [P, B, n], y [P, B]),
        (x_eval [P, B_eval, n], y_eval [P, B_eval])).
        """
        sources = [t.draw(seeds.fold(seed, 100 + i)) for i, t in enumerate(self.tasks)]
        if task_ids is None:
            task_ids = self.sample_task_ids(seed, population)

        def select(pairs):
            if len(pairs) == 1:
                return pairs[0]
            xs = tf.stack([x for x, _ in pairs], axis=1)  # [P, N, B, n]
            ys = tf.stack([y for _, y in pairs], axis=1)
            return (
                tf.gather(xs, task_ids, axis=1, batch_dims=1),
                tf.gather(ys, task_ids, axis=1, batch_dims=1),
            )

        data_seed = seeds.fold(seed, seeds.DATA)

        def batch_fn(t):
            step = seeds.fold(data_seed, t)
            return select(
                [sample_members(s, step, population, self.batch_size, "train") for s in sources]
            )

        eval_seed = seeds.fold(seed, seeds.EVAL)
        eval_batch = select(
            [
                sample_members(s, eval_seed, population, self.eval_batch_size, "eval")
                for s in sources
            ]
        )
        return task_ids, batch_fn, eval_batch

    def loss(self, logits: tf.Tensor, labels: tf.Tensor) -> tf.Tensor:
        """Per-member meta-loss [P]: the objective of scaled state 0."""
        return self.objective(logits * self.logit_scale, labels)

    def metric(self, logits: tf.Tensor, labels: tf.Tensor) -> tf.Tensor:
        """Per-member score [P] reported in logs: held-out accuracy."""
        return accuracy(logits, labels)

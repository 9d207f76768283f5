"""The inner problem of online-episode learners: FLP-family networks and BLUR on the same episodes.

`EpisodeProblem` is `InnerProblem`'s counterpart for episodes of a fixed presentation order
(`blur_tf.tasks.sine.SineEpisodes`, regression; `blur_tf.tasks.online.OnlineEpisodes`,
one-image-per-step classification): one network learns one episode per member and is scored
on the episode's query points after its last step (query MSE, or cross-entropy / accuracy).
The network is an `FlpNetwork` (meta-learned initial weights, `blur_tf.flp`) or a
`BlurNetwork` (a genome and fresh random synapses), so both learner families meet on equal
terms. It has the interface the estimators and `GradientMetaTraining` use: `network`
(`unroll`, `outputs`), `init_synapses`, `initial_params`, `check_params`, `sample`, `loss`,
`metric` / `metric_name`, `task_names`. The inner horizon is the episode's length T
(`length`): the launchers use it as the schedule's constant length (a step past T would repeat
the last batch).
"""

from __future__ import annotations

import tensorflow as tf

from blur_tf.flp import FlpNetwork
from blur_tf.meta import seeds
from blur_tf.meta.problem import cross_entropy, random_genome
from blur_tf.network import BlurNetwork, accuracy


def mean_squared_error(outputs: tf.Tensor, targets: tf.Tensor) -> tf.Tensor:
    """[P]: mean over examples of Σ_outputs (ŷ − y)²; outputs [P, N, C], targets [P, N(, C)]."""
    targets = targets[..., None] if targets.shape.rank == 2 else targets
    return tf.reduce_mean(tf.reduce_sum(tf.square(outputs - targets), -1), -1)


class EpisodeProblem:
    """A network on episodes of a fixed order (module doc).

    Args:
      network: an `FlpNetwork` or a `BlurNetwork` whose `regression` matches the episodes'
        (a BLUR regressor: `Rule(feedback='target')`); input and output sizes must be the
        episodes'.
      episodes: the episode source (`SineEpisodes`, `OnlineEpisodes`).
      logit_scale: classification meta-loss on `logit_scale · outputs` (BLUR's outputs are
        tanh-bounded; accuracy is unaffected).
    """

    def __init__(self, network, episodes, logit_scale: float = 1.0):
        if not isinstance(network, (FlpNetwork, BlurNetwork)):
            raise ValueError(
                f"EpisodeProblem needs an FlpNetwork or a BlurNetwork, got {type(network).__name__}"
            )
        sizes = list(network.layer_sizes)
        if sizes[0] != episodes.input_size or sizes[-1] != episodes.output_size:
            raise ValueError(
                f"layer sizes {sizes}: the {episodes.name} episodes need input size "
                f"{episodes.input_size} and {episodes.output_size} outputs"
            )
        if network.regression != episodes.regression:
            kind = "regression" if episodes.regression else "classification"
            raise ValueError(
                f"{kind} episodes need a {type(network).__name__} with "
                f"regression={episodes.regression}"
                + (
                    " (a BLUR regressor: Rule(feedback='target'))"
                    if isinstance(network, BlurNetwork) and episodes.regression
                    else ""
                )
            )
        if not logit_scale > 0:
            raise ValueError(f"logit_scale must be > 0, got {logit_scale}")
        self.network, self.episodes = network, episodes
        self.logit_scale = float(logit_scale)
        self.metric_name = "mse" if episodes.regression else "acc"
        self.task_names = [episodes.name]
        self.num_tasks = 1
        self.has_families = True

    @property
    def length(self) -> int:
        return self.episodes.length

    def init_synapses(self, population: int, seed: int):
        return self.network.init_synapses(population, seed)

    def initial_params(self, seed: int, population: int, **kwargs):
        """Fresh meta-parameters: `FlpNetwork.initial_params`, or `problem.random_genome` of
        the BLUR rule (as `InnerProblem.initial_params`)."""
        if isinstance(self.network, FlpNetwork):
            return self.network.initial_params(population, seed)
        return random_genome(self.network.rule, seed, population, **kwargs)

    def check_params(self, params) -> None:
        if isinstance(self.network, FlpNetwork):
            self.network.check_params(params)
        else:
            self.network.rule.check_genome(params)

    def sample(self, seed: tf.Tensor, population: int, stream: str = "train"):
        """(task_ids zeros [P], batch_fn t -> (x [P, B, n], y [P, B]), (x_query, y_query)) of
        one episode per network ('train': meta-training functions or alphabets; 'eval': fresh
        functions, evaluation alphabets)."""
        xs, ys, x_query, y_query = self.episodes.sample(
            seeds.fold(seed, seeds.DATA), population, stream
        )
        last = self.episodes.length - 1

        def batch_fn(t):
            t = tf.minimum(t, last)
            return xs[t], ys[t]

        return tf.zeros([population], tf.int32), batch_fn, (x_query, y_query)

    def loss(self, outputs: tf.Tensor, targets: tf.Tensor) -> tf.Tensor:
        """Per-network meta-loss [P]: the query MSE, or the query cross-entropy of
        `logit_scale · outputs`."""
        if self.episodes.regression:
            return mean_squared_error(outputs, targets)
        return cross_entropy(outputs * self.logit_scale, targets)

    def metric(self, outputs: tf.Tensor, targets: tf.Tensor) -> tf.Tensor:
        """Per-network score [P] reported in logs: the query MSE, or the query accuracy."""
        if self.episodes.regression:
            return mean_squared_error(outputs, targets)
        return accuracy(outputs, targets)

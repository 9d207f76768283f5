"""The inner problem of learners that meta-learn their initial weights on regression episodes.

`EpisodeProblem` is `InnerProblem`'s counterpart for the FLP family (`blur_tf.flp`): one
`FlpNetwork` learns one episode per network (`blur_tf.tasks.sine.SineEpisodes`) and is scored by
the mean squared error on fresh query points of the episode's functions. It has the interface
the estimators and `GradientMetaTraining` use: `network` (`unroll`, `outputs`),
`init_synapses`, `initial_params`, `check_params`, `sample`, `loss`, `metric` / `metric_name`,
`task_names`. The inner horizon is the episode's length T (`length`): the launchers use it as
the schedule's constant length (a step past T would repeat the last batch).
"""

from __future__ import annotations

import tensorflow as tf

from blur_tf.flp import FlpNetwork
from blur_tf.meta import seeds


def mean_squared_error(outputs: tf.Tensor, targets: tf.Tensor) -> tf.Tensor:
    """[P]: mean over examples of Σ_outputs (ŷ − y)²; outputs [P, N, C], targets [P, N(, C)]."""
    targets = targets[..., None] if targets.shape.rank == 2 else targets
    return tf.reduce_mean(tf.reduce_sum(tf.square(outputs - targets), -1), -1)


class EpisodeProblem:
    """An FLP-family network on regression episodes (module doc).

    Args:
      network: the `FlpNetwork` (its input size must be the episodes' and its output size 1).
      episodes: the episode source (`SineEpisodes`).
    """

    metric_name = "mse"

    def __init__(self, network: FlpNetwork, episodes):
        if not isinstance(network, FlpNetwork):
            raise ValueError(f"EpisodeProblem needs an FlpNetwork, got {type(network).__name__}")
        if network.layer_sizes[0] != episodes.input_size or network.layer_sizes[-1] != 1:
            raise ValueError(
                f"layer sizes {list(network.layer_sizes)}: the {episodes.name} "
                f"episodes need input size {episodes.input_size} and 1 output"
            )
        if not network.regression:
            raise ValueError("regression episodes need a network with regression=True")
        self.network, self.episodes = network, episodes
        self.task_names = [episodes.name]
        self.num_tasks = 1
        self.has_families = True

    @property
    def length(self) -> int:
        return self.episodes.length

    def init_synapses(self, population: int, seed: int):
        return self.network.init_synapses(population, seed)

    def initial_params(self, seed: int, population: int, **_):
        """Fresh meta-parameters of the network (`FlpNetwork.initial_params`)."""
        return self.network.initial_params(population, seed)

    def check_params(self, params) -> None:
        self.network.check_params(params)

    def sample(self, seed: tf.Tensor, population: int, stream: str = "train"):
        """(task_ids zeros [P], batch_fn t -> (x [P, B, n], y [P, B]), (x_query, y_query)) of
        one episode per network ('train': functions from the pool; 'eval': fresh)."""
        xs, ys, x_query, y_query = self.episodes.sample(
            seeds.fold(seed, seeds.DATA), population, stream
        )
        last = self.episodes.length - 1

        def batch_fn(t):
            t = tf.minimum(t, last)
            return xs[t], ys[t]

        return tf.zeros([population], tf.int32), batch_fn, (x_query, y_query)

    def loss(self, outputs: tf.Tensor, targets: tf.Tensor) -> tf.Tensor:
        """Per-network meta-loss [P]: the query MSE."""
        return mean_squared_error(outputs, targets)

    def metric(self, outputs: tf.Tensor, targets: tf.Tensor) -> tf.Tensor:
        """Per-network score [P] reported in logs: the query MSE."""
        return mean_squared_error(outputs, targets)

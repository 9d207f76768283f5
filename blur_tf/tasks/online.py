"""Online few-shot classification episodes (Lindsey & Litwin-Kumar 2020 §5.2): one image per step.

An episode is N-way K-shot on an alphabet-disjoint Omniglot split (`omniglot_small`): N
characters, labels 0..N−1 in random order, K support drawings of each shown *one at a time*,
T = N·K inner steps of batch 1:

* `continual` order: label 0's K drawings, then label 1's, …;
* `iid` order: the same N·K drawings in a random order.

After the episode the learner is scored on Q query drawings of every class (the query drawers
11–20, never a support drawer 01–10). Meta-training episodes come from the `train` alphabets,
evaluation episodes (`stream='eval'`) from the `test` alphabets, so no character is shared.

The episode source has the interface of `blur_tf.tasks.sine.SineEpisodes` that
`blur_tf.meta.episodes.EpisodeProblem` and `blur_tf.evaluation.episodes` use: `name`,
`input_size`, `output_size`, `regression`, `length`, `blocks` × `block_length` (a block is one
class in the continual order), `query_points` (per block) and `sample(seed, population, stream)`.
"""

from __future__ import annotations

import tensorflow as tf

from blur_tf.tasks import omniglot_small
from blur_tf.tasks.families import NWayEpisodes
from blur_tf.tasks.sine import ORDERS


class OnlineEpisodes:
    """Online N-way K-shot episodes of `omniglot_small` (module doc).

    Args:
      way: N classes per episode.
      shot: K support drawings per class (≤ 10).
      query: Q query drawings per class (≤ 10).
      order: 'iid' or 'continual'.
      size: image side (images are size × size, strokes 1).
      tfds_manual_dir: folder holding `omniglot/` (else env `BLUR_TFDS_MANUAL_DIR`).
    """

    regression = False

    def __init__(
        self,
        way: int = 5,
        shot: int = 5,
        query: int = 5,
        order: str = "iid",
        size: int = 28,
        tfds_manual_dir=None,
    ):
        if order not in ORDERS:
            raise ValueError(f"order {order!r}; one of {ORDERS}")
        half = len(omniglot_small.SUPPORT_DRAWERS)
        for name, value, high in (("way", way, None), ("shot", shot, half), ("query", query, half)):
            if not isinstance(value, int) or value < 1 or (high and value > high):
                raise ValueError(
                    f"online episodes: {name} must be an int in 1..{high or 'classes'}, "
                    f"got {value!r}"
                )
        self.way, self.shot, self.query, self.order, self.size = way, shot, query, order, size
        self.sources = {
            stream: NWayEpisodes(
                omniglot_small.OmniglotSmallTask(split, size, tfds_manual_dir),
                way,
                shot=shot,
                query=query,
            )
            for stream, split in (("train", "train"), ("eval", "test"))
        }

    @property
    def name(self) -> str:
        return f"omniglot_online.{self.order}"

    @property
    def input_size(self) -> int:
        return self.size * self.size

    @property
    def output_size(self) -> int:
        return self.way

    @property
    def length(self) -> int:
        """T = N·K inner steps of one image."""
        return self.way * self.shot

    @property
    def blocks(self) -> int:
        return self.way

    @property
    def block_length(self) -> int:
        return self.shot

    @property
    def query_points(self) -> int:
        return self.query

    def sample(self, seed, population: int, stream: str = "train"):
        """(xs [T, P, 1, n], ys [T, P, 1], x_query [P, N·Q, n], y_query [P, N·Q]) of P episodes
        ('train': meta-training alphabets, 'eval': evaluation alphabets); stateless in `seed`
        (int64 [2]). Queries are grouped by label (Q of label 0 first)."""
        source = self.sources[stream]
        seeds = tf.random.experimental.stateless_split(seed, population)
        _, support, query = tf.map_fn(
            source.draw_parts,
            seeds,
            fn_output_signature=(tf.int32, tf.int32, tf.int32),
        )  # [P, N], [P, N, K], [P, N, Q]
        labels = tf.repeat(tf.range(self.way), self.shot)  # [T] continual
        rows = tf.reshape(support, [population, self.length])
        labels = tf.tile(labels[None], [population, 1])
        if self.order == "iid":
            keys = tf.random.stateless_uniform(
                [population, self.length], tf.random.experimental.stateless_fold_in(seed, 1)
            )
            permutation = tf.argsort(keys, axis=1)
            rows = tf.gather(rows, permutation, batch_dims=1)
            labels = tf.gather(labels, permutation, batch_dims=1)
        x, _ = source.task.gather("train", rows)  # [P, T, n]
        xs = tf.transpose(x, [1, 0, 2])[:, :, None, :]
        ys = tf.transpose(labels)[:, :, None]
        x_query, _ = source.task.gather("eval", tf.reshape(query, [population, -1]))
        y_query = tf.tile(tf.repeat(tf.range(self.way), self.query)[None], [population, 1])
        return xs, ys, x_query, y_query

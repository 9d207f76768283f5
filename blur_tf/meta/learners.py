"""Outer learners: apply meta-gradients to a population of genomes, row by row.

`PopulationAdam` is Adam (Kingma & Ba) over the genome variables, written so every genome of
the population (row g of each [G, …] variable) is an independent optimization:

* gradients are clipped per genome, by the global norm of that genome's row over all fields;
* a genome whose loss or gradient is non-finite is *skipped*: its parameters and moments are
  left untouched (`tf.where` on a per-row mask), and the skip is reported;
* so is a genome whose update would make any of its values non-finite or larger in magnitude
  than `max_abs_value` (default `genome.MAX_ABS_VALUE`, 100: learned genomes stay within a
  few units; a blown-up learning rate makes the first Adam step about as large as the
  learning rate itself, and a genome at ±1e6 only ever produces non-finite losses afterwards);
* `learning_rate` is one rate, or one per variable (per-field meta-learning rates, e.g. FLP's
  much smaller rate for its plasticity coefficients). Clipping scales a genome's whole gradient
  row, so it leaves Adam's direction and step size per value unchanged unless a gradient falls
  to the order of `epsilon` (see docs/flp.md);
* `sync(best)` copies genome `best`'s parameters *and* optimizer moments to every row, which is
  the paper's synchronization of its parallel runs at curriculum stages.

Its state (moments and per-genome step counts) lives in `tf.Variable`s (`variables`), so
`tf.train.Checkpoint` saves and restores it with the genome.
"""

from __future__ import annotations

import tensorflow as tf

from blur_tf.genome import MAX_ABS_VALUE


def _row_mask(mask: tf.Tensor, like: tf.Tensor) -> tf.Tensor:
    """Per-genome bool mask [G] broadcast to a [G, …] tensor."""
    return tf.reshape(mask, [-1] + [1] * (like.shape.rank - 1))


def row_sum_of_squares(tensors) -> tf.Tensor:
    """[G]: Σ over every tensor and every non-leading axis of x², NaN-propagating."""
    return tf.add_n(
        [tf.reduce_sum(tf.reshape(tf.square(t), [tf.shape(t)[0], -1]), axis=1) for t in tensors]
    )


class PopulationAdam(tf.Module):
    """Adam with per-genome gradient clipping, skipping and synchronization (see module doc).

    Args:
      params: list of `tf.Variable`s, all with leading axis G (the genome fields).
      learning_rate: Adam's step size, a float or a sequence of one float per variable.
      beta_1, beta_2, epsilon: Adam's other hyper-parameters.
      clip_norm: per-genome global-norm clipping threshold (None or 0: no clipping).
      max_abs_value: an update that would leave any genome value beyond ± this is skipped.
    """

    def __init__(
        self,
        params,
        learning_rate: float = 3e-3,
        beta_1: float = 0.9,
        beta_2: float = 0.999,
        epsilon: float = 1e-8,
        clip_norm: float | None = 1.0,
        max_abs_value: float = MAX_ABS_VALUE,
        name: str = "population_adam",
    ):
        super().__init__(name=name)
        self.params = list(params)
        rates = (
            list(learning_rate)
            if isinstance(learning_rate, (list, tuple))
            else [learning_rate] * len(self.params)
        )
        if len(rates) != len(self.params) or not all(r > 0 for r in rates):
            raise ValueError(
                f"learning_rate must be > 0 (one or one per variable: "
                f"{len(self.params)}), got {learning_rate}"
            )
        if clip_norm is not None and clip_norm < 0:
            raise ValueError(f"clip_norm must be >= 0 or None, got {clip_norm}")
        if not max_abs_value > 0:
            raise ValueError(f"max_abs_value must be > 0, got {max_abs_value}")
        self.max_abs_value = float(max_abs_value)
        self.learning_rate, self.beta_1, self.beta_2 = learning_rate, beta_1, beta_2
        self.learning_rates = [float(r) for r in rates]
        self.epsilon, self.clip_norm = epsilon, clip_norm or None
        num_genomes = int(self.params[0].shape[0])
        self.first_moments = [
            tf.Variable(tf.zeros_like(p), trainable=False, name="m") for p in self.params
        ]
        self.second_moments = [
            tf.Variable(tf.zeros_like(p), trainable=False, name="v") for p in self.params
        ]
        self.steps = tf.Variable(tf.zeros([num_genomes], tf.float32), trainable=False, name="steps")

    def apply(self, gradients, losses: tf.Tensor):
        """One Adam step on every genome with finite loss and gradient whose new values are
        finite and within ±max_abs_value; the other genomes are left as they are.

        Returns (applied bool [G], gradient norms before clipping [G]).
        """
        squares = row_sum_of_squares(gradients)
        finite = tf.math.is_finite(losses) & tf.math.is_finite(squares)
        norms = tf.sqrt(squares)
        scale = tf.ones_like(norms)
        if self.clip_norm:
            scale = tf.minimum(1.0, self.clip_norm / tf.maximum(norms, 1e-12))
        steps = self.steps + 1.0  # of a genome if its update is applied
        correction = tf.sqrt(1.0 - tf.pow(self.beta_2, steps)) / (1.0 - tf.pow(self.beta_1, steps))
        candidates = []
        for p, m, v, g, rate in zip(
            self.params, self.first_moments, self.second_moments, gradients, self.learning_rates
        ):
            g = tf.where(_row_mask(finite, p), g * _row_mask(scale, p), tf.zeros_like(g))
            new_m = self.beta_1 * m + (1.0 - self.beta_1) * g
            new_v = self.beta_2 * v + (1.0 - self.beta_2) * tf.square(g)
            new_p = p - (rate * _row_mask(correction, p) * new_m / (tf.sqrt(new_v) + self.epsilon))
            candidates.append((new_p, new_m, new_v))
        within = [
            tf.reduce_all(
                tf.reshape(
                    tf.abs(new_p) <= self.max_abs_value,  # NaN: False
                    [tf.shape(new_p)[0], -1],
                ),
                axis=1,
            )
            for new_p, _, _ in candidates
        ]
        applied = finite & tf.reduce_all(tf.stack(within), axis=0)
        self.steps.assign(self.steps + tf.cast(applied, tf.float32))
        for (p, m, v), (new_p, new_m, new_v) in zip(
            zip(self.params, self.first_moments, self.second_moments), candidates
        ):
            mask = _row_mask(applied, p)
            m.assign(tf.where(mask, new_m, m))
            v.assign(tf.where(mask, new_v, v))
            p.assign(tf.where(mask, new_p, p))
        return applied, norms

    def sync(self, best: int | tf.Tensor) -> None:
        """Copies genome `best`'s parameters and optimizer state to every genome."""
        for variable in [*self.params, *self.first_moments, *self.second_moments, self.steps]:
            row = tf.gather(variable, [best])
            variable.assign(tf.repeat(row, tf.shape(variable)[0], axis=0))

"""Selection: for every horizon, the configuration with the best mean accuracy over seeds.

As learned-optimizer papers do, the configuration (learning rate, activation; or genome member)
is chosen **at each horizon** and reported with its mean and standard deviation over seeds. The
selection uses the same held-out examples it reports on, which favours the swept baselines (and
a swept backprop genome), never a single learned genome.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np


@dataclasses.dataclass(frozen=True)
class HorizonBest:
    """The winning configuration at one horizon (one `per_horizon` entry of results.json).

    Attributes:
      horizon: inner steps.
      mean, std: the winner's accuracy over seeds (std with ddof 0).
      config: the winner's configuration dict.
      at_edge: whether the winner's learning rate is the smallest or largest of the grid, and
        so is that of every configuration tied with it; None when no grid is given.
    """

    horizon: int
    mean: float
    std: float
    config: dict
    at_edge: bool | None

    def to_dict(self) -> dict:
        """The JSON form: {'horizon', 'mean', 'std', 'config', 'at_edge'} in this order."""
        return dataclasses.asdict(self)


def best_per_horizon(
    accuracy: np.ndarray,
    configs: Sequence[dict],
    horizons: Sequence[int],
    learning_rates: Sequence[float] | None = None,
) -> list[HorizonBest]:
    """For every horizon, the config with the best mean accuracy over seeds at that horizon.

    accuracy [C, S, H]; `learning_rates`: the grid for `HorizonBest.at_edge`. Ties go to the
    first config.
    """
    accuracy = np.asarray(accuracy, np.float64)
    if (
        accuracy.ndim != 3
        or accuracy.shape[0] != len(configs)
        or accuracy.shape[2] != len(horizons)
    ):
        raise ValueError(
            f"accuracy shape {accuracy.shape} does not match {len(configs)} "
            f"configs and {len(horizons)} horizons"
        )
    means, stds = accuracy.mean(axis=1), accuracy.std(axis=1)
    rows = []
    for h, horizon in enumerate(horizons):
        best = int(np.argmax(means[:, h]))
        config = dict(configs[best])
        at_edge = None
        if learning_rates is not None and "learning_rate" in config:
            edges = (min(learning_rates), max(learning_rates))
            tied = np.flatnonzero(means[:, h] == means[best, h])
            at_edge = all(configs[i].get("learning_rate") in edges for i in tied)
        rows.append(
            HorizonBest(
                horizon=int(horizon),
                mean=float(means[best, h]),
                std=float(stds[best, h]),
                config=config,
                at_edge=at_edge,
            )
        )
    return rows

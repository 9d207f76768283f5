"""Gradient meta-training as an outer algorithm: one Adam step on a meta-gradient per meta-step.

One meta-step (compiled once: the unroll length is a tensor, so the curriculum never retraces):
the estimator's inner state for G·M networks (G genomes × M networks per genome), its loss and
meta-gradient, and one `PopulationAdam` step on every genome whose loss and gradient are
finite and whose update keeps it finite and within the learner's bound (any other genome
update is skipped, counted, logged and never applied). After `max_consecutive_skips` skipped
meta-steps in a row (no genome update applied), or when every meta-step of the run was
skipped at its end, the run stops with `MetaTrainingDiverged`.

Meta-parameters: the problem's (`problem.initial_params`, checked by `problem.check_params`):
a BLUR `Genome` for `InnerProblem`, `flp.FlpParams` for `episodes.EpisodeProblem`; any
NamedTuple whose leaves have the population G as leading axis. `field_learning_rates` gives
fields their own Adam rate (FLP's plasticity coefficients).

Best genome: by validation (`accept`); without a validator, the lowest smoothed meta-loss.
At the start of a new schedule stage a population of G > 1 genomes is synchronized to the
best one (parameters and Adam moments; paper §4.2). With a `tf.distribute` strategy the
variables live under its scope and the estimator is split over the replicas
(`distribute.DistributedEstimator`).

Checkpoint names (the format of existing `ckpt/` folders): genome, learner, meta_step,
skipped, best_index, best_score, synced_stage, seed, recent_losses, skipped_meta_steps,
consecutive_skips and, for an estimator with state, estimator.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging

import numpy as np
import tensorflow as tf

from blur_tf.genome import Genome
from blur_tf.meta import distribute, seeds
from blur_tf.meta.estimators import Estimator, FullUnrollGradient, population_of
from blur_tf.meta.learners import PopulationAdam
from blur_tf.meta.outer_loop import OuterAlgorithm, check_count
from blur_tf.meta.problem import InnerProblem
from blur_tf.meta.validation import ValidationResult

log = logging.getLogger(__name__)


class MetaTrainingDiverged(RuntimeError):
    """Meta-training applied no genome update for too long (see the module doc)."""


class _GenomeVariables(tf.Module):
    """Checkpoint container of the meta-parameter variables (by field name)."""

    def __init__(self, genome):
        super().__init__(name="genome")
        self.fields = dict(zip(type(genome)._fields, genome))


def take(params, indices):
    """The members `indices` of a meta-parameter NamedTuple (every leaf gathered on axis 0)."""
    return tf.nest.map_structure(
        lambda v: tf.gather(tf.convert_to_tensor(v, tf.float32), indices), params
    )


def as_variables(params):
    """Fresh trainable `tf.Variable`s holding the leaves of a meta-parameter NamedTuple."""
    return tf.nest.map_structure(lambda v: tf.Variable(tf.convert_to_tensor(v, tf.float32)), params)


def field_rates(params, learning_rate: float, field_learning_rates: dict | None) -> list:
    """One Adam rate per leaf: `field_learning_rates[field]` or `learning_rate`."""
    rates = dict(field_learning_rates or {})
    unknown = sorted(set(rates) - set(type(params)._fields))
    if unknown:
        raise ValueError(
            f"field_learning_rates names unknown fields {unknown}; fields: "
            f"{list(type(params)._fields)}"
        )
    return [
        rates.get(field, learning_rate)
        for field, value in zip(type(params)._fields, params)
        for _ in tf.nest.flatten(value)
    ]


@dataclasses.dataclass
class StepResult:
    """What one meta-step reports (numpy / Python values)."""

    step: int  # meta-steps done after this one
    length: int
    losses: np.ndarray  # [G]
    applied: np.ndarray  # bool [G]
    gradient_norms: np.ndarray  # [G]
    task_ids: np.ndarray  # [G·M]
    accuracy: np.ndarray  # [G·M]


class GradientMetaTraining(OuterAlgorithm):
    """Population gradient meta-training; arguments as `MetaTrainer`'s of the same names."""

    unit = "meta-step"
    optional_state = ("skipped_meta_steps", "consecutive_skips")

    def __init__(
        self,
        problem: InnerProblem,
        *,
        population: int = 1,
        meta_batch: int = 1,
        learning_rate: float = 3e-3,
        clip_norm: float = 1.0,
        seed: int = 0,
        genome: Genome | None = None,
        identical_init: bool = False,
        transform_std: float = 0.5,
        synapse_update: float = 0.05,
        max_consecutive_skips: int = 20,
        estimator: Estimator | None = None,
        learner=None,
        strategy=None,
        field_learning_rates: dict | None = None,
    ):
        self.population = check_count("population", population, 1)
        self.meta_batch = check_count("meta_batch", meta_batch, 1)
        self.max_consecutive_skips = check_count("max_consecutive_skips", max_consecutive_skips, 0)
        self.seed = check_count("seed", seed, 0)
        distribute.replica_share(self.meta_batch, strategy)
        self.problem = problem
        if genome is None:
            genome = problem.initial_params(
                self.seed,
                1 if identical_init else self.population,
                transform_std=transform_std,
                synapse_update=synapse_update,
            )
        problem.check_params(genome)
        if population_of(genome) == 1 and self.population > 1:
            genome = take(genome, [0] * self.population)
        if population_of(genome) != self.population:
            raise ValueError(
                f"initial genome has population {population_of(genome)}, the "
                f"trainer has population {self.population}"
            )
        rates = field_rates(genome, learning_rate, field_learning_rates)
        with strategy.scope() if strategy else contextlib.nullcontext():
            self.genome = (
                genome.as_variables() if isinstance(genome, Genome) else as_variables(genome)
            )
            self.estimator = estimator or FullUnrollGradient(problem, self.meta_batch)
            self.learner = learner or PopulationAdam(
                tf.nest.flatten(self.genome), rates, clip_norm=clip_norm
            )
            counter = lambda name, value=0: tf.Variable(
                value, dtype=tf.int64, trainable=False, name=name
            )
            self.meta_step, self.skipped = counter("meta_step"), counter("skipped")
            self.skipped_meta_steps = counter("skipped_meta_steps")
            self.consecutive_skips = counter("consecutive_skips")
            self.best_index, self.synced_stage = counter("best_index"), counter("synced_stage")
            self.run_seed = counter("seed", self.seed)
            self.best_score = tf.Variable(
                -1.0, dtype=tf.float32, trainable=False, name="best_score"
            )
            self.recent_losses = tf.Variable(
                tf.zeros([self.population]), trainable=False, name="recent_losses"
            )
        self._gradient = self.estimator
        if strategy is not None:
            self._gradient = distribute.DistributedEstimator(
                self.estimator, strategy, self.population, self.meta_batch
            )
        self.trace_count = 0
        self._compiled_step = tf.function(self._meta_step, reduce_retracing=True)

    # ----------------------------------------------------------------------------- state
    def state(self) -> dict:
        state = dict(
            genome=_GenomeVariables(self.genome),
            learner=self.learner,
            meta_step=self.meta_step,
            skipped=self.skipped,
            best_index=self.best_index,
            best_score=self.best_score,
            synced_stage=self.synced_stage,
            seed=self.run_seed,
            recent_losses=self.recent_losses,
            skipped_meta_steps=self.skipped_meta_steps,
            consecutive_skips=self.consecutive_skips,
        )
        if isinstance(self.estimator, tf.Module):
            state["estimator"] = self.estimator
        return state

    def save_state(self, step: int) -> None:
        self.meta_step.assign(step)

    def restored(self, path: str) -> int:
        if int(self.run_seed.numpy()) != self.seed:
            raise ValueError(
                f"checkpoint {path} belongs to a run with seed "
                f"{int(self.run_seed.numpy())}, not {self.seed}"
            )
        return int(self.meta_step.numpy())

    def candidates(self) -> Genome:
        return self.genome

    def best_genome(self):
        return take(self.genome, [int(self.best_index.numpy())])

    # ----------------------------------------------------------------------------- meta-step
    def _meta_step(self, state, seed, length):
        self.trace_count += 1  # Python side effect: runs once per trace
        losses, gradients, diagnostics = self._gradient(self.genome, state, seed, length)
        applied, norms = self.learner.apply(tf.nest.flatten(gradients), losses)
        return losses, applied, norms, diagnostics["task_ids"], diagnostics["accuracy"]

    def step(self, step: int, length: int) -> StepResult:
        state = self.estimator.init_state(
            self.population * self.meta_batch, seeds.int_seed(self.seed, step, seeds.SYNAPSES)
        )
        seed = tf.constant(seeds.step_seed(self.seed, step), tf.int64)
        losses, applied, norms, task_ids, accuracy = self._compiled_step(
            state, seed, tf.constant(length, tf.int32)
        )
        losses, applied = losses.numpy(), applied.numpy()
        skipped_now = int(np.sum(~applied))
        if skipped_now:
            non_finite = int(np.sum(~(np.isfinite(losses) & np.isfinite(norms.numpy()))))
            log.warning(
                "meta-step %d: skipped the update of %d genome(s): %d with a non-finite "
                "loss or gradient, %d whose update would leave the genome non-finite "
                "or beyond ±%g (losses %s)",
                step,
                skipped_now,
                non_finite,
                skipped_now - non_finite,
                self._bound(),
                losses,
            )
            self.skipped.assign_add(skipped_now)
        if applied.any():
            self.consecutive_skips.assign(0)
        else:
            self.skipped_meta_steps.assign_add(1)
            self.consecutive_skips.assign_add(1)
        recent = self.recent_losses.numpy()
        smoothed = np.where(np.isfinite(recent) & (step > 0), 0.9 * recent + 0.1 * losses, losses)
        self.recent_losses.assign(np.where(applied, smoothed, recent).astype(np.float32))
        self.meta_step.assign(step + 1)
        return StepResult(
            step + 1, length, losses, applied, norms.numpy(), task_ids.numpy(), accuracy.numpy()
        )

    def record(self, report: StepResult, seconds: float, summaries) -> None:
        self._check_diverged(final=False)

    def finish(self, validated: bool) -> None:
        self._check_diverged(final=True)
        if not validated:
            self.best_index.assign(int(np.argmin(self.recent_losses.numpy())))

    def _check_diverged(self, final: bool) -> None:
        """MetaTrainingDiverged after `max_consecutive_skips` skipped meta-steps in a row or,
        if `final`, when every meta-step so far was skipped (nothing is saved)."""
        run, steps = int(self.consecutive_skips.numpy()), int(self.meta_step.numpy())
        if (
            not self.max_consecutive_skips
            or not run
            or (run < self.max_consecutive_skips and not (final and run == steps))
        ):
            return
        raise MetaTrainingDiverged(
            f"meta-training diverged: no genome update was applied in the last {run} "
            f"meta-steps (to meta-step {steps}): every loss or gradient was non-finite, or "
            f"every update would have left the genome non-finite or beyond ±{self._bound():g}; "
            f"lower the learning rate (or raise max_consecutive_skips, 0: never stop)"
        )

    def _bound(self) -> float:
        """The learner's bound on genome values (inf for a learner without one)."""
        return float(getattr(self.learner, "max_abs_value", float("inf")))

    # ----------------------------------------------------------------------------- validation
    def accept(self, result: ValidationResult, step: int) -> int:
        best = result.best()
        self.best_index.assign(best)
        self.best_score.assign(float(result.scores()[best]))
        finals = ", ".join(f"{k}={v[best]:.3f}" for k, v in result.final().items())
        log.info(
            "validation at meta-step %d (T=%d): best genome %d, score %.4f [%s]",
            step,
            result.length,
            best,
            result.scores()[best],
            finals,
        )
        return best

    def before_step(self, step: int, stage: int, validate) -> bool:
        """At the start of a new stage: validate and synchronize to the best genome."""
        if stage <= int(self.synced_stage.numpy()):
            return False
        if self.population > 1:
            if validate() is None:
                self.best_index.assign(int(np.argmin(self.recent_losses.numpy())))
            best = int(self.best_index.numpy())
            self.learner.sync(best)
            self.best_index.assign(0)
            log.info(
                "stage %d starts at meta-step %d: population synchronized to genome %d",
                stage,
                step,
                best,
            )
        self.synced_stage.assign(stage)
        return True

    # ----------------------------------------------------------------------------- logs
    def log(self, step: int, total: int, window: list, summaries) -> None:
        names = self.problem.task_names
        correct, seen = np.zeros(len(names)), np.zeros(len(names))
        losses, norms = [], []
        for report, _ in window:
            losses.extend(report.losses[np.isfinite(report.losses)].tolist())
            norms.extend(report.gradient_norms[np.isfinite(report.gradient_norms)].tolist())
            np.add.at(correct, report.task_ids, report.accuracy)
            np.add.at(seen, report.task_ids, 1)
        mean = lambda values: float(np.mean(values)) if values else float("nan")
        task_accuracy = {
            name: float(correct[i] / seen[i]) for i, name in enumerate(names) if seen[i]
        }
        rate = len(window) / max(sum(seconds for _, seconds in window), 1e-9)
        length = window[-1][0].length
        skipped = int(self.skipped.numpy())
        log.info(
            "meta-step %d/%d  T=%d  loss %.4f  train %s %s  skipped %d meta-steps, %d "
            "genome updates  %.2f steps/s",
            step,
            total,
            length,
            mean(losses),
            self.problem.metric_name,
            " ".join(f"{k}={v:.3f}" for k, v in task_accuracy.items()),
            int(self.skipped_meta_steps.numpy()),
            skipped,
            rate,
        )
        if summaries:
            summaries.train(step, mean(losses), task_accuracy, length, skipped, rate, mean(norms))

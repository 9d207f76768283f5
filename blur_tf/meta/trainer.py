"""MetaTrainer: gradient meta-learning of BLUR genomes through the unrolled inner loop.

The pieces are separate and swappable (after google/learned_optimization):

* the **inner problem** (`problem.InnerProblem`): tasks, architecture, batches, meta-loss;
* the **unroll schedule** (`schedules.Schedule`): inner steps of each meta-step, a pure
  function of the outer step (constant, the paper's curriculum, optional jitter);
* the **meta-gradient estimator** (`estimators.Estimator`, default `FullUnrollGradient`);
* the **outer learner** (`learners.PopulationAdam`): Adam with per-genome clipping, skipping
  of non-finite updates and population synchronization;
* the **outer algorithm** (`algorithms.gradient.GradientMetaTraining`: the meta-step, skips and
  divergence, population sync at new stages) run by the **outer loop**
  (`outer_loop.OuterLoop`: counter, log / validate / checkpoint, stop requests, chief-only
  writes).

`MetaTrainer` is that pair under one name: an `OuterLoop` whose algorithm is built from the
arguments below; the algorithm's attributes (genome, learner, skip counters, best_index, …)
are read through the trainer.

Distribution (`strategy`): with a `tf.distribute.Strategy` of R replicas the G·M networks of
a meta-step are split over the replicas (R must divide M) and the per-genome losses and
gradients all-reduced (`distribute`); only the chief keeps checkpoints and writes summaries.

Determinism: every random draw is derived from (seed, meta_step) (see `seeds`), the checkpoint
holds all state, so the same seed gives the same genome and a resumed run ends like an
uninterrupted one (given deterministic kernels: the launcher enables TF op determinism).
"""

from __future__ import annotations

import dataclasses

from blur_tf.genome import Genome
from blur_tf.meta.algorithms.gradient import GradientMetaTraining, MetaTrainingDiverged, StepResult
from blur_tf.meta.checkpoint import StopRequest
from blur_tf.meta.outer_loop import OuterLoop
from blur_tf.meta.problem import InnerProblem
from blur_tf.meta.validation import ValidationResult, Validator

__all__ = ["MetaTrainer", "MetaTrainingDiverged", "StepResult", "TrainResult"]


@dataclasses.dataclass
class TrainResult:
    """Outcome of `MetaTrainer.train`."""

    steps: int  # meta-step counter at the end
    steps_run: int  # meta-steps run by this call
    interrupted: bool  # stopped by a signal (state saved)
    signum: int | None
    seconds: float  # wall time of this call
    step_seconds: float  # time in meta-steps only (excludes validation, I/O)
    skipped: int  # genome updates skipped (all meta-steps of the run)
    validation: ValidationResult | None
    skipped_meta_steps: int = 0  # meta-steps in which no genome update was applied


class MetaTrainer(OuterLoop):
    """Meta-trains a population of genomes by gradient descent through the unroll.

    Args:
      problem: the inner problem (training tasks, architecture, batch sizes, meta-loss).
      schedule: an unroll schedule (`schedules.parse_schedule('curriculum:10,5,2000,50')`).
      population: G, genomes trained side by side.
      meta_batch: M, networks per genome per meta-step (genome repeated along P).
      learning_rate, clip_norm: of the outer learner (Adam; per-genome global-norm clipping).
      seed: the run seed; every random draw derives from (seed, meta_step).
      genome: initial genomes (population G or 1, repeated); default random
        (`Genome.random(K, seed, population=G)`, or G copies of one if `identical_init`).
      transform_std, synapse_update: of `Genome.random` for the default initial genome.
      validator: validation tasks (None: no validation; the population is then never synced
        to a validated genome and the "best" genome has the lowest recent meta-loss).
      validation_length: inner steps of validation; None follows the schedule's current length.
      validate_every, checkpoint_every, log_every: periods in meta-steps (0 = never, except
        final validation and checkpoint).
      checkpoint_dir, summary_dir: where to keep checkpoints / TensorBoard events (optional).
      keep_checkpoints: checkpoints kept.
      max_consecutive_skips: stop with `MetaTrainingDiverged` after this many skipped
        meta-steps in a row (0: never).
      estimator, learner: override the meta-gradient estimator / outer learner (advanced).
      strategy: a `tf.distribute.Strategy` to split each meta-step over; None: one device.
        ValueError (before any work) unless its replica count divides meta_batch.
    """

    def __init__(
        self,
        problem: InnerProblem,
        schedule,
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
        validator: Validator | None = None,
        validation_length: int | None = None,
        validate_every: int = 100,
        checkpoint_every: int = 100,
        log_every: int = 10,
        checkpoint_dir: str | None = None,
        summary_dir: str | None = None,
        keep_checkpoints: int = 3,
        max_consecutive_skips: int = 20,
        estimator=None,
        learner=None,
        strategy=None,
    ):
        algorithm = GradientMetaTraining(
            problem,
            population=population,
            meta_batch=meta_batch,
            learning_rate=learning_rate,
            clip_norm=clip_norm,
            seed=seed,
            genome=genome,
            identical_init=identical_init,
            transform_std=transform_std,
            synapse_update=synapse_update,
            max_consecutive_skips=max_consecutive_skips,
            estimator=estimator,
            learner=learner,
            strategy=strategy,
        )
        super().__init__(
            algorithm,
            schedule,
            validator=validator,
            validation_length=validation_length,
            validate_every=validate_every,
            checkpoint_every=checkpoint_every,
            log_every=log_every,
            checkpoint_dir=checkpoint_dir,
            summary_dir=summary_dir,
            keep_checkpoints=keep_checkpoints,
            strategy=strategy,
        )

    def _maybe_sync(self, step: int) -> None:
        """The stage hook at the current meta-step `step` (validate and synchronize at a new
        stage)."""
        if step != self.step_count:
            raise ValueError(f"the trainer is at meta-step {self.step_count}, not {step}")
        self.before_step()

    def train(
        self, num_steps: int, resume: bool = True, stop: StopRequest | None = None, progress=None
    ) -> TrainResult:
        """Runs meta-steps until the counter reaches `num_steps` (`OuterLoop.train`)."""
        result = super().train(num_steps, resume, stop, progress)
        return TrainResult(
            result.steps,
            result.steps_run,
            result.interrupted,
            result.signum,
            result.seconds,
            result.step_seconds,
            int(self.algorithm.skipped.numpy()),
            result.validation,
            int(self.algorithm.skipped_meta_steps.numpy()),
        )

"""MetaTrainer: gradient meta-learning of BLUR genomes through the unrolled inner loop.

The pieces are separate and swappable (after google/learned_optimization):

* the **inner problem** (`problem.InnerProblem`): tasks, architecture, batches, meta-loss;
* the **unroll schedule** (`schedules`): inner steps of each meta-step, a pure function of the
  outer step (constant, the paper's curriculum, optional jitter);
* the **meta-gradient estimator** (`estimators.FullUnrollGradient`): loss and gradient by
  `tf.GradientTape` through the whole unroll;
* the **outer learner** (`learners.PopulationAdam`): Adam with per-genome clipping, skipping
  of non-finite updates and population synchronization;
* **validation** (`validation.Validator`), **checkpoints** (`checkpoint`) and **summaries**
  (`summaries`).

One meta-step (compiled once: the unroll length is a tensor, so the curriculum never retraces):
fresh synapses for G·M networks (G genomes of the population × M networks per genome, the
meta-batch), one training task per network, `length` inner steps, softmax cross-entropy of
state 0 of the output layer on held-out examples, the meta-gradient, and one Adam step on every
genome whose loss and gradient are finite and whose update keeps it finite and within
`PopulationAdam.max_abs_value` (any other genome update is skipped, counted, logged and never
applied).

Blown-up runs stop: a meta-step in which no genome update was applied is a *skipped meta-step*;
after `max_consecutive_skips` of them in a row (or when every meta-step of the run so far was
skipped at its end) `train` raises `MetaTrainingDiverged` instead of returning a genome that
never learned. Skipped meta-steps and skipped genome updates (one per genome per meta-step)
are counted, checkpointed and reported separately.

Population (paper §4.2): the G genomes train side by side in the same compiled call, each on its
own data. When a curriculum stage starts, all genomes are validated and synchronized to the best
one (parameters and Adam moments). The initial genomes are distinct random genomes
(`Genome.random(K, seed, population=G)`), or G copies of one if `identical_init` (as the paper:
the runs then diverge through their data).

Distribution (`strategy`): with a `tf.distribute.Strategy` of R replicas, the G·M networks of a
meta-step are split over the replicas (R must divide M), the per-genome losses and gradients
are all-reduced and every replica applies the same Adam step, so the genomes stay identical
everywhere and equal the single-device ones up to float32 rounding (`distribute`). Genome and
Adam variables are created under `strategy.scope()`; only the chief of a multi-worker job keeps
checkpoints and writes summaries; validation runs, undistributed, on every worker. The
truncated estimator keeps per-network state and is not distributed. `strategy=None` is the
single-device trainer, unchanged.

Determinism: every random draw is derived from (seed, meta_step) (see `seeds`), the checkpoint
holds all state, so the same seed gives the same genome and a resumed run ends like an
uninterrupted one (given deterministic kernels: the launcher enables TF op determinism).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import time

import numpy as np
import tensorflow as tf

from blur_tf.genome import Genome
from blur_tf.meta import distribute
from blur_tf.meta import schedules as schedules_lib
from blur_tf.meta import seeds
from blur_tf.meta.checkpoint import CheckpointState, StopRequest
from blur_tf.meta.estimators import FullUnrollGradient
from blur_tf.meta.learners import PopulationAdam
from blur_tf.meta.problem import InnerProblem
from blur_tf.meta.summaries import SummaryWriter
from blur_tf.meta.validation import ValidationResult, Validator

log = logging.getLogger(__name__)


class MetaTrainingDiverged(RuntimeError):
    """Meta-training applied no genome update for too long (see the module doc)."""


class _GenomeVariables(tf.Module):
    """Checkpoint container of the genome variables (by field name)."""

    def __init__(self, genome: Genome):
        super().__init__(name="genome")
        self.fields = dict(zip(Genome._fields, genome))


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


class MetaTrainer:
    """Meta-trains a population of genomes by gradient descent through the unroll.

    Args:
      problem: the inner problem (training tasks, architecture, batch sizes, meta-loss).
      schedule: an unroll schedule (`schedules.parse_schedule('curriculum:10,5,2000,50')`).
      population: G, genomes trained side by side.
      meta_batch: M, networks per genome per meta-step (genome repeated along P).
      learning_rate, clip_norm: of the outer learner (Adam; per-genome global-norm clipping).
      seed: the run seed; every random draw derives from (seed, meta_step).
      genome: initial genomes (population G or 1, repeated); default random (see module doc).
      identical_init: start from G copies of one random genome.
      transform_std, synapse_update: of `Genome.random` for the default initial genome.
      validator: validation tasks (None: no validation; the population is then never synced
        and the "best" genome is the one with the lowest recent meta-loss).
      validation_length: inner steps of validation; None follows the schedule's current length.
      validate_every, checkpoint_every, log_every: periods in meta-steps (0 = never, except
        final validation and checkpoint).
      checkpoint_dir, summary_dir: where to keep checkpoints / TensorBoard events (optional).
      keep_checkpoints: checkpoints kept.
      max_consecutive_skips: stop with `MetaTrainingDiverged` after this many skipped
        meta-steps in a row (0: never).
      estimator, learner: override the meta-gradient estimator / outer learner (advanced).
      strategy: a `tf.distribute.Strategy` to split each meta-step over (module doc); None: one
        device. ValueError (before any work) unless its replica count divides meta_batch.
    """

    def __init__(self, problem: InnerProblem, schedule, *, population: int = 1,
                 meta_batch: int = 1, learning_rate: float = 3e-3, clip_norm: float = 1.0,
                 seed: int = 0, genome: Genome | None = None, identical_init: bool = False,
                 transform_std: float = 0.5, synapse_update: float = 0.05,
                 validator: Validator | None = None, validation_length: int | None = None,
                 validate_every: int = 100, checkpoint_every: int = 100, log_every: int = 10,
                 checkpoint_dir: str | None = None, summary_dir: str | None = None,
                 keep_checkpoints: int = 3, max_consecutive_skips: int = 20, estimator=None,
                 learner=None, strategy=None):
        for name, value, low in (("population", population, 1), ("meta_batch", meta_batch, 1),
                                 ("max_consecutive_skips", max_consecutive_skips, 0),
                                 ("validate_every", validate_every, 0),
                                 ("checkpoint_every", checkpoint_every, 0),
                                 ("log_every", log_every, 0), ("seed", seed, 0)):
            if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < low:
                raise ValueError(f"{name} must be an int >= {low}, got {value!r}")
        if validation_length is not None and (not isinstance(validation_length, int)
                                              or validation_length < 1):
            raise ValueError(f"validation_length must be an int >= 1, got {validation_length!r}")
        if not hasattr(schedule, "stage"):
            raise ValueError(f"schedule must be an unroll schedule object, got {schedule!r}")
        distribute.replica_share(int(meta_batch), strategy)
        self.problem, self.schedule, self.strategy = problem, schedule, strategy
        self.population, self.meta_batch, self.seed = int(population), int(meta_batch), int(seed)
        self.validator, self.validation_length = validator, validation_length
        self.validate_every, self.checkpoint_every = validate_every, checkpoint_every
        self.log_every, self.max_consecutive_skips = log_every, int(max_consecutive_skips)
        rule = problem.rule
        if genome is None:
            genome = Genome.random(rule.num_states, seed=self.seed,
                                   population=1 if identical_init else self.population,
                                   transform_std=transform_std, synapse_update=synapse_update)
        rule.check_genome(genome)
        if genome.population == 1 and self.population > 1:
            genome = genome.take([0] * self.population)
        if genome.population != self.population:
            raise ValueError(f"initial genome has population {genome.population}, the trainer "
                             f"has population {self.population}")
        with strategy.scope() if strategy else contextlib.nullcontext():
            self.genome = genome.as_variables()
            self.estimator = estimator or FullUnrollGradient(problem, self.meta_batch)
            self.learner = learner or PopulationAdam(list(self.genome), learning_rate,
                                                     clip_norm=clip_norm)
            self.meta_step = tf.Variable(0, dtype=tf.int64, trainable=False, name="meta_step")
            self.skipped = tf.Variable(0, dtype=tf.int64, trainable=False, name="skipped")
            self.skipped_meta_steps = tf.Variable(0, dtype=tf.int64, trainable=False,
                                                  name="skipped_meta_steps")
            self.consecutive_skips = tf.Variable(0, dtype=tf.int64, trainable=False,
                                                 name="consecutive_skips")
            self.best_index = tf.Variable(0, dtype=tf.int64, trainable=False, name="best_index")
            self.best_score = tf.Variable(-1.0, dtype=tf.float32, trainable=False,
                                          name="best_score")
            self.synced_stage = tf.Variable(0, dtype=tf.int64, trainable=False,
                                            name="synced_stage")
            self.run_seed = tf.Variable(self.seed, dtype=tf.int64, trainable=False, name="seed")
            self.recent_losses = tf.Variable(tf.zeros([self.population]), trainable=False,
                                             name="recent_losses")
        self._gradient = self.estimator
        if strategy is not None:
            self._gradient = distribute.DistributedEstimator(self.estimator, strategy,
                                                             self.population, self.meta_batch)
        self.checkpoint = None
        if checkpoint_dir:
            self.checkpoint = CheckpointState(
                checkpoint_dir, keep_checkpoints, genome=_GenomeVariables(self.genome),
                learner=self.learner, meta_step=self.meta_step, skipped=self.skipped,
                best_index=self.best_index, best_score=self.best_score,
                synced_stage=self.synced_stage, seed=self.run_seed,
                recent_losses=self.recent_losses, skipped_meta_steps=self.skipped_meta_steps,
                consecutive_skips=self.consecutive_skips,
                optional=("skipped_meta_steps", "consecutive_skips"),
                chief=distribute.is_chief(strategy),
                **({"estimator": self.estimator}
                   if isinstance(self.estimator, tf.Module) else {}))
        self.summaries = (SummaryWriter(summary_dir)
                          if summary_dir and distribute.is_chief(strategy) else None)
        self.trace_count = 0
        self.last_validation: ValidationResult | None = None
        self._validated_at = None  # (meta-step, length) of last_validation
        self._compiled_step = tf.function(self._meta_step, reduce_retracing=True)

    # ----------------------------------------------------------------------------- state
    @property
    def step_count(self) -> int:
        return int(self.meta_step.numpy())

    def restore(self) -> bool:
        """Restores the latest checkpoint (if any); True if one was restored."""
        if self.checkpoint is None:
            return False
        path = self.checkpoint.restore_latest()
        if path is None:
            return False
        if int(self.run_seed.numpy()) != self.seed:
            raise ValueError(f"checkpoint {path} belongs to a run with seed "
                             f"{int(self.run_seed.numpy())}, not {self.seed}")
        log.info("resumed from %s at meta-step %d", path, self.step_count)
        return True

    def save(self) -> str | None:
        if self.checkpoint is None:
            return None
        return self.checkpoint.save(self.step_count)

    def best_genome(self) -> Genome:
        """The current best genome (population 1): by validation if there is a validator."""
        return self.genome.take([int(self.best_index.numpy())])

    # ----------------------------------------------------------------------------- meta-step
    def _meta_step(self, synapses, seed, length):
        self.trace_count += 1  # Python side effect: runs once per trace
        losses, gradients, diagnostics = self._gradient(self.genome, synapses, seed, length)
        applied, norms = self.learner.apply(gradients, losses)
        return losses, applied, norms, diagnostics["task_ids"], diagnostics["accuracy"]

    def step(self) -> StepResult:
        """Runs one meta-step (at the current meta-step counter) and advances the counter."""
        step = self.step_count
        length = schedules_lib.length_at(self.schedule, step)
        synapses = self.problem.init_synapses(self.population * self.meta_batch,
                                              seeds.int_seed(self.seed, step, seeds.SYNAPSES))
        seed = tf.constant(seeds.step_seed(self.seed, step), tf.int64)
        losses, applied, norms, task_ids, accuracy = self._compiled_step(
            synapses, seed, tf.constant(length, tf.int32))
        losses, applied = losses.numpy(), applied.numpy()
        skipped_now = int(np.sum(~applied))
        if skipped_now:
            non_finite = int(np.sum(~(np.isfinite(losses) & np.isfinite(norms.numpy()))))
            log.warning("meta-step %d: skipped the update of %d genome(s): %d with a non-finite "
                        "loss or gradient, %d whose update would leave the genome non-finite "
                        "or beyond ±%g (losses %s)", step, skipped_now, non_finite,
                        skipped_now - non_finite, self._bound(), losses)
            self.skipped.assign_add(skipped_now)
        if applied.any():
            self.consecutive_skips.assign(0)
        else:
            self.skipped_meta_steps.assign_add(1)
            self.consecutive_skips.assign_add(1)
        recent = self.recent_losses.numpy()
        smoothed = np.where(np.isfinite(recent) & (step > 0), 0.9 * recent + 0.1 * losses, losses)
        self.recent_losses.assign(np.where(applied, smoothed, recent).astype(np.float32))
        self.meta_step.assign_add(1)
        return StepResult(step + 1, length, losses, applied, norms.numpy(), task_ids.numpy(),
                          accuracy.numpy())

    # ----------------------------------------------------------------------------- validation
    def _validation_length(self, step: int) -> int:
        if self.validation_length:
            return self.validation_length
        return self.schedule.base_length(max(step - 1, 0))

    def validate(self, length: int | None = None) -> ValidationResult | None:
        """Validates every genome; updates the best genome index. None without a validator."""
        if self.validator is None:
            return None
        step = self.step_count
        length = length or self._validation_length(step)
        if self._validated_at == (step, length):
            return self.last_validation
        result = self.validator(self.genome, length)
        self._validated_at = (step, length)
        best = result.best()
        self.best_index.assign(best)
        self.best_score.assign(float(result.scores()[best]))
        self.last_validation = result
        finals = ", ".join(f"{k}={v[best]:.3f}" for k, v in result.final().items())
        log.info("validation at meta-step %d (T=%d): best genome %d, score %.4f [%s]", step,
                 result.length, best, result.scores()[best], finals)
        if self.summaries:
            self.summaries.validation(step, result, best)
            self.summaries.genome(step, self.genome, best)
        return result

    def _maybe_sync(self, step: int) -> None:
        """At the start of a new schedule stage: validate and synchronize to the best genome."""
        stage = self.schedule.stage(step)
        if stage <= int(self.synced_stage.numpy()):
            return
        if self.population > 1:
            if self.validator is not None:
                self.validate()
            else:
                self.best_index.assign(int(np.argmin(self.recent_losses.numpy())))
            best = int(self.best_index.numpy())
            self.learner.sync(best)
            self.best_index.assign(0)
            self._validated_at = None
            log.info("stage %d (unroll %d) starts at meta-step %d: population synchronized to "
                     "genome %d", stage, self.schedule.base_length(step), step, best)
        self.synced_stage.assign(stage)

    # ----------------------------------------------------------------------------- loop
    def train(self, num_steps: int, resume: bool = True, stop: StopRequest | None = None,
              progress=None) -> TrainResult:
        """Runs meta-steps until the counter reaches `num_steps` (resuming if asked).

        Validates every `validate_every` steps and at the end, checkpoints every
        `checkpoint_every` steps, at the end and when `stop` is requested (SIGTERM/SIGINT).
        `progress(step, num_steps)` is called after every meta-step if given.
        """
        if not isinstance(num_steps, int) or num_steps < 0:
            raise ValueError(f"num_steps must be an int >= 0, got {num_steps!r}")
        if resume:
            self.restore()
        start_time, step_seconds, steps_run = time.time(), 0.0, 0
        window = _Window(self.problem.task_names)
        interrupted = False
        while self.step_count < num_steps:
            if stop is not None and stop.requested:
                interrupted = True
                break
            self._maybe_sync(self.step_count)
            t0 = time.perf_counter()
            result = self.step()
            elapsed = time.perf_counter() - t0
            step_seconds += elapsed
            steps_run += 1
            window.add(result, elapsed)
            step = result.step
            self._check_diverged(final=False)
            if self.log_every and (step % self.log_every == 0 or step == num_steps):
                self._log(step, num_steps, window)
                window = _Window(self.problem.task_names)
            if self.validate_every and step % self.validate_every == 0:
                self.validate()
            if self.checkpoint_every and step % self.checkpoint_every == 0:
                self.save()
            if progress is not None:
                progress(step, num_steps)
        validation = None
        if interrupted:
            log.warning("stop requested (signal %s) at meta-step %d: saving a checkpoint",
                        stop.signum, self.step_count)
        else:
            self._check_diverged(final=True)
            validation = self.validate()  # no-op if this step was just validated
            if self.validator is None:
                self.best_index.assign(int(np.argmin(self.recent_losses.numpy())))
        self.save()
        if self.summaries:
            self.summaries.flush()
        return TrainResult(self.step_count, steps_run, interrupted,
                           stop.signum if interrupted else None, time.time() - start_time,
                           step_seconds, int(self.skipped.numpy()), validation,
                           int(self.skipped_meta_steps.numpy()))

    def _check_diverged(self, final: bool) -> None:
        """Raises MetaTrainingDiverged after `max_consecutive_skips` skipped meta-steps in a
        row or, if `final`, when every meta-step so far was skipped (nothing is saved)."""
        run = int(self.consecutive_skips.numpy())
        if not self.max_consecutive_skips or not run or (
                run < self.max_consecutive_skips and not (final and run == self.step_count)):
            return
        if self.summaries:
            self.summaries.flush()
        raise MetaTrainingDiverged(
            f"meta-training diverged: no genome update was applied in the last {run} "
            f"meta-steps (to meta-step {self.step_count}): every loss or gradient was "
            f"non-finite, or every update would have left the genome non-finite or beyond "
            f"±{self._bound():g}; lower the learning rate (or raise max_consecutive_skips, "
            f"0: never stop)")

    def _bound(self) -> float:
        """The learner's bound on genome values (inf for a learner without one)."""
        return float(getattr(self.learner, "max_abs_value", float("inf")))

    def _log(self, step: int, num_steps: int, window: "_Window"):
        rate = window.count / max(window.seconds, 1e-9)
        loss = window.mean_loss()
        task_accuracy = window.task_accuracy()
        log.info("meta-step %d/%d  T=%d  loss %.4f  train acc %s  skipped %d meta-steps, %d "
                 "genome updates  %.2f steps/s", step, num_steps, window.length, loss,
                 " ".join(f"{k}={v:.3f}" for k, v in task_accuracy.items()),
                 int(self.skipped_meta_steps.numpy()), int(self.skipped.numpy()), rate)
        if self.summaries:
            self.summaries.train(step, loss, task_accuracy, window.length,
                                 int(self.skipped.numpy()), rate, window.mean_norm())


class _Window:
    """Running statistics between two log lines."""

    def __init__(self, task_names):
        self.task_names = task_names
        self.count, self.seconds, self.length = 0, 0.0, 0
        self.losses, self.norms = [], []
        self.correct = np.zeros(len(task_names))
        self.seen = np.zeros(len(task_names))

    def add(self, result: StepResult, seconds: float):
        self.count += 1
        self.seconds += seconds
        self.length = result.length
        finite = np.isfinite(result.losses)
        self.losses.extend(result.losses[finite].tolist())
        self.norms.extend(result.gradient_norms[np.isfinite(result.gradient_norms)].tolist())
        np.add.at(self.correct, result.task_ids, result.accuracy)
        np.add.at(self.seen, result.task_ids, 1)

    def mean_loss(self) -> float:
        return float(np.mean(self.losses)) if self.losses else float("nan")

    def mean_norm(self) -> float:
        return float(np.mean(self.norms)) if self.norms else float("nan")

    def task_accuracy(self) -> dict:
        return {name: float(self.correct[i] / self.seen[i])
                for i, name in enumerate(self.task_names) if self.seen[i]}

"""The outer loop: one loop for every outer algorithm (gradient meta-training, CMA-ES, …).

`OuterLoop` owns what every outer algorithm needs around its step: the step counter, the
unroll schedule and its stages, periodic log / validate / checkpoint, the validation cache,
timing, stop requests (SIGTERM / SIGINT through `StopRequest`) and chief-only writes
(checkpoints and TensorBoard summaries on the chief of a multi-worker job only). An
`OuterAlgorithm` says what differs: one step, the genomes to validate, what a validation
result means for its best genome, and what its checkpoint holds.

One call of `train(total)`:

    restore the latest checkpoint (if asked)
    while step < total and no stop is requested:
        algorithm.before_step(step, stage, validate)     # e.g. population sync at a new stage
        report = algorithm.step(step, schedule length)   # timed; step += 1
        log every `log_every`, validate every `validate_every`, checkpoint every
        `checkpoint_every` steps
    unless stopped: algorithm.finish(); validate at the end
    checkpoint

Validation runs the `Validator` on `algorithm.candidates()` with `validation_length` inner
steps (default: the schedule's base length of the last step) and hands the result to
`algorithm.accept`; a second request at the same (step, length) is served from the cache.

A new outer algorithm is one module with an `OuterAlgorithm` subclass, registered in
`blur_tf.meta.algorithms`.
"""

from __future__ import annotations

import abc
import dataclasses
import logging
import time
from collections.abc import Callable

import numpy as np

from blur_tf.genome import Genome
from blur_tf.meta import distribute
from blur_tf.meta import schedules as schedules_lib
from blur_tf.meta.checkpoint import CheckpointState, StopRequest
from blur_tf.meta.summaries import SummaryWriter
from blur_tf.meta.validation import ValidationResult, Validator

log = logging.getLogger(__name__)

Validate = Callable[[], "ValidationResult | None"]


class OuterAlgorithm(abc.ABC):
    """What an outer algorithm declares to the outer loop (module doc).

    `unit` names one step in logs ("meta-step", "generation").
    """

    unit = "step"
    optional_state: tuple = ()  # checkpoint names that older checkpoints may lack

    @abc.abstractmethod
    def step(self, step: int, length: int):
        """Runs outer step `step` (0-based) with an unroll of `length`; returns its report."""

    @abc.abstractmethod
    def candidates(self) -> Genome:
        """The genomes to validate now (population C)."""

    @abc.abstractmethod
    def accept(self, result: ValidationResult, step: int) -> int:
        """Takes the validation of `candidates()`; returns the index of the best candidate."""

    @abc.abstractmethod
    def best_genome(self) -> Genome:
        """The genome the run would return now (population 1)."""

    @abc.abstractmethod
    def state(self) -> dict:
        """{name: trackable} that a checkpoint holds (the names are the checkpoint format)."""

    @abc.abstractmethod
    def save_state(self, step: int) -> None:
        """Brings `state()` up to date before a checkpoint of step counter `step`."""

    @abc.abstractmethod
    def restored(self, path: str) -> int:
        """After `state()` was restored from `path`: checks it is this run's; the step counter."""

    @abc.abstractmethod
    def log(self, step: int, total: int, window: list, summaries: SummaryWriter | None):
        """Writes the log line (and summaries) of the (report, seconds) pairs since the last."""

    def record(self, report, seconds: float, summaries: SummaryWriter | None) -> None:  # noqa: B027
        """Per-step summaries of `report` (default none)."""

    def before_step(self, step: int, stage: int, validate: Validate) -> bool:
        """Called before every step with the schedule's stage; True if it changed the
        candidates (the validation cache is dropped). Default: nothing."""
        return False

    def finish(self, validated: bool) -> None:  # noqa: B027  an optional hook, like record
        """Called at the end of an uninterrupted run, before the final validation
        (`validated`: a validator is present). Default: nothing."""


@dataclasses.dataclass
class LoopResult:
    """Outcome of `OuterLoop.train`."""

    steps: int  # step counter at the end
    steps_run: int  # steps run by this call
    interrupted: bool  # stopped by a signal (state saved)
    signum: int | None
    seconds: float  # wall time of this call
    step_seconds: float  # time in steps only (excludes validation, I/O)
    validation: ValidationResult | None  # the final validation (None if interrupted)


def check_count(name: str, value, low: int) -> int:
    """`value` as an int >= low; ValueError naming `name` otherwise."""
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < low:
        raise ValueError(f"{name} must be an int >= {low}, got {value!r}")
    return int(value)


def check_schedule(schedule) -> None:
    if not isinstance(schedule, schedules_lib.Schedule):
        raise ValueError(f"schedule must be an unroll schedule object, got {schedule!r}")


class OuterLoop:
    """Runs an `OuterAlgorithm` (module doc).

    Args:
      algorithm: the outer algorithm.
      schedule: the unroll schedule (`schedules.parse_schedule`).
      validator, validation_length: validation tasks (None: no validation) and inner steps
        (None: the schedule's base length of the last step).
      validate_every, checkpoint_every, log_every: periods in steps (0 = never, except the
        final validation and checkpoint).
      checkpoint_dir, summary_dir, keep_checkpoints: where checkpoints / TensorBoard events go.
      strategy: the algorithm's `tf.distribute.Strategy` (None: one device); only its chief
        keeps checkpoints and writes summaries.
    """

    def __init__(
        self,
        algorithm: OuterAlgorithm,
        schedule,
        *,
        validator: Validator | None = None,
        validation_length: int | None = None,
        validate_every: int = 100,
        checkpoint_every: int = 100,
        log_every: int = 10,
        checkpoint_dir: str | None = None,
        summary_dir: str | None = None,
        keep_checkpoints: int = 3,
        strategy=None,
    ):
        for name, value in (
            ("validate_every", validate_every),
            ("checkpoint_every", checkpoint_every),
            ("log_every", log_every),
        ):
            check_count(name, value, 0)
        if validation_length is not None:
            check_count("validation_length", validation_length, 1)
        check_schedule(schedule)
        self.algorithm, self.schedule = algorithm, schedule
        self.validator, self.validation_length = validator, validation_length
        self.validate_every, self.checkpoint_every = validate_every, checkpoint_every
        self.log_every = log_every
        chief = distribute.is_chief(strategy)
        self.checkpoint = (
            CheckpointState(
                checkpoint_dir,
                keep_checkpoints,
                optional=algorithm.optional_state,
                chief=chief,
                **algorithm.state(),
            )
            if checkpoint_dir
            else None
        )
        self.summaries = SummaryWriter(summary_dir) if summary_dir and chief else None
        self.step_count = 0
        self.last_validation: ValidationResult | None = None
        self._validated_at = None  # (step, length) of last_validation

    def __getattr__(self, name):
        """Attributes the loop does not have are its algorithm's (`trainer.genome`, `.es`)."""
        if name == "algorithm":  # not set yet
            raise AttributeError(name)
        return getattr(self.algorithm, name)

    # ----------------------------------------------------------------------------- state
    def restore(self) -> bool:
        """Restores the latest checkpoint (if any); True if one was restored."""
        path = self.checkpoint.restore_latest() if self.checkpoint else None
        if path is None:
            return False
        self.step_count = self.algorithm.restored(path)
        self.last_validation, self._validated_at = None, None
        log.info("resumed from %s at %s %d", path, self.algorithm.unit, self.step_count)
        return True

    def save(self) -> str | None:
        """Writes a checkpoint of the current state (None without a checkpoint folder)."""
        if self.checkpoint is None:
            return None
        self.algorithm.save_state(self.step_count)
        return self.checkpoint.save(self.step_count)

    def best_genome(self) -> Genome:
        return self.algorithm.best_genome()

    # ----------------------------------------------------------------------------- steps
    def step(self):
        """Runs one outer step at the current counter and advances it; the step's report."""
        length = schedules_lib.length_at(self.schedule, self.step_count)
        report = self.algorithm.step(self.step_count, length)
        self.step_count += 1
        return report

    def before_step(self) -> None:
        """The algorithm's hook before a step (e.g. population sync at a new stage)."""
        step = self.step_count
        if self.algorithm.before_step(step, self.schedule.stage(step), self.validate):
            self._validated_at = None

    def validate(self, length: int | None = None) -> ValidationResult | None:
        """Validates `algorithm.candidates()` and hands the result to the algorithm; None
        without a validator. Cached per (step, length)."""
        if self.validator is None:
            return None
        step = self.step_count
        length = length or self.validation_length or self.schedule.base_length(max(step - 1, 0))
        if self._validated_at == (step, length) and self.last_validation is not None:
            return self.last_validation
        candidates = self.algorithm.candidates()
        result = self.validator(candidates, length)
        best = self.algorithm.accept(result, step)
        self._validated_at, self.last_validation = (step, length), result
        if self.summaries:
            self.summaries.validation(step, result, best)
            self.summaries.genome(step, candidates, best)
        return result

    # ----------------------------------------------------------------------------- loop
    def train(
        self, total: int, resume: bool = True, stop: StopRequest | None = None, progress=None
    ) -> LoopResult:
        """Runs steps until the counter reaches `total` (module doc); `progress(step, total)`
        is called after every step if given."""
        check_count(f"{self.algorithm.unit}s", total, 0)
        if resume:
            self.restore()
        start, step_seconds, steps_run = time.time(), 0.0, 0
        window, interrupted = [], False
        try:
            while self.step_count < total:
                if stop is not None and stop.requested:
                    interrupted = True
                    break
                self.before_step()
                t0 = time.perf_counter()
                report = self.step()
                elapsed = time.perf_counter() - t0
                step_seconds, steps_run = step_seconds + elapsed, steps_run + 1
                window.append((report, elapsed))
                self.algorithm.record(report, elapsed, self.summaries)
                step = self.step_count
                if self.log_every and (step % self.log_every == 0 or step == total):
                    self.algorithm.log(step, total, window, self.summaries)
                    window = []
                if self.validate_every and step % self.validate_every == 0:
                    self.validate()
                if self.checkpoint_every and step % self.checkpoint_every == 0:
                    self.save()
                if progress is not None:
                    progress(step, total)
            validation = None
            if interrupted:
                log.warning(
                    "stop requested (signal %s) at %s %d: saving a checkpoint",
                    stop.signum,
                    self.algorithm.unit,
                    self.step_count,
                )
            else:
                self.algorithm.finish(self.validator is not None)
                validation = self.validate()  # from the cache if this step was validated
            self.save()
        finally:
            if self.summaries:
                self.summaries.flush()
        return LoopResult(
            self.step_count,
            steps_run,
            interrupted,
            stop.signum if interrupted else None,
            time.time() - start,
            step_seconds,
            validation,
        )

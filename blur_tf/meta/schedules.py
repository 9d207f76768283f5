"""Unroll-length schedules: how many inner steps the meta-step at outer step `s` unrolls.

Like learned_optimization's truncation schedules, a schedule is a small immutable object and a
*pure* function of the outer step (and, for jitter, of a seed): nothing is stored, so the
schedule position is the meta-step counter itself and resuming a run resumes its schedule.
The trainer passes the length to its compiled meta-step as a tensor, so growing T never
retraces.

Spec strings (`parse_schedule`), as used by `--unroll`:

    constant:20                    always 20 inner steps
    curriculum:10,5,2000,50        start at 10, +5 every 2000 meta-steps, at most 50
    curriculum:10,5,2000,50,jitter=0.2
                                   the same, each meta-step's length scaled by a factor
                                   drawn uniformly in [1 - 0.2, 1 + 0.2] (seeded, pure)

A *stage* is a maximal run of meta-steps with the same base length (curriculum step); the
trainer synchronizes its population of genomes when a new stage starts (paper §4.2).
"""

from __future__ import annotations

import abc
import dataclasses
import re

import numpy as np


class Schedule(abc.ABC):
    """The declared seam of an unroll schedule: pure functions of the outer step."""

    @abc.abstractmethod
    def base_length(self, step: int) -> int:
        """Inner steps of outer step `step` before any jitter."""

    @abc.abstractmethod
    def stage(self, step: int) -> int:
        """Index of the stage (maximal run of steps with the same base length) of `step`."""

    @property
    @abc.abstractmethod
    def max_length(self) -> int:
        """The longest unroll the schedule asks for."""

    def length_at(self, step: int) -> int:
        """Inner steps of outer step `step` (jitter applied where the schedule has it)."""
        return self.base_length(step)


@dataclasses.dataclass(frozen=True)
class ConstantSchedule(Schedule):
    """Always `length` inner steps; a single stage."""

    length: int

    def __post_init__(self):
        if not isinstance(self.length, int) or self.length < 1:
            raise ValueError(f"constant unroll length must be an int >= 1, got {self.length!r}")

    def base_length(self, step: int) -> int:
        return self.length

    def stage(self, step: int) -> int:
        return 0

    @property
    def max_length(self) -> int:
        return self.length

    def __str__(self):
        return f"constant:{self.length}"


@dataclasses.dataclass(frozen=True)
class CurriculumSchedule(Schedule):
    """The paper's curriculum: `start` steps, +`increment` every `every` meta-steps, ≤ `maximum`."""

    start: int
    increment: int
    every: int
    maximum: int

    def __post_init__(self):
        for name in ("start", "increment", "every", "maximum"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < (0 if name == "increment" else 1):
                raise ValueError(f"curriculum {name} must be a positive int, got {value!r}")
        if self.maximum < self.start:
            raise ValueError(f"curriculum maximum {self.maximum} < start {self.start}")

    def stage(self, step: int) -> int:
        """Index of the curriculum stage of outer step `step` (stops growing at the maximum)."""
        stages = (self.maximum - self.start) // self.increment if self.increment else 0
        return min(int(step) // self.every, stages)

    def base_length(self, step: int) -> int:
        return min(self.start + self.increment * self.stage(step), self.maximum)

    @property
    def max_length(self) -> int:
        return self.maximum

    def __str__(self):
        return f"curriculum:{self.start},{self.increment},{self.every},{self.maximum}"


@dataclasses.dataclass(frozen=True)
class Jittered(Schedule):
    """Wraps a schedule: length = round(base · U[1 − fraction, 1 + fraction]), at least 1.

    The factor is drawn from numpy's generator seeded by (`seed`, step): pure and resumable.
    """

    base: ConstantSchedule | CurriculumSchedule
    fraction: float
    seed: int = 0

    def __post_init__(self):
        if not 0.0 <= self.fraction < 1.0:
            raise ValueError(f"unroll jitter must be in [0, 1), got {self.fraction}")

    def base_length(self, step: int) -> int:
        return self.base.base_length(step)

    def stage(self, step: int) -> int:
        return self.base.stage(step)

    @property
    def max_length(self) -> int:
        return int(np.ceil(self.base.max_length * (1.0 + self.fraction)))

    def length_at(self, step: int) -> int:
        base = self.base.base_length(step)
        rng = np.random.default_rng([int(self.seed), int(step), 0x6A17])
        factor = rng.uniform(1.0 - self.fraction, 1.0 + self.fraction)
        return max(1, int(round(base * factor)))

    def __str__(self):
        return f"{self.base},jitter={self.fraction:g}"


def length_at(schedule: Schedule, step: int) -> int:
    """The number of inner steps of outer step `step` (`schedule.length_at(step)`)."""
    return schedule.length_at(step)


def stage_starts(schedule, step: int) -> bool:
    """True when outer step `step` is the first of a new stage (never for step 0)."""
    return step > 0 and schedule.stage(step) != schedule.stage(step - 1)


_INT = r"\s*(\d+)\s*"


def parse_schedule(spec: str, seed: int = 0):
    """Parses `constant:T` or `curriculum:START,INC,EVERY,MAX`, optionally `,jitter=F`.

    Raises ValueError naming the problem (before any work is done).
    """
    if not isinstance(spec, str):
        raise ValueError(f"unroll schedule must be a string, got {spec!r}")
    text = spec.strip()
    jitter = None
    match = re.fullmatch(r"(.*),\s*jitter\s*=\s*([^,]+)", text)
    if match:
        text = match.group(1)
        try:
            jitter = float(match.group(2))
        except ValueError:
            raise ValueError(
                f"unroll schedule {spec!r}: jitter {match.group(2)!r} is not a number"
            ) from None
    if m := re.fullmatch(r"constant:" + _INT, text):
        schedule = ConstantSchedule(int(m.group(1)))
    elif m := re.fullmatch(r"curriculum:" + ",".join([_INT] * 4), text):
        schedule = CurriculumSchedule(*(int(g) for g in m.groups()))
    else:
        raise ValueError(
            f"unroll schedule {spec!r} not understood; expected 'constant:T' or "
            "'curriculum:START,INCREMENT,EVERY,MAXIMUM' (ints), optionally "
            "followed by ',jitter=F' with 0 <= F < 1"
        )
    return Jittered(schedule, jitter, seed) if jitter else schedule

"""Outer loops: gradient meta-training of BLUR genomes (MetaTrainer) and its pieces."""

from blur_tf.meta.checkpoint import CheckpointState, StopRequest
from blur_tf.meta.estimators import FullUnrollGradient
from blur_tf.meta.learners import PopulationAdam
from blur_tf.meta.problem import InnerProblem
from blur_tf.meta.schedules import (ConstantSchedule, CurriculumSchedule, Jittered, length_at,
                                    parse_schedule)
from blur_tf.meta.trainer import MetaTrainer, StepResult, TrainResult
from blur_tf.meta.validation import ValidationResult, Validator

__all__ = ["MetaTrainer", "InnerProblem", "FullUnrollGradient", "PopulationAdam", "Validator",
           "ValidationResult", "ConstantSchedule", "CurriculumSchedule", "Jittered",
           "length_at", "parse_schedule", "CheckpointState", "StopRequest", "StepResult",
           "TrainResult"]

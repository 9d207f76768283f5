"""Outer loops: gradient meta-training (MetaTrainer) and CMA-ES search (CmaTrainer) of BLUR
genomes, and their pieces."""

from blur_tf.meta.checkpoint import CheckpointState, StopRequest
from blur_tf.meta.cma_trainer import CmaTrainer, CmaTrainResult, GenerationResult
from blur_tf.meta.estimators import Estimator, FullUnrollGradient, SegmentedUnrollGradient
from blur_tf.meta.fitness import PopulationFitness
from blur_tf.meta.genome_vector import GenomeVector, rule_fields
from blur_tf.meta.learners import PopulationAdam
from blur_tf.meta.outer_loop import LoopResult, OuterAlgorithm, OuterLoop
from blur_tf.meta.problem import InnerProblem
from blur_tf.meta.registry import ALGORITHMS, ESTIMATORS, make_estimator
from blur_tf.meta.schedules import (
    ConstantSchedule,
    CurriculumSchedule,
    Jittered,
    Schedule,
    length_at,
    parse_schedule,
)
from blur_tf.meta.trainer import MetaTrainer, StepResult, TrainResult
from blur_tf.meta.truncated import TruncatedUnrollGradient
from blur_tf.meta.validation import ValidationResult, Validator

__all__ = [
    "MetaTrainer",
    "InnerProblem",
    "FullUnrollGradient",
    "PopulationAdam",
    "Validator",
    "ValidationResult",
    "ConstantSchedule",
    "CurriculumSchedule",
    "Jittered",
    "length_at",
    "parse_schedule",
    "CheckpointState",
    "StopRequest",
    "StepResult",
    "TrainResult",
    "CmaTrainer",
    "CmaTrainResult",
    "GenerationResult",
    "GenomeVector",
    "PopulationFitness",
    "rule_fields",
    "SegmentedUnrollGradient",
    "TruncatedUnrollGradient",
    "Estimator",
    "OuterAlgorithm",
    "OuterLoop",
    "LoopResult",
    "Schedule",
    "ALGORITHMS",
    "ESTIMATORS",
    "make_estimator",
]

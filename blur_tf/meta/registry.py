"""Registration of outer algorithms and meta-gradient estimators by name.

A new outer algorithm is one module under `blur_tf/meta/algorithms/` (an `OuterAlgorithm`
subclass) plus one line in `ALGORITHMS`; a new estimator is one module (an `Estimator`
subclass) plus one line in `ESTIMATORS`, whose builders take the problem, the population G,
the meta-batch M and the estimator options (`segment_length`, `truncation_length`,
`meta_loss`, `jit_compile`).
"""

from __future__ import annotations

from blur_tf.meta.algorithms.cma import CmaEs
from blur_tf.meta.algorithms.gradient import GradientMetaTraining
from blur_tf.meta.estimators import FullUnrollGradient, SegmentedUnrollGradient
from blur_tf.meta.truncated import TruncatedUnrollGradient
from blur_tf.network import BlurNetwork

ALGORITHMS = {"gradient": GradientMetaTraining, "cma": CmaEs}


def _full(problem, population, meta_batch, *, meta_loss, **_):
    if meta_loss != "final":
        raise ValueError("--meta_loss=trajectory needs --estimator=segmented or truncated")
    return FullUnrollGradient(problem, meta_batch)


def _segmented(problem, population, meta_batch, *, segment_length, meta_loss, jit_compile, **_):
    return SegmentedUnrollGradient(problem, meta_batch, segment_length, meta_loss, jit_compile)


def _truncated(
    problem,
    population,
    meta_batch,
    *,
    truncation_length,
    meta_loss,
    jit_compile,
    segment_length,
    **_,
):
    return TruncatedUnrollGradient(
        problem, population, meta_batch, truncation_length, meta_loss, jit_compile, segment_length
    )


ESTIMATORS = {"full": _full, "segmented": _segmented, "truncated": _truncated}


def make_estimator(name: str, problem, population: int, meta_batch: int, **options):
    """The registered estimator `name`; ValueError for an unknown name or a bad combination."""
    if name not in ESTIMATORS:
        raise ValueError(f"unknown estimator {name!r}; one of {sorted(ESTIMATORS)}")
    if name != "full" and not isinstance(problem.network, BlurNetwork):
        raise ValueError(f"--estimator={name} runs BLUR networks only; use --estimator=full")
    return ESTIMATORS[name](problem, population, meta_batch, **options)

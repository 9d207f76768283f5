"""CmaTrainer: CMA-ES search of the genome on held-out accuracy (paper §4.4), resumable.

No meta-gradient: pycma's `CMAEvolutionStrategy` searches the genome vector (a fixed mapping,
`genome_vector.GenomeVector`) on the non-differentiable objective DESIGN §1 names for CMA-ES,
the held-out accuracy after the unroll (`algorithms.cma.CmaEs`: ask, one compiled call for
the whole population on common data, tell). `CmaTrainer` is that algorithm run by the outer
loop (`outer_loop.OuterLoop`): the unroll length of generation g is `length_at(schedule, g)`
(a tensor: a curriculum never retraces); validation, checkpoints (every `checkpoint_every`
generations, at the end and on SIGTERM/SIGINT), summaries and chief-only writes are the
loop's. The algorithm's attributes (es, mapping, best_vector, history, …) are read through
the trainer.

**Best genome.** One generation's fitness is a noisy estimate, so the best single fitness over
a run is biased upwards by lucky draws. With a validator, every `validate_every` generations
the best genome so far, the distribution mean and the last generation's best candidate are
validated on the validator's fixed data and the best of the three (the incumbent on ties)
is kept; without one, the best genome is the candidate with the highest fitness seen so far.

**Distribution** (`strategy`): the λ candidates of a generation are split over the replicas
(`distribute.DistributedFitness`); every worker runs the same pycma strategy on the chief's
broadcast candidates; only the chief keeps checkpoints and writes summaries.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from blur_tf.genome import Genome
from blur_tf.meta.algorithms.cma import NON_FINITE_LOSS, CmaEs, GenerationResult, NormalSampler
from blur_tf.meta.checkpoint import StopRequest
from blur_tf.meta.outer_loop import OuterLoop
from blur_tf.meta.problem import InnerProblem
from blur_tf.meta.validation import ValidationResult, Validator

__all__ = [
    "CmaTrainer",
    "CmaTrainResult",
    "GenerationResult",
    "NON_FINITE_LOSS",
    "NormalSampler",
]  # NormalSampler: pickled in existing checkpoints under this module


@dataclasses.dataclass
class CmaTrainResult:
    """Outcome of `CmaTrainer.train`."""

    generations: int  # generation counter at the end
    generations_run: int  # by this call
    interrupted: bool
    signum: int | None
    seconds: float  # wall time of this call
    generation_seconds: float  # in generations only (excludes validation, I/O)
    non_finite: int  # non-finite candidates in the whole run
    validation: ValidationResult | None  # of the best genome (population 1)


class CmaTrainer(OuterLoop):
    """CMA-ES over the genome vector; see the module docstring.

    Args:
      problem: the inner problem; `problem.eval_batch_size` held-out examples per network.
      schedule: an unroll schedule (`schedules.parse_schedule('constant:15')`).
      population: λ ≥ 2, candidates per generation.
      sigma0: initial step size σ₀ > 0 (the same for every coordinate).
      seed: the run seed (pycma's sampler, data, synapses).
      genome: the start point (population 1), e.g. a MetaTrainer genome; default a random
        genome (`Genome.random(K, seed, transform_std=…, synapse_update=…)`).
      fields: searched genome fields (default `genome_vector.rule_fields(rule)`); the others keep
        the start genome's values.
      networks, average_steps, eval_batches: of the fitness (`fitness.PopulationFitness`).
      validator, validation_length: validation tasks and inner steps (None: the schedule's
        current length).
      validate_every, checkpoint_every, log_every: periods in generations (0 = never, except
        the final validation and checkpoint).
      checkpoint_dir, summary_dir, keep_checkpoints: as MetaTrainer.
      cma_options: extra pycma options (e.g. {'CMA_diagonal': True}); `popsize`, `randn`,
        `seed` and verbosity are set here.
      strategy: a `tf.distribute.Strategy` to split the candidates over; None: one device.
    """

    def __init__(
        self,
        problem: InnerProblem,
        schedule,
        *,
        population: int,
        sigma0: float = 0.1,
        seed: int = 0,
        genome: Genome | None = None,
        fields: Sequence[str] | None = None,
        transform_std: float = 0.5,
        synapse_update: float = 0.05,
        networks: int = 1,
        average_steps: int = 1,
        eval_batches: int = 1,
        validator: Validator | None = None,
        validation_length: int | None = None,
        validate_every: int = 10,
        checkpoint_every: int = 10,
        log_every: int = 1,
        checkpoint_dir: str | None = None,
        summary_dir: str | None = None,
        keep_checkpoints: int = 3,
        cma_options: dict | None = None,
        strategy=None,
    ):
        algorithm = CmaEs(
            problem,
            population=population,
            sigma0=sigma0,
            seed=seed,
            genome=genome,
            fields=fields,
            transform_std=transform_std,
            synapse_update=synapse_update,
            networks=networks,
            average_steps=average_steps,
            eval_batches=eval_batches,
            by_fitness=validator is None,
            cma_options=cma_options,
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

    def best_validation(self) -> ValidationResult | None:
        """The last validation's curves of the best genome alone (population 1)."""
        result = self.last_validation
        if result is None:
            return None
        best = result.best()
        return ValidationResult(
            result.length, {k: v[best : best + 1] for k, v in result.curves.items()}
        )

    def train(
        self, generations: int, resume: bool = True, stop: StopRequest | None = None, progress=None
    ) -> CmaTrainResult:
        """Runs generations until the counter reaches `generations` (`OuterLoop.train`)."""
        result = super().train(generations, resume, stop, progress)
        return CmaTrainResult(
            result.steps,
            result.steps_run,
            result.interrupted,
            result.signum,
            result.seconds,
            result.step_seconds,
            self.algorithm.non_finite,
            None if result.interrupted else self.best_validation(),
        )

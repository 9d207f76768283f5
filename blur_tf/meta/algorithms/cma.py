"""CMA-ES as an outer algorithm: one generation of pycma's ask / evaluate / tell per step.

Generation g: `ask` λ candidate vectors (float64), decode them to a float32 genome of
population λ (`genome_vector.GenomeVector`), score all λ·M networks in one compiled call on
the generation's common data (`fitness.PopulationFitness`, held-out accuracy), and `tell`
the losses 1 − a_i; a candidate with a NaN/Inf synapse or logit gets `NON_FINITE_LOSS` and is
counted. pycma samples through a seeded numpy `Generator` (`NormalSampler`, pickled with
the strategy), data and synapses derive from (seed, g): a resumed run ends like an
uninterrupted one. pycma's termination criteria are reported, not obeyed.

Best genome: with validation (`by_fitness=False`) the loop validates [best so far, mean,
last generation's best] and the best of the three (the incumbent on ties) is kept; without,
the candidate with the highest fitness seen so far.

Checkpoint (the format of existing `ckpt/` folders): one string variable `state`, a pickled
dict of the generation counter, the run's identity (seed, fields, λ), the strategy, the best
genome and the history (only restore checkpoints you wrote).
"""

from __future__ import annotations

import dataclasses
import logging
import pickle
from collections.abc import Sequence

import cma
import numpy as np
import tensorflow as tf

from blur_tf.genome import Genome
from blur_tf.meta import distribute, seeds
from blur_tf.meta.fitness import PopulationFitness
from blur_tf.meta.genome_vector import GenomeVector, rule_fields
from blur_tf.meta.outer_loop import OuterAlgorithm, check_count
from blur_tf.meta.problem import InnerProblem
from blur_tf.meta.validation import ValidationResult

log = logging.getLogger(__name__)

NON_FINITE_LOSS = 2.0  # loss told to pycma for a non-finite candidate; 1 − accuracy ∈ [0, 1]


class NormalSampler:
    """pycma's `randn(*shape)` option backed by a numpy Generator (pickled with the strategy)."""

    def __init__(self, seed: int):
        self.rng = np.random.default_rng(seed)

    def __call__(self, *shape):
        return self.rng.standard_normal(shape)


@dataclasses.dataclass
class GenerationResult:
    """What one generation reports. Fitness values are held-out accuracies (NaN: non-finite)."""

    generation: int  # generations done after this one
    length: int
    fitness: np.ndarray  # [λ]
    finite: np.ndarray  # bool [λ]
    sigma: float  # step size after the update

    def stats(self) -> dict:
        """best / mean / worst accuracy over the finite candidates, σ, non-finite count."""
        good = self.fitness[self.finite]
        pick = (lambda f: float(f(good))) if good.size else (lambda f: float("nan"))
        return {
            "best": pick(np.max),
            "mean": pick(np.mean),
            "worst": pick(np.min),
            "sigma": self.sigma,
            "non_finite": int(np.sum(~self.finite)),
        }


class CmaEs(OuterAlgorithm):
    """CMA-ES over the genome vector; arguments as `CmaTrainer`'s of the same names, plus
    `by_fitness` (no validation: the best genome is the fittest candidate)."""

    unit = "generation"
    _PICKLED = (
        "generation",
        "es",
        "non_finite",
        "best_vector",
        "best_score",
        "best_generation",
        "last_best_vector",
        "history",
    )

    def __init__(
        self,
        problem: InnerProblem,
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
        by_fitness: bool = False,
        cma_options: dict | None = None,
        strategy=None,
    ):
        self.population = check_count("population", population, 2)
        self.seed = check_count("seed", seed, 0)
        if not (isinstance(sigma0, (int, float)) and np.isfinite(sigma0) and sigma0 > 0):
            raise ValueError(f"sigma0 must be a finite number > 0, got {sigma0!r}")
        self.problem, self.rule, self.sigma0 = problem, problem.rule, float(sigma0)
        if genome is None:
            genome = Genome.random(
                self.rule.num_states,
                seed=self.seed,
                transform_std=transform_std,
                synapse_update=synapse_update,
            )
        self.rule.check_genome(genome)
        if genome.population != 1:
            raise ValueError(f"the start genome must have population 1, got {genome.population}")
        self.mapping = GenomeVector(genome, rule_fields(self.rule) if fields is None else fields)
        self.by_fitness = by_fitness
        self.fitness = PopulationFitness(problem, networks, average_steps, eval_batches)
        self._broadcast = lambda vectors: vectors  # the chief's candidates
        if strategy is not None:
            self.fitness = distribute.DistributedFitness(self.fitness, strategy)
            self._broadcast = distribute.ChiefBroadcast(strategy)
        options = dict(cma_options or {})
        options.update(
            popsize=self.population,
            randn=NormalSampler(seeds.int_seed(self.seed, 0, seeds.SEARCH)),
            seed=np.nan,
            verbose=-9,
            verb_log=0,
            verb_disp=0,
        )
        self.es = cma.CMAEvolutionStrategy(self.mapping.initial(), self.sigma0, options)
        self.generation, self.non_finite = 0, 0
        self.best_vector = self.mapping.initial()
        self.best_score = -np.inf  # validation score (with validation) or fitness
        self.best_generation = 0
        self.last_best_vector = self.best_vector  # best candidate of the last generation
        self.history: list[dict] = []  # per generation: length, best/mean/worst, σ, non-finite
        self._validated_vectors = None
        self._stopped_reported = False
        self._blob = tf.Variable(b"", dtype=tf.string, trainable=False, name="cma_state")

    # ----------------------------------------------------------------------------- state
    def state(self) -> dict:
        return {"state": self._blob}

    def _identity(self) -> dict:
        """What a checkpoint must share with this run to be resumed by it."""
        return {"seed": self.seed, "fields": self.mapping.fields, "population": self.population}

    def save_state(self, step: int) -> None:
        state = {name: getattr(self, name) for name in self._PICKLED}
        state["identity"] = self._identity()
        self._blob.assign(pickle.dumps(state))

    def restored(self, path: str) -> int:
        state = pickle.loads(self._blob.numpy())
        if state["identity"] != self._identity():
            raise ValueError(
                f"checkpoint {path} belongs to another run ({state['identity']}, "
                f"not {self._identity()})"
            )
        for name in self._PICKLED:
            setattr(self, name, state[name])
        return self.generation

    def best_genome(self) -> Genome:
        return self.mapping.decode(self.best_vector).as_tensors()

    def mean_genome(self) -> Genome:
        """The search distribution's mean m (population 1)."""
        return self.mapping.decode(self.es.mean).as_tensors()

    # ----------------------------------------------------------------------------- generation
    def step(self, step: int, length: int) -> GenerationResult:
        vectors = self._broadcast(np.asarray(self.es.ask(), np.float64))  # [λ, D]
        synapses = self.problem.init_synapses(
            self.fitness.networks, seeds.int_seed(self.seed, step, seeds.SYNAPSES)
        )
        fitness, finite = self.fitness(
            self.mapping.decode(vectors), synapses, seeds.step_seed(self.seed, step), length
        )
        losses = np.where(finite, 1.0 - fitness.astype(np.float64), NON_FINITE_LOSS)
        self.es.tell(list(vectors), losses.tolist())
        if not np.all(finite):
            log.warning(
                "generation %d: %d non-finite candidate(s) got the worst fitness",
                step,
                int(np.sum(~finite)),
            )
            self.non_finite += int(np.sum(~finite))
        best = int(np.argmin(losses))
        self.last_best_vector = vectors[best]
        if self.by_fitness and finite[best] and fitness[best] > self.best_score:
            self.best_vector, self.best_score = vectors[best], float(fitness[best])
            self.best_generation = step + 1
        self.generation = step + 1
        result = GenerationResult(step + 1, length, fitness, finite, float(self.es.sigma))
        self.history.append({"generation": step + 1, "length": length, **result.stats()})
        if self.es.stop() and not self._stopped_reported:
            log.warning(
                "generation %d: pycma's termination criteria %s are met; continuing "
                "(the run does the generations it is asked for)",
                self.generation,
                dict(self.es.stop()),
            )
            self._stopped_reported = True
        return result

    # ----------------------------------------------------------------------------- validation
    def candidates(self) -> Genome:
        """[best so far, distribution mean, last generation's best]."""
        self._validated_vectors = np.stack(
            [self.best_vector, np.asarray(self.es.mean, np.float64), self.last_best_vector]
        )
        return self.mapping.decode(self._validated_vectors)

    def accept(self, result: ValidationResult, step: int) -> int:
        scores = result.scores()
        best = result.best()  # lowest index on ties: the incumbent
        self.best_vector, self.best_score = self._validated_vectors[best], float(scores[best])
        if best:
            self.best_generation = step
        log.info(
            "validation at generation %d (T=%d): best so far %.4f, mean %.4f, last "
            "generation's best %.4f -> keeping %s",
            step,
            result.length,
            *scores,
            ("the incumbent", "the mean", "the candidate")[best],
        )
        return best

    # ----------------------------------------------------------------------------- logs
    def record(self, report: GenerationResult, seconds: float, summaries) -> None:
        if summaries:
            stats = report.stats()
            summaries.scalars(
                report.generation,
                {
                    "cma/fitness_best": stats["best"],
                    "cma/fitness_mean": stats["mean"],
                    "cma/fitness_worst": stats["worst"],
                    "cma/sigma": stats["sigma"],
                    "cma/non_finite": self.non_finite,
                    "cma/unroll_length": report.length,
                    "cma/generations_per_second": 1.0 / max(seconds, 1e-9),
                },
            )

    def log(self, step: int, total: int, window: list, summaries) -> None:
        report = window[-1][0]
        stats = report.stats()
        rate = len(window) / max(sum(seconds for _, seconds in window), 1e-9)
        log.info(
            "generation %d/%d  T=%d  accuracy best %.4f mean %.4f worst %.4f  sigma %.4g  "
            "non-finite %d  %.3f generations/s",
            step,
            total,
            report.length,
            stats["best"],
            stats["mean"],
            stats["worst"],
            stats["sigma"],
            self.non_finite,
            rate,
        )

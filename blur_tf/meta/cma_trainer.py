"""CmaTrainer: CMA-ES search of the genome on held-out accuracy (paper §4.4), resumable.

No meta-gradient: pycma's `CMAEvolutionStrategy` searches the genome vector (a fixed mapping,
`genome_vector.GenomeVector`) on the non-differentiable objective DESIGN §1 names for CMA-ES,
the held-out accuracy after the unroll. One generation g:

1. `ask`: λ candidate vectors x_1 … x_λ ~ m + σ·N(0, C) (float64), decoded to a float32 genome
   of population λ (the boundary cast of DESIGN §5);
2. one compiled call (`fitness.PopulationFitness`) runs all λ·M networks side by side on the
   generation's common data (tasks, batches, held-out examples and initial synapses drawn from
   (seed, g) and shared by every candidate) and returns each candidate's accuracy a_i;
3. `tell` the losses 1 − a_i (pycma minimizes). A candidate with a NaN/Inf synapse or logit gets
   the worst loss, `NON_FINITE_LOSS` = 2 (worse than any accuracy), and is counted; the run
   goes on.

The seams are MetaTrainer's: an `InnerProblem` (tasks, architecture, batch sizes), an unroll
schedule (the unroll length of generation g is `length_at(schedule, g)`, a tensor: a curriculum
never retraces), a `Validator`, `CheckpointState`/`StopRequest`, and `SummaryWriter`.

**Best genome.** The fitness of one generation is a noisy estimate (one draw of data), so the
best single fitness over a run is biased upwards by lucky draws. With a validator, every
`validate_every` generations three genomes are validated on the validator's fixed data — the
best genome so far, the distribution mean m (pycma's estimate of the optimum) and the best
candidate of the last generation — and the best of the three (the incumbent on ties) becomes
the best genome; re-validating the incumbent keeps the comparison fair when the validation
length grows with the schedule. Without a validator, the best genome is the candidate with the
highest fitness seen so far.

**Randomness and resuming.** pycma draws its samples through its `randn` option, here a numpy
`Generator` seeded from the run seed and pickled with the strategy (pycma's own `seed` option
would reseed numpy's global generator); data and synapse seeds derive from (seed, generation)
(`seeds`). The checkpoint (`CheckpointState`, written every `checkpoint_every` generations, at
the end and on SIGTERM/SIGINT) holds one pickled dict: the generation counter, the run's
identity (seed, searched fields, λ), the strategy (mean, σ, C, evolution paths, its generator),
the best genome and the history. A
run killed at any moment resumes from the last complete checkpoint and, with deterministic TF
ops, ends with the same genome as an uninterrupted one. (The blob is a pickle: only restore
checkpoints you wrote.)

**Distribution** (`strategy`): the λ candidates of a generation are split over the replicas of a
`tf.distribute.Strategy` and their fitness values all-gathered (`distribute.DistributedFitness`;
λ need not be divisible by the replica count). `ask`/`tell` run on the host of every worker:
each worker holds the same pycma strategy (same seed, same sampler) and is told the same
all-gathered fitness, so all workers follow the same search; the candidates evaluated are the
chief's, broadcast exactly before every evaluation, so even a worker whose float64 linear
algebra differed in the last bit would score and tell the chief's generation. Only the chief
keeps checkpoints and writes summaries.

pycma's termination criteria (`es.stop()`) are reported, not obeyed: a run does the number of
generations it is asked for.
"""

from __future__ import annotations

import dataclasses
import logging
import pickle
import time
from typing import Sequence

import cma
import numpy as np
import tensorflow as tf

from blur_tf.genome import Genome
from blur_tf.meta import distribute
from blur_tf.meta import schedules as schedules_lib
from blur_tf.meta import seeds
from blur_tf.meta.checkpoint import CheckpointState, StopRequest
from blur_tf.meta.fitness import PopulationFitness
from blur_tf.meta.genome_vector import GenomeVector, rule_fields
from blur_tf.meta.problem import InnerProblem
from blur_tf.meta.summaries import SummaryWriter
from blur_tf.meta.validation import ValidationResult, Validator

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
        return {"best": pick(np.max), "mean": pick(np.mean), "worst": pick(np.min),
                "sigma": self.sigma, "non_finite": int(np.sum(~self.finite))}


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


class CmaTrainer:
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
      strategy: a `tf.distribute.Strategy` to split the candidates over (module doc); None: one
        device.
    """

    def __init__(self, problem: InnerProblem, schedule, *, population: int, sigma0: float = 0.1,
                 seed: int = 0, genome: Genome | None = None, fields: Sequence[str] | None = None,
                 transform_std: float = 0.5, synapse_update: float = 0.05, networks: int = 1,
                 average_steps: int = 1, eval_batches: int = 1,
                 validator: Validator | None = None, validation_length: int | None = None,
                 validate_every: int = 10, checkpoint_every: int = 10, log_every: int = 1,
                 checkpoint_dir: str | None = None, summary_dir: str | None = None,
                 keep_checkpoints: int = 3, cma_options: dict | None = None, strategy=None):
        for name, value, low in (("population", population, 2), ("seed", seed, 0),
                                 ("validate_every", validate_every, 0),
                                 ("checkpoint_every", checkpoint_every, 0),
                                 ("log_every", log_every, 0)):
            if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < low:
                raise ValueError(f"{name} must be an int >= {low}, got {value!r}")
        if not (isinstance(sigma0, (int, float)) and np.isfinite(sigma0) and sigma0 > 0):
            raise ValueError(f"sigma0 must be a finite number > 0, got {sigma0!r}")
        if validation_length is not None and (not isinstance(validation_length, int)
                                              or validation_length < 1):
            raise ValueError(f"validation_length must be an int >= 1, got {validation_length!r}")
        if not hasattr(schedule, "stage"):
            raise ValueError(f"schedule must be an unroll schedule object, got {schedule!r}")
        self.problem, self.schedule, self.rule = problem, schedule, problem.rule
        self.population, self.sigma0, self.seed = int(population), float(sigma0), int(seed)
        self.validator, self.validation_length = validator, validation_length
        self.validate_every, self.checkpoint_every = validate_every, checkpoint_every
        self.log_every = log_every
        if genome is None:
            genome = Genome.random(self.rule.num_states, seed=self.seed,
                                   transform_std=transform_std, synapse_update=synapse_update)
        self.rule.check_genome(genome)
        if genome.population != 1:
            raise ValueError(f"the start genome must have population 1, got {genome.population}")
        self.mapping = GenomeVector(genome, rule_fields(self.rule) if fields is None else fields)
        self.strategy = strategy
        self.fitness = PopulationFitness(problem, networks, average_steps, eval_batches)
        self._broadcast = lambda vectors: vectors  # the chief's candidates (module doc)
        if strategy is not None:
            self.fitness = distribute.DistributedFitness(self.fitness, strategy)
            self._broadcast = distribute.ChiefBroadcast(strategy)
        options = dict(cma_options or {})
        options.update(popsize=self.population, randn=NormalSampler(
            seeds.int_seed(self.seed, 0, seeds.SEARCH)), seed=np.nan, verbose=-9, verb_log=0,
                       verb_disp=0)
        self.es = cma.CMAEvolutionStrategy(self.mapping.initial(), self.sigma0, options)
        self.generation = 0
        self.non_finite = 0
        self.best_vector = self.mapping.initial()
        self.best_score = -np.inf  # validation score (with a validator) or fitness
        self.best_generation = 0
        self.last_best_vector = self.best_vector  # best candidate of the last generation
        self.history: list[dict] = []  # per generation: length, best/mean/worst, σ, non-finite
        self.last_validation: ValidationResult | None = None  # of [best, mean, candidate]
        self._validated_at = None
        self._stopped_reported = False
        self._blob = tf.Variable(b"", dtype=tf.string, trainable=False, name="cma_state")
        chief = distribute.is_chief(strategy)
        self.checkpoint = (CheckpointState(checkpoint_dir, keep_checkpoints, chief=chief,
                                           state=self._blob) if checkpoint_dir else None)
        self.summaries = SummaryWriter(summary_dir) if summary_dir and chief else None

    # ----------------------------------------------------------------------------- state
    _PICKLED = ("generation", "es", "non_finite", "best_vector", "best_score",
                "best_generation", "last_best_vector", "history")

    def save(self) -> str | None:
        """Writes a checkpoint: one pickled dict (run identity, strategy, bookkeeping)."""
        if self.checkpoint is None:
            return None
        state = {name: getattr(self, name) for name in self._PICKLED}
        state["identity"] = self._identity()
        self._blob.assign(pickle.dumps(state))
        return self.checkpoint.save(self.generation)

    def _identity(self) -> dict:
        """What a checkpoint must share with this trainer to be resumed by it."""
        return {"seed": self.seed, "fields": self.mapping.fields, "population": self.population}

    def restore(self) -> bool:
        """Restores the latest checkpoint (if any); True if one was restored.

        ValueError if it was written by a run with another seed, searched fields or λ.
        """
        path = self.checkpoint.restore_latest() if self.checkpoint else None
        if path is None:
            return False
        state = pickle.loads(self._blob.numpy())
        if state["identity"] != self._identity():
            raise ValueError(f"checkpoint {path} belongs to another run ({state['identity']}, "
                             f"not {self._identity()})")
        for name in self._PICKLED:
            setattr(self, name, state[name])
        self.last_validation = None
        log.info("resumed from %s at generation %d", path, self.generation)
        return True

    def best_genome(self) -> Genome:
        """The best genome so far (population 1, float32); see the module docstring."""
        return self.mapping.decode(self.best_vector).as_tensors()

    def mean_genome(self) -> Genome:
        """The search distribution's mean m (population 1)."""
        return self.mapping.decode(self.es.mean).as_tensors()

    # ----------------------------------------------------------------------------- generation
    def step(self) -> GenerationResult:
        """Runs one generation (ask, evaluate the population in one call, tell)."""
        g = self.generation
        length = schedules_lib.length_at(self.schedule, g)
        vectors = self._broadcast(np.asarray(self.es.ask(), np.float64))  # [λ, D]
        synapses = self.problem.init_synapses(self.fitness.networks,
                                              seeds.int_seed(self.seed, g, seeds.SYNAPSES))
        fitness, finite = self.fitness(self.mapping.decode(vectors), synapses,
                                       seeds.step_seed(self.seed, g), length)
        losses = np.where(finite, 1.0 - fitness.astype(np.float64), NON_FINITE_LOSS)
        self.es.tell(list(vectors), losses.tolist())
        if not np.all(finite):
            log.warning("generation %d: %d non-finite candidate(s) got the worst fitness", g,
                        int(np.sum(~finite)))
            self.non_finite += int(np.sum(~finite))
        best = int(np.argmin(losses))
        self.last_best_vector = vectors[best]
        if self.validator is None and finite[best] and fitness[best] > self.best_score:
            self.best_vector, self.best_score = vectors[best], float(fitness[best])
            self.best_generation = g + 1
        self.generation = g + 1
        result = GenerationResult(g + 1, length, fitness, finite, float(self.es.sigma))
        self.history.append({"generation": g + 1, "length": length, **result.stats()})
        self._report_pycma_stop()
        return result

    def _report_pycma_stop(self):
        stop = self.es.stop()
        if stop and not self._stopped_reported:
            log.warning("generation %d: pycma's termination criteria %s are met; continuing "
                        "(the run does the generations it is asked for)", self.generation,
                        dict(stop))
            self._stopped_reported = True

    # ----------------------------------------------------------------------------- validation
    def _validation_length(self) -> int:
        return self.validation_length or self.schedule.base_length(max(self.generation - 1, 0))

    def validate(self) -> ValidationResult | None:
        """Validates [best so far, mean, last generation's best]; keeps the best as the best."""
        if self.validator is None:
            return None
        length = self._validation_length()
        if self._validated_at == (self.generation, length) and self.last_validation:
            return self.last_validation
        vectors = np.stack([self.best_vector, np.asarray(self.es.mean, np.float64),
                            self.last_best_vector])
        result = self.validator(self.mapping.decode(vectors), length)
        scores = result.scores()
        best = result.best()  # lowest index on ties: the incumbent
        self.best_vector, self.best_score = vectors[best], float(scores[best])
        if best:
            self.best_generation = self.generation
        self._validated_at = (self.generation, length)
        self.last_validation = result
        log.info("validation at generation %d (T=%d): best so far %.4f, mean %.4f, last "
                 "generation's best %.4f -> keeping %s", self.generation, length, *scores,
                 ("the incumbent", "the mean", "the candidate")[best])
        if self.summaries:
            self.summaries.validation(self.generation, result, best)
            self.summaries.genome(self.generation, self.mapping.decode(vectors), best)
        return result

    def best_validation(self) -> ValidationResult | None:
        """The last validation's curves of the best genome alone (population 1)."""
        result = self.last_validation
        if result is None:
            return None
        best = result.best()
        return ValidationResult(result.length, {k: v[best:best + 1]
                                                for k, v in result.curves.items()})

    # ----------------------------------------------------------------------------- loop
    def train(self, generations: int, resume: bool = True,
              stop: StopRequest | None = None) -> CmaTrainResult:
        """Runs generations until the counter reaches `generations` (resuming if asked).

        Validates every `validate_every` generations and at the end; checkpoints every
        `checkpoint_every` generations, at the end and when `stop` is requested.
        """
        if not isinstance(generations, int) or generations < 0:
            raise ValueError(f"generations must be an int >= 0, got {generations!r}")
        if resume:
            self.restore()
        start, busy, run = time.time(), 0.0, 0
        window = [0, 0.0]  # generations and seconds since the last log line
        interrupted = False
        while self.generation < generations:
            if stop is not None and stop.requested:
                interrupted = True
                break
            t0 = time.perf_counter()
            result = self.step()
            elapsed = time.perf_counter() - t0
            busy, run = busy + elapsed, run + 1
            window = [window[0] + 1, window[1] + elapsed]
            g = result.generation
            self._summarize(result, elapsed)
            if self.log_every and (g % self.log_every == 0 or g == generations):
                stats = result.stats()
                log.info("generation %d/%d  T=%d  accuracy best %.4f mean %.4f worst %.4f  "
                         "sigma %.4g  non-finite %d  %.3f generations/s", g, generations,
                         result.length, stats["best"], stats["mean"], stats["worst"],
                         stats["sigma"], self.non_finite, window[0] / max(window[1], 1e-9))
                window = [0, 0.0]
            if self.validate_every and g % self.validate_every == 0:
                self.validate()
            if self.checkpoint_every and g % self.checkpoint_every == 0:
                self.save()
        if interrupted:
            log.warning("stop requested (signal %s) at generation %d: saving a checkpoint",
                        stop.signum, self.generation)
        else:
            self.validate()
        self.save()
        if self.summaries:
            self.summaries.flush()
        return CmaTrainResult(self.generation, run, interrupted,
                              stop.signum if interrupted else None, time.time() - start, busy,
                              self.non_finite, None if interrupted else self.best_validation())

    def _summarize(self, result: GenerationResult, seconds: float):
        if self.summaries:
            stats = result.stats()
            self.summaries.scalars(result.generation, {
                "cma/fitness_best": stats["best"], "cma/fitness_mean": stats["mean"],
                "cma/fitness_worst": stats["worst"], "cma/sigma": stats["sigma"],
                "cma/non_finite": self.non_finite, "cma/unroll_length": result.length,
                "cma/generations_per_second": 1.0 / max(seconds, 1e-9)})

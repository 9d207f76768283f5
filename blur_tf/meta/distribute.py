"""The outer loops on `tf.distribute`: strategies, replica shards, chief-only writes.

A meta-step of `MetaTrainer` unrolls G·M networks (G genomes × M meta-batch networks, laid
out genome-major: network p = g·M + m); a CMA-ES generation unrolls λ·M networks (λ
candidates). With a `tf.distribute.Strategy` of R replicas (`MirroredStrategy` over one
machine's GPUs or logical CPU devices, `MultiWorkerMirroredStrategy` across machines, configured
by `TF_CONFIG`), these networks are split over the replicas and every replica runs the existing
estimator or fitness on its share — the math is not re-derived here:

* **Meta-gradient** (`DistributedEstimator`). Replica r takes the networks
  m ∈ [r·M/R, (r+1)·M/R) of every genome (`replica_rows`; M must be divisible by R) and returns
  its per-genome losses L_g^r = mean over its M/R networks and their gradients ∇L_g^r. One
  all-reduce (SUM, of the losses and all gradients packed in one vector of G·(D + 1) floats,
  D = coefficients per genome) and a division by R give, on every replica and worker,

      L_g = (1/R) Σ_r L_g^r = (1/M) Σ_m ℓ_{g,m},        ∇L_g = (1/R) Σ_r ∇L_g^r,

  the single-device mean up to float32 rounding. The update (`PopulationAdam.apply`) then runs
  in cross-replica context on these identical values, so every copy of the genome and of the
  Adam moments receives the same update and the replicas stay identical.
* **Fitness** (`DistributedFitness`). The λ candidates are split into R contiguous blocks of
  ⌈λ/R⌉ (the last block padded with copies of candidate 0, dropped afterwards); each replica
  scores its block on the generation's common data and the fitness values are all-gathered.

**Data.** Every replica draws the whole meta-step's data (`InnerProblem.sample` for all G·M
networks, from the same stateless seed) and keeps its networks' rows (`ReplicaShard`): the
draws depend on the population size, so this is what keeps a replica's networks bit-for-bit
those of the single-device run. It costs a gather of P·B examples per inner step per replica,
small next to the unroll's O(P·B·n·h·K²) arithmetic. Initial synapses are drawn on the host for
all networks and sliced the same way.

**Chief-only writes.** `is_chief(strategy)` is True for single-worker strategies and for the
chief of a multi-worker job (`strategy.extended.should_checkpoint`). Checkpoints follow the
multi-worker pattern TensorFlow documents: every worker calls save (saving may need every
worker's collectives, e.g. for on-read variables), the chief into the checkpoint folder, the
others into a temporary folder deleted at once (`CheckpointState(chief=False)`); summaries,
genome and summary files are written by the chief only. Every worker restores from the chief's
checkpoint folder, so a resumed multi-machine job needs that folder on a shared file system
(or copied to every worker first).

Strategy construction (`make_strategy`) must come before anything initializes TensorFlow's
devices (importing TensorFlow does not): `--cpu_devices=N` splits the host CPU into N logical
devices, which TensorFlow allows only before its first op, and `MultiWorkerMirroredStrategy`
starts the worker's collective server.
"""

from __future__ import annotations

import json
import logging
import math
import os

import numpy as np
import tensorflow as tf

from blur_tf.genome import Genome

log = logging.getLogger(__name__)

STRATEGIES = ("none", "mirrored", "multi_worker")


# ----------------------------------------------------------------------------- strategies
def check_strategy(name: str, cpu_devices: int | None, environ=os.environ) -> None:
    """Validates a strategy choice without touching TensorFlow; ValueError naming the problem.

    `cpu_devices` (None: leave the CPU as one device) splits the host CPU into that many
    logical devices for `mirrored`. `multi_worker` reads the cluster from `TF_CONFIG` and uses
    one CPU device (or every GPU) per worker, so it takes no `cpu_devices` above 1.
    """
    if name not in STRATEGIES:
        raise ValueError(f"--strategy must be one of {', '.join(STRATEGIES)}, got {name!r}")
    if cpu_devices is not None:
        if isinstance(cpu_devices, bool) or not isinstance(cpu_devices, int) or cpu_devices < 1:
            raise ValueError(f"--cpu_devices must be an int >= 1, got {cpu_devices!r}")
        if name == "none":
            raise ValueError(
                "--cpu_devices needs --strategy=mirrored (logical CPU devices are "
                "only used by a strategy)"
            )
        if name == "multi_worker" and cpu_devices > 1:
            raise ValueError(
                "--cpu_devices > 1 needs --strategy=mirrored: "
                "MultiWorkerMirroredStrategy uses one CPU device (or every GPU) "
                "per worker"
            )
    if name == "multi_worker":
        cluster_config(environ)


def cluster_config(environ=os.environ) -> dict:
    """The parsed `TF_CONFIG` of a multi-worker job; ValueError if missing or malformed."""
    text = environ.get("TF_CONFIG")
    if not text:
        raise ValueError(
            "--strategy=multi_worker needs the TF_CONFIG environment variable "
            "(cluster and task of this worker; see docs/distributed.md)"
        )
    try:
        config = json.loads(text)
        workers = config["cluster"]["worker"]
        task = config["task"]
        task_type, task_index = task["type"], int(task["index"])
    except (ValueError, KeyError, TypeError) as e:
        raise ValueError(
            f"TF_CONFIG is not a cluster spec with cluster.worker and task {{type, index}}: {e}"
        ) from None
    if task_type == "worker" and not 0 <= task_index < len(workers):
        raise ValueError(
            f"TF_CONFIG: task index {task_index} is not one of the {len(workers)} workers"
        )
    return config


def configure_cpu_devices(count: int) -> None:
    """Splits the host CPU into `count` logical devices (before TensorFlow initializes).

    ValueError if TensorFlow has already initialized its devices (they cannot change then).
    """
    cpus = tf.config.list_physical_devices("CPU")
    try:
        tf.config.set_logical_device_configuration(
            cpus[0], [tf.config.LogicalDeviceConfiguration() for _ in range(count)]
        )
    except RuntimeError as e:
        raise ValueError(
            f"--cpu_devices={count}: TensorFlow has already initialized its "
            f"devices ({e}); set it before any TensorFlow op runs"
        ) from None


def make_strategy(name: str, cpu_devices: int | None = None):
    """The `tf.distribute.Strategy` of a launcher's `--strategy` (None for `none`).

    `mirrored`: `MirroredStrategy` over the `cpu_devices` logical CPU devices if given, else
    over every GPU (or the one CPU when there is none). `multi_worker`:
    `MultiWorkerMirroredStrategy` with the cluster of `TF_CONFIG` and collective communication
    chosen by TensorFlow (`AUTO`: NCCL between GPUs, ring all-reduce over gRPC on CPUs).
    Call it before anything else runs TensorFlow ops (see the module doc).
    """
    check_strategy(name, cpu_devices)
    if name == "none":
        return None
    if cpu_devices is not None and name == "mirrored":
        configure_cpu_devices(cpu_devices)
    if name == "mirrored":
        devices = None
        if cpu_devices is not None:
            devices = [d.name for d in tf.config.list_logical_devices("CPU")]
        strategy = tf.distribute.MirroredStrategy(devices)
    else:
        strategy = tf.distribute.MultiWorkerMirroredStrategy()
    log.info(
        "%s: %d replica(s) in sync%s",
        type(strategy).__name__,
        strategy.num_replicas_in_sync,
        "" if is_chief(strategy) else " (not the chief)",
    )
    return strategy


def is_chief(strategy) -> bool:
    """True unless this process is a non-chief worker of a multi-worker job."""
    return strategy is None or bool(strategy.extended.should_checkpoint)


def num_replicas(strategy) -> int:
    return 1 if strategy is None else int(strategy.num_replicas_in_sync)


def replica_share(size: int, strategy, what: str = "meta_batch") -> int:
    """size / R, the share of each of the strategy's R replicas; ValueError unless R | size."""
    replicas = num_replicas(strategy)
    if size % replicas:
        raise ValueError(
            f"{what}={size} is not divisible by the {replicas} replicas of the "
            f"distribution strategy (each replica unrolls an equal share)"
        )
    return size // replicas


# ----------------------------------------------------------------------------- in-graph pieces
def replica_id():
    """int32 scalar: this replica's index in the sync group (call inside `strategy.run`)."""
    return tf.cast(tf.distribute.get_replica_context().replica_id_in_sync_group, tf.int32)


def replica_rows(replica, replicas: int, groups: int, group_size: int):
    """int32 [groups·group_size/replicas]: rows of a group-major layout owned by `replica`.

    Row g·group_size + m belongs to replica ⌊m / s⌋, s = group_size / replicas: each replica
    gets the same share s of every group, in order.
    """
    share = group_size // replicas
    rows = tf.range(groups)[:, None] * group_size + replica * share + tf.range(share)[None, :]
    return tf.reshape(rows, [-1])


class ReplicaShard:
    """An `InnerProblem` as one replica sees it: the rows of its networks (module doc, Data).

    `sample(seed, population)` draws the data of all `groups`·`group_size` networks and keeps
    this replica's `population` = groups·group_size/replicas rows; everything else (network,
    loss, rule, …) is the wrapped problem's.
    """

    def __init__(self, problem, groups: int, group_size: int, replicas: int):
        self.problem, self.groups = problem, groups
        self.group_size, self.replicas = group_size, replicas

    def __getattr__(self, name):
        return getattr(self.problem, name)

    def rows(self):
        return replica_rows(replica_id(), self.replicas, self.groups, self.group_size)

    def sample(self, seed, population: int):
        share = self.groups * (self.group_size // self.replicas)
        if population != share:
            raise ValueError(f"a replica samples its {share} networks, not {population}")
        rows = self.rows()
        take = lambda structure: tf.nest.map_structure(lambda t: tf.gather(t, rows), structure)
        task_ids, batch_fn, eval_batch = self.problem.sample(seed, self.groups * self.group_size)
        return take(task_ids), lambda t: take(batch_fn(t)), take(eval_batch)


class DistributedEstimator:
    """A meta-gradient estimator whose G·M networks are split over a strategy's replicas.

    Called like the estimator it wraps (inside the trainer's compiled meta-step, in
    cross-replica context) and returns the same values in the same layout: losses [G],
    gradients [G, …] (all-reduced: module doc) and diagnostics `task_ids`, `accuracy` [G·M]
    (all-gathered back into genome-major order). The estimator's `with_problem` gives each
    replica's share (ValueError for the truncated one: it keeps per-network state between
    meta-steps and is not distributed).
    """

    def __init__(self, estimator, strategy, population: int, meta_batch: int):
        self.strategy, self.population, self.meta_batch = strategy, population, meta_batch
        self.replicas = num_replicas(strategy)
        self.share = replica_share(meta_batch, strategy)
        self.replica_estimator = estimator.with_problem(
            ReplicaShard(estimator.problem, population, meta_batch, self.replicas), self.share
        )

    def __call__(self, genome_variables, synapses, seed, length):
        shard = self.replica_estimator.problem

        def replica_step():
            rows = shard.rows()
            local = tf.nest.map_structure(lambda t: tf.gather(t, rows), synapses)
            losses, gradients, diagnostics = self.replica_estimator(
                genome_variables, local, seed, length
            )
            packed = tf.concat(
                [losses] + [tf.reshape(g, [-1]) for g in tf.nest.flatten(gradients)], axis=0
            )
            per_genome = lambda t: tf.reshape(t, [self.population, self.share])
            return (
                packed,
                per_genome(diagnostics["task_ids"]),
                per_genome(diagnostics["accuracy"]),
            )

        packed, task_ids, accuracy = self.strategy.run(replica_step)
        total = self.strategy.reduce(tf.distribute.ReduceOp.SUM, packed, axis=None)
        mean = total / float(self.replicas)
        shapes = [v.shape for v in tf.nest.flatten(genome_variables)]
        sizes = [self.population] + [int(np.prod(s)) for s in shapes]
        losses, *flat = tf.split(mean, sizes)
        gradients = tf.nest.pack_sequence_as(
            genome_variables, [tf.reshape(g, s) for g, s in zip(flat, shapes)]
        )
        members = lambda v: tf.reshape(self.strategy.gather(v, axis=1), [-1])
        return losses, gradients, {"task_ids": members(task_ids), "accuracy": members(accuracy)}


# ----------------------------------------------------------------------------- CMA-ES
class ChiefBroadcast:
    """`broadcast(array)`: the chief's value of a host array on every worker, exactly (the
    chief's values plus zeros from every other replica, summed by one all-reduce); compiled
    once for any shape."""

    def __init__(self, strategy):
        self.strategy = strategy
        self._compiled = tf.function(self._broadcast, reduce_retracing=True)

    def __call__(self, array: np.ndarray) -> np.ndarray:
        return self._compiled(array).numpy()

    def _broadcast(self, value):

        def replica():
            ctx = tf.distribute.get_replica_context()
            chief = tf.equal(replica_id(), 0)
            return ctx.all_reduce(
                tf.distribute.ReduceOp.SUM, tf.where(chief, value, tf.zeros_like(value))
            )

        return self.strategy.experimental_local_results(self.strategy.run(replica))[0]


class DistributedFitness:
    """`PopulationFitness` with the λ candidates split over a strategy's replicas (module doc).

    Same call and results as the wrapped fitness: (fitness float32 [λ], finite bool [λ]).
    """

    def __init__(self, fitness, strategy):
        self.fitness, self.strategy = fitness, strategy
        self.networks, self.replicas = fitness.networks, num_replicas(strategy)
        self._compiled = tf.function(self._distributed, reduce_retracing=True)

    @property
    def trace_count(self) -> int:
        """Traces of the wrapped fitness: one per local replica per compilation."""
        return self.fitness.trace_count

    def __call__(self, genome, synapses, seed, length: int):
        self.fitness.check_length(length)
        candidates = genome.population
        block = math.ceil(candidates / self.replicas)
        padding = [0] * (block * self.replicas - candidates)
        padded = Genome.concat([genome, genome.take(padding)]) if padding else genome
        fitness = self._compiled(
            padded.as_tensors(),
            synapses,
            tf.constant(seed, tf.int64),
            tf.constant(int(length), tf.int32),
        ).numpy()[:candidates]
        return fitness, np.isfinite(fitness)

    def _distributed(self, genome, synapses, seed, length):
        block = tf.shape(genome.forward_transform)[0] // self.replicas

        def replica():
            start = replica_id() * block
            local = Genome(*[v[start : start + block] for v in genome])
            fitness, _ = self.fitness.evaluate(local, synapses, seed, length)
            return fitness  # NaN exactly where the candidate is non-finite

        return self.strategy.gather(self.strategy.run(replica), axis=0)

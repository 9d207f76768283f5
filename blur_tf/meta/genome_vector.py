"""The fixed mapping between `Genome`s and the flat vectors CMA-ES searches.

A `GenomeVector` picks the *searched fields* and lays them out in one vector x ∈ ℝ^D:

    x = [ vec(g.f_1), vec(g.f_2), … ]      for the searched fields f_i in `Genome._fields` order,

each field flattened row-major (numpy C order) per population member, so a K×K transform
ν occupies K² consecutive entries ν[0, 0], ν[0, 1], …, ν[K−1, K−1], a per-state vector γ
occupies K entries and a gate one entry. The order is always `Genome._fields` order, whatever
order the fields are given in, so a vector means the same thing in every run with the same
fields and K. Fields that are not searched keep the value of the *base* genome (the start
point) in every decoded genome.

Default fields: those the rule reads (`rule_fields`): the four K×K transforms and the four
gates always; normalization gain and shift when the rule normalizes (forward or backward); the
Oja multiplier when `rule.oja`; the saturation α when `rule.saturation`. A field the rule never
reads would only random-walk in the search (and waste CMA-ES's covariance learning), so it is
left out unless asked for. For `Rule()` with K = 2: 4·4 + 4 + 2·2 = 24 dimensions.

Vectors are float64 (pycma's dtype); decoded genomes are float32 (the boundary cast of DESIGN §5).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from blur_tf.genome import Genome
from blur_tf.rule import Rule

ALWAYS_SEARCHED = (
    "forward_transform",
    "backward_transform",
    "neuron_keep",
    "neuron_update",
    "synapse_pre",
    "synapse_post",
    "synapse_keep",
    "synapse_update",
)


def rule_fields(rule: Rule) -> tuple[str, ...]:
    """The genome fields `rule` reads (the default searched fields), in `Genome._fields` order."""
    used = set(ALWAYS_SEARCHED)
    if rule.normalize_forward or rule.normalize_backward:
        used |= {"norm_gain", "norm_shift"}
    if rule.oja:
        used.add("oja_multiplier")
    if rule.saturation:
        used.add("saturation")
    return tuple(name for name in Genome._fields if name in used)


def check_fields(fields: Sequence[str]) -> tuple[str, ...]:
    """Validates field names; returns them in `Genome._fields` order (ValueError naming them)."""
    fields = list(fields)
    unknown = [name for name in fields if name not in Genome._fields]
    if unknown:
        raise ValueError(
            f"unknown genome field(s) {', '.join(unknown)}; known: {', '.join(Genome._fields)}"
        )
    if not fields:
        raise ValueError("give at least one genome field to search")
    if len(set(fields)) != len(fields):
        raise ValueError(f"genome fields repeated: {fields}")
    return tuple(name for name in Genome._fields if name in fields)


class GenomeVector:
    """Genome (population P) ↔ vectors [P, D]; see the module docstring for the layout.

    Args:
      base: the start genome (population 1): values of the fields that are not searched, and
        `initial()`, the start point of the search.
      fields: the searched fields (any order; laid out in `Genome._fields` order).
    """

    def __init__(self, base: Genome, fields: Sequence[str]):
        if base.population != 1:
            raise ValueError(f"the base genome must have population 1, got {base.population}")
        self.base = base.numpy()
        self.fields = check_fields(fields)
        self.num_states = base.num_states
        self.slices, start = {}, 0
        for name in self.fields:
            shape = getattr(self.base, name).shape[1:]
            size = int(np.prod(shape, dtype=int))
            self.slices[name] = (slice(start, start + size), shape)
            start += size
        self.size = start

    def layout(self) -> list[dict]:
        """[{field, start, stop, shape}] — the documented layout, e.g. for summaries."""
        return [
            {"field": name, "start": s.start, "stop": s.stop, "shape": list(shape)}
            for name, (s, shape) in self.slices.items()
        ]

    def initial(self) -> np.ndarray:
        """The base genome as a vector [D] (float64): the search's start point."""
        return self.encode(self.base)[0]

    def encode(self, genome: Genome) -> np.ndarray:
        """The searched fields of `genome` (population P, same K) as float64 vectors [P, D]."""
        if genome.num_states != self.num_states:
            raise ValueError(f"genome has K={genome.num_states}, the mapping K={self.num_states}")
        values = genome.numpy()
        return np.concatenate(
            [getattr(values, name).reshape(genome.population, -1) for name in self.fields], axis=1
        ).astype(np.float64)

    def decode(self, vectors) -> Genome:
        """Vectors [P, D] (or one vector [D]) → a float32 Genome of population P."""
        vectors = np.asarray(vectors, np.float64)
        if vectors.ndim == 1:
            vectors = vectors[None]
        if vectors.ndim != 2 or vectors.shape[1] != self.size:
            raise ValueError(
                f"genome vectors must have shape [P, {self.size}], got {list(vectors.shape)}"
            )
        population = vectors.shape[0]
        fields = {}
        for name in Genome._fields:
            if name in self.slices:
                s, shape = self.slices[name]
                value = vectors[:, s].reshape(population, *shape)
            else:
                value = np.repeat(getattr(self.base, name), population, axis=0)
            fields[name] = value.astype(np.float32)
        return Genome(**fields)

"""The genome: the few learned coefficients shared by every neuron and synapse (DESIGN §1).

Every field carries a leading population axis P, so a batch of genomes (a CMA-ES population, the
parallel genomes of MetaTrainer) is one `Genome`. Fields and their symbols in the paper / DESIGN:

| field              | symbol | shape     | role |
|--------------------|--------|-----------|------|
| forward_transform  | ν      | [P, K, K] | ν[c, d]: input state d → output state c, forward pass |
| backward_transform | μ      | [P, K, K] | μ[c, d]: upper state d → lower state c, backward pass |
| neuron_keep        | f      | [P]       | keep gate on a neuron's old state |
| neuron_update      | η      | [P]       | gain on a neuron's synaptic input |
| synapse_pre        | ν̃      | [P, K, K] | ν̃[e, c]: pre-synaptic state e → synapse channel c |
| synapse_post       | μ̃      | [P, K, K] | μ̃[c, d]: post-synaptic state d → synapse channel c |
| synapse_keep       | f̃      | [P]       | synapse keep gate (weight decay when < 1) |
| synapse_update     | η̃      | [P]       | synapse update gate (the learning rate) |
| norm_gain          | γ      | [P, K]    | normalization gain per state |
| norm_shift         | β      | [P, K]    | normalization shift per state |
| oja_multiplier     | ω      | [P]       | strength of the Oja-like inhibitory term |
| saturation         | α      | [P]       | synapse saturation α·tanh(W/α) |

`Genome` is a NamedTuple, so `tf.nest` and `tf.function` see it as a structure of tensors: its
leaves may be numpy arrays, tensors or `tf.Variable`s (`as_variables()` for meta-training).
"""

from __future__ import annotations

import json
import os
from typing import NamedTuple

import numpy as np
import tensorflow as tf

from blur_tf.files import write_json_atomic

FORMAT_NAME = "blur_tf.genome"
FORMAT_VERSION = 1
# The largest |value| a genome may hold: meta-training never applies an update beyond it
# (`PopulationAdam.max_abs_value`), and a loaded genome beyond it is refused (learned genomes
# stay within a few units; 1e30 already gives constant logits, 1e39 is inf in float32).
MAX_ABS_VALUE = 100.0

# Field name -> shape of one population member's value, in terms of K.
_MATRIX, _VECTOR, _SCALAR = "KxK", "K", "scalar"
FIELD_KINDS = {
    "forward_transform": _MATRIX,
    "backward_transform": _MATRIX,
    "neuron_keep": _SCALAR,
    "neuron_update": _SCALAR,
    "synapse_pre": _MATRIX,
    "synapse_post": _MATRIX,
    "synapse_keep": _SCALAR,
    "synapse_update": _SCALAR,
    "norm_gain": _VECTOR,
    "norm_shift": _VECTOR,
    "oja_multiplier": _SCALAR,
    "saturation": _SCALAR,
}


def _member_shape(kind: str, num_states: int) -> tuple[int, ...]:
    return {_MATRIX: (num_states, num_states), _VECTOR: (num_states,), _SCALAR: ()}[kind]


class Genome(NamedTuple):
    """The BLUR genome; see the module docstring for the meaning of each field."""

    forward_transform: tf.Tensor
    backward_transform: tf.Tensor
    neuron_keep: tf.Tensor
    neuron_update: tf.Tensor
    synapse_pre: tf.Tensor
    synapse_post: tf.Tensor
    synapse_keep: tf.Tensor
    synapse_update: tf.Tensor
    norm_gain: tf.Tensor
    norm_shift: tf.Tensor
    oja_multiplier: tf.Tensor
    saturation: tf.Tensor

    # ----------------------------------------------------------------------------- properties
    @property
    def num_states(self) -> int:
        """K, the number of states per neuron (and channels per synapse)."""
        return int(self.forward_transform.shape[-1])

    @property
    def population(self) -> int:
        """P, the number of genomes held (leading axis of every field)."""
        return int(self.forward_transform.shape[0])

    # ----------------------------------------------------------------------------- factories
    @classmethod
    def random(
        cls,
        num_states: int,
        seed: int = 0,
        population: int = 1,
        transform_std: float = 0.5,
        synapse_update: float = 0.05,
    ) -> Genome:
        """A random genome, as the paper's meta-training starts from.

        Transforms ν, μ, ν̃, μ̃ ~ N(0, transform_std²); gates f = η = 1 and f̃ = 1 (as the reference
        code), η̃ = `synapse_update`; γ = 1, β = 0; ω = 0.01; α = 1. Deterministic in `seed`.
        """
        _check_num_states(num_states)
        if population < 1:
            raise ValueError(f"population must be >= 1, got {population}")
        rng = np.random.default_rng(seed)
        k, p = num_states, population

        def matrix():
            return rng.normal(0.0, transform_std, size=(p, k, k))

        def full(value, shape=()):
            return np.full((p, *shape), value)

        return cls.from_arrays(
            forward_transform=matrix(),
            backward_transform=matrix(),
            neuron_keep=full(1.0),
            neuron_update=full(1.0),
            synapse_pre=matrix(),
            synapse_post=matrix(),
            synapse_keep=full(1.0),
            synapse_update=full(synapse_update),
            norm_gain=full(1.0, (k,)),
            norm_shift=full(0.0, (k,)),
            oja_multiplier=full(0.01),
            saturation=full(1.0),
        )

    @classmethod
    def backprop(cls, learning_rate: float, population: int = 1) -> Genome:
        """The genome that turns one inner step of `Rule.backprop()` into one SGD step.

        State 0 carries activations, state 1 the (negative) gradient. ν sends input state 0 to both
        output states (the backprop activation then maps them to φ(h) and φ′(h)); μ = I passes the
        feedback state down (the multiplicative backward mode multiplies it by φ′); ν̃ = I and
        μ̃ = [[0, 1], [1, 0]] make synapse channel 0 the outer product (pre state 0) ⊗ (post state
        1), i.e. x̃ ⊗ δ; η̃ = +learning_rate because `error` feedback injects onehot(y) − softmax, the
        *negative* gradient of the cross-entropy. Keep gates are 1, so W ← W − lr·∂L/∂W exactly.
        """
        k, p = 2, population

        def tile(value):
            return np.tile(np.asarray(value, np.float64)[None], (p,) + (1,) * np.ndim(value))

        return cls.from_arrays(
            forward_transform=tile([[1.0, 0.0], [1.0, 0.0]]),
            backward_transform=tile(np.eye(k)),
            neuron_keep=tile(1.0),
            neuron_update=tile(1.0),
            synapse_pre=tile(np.eye(k)),
            synapse_post=tile([[0.0, 1.0], [1.0, 0.0]]),
            synapse_keep=tile(1.0),
            synapse_update=tile(float(learning_rate)),
            norm_gain=tile(np.ones(k)),
            norm_shift=tile(np.zeros(k)),
            oja_multiplier=tile(0.0),
            saturation=tile(1.0),
        )

    @classmethod
    def from_arrays(cls, **fields) -> Genome:
        """Builds a genome of float32 constants from array-likes, validating names and shapes."""
        return cls.from_dict({"coefficients": fields})

    # ----------------------------------------------------------------------------- conversions
    def numpy(self) -> Genome:
        """The same genome with numpy float32 leaves (reads variables)."""
        return Genome(*[np.asarray(tf.convert_to_tensor(v), np.float32) for v in self])

    def as_tensors(self) -> Genome:
        """The same genome with `tf.Tensor` leaves (reads variables; differentiable)."""
        return Genome(*[tf.convert_to_tensor(v, tf.float32) for v in self])

    def as_variables(self, trainable: bool = True) -> Genome:
        """A genome of fresh `tf.Variable`s holding these values (for meta-training)."""
        return Genome(
            *[
                tf.Variable(tf.convert_to_tensor(v, tf.float32), trainable=trainable, name=name)
                for name, v in zip(self._fields, self)
            ]
        )

    def assign(self, other: Genome) -> None:
        """Assigns `other`'s values into this genome's variables."""
        for variable, value in zip(self, other):
            variable.assign(tf.convert_to_tensor(value, tf.float32))

    def take(self, indices) -> Genome:
        """The genomes of the given population members, e.g. `genome.take([0])`."""
        return Genome(*[tf.gather(tf.convert_to_tensor(v, tf.float32), indices) for v in self])

    @staticmethod
    def concat(genomes) -> Genome:
        """Stacks several genomes (with equal K) along the population axis."""
        genomes = list(genomes)
        _check_same_states(genomes)
        return Genome(
            *[
                tf.concat([tf.convert_to_tensor(g[i], tf.float32) for g in genomes], 0)
                for i in range(len(Genome._fields))
            ]
        )

    def to_dict(self) -> dict:
        """A JSON-ready dict: format tag, K, P and every coefficient as nested lists."""
        values = self.numpy()
        return {
            "format": FORMAT_NAME,
            "version": FORMAT_VERSION,
            "num_states": self.num_states,
            "population": self.population,
            "coefficients": {name: getattr(values, name).tolist() for name in self._fields},
        }

    @classmethod
    def from_dict(cls, d: dict) -> Genome:
        """Inverse of `to_dict`; ValueError naming the problem on anything malformed: another
        format or version, missing or unknown fields, wrong shapes, values not finite or beyond
        ±MAX_ABS_VALUE."""
        if not isinstance(d, dict) or not isinstance(d.get("coefficients"), dict):
            raise ValueError("genome dict must have a 'coefficients' mapping")
        if "format" in d and d["format"] != FORMAT_NAME:
            raise ValueError(f"not a genome: format is {d['format']!r}, expected {FORMAT_NAME!r}")
        if "version" in d and (isinstance(d["version"], bool) or d["version"] != FORMAT_VERSION):
            raise ValueError(
                f"genome format version {d['version']!r} is not supported (this "
                f"blur_tf reads version {FORMAT_VERSION})"
            )
        coefficients = d["coefficients"]
        missing = sorted(set(FIELD_KINDS) - set(coefficients))
        unknown = sorted(set(coefficients) - set(FIELD_KINDS))
        if missing or unknown:
            raise ValueError(f"genome coefficients: missing {missing}, unknown {unknown}")
        arrays = {}
        for name in FIELD_KINDS:
            try:
                arrays[name] = np.asarray(coefficients[name], dtype=np.float64)
            except (TypeError, ValueError) as e:
                raise ValueError(f"genome coefficient {name!r} is not numeric: {e}") from None
        k = arrays["forward_transform"].shape[-1] if arrays["forward_transform"].ndim == 3 else -1
        _check_num_states(k, what="forward_transform")
        p = arrays["forward_transform"].shape[0]
        for name, kind in FIELD_KINDS.items():
            expected = (p, *_member_shape(kind, k))
            if arrays[name].shape != expected:
                raise ValueError(
                    f"genome coefficient {name!r} has shape {arrays[name].shape}, "
                    f"expected {expected} (P={p}, K={k})"
                )
            if not np.all(np.isfinite(arrays[name])):
                raise ValueError(f"genome coefficient {name!r} has non-finite values")
            if np.any(np.abs(arrays[name]) > MAX_ABS_VALUE):
                raise ValueError(
                    f"genome coefficient {name!r} holds {_largest(arrays[name])}, "
                    f"beyond ±{MAX_ABS_VALUE:g} (the bound of meta-training; "
                    "such a genome gives constant or non-finite outputs)"
                )
        for key, actual in (("num_states", k), ("population", p)):
            if key in d and d[key] != actual:
                raise ValueError(f"genome {key} says {d[key]} but coefficients have {actual}")
        return cls(**{n: tf.constant(a, tf.float32) for n, a in arrays.items()})

    def save(self, path: str, metadata: dict | None = None) -> None:
        """Writes the genome as JSON atomically (temporary file in the same folder, then rename)."""
        d = self.to_dict()
        if metadata:
            d["metadata"] = metadata
        write_json_atomic(path, d)

    @classmethod
    def load(cls, path: str) -> Genome:
        """Reads a genome written by `save` (a path, or a shipped genome's name, see
        `resolve_genome_path`); ValueError if it is not a valid genome."""
        return cls.load_with_metadata(path)[0]

    @classmethod
    def load_shipped(cls, name: str) -> Genome:
        """The shipped genome `name` (one of `shipped_genome_names()`, e.g. "mnist_fast")."""
        if name not in shipped_genome_names():
            raise ValueError(
                f"no shipped genome {name!r} (shipped: {', '.join(shipped_genome_names())})"
            )
        return cls.load(os.path.join(shipped_genomes_dir(), name + ".json"))

    @classmethod
    def load_with_metadata(cls, path: str) -> tuple[Genome, dict]:
        """(genome, its `metadata` dict or {}) from a file written by `save`, or from the shipped
        genome of that name (`resolve_genome_path`).

        The meta-trainer records provenance there, including the `rule` the genome was trained
        under (`Rule.from_dict(metadata["rule"])`).
        """
        path = resolve_genome_path(path)
        try:
            with open(path) as f:
                d = json.load(f)
        except json.JSONDecodeError as e:
            raise ValueError(f"genome file {path} is not valid JSON: {e}") from None
        try:
            genome = cls.from_dict(d)
        except ValueError as e:
            raise ValueError(f"genome file {path}: {e}") from None
        metadata = d.get("metadata") or {}
        if not isinstance(metadata, dict):
            raise ValueError(f"genome file {path}: metadata must be a JSON object")
        return genome, metadata


def shipped_genomes_dir() -> str:
    """The folder of the shipped genomes (`NAME.json` and its card `NAME.md`): `genomes/` inside
    the installed package (package data), or the repository's `genomes/` in a source checkout."""
    package = os.path.dirname(os.path.abspath(__file__))
    installed = os.path.join(package, "genomes")
    return (
        installed if os.path.isdir(installed) else os.path.join(os.path.dirname(package), "genomes")
    )


def shipped_genome_names() -> list[str]:
    """Names of the shipped genomes, sorted (`Genome.load_shipped(name)`, `--genome=name`)."""
    folder = shipped_genomes_dir()
    if not os.path.isdir(folder):
        return []
    return sorted(f[: -len(".json")] for f in os.listdir(folder) if f.endswith(".json"))


def resolve_genome_path(path_or_name: str) -> str:
    """A genome file: `path_or_name` itself when it is a file, else the shipped genome of that
    name (`mnist_fast` -> .../genomes/mnist_fast.json); ValueError listing the shipped names."""
    if os.path.isfile(path_or_name):
        return path_or_name
    if path_or_name in shipped_genome_names():
        return os.path.join(shipped_genomes_dir(), path_or_name + ".json")
    raise ValueError(
        f"genome file {path_or_name} does not exist and is not a shipped genome "
        f"(shipped: {', '.join(shipped_genome_names()) or 'none found'})"
    )


def _largest(values: np.ndarray) -> str:
    """The value of largest magnitude, as written."""
    return f"{values.flat[int(np.argmax(np.abs(values)))]:g}"


def _check_num_states(k, what="num_states"):
    if not isinstance(k, (int, np.integer)) or k < 2:
        raise ValueError(f"{what}: a genome needs K >= 2 states per neuron, got {k}")


def _check_same_states(genomes):
    states = {g.num_states for g in genomes}
    if len(states) != 1:
        raise ValueError(f"cannot combine genomes with different numbers of states: {states}")

"""SavedModel export of a genome as a ready-to-use learner that plain TensorFlow can load.

    from blur_tf.export import export_learner
    export_learner(Genome.load("genomes/toy2d.json"), "learner", layer_sizes=[2, 32, 2],
                   rule=Rule(), batch_size=64)

    learner = tf.saved_model.load("learner")        # any TensorFlow program, no blur_tf
    learner.reset(tf.constant(0, tf.int64))         # synapses = BlurNetwork.init_synapses(1, 0)
    out = learner.learn(x, y)                       # {"logits": [B, C], "accuracy": []}
    logits = learner.predict(x)["logits"]

The folder holds the synapses and a step counter as `tf.Variable`s (`forward_synapses_l`
[n_l + 1, n_{l+1}, K], `backward_synapses_l` [n_{l+1}, n_l, K], `steps` int64: the DESIGN layout
without the population axis, as `BlurDense` stores them); the genome and the rule are constants
of the traced graphs. Signatures (also callable as attributes of the loaded object):

- `learn(x [B, n_0] float32, y [B] int32)` → `{"logits", "accuracy"}`: one inner step
  (`BlurNetwork.step_channel_major`) updating the variables in place; the logits and accuracy
  are those of the forward pass before the update (as `BlurModel.fit` reports);
- `predict(x)` → `{"logits"}` (`BlurNetwork.predict_channel_major`); `serving_default` = predict;
- `reset(seed int64 [])` → `{"steps"}`: synapses ← `BlurNetwork.init_synapses(1, seed)`, steps ← 0;
- `metadata()` → `{"json"}`: the text of `assets/genome.json`.

`assets/genome.json` is a genome file (`Genome.load_with_metadata` reads it) whose metadata holds
the genome's own metadata plus `rule`, `layer_sizes` and `export` (format, version, batch size,
seed, initial synapses).

Decisions where the issue is silent:
- The learner starts from the synapses it was exported with (fresh `init_synapses(1, seed)` for
  a genome; the trained ones for a `BlurModel`), so `predict` works before any `reset`.
- `learn` and `predict` check their inputs in-graph before touching a variable: non-finite inputs,
  labels outside [0, classes) and x/y batch mismatch raise InvalidArgumentError naming the problem.
- Symmetric rules also store the backward variables (Wᵀ without the bias row, kept in sync), so
  every learner has the same variables as a `BlurDense` stack.
- With normalization on, `predict` uses the statistics of the batch it is given (as
  `BlurNetwork.predict`): predict with batches of ≳ 32. A batch of exactly 1 example (whose
  logits would be the same for every input) is refused by `learn` and `predict` under such
  a rule (InvalidArgumentError, `ONE_EXAMPLE_MESSAGE`); `BlurModel` warns in that case.
- `y` is int32 by signature: TensorFlow's binding casts a numpy float array to it before the
  learner sees it (0.6 becomes 0), so give class ids as integers.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Sequence

import numpy as np
import tensorflow as tf

from blur_tf.files import check_output_directory, write_directory_atomic
from blur_tf.genome import Genome
from blur_tf.network import BlurModel, BlurNetwork, accuracy
from blur_tf.rule import Rule

FORMAT_NAME = "blur_tf.learner"
FORMAT_VERSION = 1
ASSET_NAME = "genome.json"
SIGNATURES = ("learn", "predict", "reset", "metadata", "serving_default")
ONE_EXAMPLE_MESSAGE = (
    "a batch of 1 example: the rule normalizes over the batch, so one "
    "example gives the same logits for every input; give batches of >= 2 "
    "(>= 32 recommended)"
)


class Learner(tf.Module):
    """The exported module: synapse variables, a step counter and four tf.functions.

    Args:
      network: the `BlurNetwork` (layer sizes and rule) whose pure step functions are traced.
      genome: population 1; captured as constants.
      synapses: initial synapses in the public layout, population 1.
      metadata_json: the text returned by `metadata()`.
      batch_size: static batch size of `learn`, or None for any (`predict` takes any).
    """

    def __init__(
        self,
        network: BlurNetwork,
        genome: Genome,
        synapses,
        metadata_json: str,
        batch_size: int | None = None,
    ):
        super().__init__(name="blur_learner")
        self.forward_synapses = [
            tf.Variable(w[0], trainable=False, name=f"forward_synapses_{l}")
            for l, (w, _) in enumerate(synapses)
        ]
        self.backward_synapses = [
            tf.Variable(v[0], trainable=False, name=f"backward_synapses_{l}")
            for l, (_, v) in enumerate(synapses)
        ]
        self.steps = tf.Variable(tf.constant(0, tf.int64), trainable=False, name="steps")
        genome = genome.as_tensors()
        num_classes = network.layer_sizes[-1]
        n_in = network.layer_sizes[0]

        def checks(x, y=None):
            """Assertions every op of a call depends on, so a refused call changes nothing."""
            finite = [
                tf.debugging.assert_all_finite(x, "inputs contain non-finite values (NaN or Inf)")
            ]
            if network.rule.normalize_forward:
                finite.append(
                    tf.debugging.assert_none_equal(tf.shape(x)[0], 1, message=ONE_EXAMPLE_MESSAGE)
                )
            if y is None:
                return finite
            return finite + [
                tf.debugging.assert_equal(
                    tf.shape(y)[0], tf.shape(x)[0], message="x and y have different batch sizes"
                ),
                tf.debugging.assert_non_negative(y, message="labels out of range (negative)"),
                tf.debugging.assert_less(
                    y,
                    num_classes,
                    message=f"labels out of range: the learner has {num_classes} classes",
                ),
            ]

        def current():
            return network.to_channel_major(
                [(w[None], v[None]) for w, v in zip(self.forward_synapses, self.backward_synapses)]
            )

        def store(synapses):
            for variable, (w, _) in zip(self.forward_synapses, synapses):
                variable.assign(w[0])
            for variable, (_, v) in zip(self.backward_synapses, synapses):
                variable.assign(v[0])

        @tf.function(
            input_signature=[
                tf.TensorSpec([batch_size, n_in], tf.float32, name="x"),
                tf.TensorSpec([batch_size], tf.int32, name="y"),
            ]
        )
        def learn(x, y):
            with tf.control_dependencies(checks(x, y)):
                forwards, backwards = current()
                forwards, backwards, logits = network.step_channel_major(
                    genome, forwards, backwards, x[None], y[None]
                )
                store(network.from_channel_major(forwards, backwards))
                self.steps.assign_add(1)
                return {"logits": logits[0], "accuracy": accuracy(logits[0], y)}

        @tf.function(input_signature=[tf.TensorSpec([None, n_in], tf.float32, name="x")])
        def predict(x):
            with tf.control_dependencies(checks(x)):
                forwards, _ = current()
                return {"logits": network.predict_channel_major(genome, forwards, x[None])[0]}

        @tf.function(input_signature=[tf.TensorSpec([], tf.int64, name="seed")])
        def reset(seed):
            store(network.init_synapses(1, seed))
            self.steps.assign(0)
            return {"steps": self.steps.read_value()}

        @tf.function(input_signature=[])
        def metadata():
            return {"json": tf.constant(metadata_json)}

        self.learn, self.predict, self.reset, self.metadata = learn, predict, reset, metadata

    def signatures(self) -> dict:
        return {
            "learn": self.learn,
            "predict": self.predict,
            "reset": self.reset,
            "metadata": self.metadata,
            "serving_default": self.predict,
        }


def export_learner(
    source: Genome | BlurModel,
    path: str,
    *,
    layer_sizes: Sequence[int] | None = None,
    rule: Rule | None = None,
    batch_size: int | None = None,
    seed: int | None = None,
    metadata: dict | None = None,
    overwrite: bool = False,
) -> str:
    """Writes the learner SavedModel (see the module docstring) to the folder `path`.

    Args:
      source: a `Genome` (population 1; needs `layer_sizes`) or a trained `BlurModel` (genome,
        rule, layer sizes and current synapses are taken from it; `layer_sizes` and `rule` must
        then be omitted).
      path: output folder; written to a temporary sibling and renamed, so a failed export leaves
        nothing. Refused if it exists and is not empty, unless `overwrite`.
      layer_sizes: input size, hidden sizes…, number of classes.
      rule: the rule the genome was trained with; `Rule(num_states=K)` if omitted.
      batch_size: static batch size of `learn` (e.g. for XLA or a fixed serving shape), or None
        for any; `predict` always takes any batch size (evaluation sets come in every size).
      seed: initial synapses `init_synapses(1, seed)` for a genome (default 0); for a model only
        recorded (default `model.seed`).
      metadata: the genome's metadata (e.g. from `Genome.load_with_metadata`), carried along.

    Returns the absolute path. ValueError naming the problem before any work on bad input;
    OSError naming `path` and the cause if the write fails (nothing is left behind).
    """
    if isinstance(source, BlurModel):
        if layer_sizes is not None or rule is not None:
            raise ValueError(
                "export_learner(BlurModel): layer_sizes and rule come from the "
                "model; do not pass them"
            )
        network, genome = source.network, source.genome
        seed = source.seed if seed is None else seed
        synapses = tuple(
            (layer.forward_synapses[None], layer.backward_synapses[None])
            for layer in source.blur_layers
        )
        initial = "BlurModel synapses"
    elif isinstance(source, Genome):
        if layer_sizes is None:
            raise ValueError("export_learner(Genome): layer_sizes is required")
        network = BlurNetwork(layer_sizes, rule or Rule(num_states=source.num_states))
        genome, synapses, initial = source, None, "init_synapses(1, seed)"
        seed = 0 if seed is None else seed
    else:
        raise ValueError(
            f"export_learner needs a Genome or a BlurModel, got {type(source).__name__}"
        )
    _check_genome(genome, network.rule)
    if batch_size is not None and (not isinstance(batch_size, (int, np.integer)) or batch_size < 1):
        raise ValueError(f"batch_size must be a positive int or None, got {batch_size!r}")
    if not isinstance(seed, (int, np.integer)):
        raise ValueError(f"seed must be an int, got {seed!r}")
    path = check_output_directory(path, overwrite)
    if synapses is None:
        synapses = network.init_synapses(1, int(seed))
    document = genome.to_dict()
    document["metadata"] = {
        **(metadata or {}),
        "rule": network.rule.to_dict(),
        "layer_sizes": list(network.layer_sizes),
        "export": {
            "format": FORMAT_NAME,
            "version": FORMAT_VERSION,
            "batch_size": batch_size,
            "seed": int(seed),
            "initial_synapses": initial,
            "signatures": list(SIGNATURES),
        },
    }
    text = json.dumps(document, indent=1) + "\n"
    learner = Learner(network, genome, synapses, text, batch_size)

    def write(folder):
        with tempfile.TemporaryDirectory() as scratch:
            asset = os.path.join(scratch, ASSET_NAME)
            with open(asset, "w") as f:
                f.write(text)
            learner.genome_asset = tf.saved_model.Asset(asset)
            tf.saved_model.save(learner, folder, signatures=learner.signatures())

    try:
        write_directory_atomic(path, write, overwrite)
    except tf.errors.OpError as e:  # e.g. a full disk: nothing was left behind
        raise OSError(None, e.message.strip().splitlines()[0], path) from None
    return path


def _check_genome(genome: Genome, rule: Rule) -> None:
    """ValueError unless the genome is one finite genome whose K matches the rule."""
    rule.check_genome(genome)
    if genome.population != 1:
        raise ValueError(
            f"export needs a genome with population 1, got {genome.population}; "
            f"select one with genome.take([i])"
        )
    for name, value in zip(Genome._fields, genome.numpy()):
        if not np.all(np.isfinite(value)):
            raise ValueError(f"genome coefficient {name!r} has non-finite values")

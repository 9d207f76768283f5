r"""Meta-trains an online-episode learner (FLP family or BLUR) and evaluates it on fresh episodes.

    python -m launchers.flp_train --learner=flp --plastic_layers=2 --order=continual \
        --out_dir=runs/flp_sine
    python -m launchers.flp_train --episodes=omniglot --learner=blur --layer_sizes=128,128 \
        --out_dir=runs/blur_omniglot --tfds_manual_dir=../shared/data

Episodes (`--episodes`): `sine` (incremental sine regression, `blur_tf.tasks.sine`) or
`omniglot` (online 5-way 5-shot, one image per step, alphabet-disjoint `omniglot_small`,
`blur_tf.tasks.online`), each in the `--order` iid or continual.
Methods (docs/flp.md): `--learner=flp` (feedback + Oja; `--plastic_layers=1` is feature
reuse), `--learner=gradient` (first-order inner SGD on the plastic layers, OML-like) and
`--learner=blur` (a BLUR genome from `Genome.random` under `--rule`, fresh random synapses;
on sine episodes the rule needs `feedback=target`, BLUR's regression readout). Defaults are
the paper's sine setting (9 layers of 300, the 6th 900; 10 functions × 40 batches of 32; pool
of 400; Adam 1e-4, plasticity rate 1e-8, no clipping), except --meta_steps.

Writes into --out_dir: params.npz (the meta-learned parameters, `FlpParams` leaves by name) or
genome.json (BLUR), summary.json (`metrics`: the evaluation of `blur_tf.evaluation.episodes` on
--eval_episodes fresh episodes, plus meta-steps, wall time), flags.json, ckpt/ (rerunning the
same command resumes), tb/. Status 2 and one line for bad flags, 1 when a write fails or
meta-training diverges, 128 + signal when stopped (checkpoint saved).
"""

from __future__ import annotations

import shlex
import sys
import time

import numpy as np
from absl import app, flags, logging

from blur_tf import allocator
from blur_tf.config import parse_rule_overrides
from blur_tf.evaluation.episodes import evaluate_episodes
from blur_tf.experiment import Interrupted, RunDirectory
from blur_tf.files import atomic_write
from blur_tf.flp import FlpNetwork
from blur_tf.genome import resolve_genome_path
from blur_tf.meta.algorithms.gradient import GradientMetaTraining, MetaTrainingDiverged
from blur_tf.meta.checkpoint import CheckpointError
from blur_tf.meta.episodes import EpisodeProblem
from blur_tf.meta.outer_loop import OuterLoop
from blur_tf.meta.schedules import ConstantSchedule
from blur_tf.network import BlurNetwork
from blur_tf.rule import Rule
from blur_tf.tasks.online import OnlineEpisodes
from blur_tf.tasks.sine import SineEpisodes
from blur_tf.training import backprop_init_lr, initial_genome
from launchers import call_or_exit, exit_with_error, flag_parser, parse_ints, settings_or_exit

FLAGS = flags.FLAGS


def define_flags(fv: flags.FlagValues = FLAGS) -> None:
    """Defines this launcher's flags on `fv` (the global FLAGS when run as a program)."""
    define = lambda kind, name, default, text, *args: kind(
        name, default, *args, text, flag_values=fv
    )
    define(flags.DEFINE_enum, "episodes", "sine", "Episode family.", ["sine", "omniglot"])
    define(flags.DEFINE_enum, "learner", "flp", "Inner learner.", ["flp", "gradient", "blur"])
    define(
        flags.DEFINE_integer,
        "plastic_layers",
        2,
        "N: plastic (last) layers; 1 with flp = feature reuse.",
    )
    define(
        flags.DEFINE_list,
        "layer_sizes",
        ["300"] * 5 + ["900"] + ["300"] * 2,
        "Hidden layer sizes (the paper's 9 weight layers: 8 hidden).",
    )
    define(
        flags.DEFINE_enum, "order", "iid", "Presentation order of an episode.", ["iid", "continual"]
    )
    define(flags.DEFINE_integer, "num_functions", 10, "Sinusoids per episode (sine).")
    define(flags.DEFINE_integer, "way", 5, "Classes per episode (omniglot).")
    define(flags.DEFINE_integer, "shot", 5, "Drawings per class, one per step (omniglot).")
    define(flags.DEFINE_integer, "image_size", 28, "Image side (omniglot).")
    define(
        flags.DEFINE_integer, "steps_per_function", 40, "Batches per function (episode: K·S steps)."
    )
    define(flags.DEFINE_integer, "batch_size", 32, "Examples per inner step.")
    define(flags.DEFINE_integer, "pool_size", 400, "Fixed meta-training pool of functions.")
    define(
        flags.DEFINE_integer,
        "query_points",
        32,
        "Query points per function (sine) or query drawings per class (omniglot, <= 10).",
    )
    define(flags.DEFINE_integer, "meta_steps", 20000, "Meta-steps (one Adam step each).")
    define(flags.DEFINE_integer, "meta_batch", 1, "Episodes per meta-step.")
    define(flags.DEFINE_float, "learning_rate", 1e-4, "Adam rate of W, c, B, b, β.")
    define(flags.DEFINE_float, "plasticity_learning_rate", 1e-8, "Adam rate of the plasticity α.")
    define(
        flags.DEFINE_float, "clip_norm", 0.0, "Per-genome global-norm gradient clipping (0: none)."
    )
    define(flags.DEFINE_float, "inner_learning_rate", 0.003, "SGD rate of --learner=gradient.")
    define(flags.DEFINE_float, "feedback_strength", 0.5, "Initial β.")
    define(
        flags.DEFINE_bool,
        "learn_feedback_strength",
        True,
        "Meta-learn β (false: clamped at --feedback_strength, the paper's classification).",
    )
    define(
        flags.DEFINE_float,
        "hidden_plasticity_scale",
        1.0,
        "FLP: factor on the plastic layers below the readout (the authors' classification: 100).",
    )
    define(
        flags.DEFINE_string,
        "rule",
        "normalize_forward=false,normalize_backward=false",
        "BLUR: Rule fields key=value,… (one-image steps need the batch normalizations off).",
    )
    define(flags.DEFINE_float, "logit_scale", 1.0, "BLUR: meta-loss on logit_scale·outputs.")
    define(
        flags.DEFINE_string,
        "init_params",
        "",
        "params.npz of another run to start from "
        "(its W and c; the rest too if the learners match): the paper starts the gradient "
        "learner from FLP's weights. --learner=blur: a genome (as meta_train's --init_genome: "
        "a genome.json, a shipped name or backprop:LR); default Genome.random.",
    )
    define(flags.DEFINE_integer, "eval_episodes", 50, "Fresh evaluation episodes.")
    define(flags.DEFINE_integer, "seed", 0, "Run seed (initial params, episodes).")
    define(flags.DEFINE_integer, "log_every", 100, "Log period in meta-steps.")
    define(flags.DEFINE_integer, "checkpoint_every", 200, "Checkpoint period in meta-steps.")
    define(flags.DEFINE_string, "out_dir", None, "Output folder (required).")
    define(
        flags.DEFINE_string,
        "tfds_manual_dir",
        None,
        "Folder holding omniglot/ (else env BLUR_TFDS_MANUAL_DIR).",
    )
    define(flags.DEFINE_string, "data_dir", None, "Unused (set by the experiment runner).")
    flags.DEFINE_integer(
        "malloc_arenas",
        allocator.DEFAULT_ARENAS,
        allocator.FLAG_HELP,
        lower_bound=0,
        flag_values=fv,
    )


RESUMABLE = (
    "log_every",
    "checkpoint_every",
    "eval_episodes",
    "tfds_manual_dir",
    "data_dir",
    "meta_steps",
    "malloc_arenas",
)
NAMES = (
    "episodes",
    "learner",
    "plastic_layers",
    "layer_sizes",
    "order",
    "num_functions",
    "way",
    "shot",
    "image_size",
    "steps_per_function",
    "batch_size",
    "pool_size",
    "query_points",
    "meta_steps",
    "meta_batch",
    "learning_rate",
    "plasticity_learning_rate",
    "clip_norm",
    "inner_learning_rate",
    "feedback_strength",
    "learn_feedback_strength",
    "hidden_plasticity_scale",
    "rule",
    "logit_scale",
    "init_params",
    "eval_episodes",
    "seed",
    "log_every",
    "checkpoint_every",
    "out_dir",
    "tfds_manual_dir",
    "data_dir",
    "malloc_arenas",
)


def settings(fv) -> dict:
    """The flag values, checked (ValueError naming the flag); no work."""
    values = {name: fv[name].value for name in NAMES}
    values["layer_sizes"] = parse_ints(values["layer_sizes"], "layer_sizes")
    for name in ("meta_steps", "meta_batch", "eval_episodes"):
        if values[name] < (0 if name == "meta_steps" else 1):
            raise ValueError(f"--{name} must be >= {0 if name == 'meta_steps' else 1}")
    for name in (
        "learning_rate",
        "plasticity_learning_rate",
        "inner_learning_rate",
        "hidden_plasticity_scale",
        "logit_scale",
    ):
        if not values[name] > 0:
            raise ValueError(f"--{name} must be > 0, got {values[name]}")
    if values["clip_norm"] < 0:
        raise ValueError(f"--clip_norm must be >= 0, got {values['clip_norm']}")
    if not values["out_dir"]:
        raise ValueError("--out_dir is required")
    if values["learner"] == "blur":
        if values["init_params"] and backprop_init_lr(values["init_params"]) is None:
            resolve_genome_path(values["init_params"])  # ValueError if there is no such genome
        values["rule_overrides"] = parse_rule_overrides(values["rule"])
        rule = Rule(**values["rule_overrides"])  # a bad combination fails here, before any work
        if (rule.feedback == "target") != (values["episodes"] == "sine"):
            raise ValueError(
                "--learner=blur: sine episodes need feedback=target in --rule (a regressor), "
                "omniglot episodes a class feedback (label or error)"
            )
    return values


def build_episodes(values: dict):
    """The episode source of the flags (`SineEpisodes` or `OnlineEpisodes`)."""
    if values["episodes"] == "omniglot":
        return OnlineEpisodes(
            values["way"],
            values["shot"],
            values["query_points"],
            values["order"],
            values["image_size"],
            values["tfds_manual_dir"],
        )
    return SineEpisodes(
        values["num_functions"],
        values["steps_per_function"],
        values["batch_size"],
        values["order"],
        values["pool_size"],
        query_points=values["query_points"],
    )


def build(values: dict):
    """(problem, initial params or None): the network and episodes of the flags."""
    episodes = build_episodes(values)
    sizes = [episodes.input_size, *values["layer_sizes"], episodes.output_size]
    if values["learner"] == "blur":
        network = BlurNetwork(sizes, Rule(**values["rule_overrides"]))
    else:
        network = FlpNetwork(
            sizes,
            values["plastic_layers"],
            values["learner"],
            regression=episodes.regression,
            inner_learning_rate=values["inner_learning_rate"],
            feedback_strength=values["feedback_strength"],
            learn_feedback_strength=values["learn_feedback_strength"],
            hidden_plasticity_scale=values["hidden_plasticity_scale"],
        )
    problem = EpisodeProblem(network, episodes, values["logit_scale"])
    initial = None
    if values["learner"] == "blur":
        initial = initial_genome(values["init_params"])
    elif values["init_params"]:
        initial = load_params(values["init_params"], network.initial_params(1, values["seed"]))
        network.check_params(initial)
    return problem, initial


def save_params(path: str, params) -> None:
    """params.npz: leaf `field/layer` arrays (atomic)."""
    arrays = {
        f"{field}/{l}": np.asarray(v)
        for field, values in zip(type(params)._fields, params)
        for l, v in enumerate(values)
    }
    atomic_write(path, lambda f: np.savez(f, **arrays), binary=True)


def load_params(path: str, template):
    """The params of a params.npz, on top of `template` (fields the file lacks keep their
    template values: an FLP file gives the gradient learner its W and c)."""
    try:
        with np.load(path) as data:
            stored = dict(data)
    except (OSError, ValueError) as e:
        raise ValueError(f"--init_params={path}: cannot read ({e})") from None
    fields = []
    for field, values in zip(type(template)._fields, template):
        if values and all(f"{field}/{l}" in stored for l in range(len(values))):
            values = tuple(stored[f"{field}/{l}"] for l in range(len(values)))
        fields.append(values)
    return type(template)(*fields)


def run(values: dict) -> dict:
    """Meta-trains, evaluates and writes the run folder (module doc); the summary."""
    run_dir = RunDirectory(values["out_dir"])
    allocator.limit_arenas(values["malloc_arenas"])
    problem, initial = build(values)
    with run_dir.lock():
        run_dir.check_resume(values, {}, RESUMABLE)
        run_dir.record_flags(shlex.join(sys.argv), values)
        rates = (
            {"plasticity": values["plasticity_learning_rate"]}
            if values["learner"] == "flp"
            else None
        )
        algorithm = GradientMetaTraining(
            problem,
            meta_batch=values["meta_batch"],
            learning_rate=values["learning_rate"],
            clip_norm=values["clip_norm"],
            seed=values["seed"],
            genome=initial,
            field_learning_rates=rates,
        )
        loop = OuterLoop(
            algorithm,
            ConstantSchedule(problem.length),
            validate_every=0,
            checkpoint_every=values["checkpoint_every"],
            log_every=values["log_every"],
            checkpoint_dir=run_dir.file("ckpt"),
            summary_dir=run_dir.file("tb"),
        )
        start = time.time()
        result = run_dir.train(loop, values["meta_steps"])
        params = algorithm.best_genome()
        if values["learner"] == "blur":
            params.save(
                run_dir.file("genome.json"),
                {"rule": problem.network.rule.to_dict(), "episodes": problem.episodes.name},
            )
        else:
            save_params(run_dir.file("params.npz"), params)
        metrics = evaluate_episodes(
            problem.network,
            params,
            problem.episodes,
            values["eval_episodes"],
            seed=values["seed"] + 1,
        )
        summary = {
            "metrics": {k: v for k, v in metrics.items() if not isinstance(v, list)},
            **{k: v for k, v in metrics.items() if isinstance(v, list)},
            "meta_steps": result.steps,
            "meta_steps_this_call": result.steps_run,
            "meta_steps_per_second": (
                result.steps_run / result.step_seconds if result.step_seconds else None
            ),
            "wall_seconds_this_call": time.time() - start,
            "final_meta_loss": float(algorithm.recent_losses.numpy()[0]),
        }
        run_dir.write_json("summary.json", summary)
    logging.info(
        "%s (%s %s, N=%d, %s): %s",
        values["learner"],
        values["episodes"],
        values["order"],
        values["plastic_layers"],
        values["out_dir"],
        ", ".join(f"{k} {v:.4g}" for k, v in summary["metrics"].items()),
    )
    return summary


def main(argv):
    values = settings_or_exit("flp_train", argv, settings, FLAGS)
    try:
        call_or_exit("flp_train", run, values)
    except (MetaTrainingDiverged, CheckpointError) as e:
        exit_with_error("flp_train", e, status=1)
    except Interrupted as e:
        logging.warning("%s", e)
        sys.exit(e.status)
    return 0


def cli():
    """Entry point of `blur-flp-train` (pyproject.toml) and of `python -m`."""
    define_flags(FLAGS)
    app.run(main, flags_parser=flag_parser("flp_train"))


if __name__ == "__main__":
    cli()

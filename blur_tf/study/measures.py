"""The evaluations an experiment applies to every arm's genome (`[evaluation NAME] kind = …`).

* `accuracy`: test accuracy per inner step of fresh networks trained by the genome
  (`blur_tf.evaluation.evaluate_run`, no baselines), for every task × architecture. Options:
  `tasks` (specs separated by ';'), `layer_sizes` (hidden sizes of one architecture, several
  separated by ';', e.g. `32; 64,64`), `steps` (horizons, default 1,5,10,20,50), `seeds` (3),
  `batch_size` (64), `eval_examples` (default: the whole held-out split).
  Metrics `<task>/<architecture>@<T>`: mean accuracy over seeds after T inner steps.
* `asymmetry`: the Jacobian test of `blur_tf.asymmetry` (paper Fig. 2) on one full batch.
  Options: `task` (toy.xor), `layer_sizes` (20), `examples` (256, the full batch), `seed` (0,
  initial synapses and batch), `inner_steps` (0: at the initial synapses; N: after N full-batch
  steps). Metrics `asymmetry` (‖J − Jᵀ‖/‖J‖), `jacobian_norm`, `max_log_asymmetry`;
  J itself is saved next to the result (`<evaluation>.npy`) for the figure.
* `decision_regions`: a fresh network trained by the genome on a 2-D toy task (paper Fig. 4),
  its predicted class on a dense grid over [-1, 1]² after each of `steps`. Options: `task`
  (a `toy.*` spec), `layer_sizes` (32), `steps` (10,50), `batch_size` (64), `seed` (0, initial
  synapses and batches), `grid` (64 points per side). Metrics `grid_accuracy@<T>`: the share
  of grid points whose predicted class is the task's true class (`label_fn`). The maps
  [true, after steps[0], …] are saved next to the result (`<evaluation>.npy`) for the figure.

`measure(kind, options, genome_path, out_stem, data)` returns a JSON-ready dict with
'metrics' ({name: float}), for `accuracy` 'curves' ({panel: {step: [mean, std]}}), and for the
two kinds that save an array its path under 'jacobian' or 'regions'.
"""

from __future__ import annotations

import numpy as np

OPTIONS = {
    "accuracy": {
        "tasks": None,
        "layer_sizes": None,
        "steps": "1,5,10,20,50",
        "seeds": "3",
        "batch_size": "64",
        "eval_examples": "",
    },
    "asymmetry": {
        "task": "toy.xor",
        "layer_sizes": "20",
        "examples": "256",
        "seed": "0",
        "inner_steps": "0",
    },
    "decision_regions": {
        "task": None,
        "layer_sizes": "32",
        "steps": "10,50",
        "batch_size": "64",
        "seed": "0",
        "grid": "64",
    },
}


def _ints(text: str, what: str) -> list[int]:
    try:
        values = [int(v) for v in text.replace(" ", "").split(",") if v]
    except ValueError:
        raise ValueError(f"{what} must be integers separated by ',', got {text!r}") from None
    if not values or any(v < 0 for v in values):
        raise ValueError(f"{what} must be non-negative integers, got {text!r}")
    return values


def check_options(kind: str, options: dict, where: str) -> dict:
    """The options of an evaluation with defaults filled in, parsed; ValueError naming `where`."""
    allowed = OPTIONS[kind]
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise ValueError(
            f"{where}: unknown option(s) {unknown} for kind={kind}; allowed: {sorted(allowed)}"
        )
    values = {**{k: v for k, v in allowed.items() if v is not None}, **options}
    missing = sorted(k for k in allowed if k not in values)
    if missing:
        raise ValueError(f"{where}: kind={kind} needs {missing}")
    try:
        if kind == "accuracy":
            parsed = {
                "tasks": [t.strip() for t in values["tasks"].split(";") if t.strip()],
                "layer_sizes": [_ints(a, "layer_sizes") for a in values["layer_sizes"].split(";")],
                "steps": _ints(values["steps"], "steps"),
                "seeds": _ints(values["seeds"], "seeds")[0],
                "batch_size": _ints(values["batch_size"], "batch_size")[0],
                "eval_examples": (
                    _ints(values["eval_examples"], "eval_examples")[0]
                    if values["eval_examples"]
                    else None
                ),
            }
            from blur_tf.tasks.spec import parse_spec  # pylint: disable=g-import-not-at-top

            for task in parsed["tasks"]:
                parse_spec(task)
            if not parsed["tasks"] or parsed["seeds"] < 1 or parsed["batch_size"] < 2:
                raise ValueError("needs tasks, seeds >= 1 and batch_size >= 2")
        elif kind == "decision_regions":
            parsed = {
                "task": values["task"],
                "layer_sizes": _ints(values["layer_sizes"], "layer_sizes"),
                "steps": sorted(set(_ints(values["steps"], "steps"))),
                **{k: _ints(values[k], k)[0] for k in ("batch_size", "seed", "grid")},
            }
            if not parsed["task"].startswith("toy."):
                raise ValueError(f"task={parsed['task']!r}: decision regions need a toy.* task")
            from blur_tf.tasks.spec import parse_spec  # pylint: disable=g-import-not-at-top

            parse_spec(parsed["task"])
            if parsed["grid"] < 2 or parsed["batch_size"] < 2 or parsed["steps"][0] < 1:
                raise ValueError("needs grid >= 2, batch_size >= 2 and steps >= 1")
        else:
            parsed = {
                "task": values["task"],
                "layer_sizes": _ints(values["layer_sizes"], "layer_sizes"),
                **{k: _ints(values[k], k)[0] for k in ("examples", "seed", "inner_steps")},
            }
            from blur_tf.tasks.spec import parse_spec  # pylint: disable=g-import-not-at-top

            parse_spec(parsed["task"])
    except ValueError as e:
        raise ValueError(f"{where}: {e}") from None
    return parsed


def measure(kind: str, options: dict, genome_path: str, out_stem: str, data: dict) -> dict:
    """Runs the evaluation `kind` (module doc) on the genome file; `data`: get_task kwargs."""
    from blur_tf.evaluation import load_learner  # pylint: disable=g-import-not-at-top

    learner = load_learner(genome_path)
    if kind == "accuracy":
        return _accuracy(learner, options, data)
    if kind == "decision_regions":
        return _decision_regions(learner, options, out_stem, data)
    return _asymmetry(learner, options, out_stem, data)


def panel_name(task: str, hidden) -> str:
    return f"{task}/{'-'.join(str(n) for n in hidden) or 'linear'}"


def _accuracy(learner, options, data) -> dict:
    from blur_tf.evaluation import evaluate_run  # pylint: disable=g-import-not-at-top
    from blur_tf.tasks import get_task  # pylint: disable=g-import-not-at-top

    metrics, curves = {}, {}
    for spec in options["tasks"]:
        task = get_task(spec, **data)
        for hidden in options["layer_sizes"]:
            run = evaluate_run(
                task,
                hidden,
                options["steps"],
                list(range(options["seeds"])),
                options["batch_size"],
                learner,
                optimizers=(),
                max_eval_examples=options["eval_examples"],
            )
            panel = panel_name(spec, hidden)
            rows = run["methods"]["blur"]["per_horizon"]
            curves[panel] = {int(r["horizon"]): [r["mean"], r["std"]] for r in rows}
            metrics.update({f"{panel}@{r['horizon']}": r["mean"] for r in rows})
    return {"metrics": metrics, "curves": curves}


def _asymmetry(learner, options, out_stem, data) -> dict:
    import tensorflow as tf  # pylint: disable=g-import-not-at-top

    from blur_tf import asymmetry  # pylint: disable=g-import-not-at-top
    from blur_tf.files import atomic_write  # pylint: disable=g-import-not-at-top
    from blur_tf.network import BlurNetwork  # pylint: disable=g-import-not-at-top
    from blur_tf.tasks import get_task  # pylint: disable=g-import-not-at-top

    task = get_task(options["task"], **data)
    x, y = task.sample_train(tf.constant([options["seed"], 0]), options["examples"])
    network = BlurNetwork(
        [task.input_size, *options["layer_sizes"], task.num_classes], learner.rule
    )
    synapses = network.init_synapses(1, options["seed"])
    if options["inner_steps"]:
        steps = options["inner_steps"]
        synapses = network.unroll(
            learner.genome, synapses, (tf.stack([x] * steps), tf.stack([y] * steps)), steps
        )
    jacobian = asymmetry.update_jacobian(network, learner.genome, synapses, x, y)
    atomic_write(out_stem + ".npy", lambda f: np.save(f, jacobian), binary=True)
    return {
        "metrics": {
            "asymmetry": asymmetry.asymmetry(jacobian),
            "jacobian_norm": float(np.linalg.norm(jacobian)),
            "max_log_asymmetry": float(asymmetry.log_asymmetry(jacobian).max()),
        },
        "parameters": int(jacobian.shape[0]),
        "jacobian": out_stem + ".npy",
    }


def grid_points(size: int) -> np.ndarray:
    """[size², 2] float32: the dense grid over [-1, 1]², row-major with x1 along the rows
    (so `.reshape(size, size)` of a per-point value is an image with x0 across, x1 up)."""
    axis = np.linspace(-1.0, 1.0, size, dtype=np.float32)
    x1, x0 = np.meshgrid(axis, axis, indexing="ij")
    return np.stack([x0.ravel(), x1.ravel()], axis=1)


def _decision_regions(learner, options, out_stem, data) -> dict:
    import tensorflow as tf  # pylint: disable=g-import-not-at-top

    from blur_tf.files import atomic_write  # pylint: disable=g-import-not-at-top
    from blur_tf.network import BlurNetwork  # pylint: disable=g-import-not-at-top
    from blur_tf.tasks import get_task  # pylint: disable=g-import-not-at-top

    task = get_task(options["task"], **data)
    network = BlurNetwork(
        [task.input_size, *options["layer_sizes"], task.num_classes], learner.rule
    )
    seed, steps, size = options["seed"], options["steps"], options["grid"]
    batches = [
        task.sample_train(tf.constant([seed, t]), options["batch_size"]) for t in range(steps[-1])
    ]
    xs, ys = tf.stack([b[0] for b in batches]), tf.stack([b[1] for b in batches])
    points = grid_points(size)
    maps = [task.label_fn(points).numpy().reshape(size, size)]
    synapses, done = network.init_synapses(1, seed), 0
    for horizon in steps:
        if horizon > done:
            synapses = network.unroll(
                learner.genome, synapses, (xs[done:horizon], ys[done:horizon]), horizon - done
            )
            done = horizon
        logits = network.predict(learner.genome, synapses, points)[0]
        maps.append(np.argmax(logits.numpy(), axis=-1).reshape(size, size))
    maps = np.stack(maps).astype(np.int32)
    atomic_write(out_stem + ".npy", lambda f: np.save(f, maps), binary=True)
    return {
        "metrics": {
            f"grid_accuracy@{t}": float(np.mean(m == maps[0])) for t, m in zip(steps, maps[1:])
        },
        "steps": steps,
        "regions": out_stem + ".npy",
    }

"""An experiment from its spec: run the arms, evaluate each genome, aggregate (blur-experiment).

`run_experiment(spec, out_dir, …)`:
1. checks the spec's evaluations (options, defaults) before any work;
2. runs the selected arms not done yet (`blur_tf.study.arms`: resumable, failures recorded);
3. applies every evaluation to every arm it matches whose genome exists, caching the result in
   OUT/arms/<arm>/eval_<evaluation>.json (reused while the options and genome.json are the
   same);
4. aggregates every arm of the spec found on disk (also those run elsewhere with --arms):
   results.json, results.csv (one row per arm, one column per metric), results.md, <figure>.png
   (meta-training validation score per meta-step, accuracy per inner step per task and
   architecture, a bar chart per `summarize` column and per `bars` metric, the correlation
   scatter, the `matrix`
   heat map, ln|J − Jᵀ| images) and TensorBoard scalars of the evaluations in
   OUT/arms/<arm>/tb_eval: `tensorboard --logdir=OUT/arms` overlays every arm's curves.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import textwrap

import numpy as np

from blur_tf import plotting, tables
from blur_tf.files import atomic_write, write_json_atomic
from blur_tf.study import arms as arms_lib
from blur_tf.study import measures
from blur_tf.study.spec import Spec

IMAGE_KINDS = ("jacobian", "regions")  # evaluation results that save an array to draw


def check_evaluations(spec: Spec) -> dict:
    """{evaluation name: parsed options}; ValueError naming the section."""
    return {
        e.name: measures.check_options(e.kind, dict(e.options), f"[evaluation {e.name}]")
        for e in spec.evaluations
    }


def select_arms(spec: Spec, names) -> list:
    """The arms named in `names` (all if empty); ValueError for an unknown name."""
    known = [a.name for a in spec.arms]
    unknown = sorted(set(names or ()) - set(known))
    if unknown:
        raise ValueError(f"--arms: unknown arm(s) {unknown}; the spec has {known}")
    return [a for a in spec.arms if not names or a.name in names]


def run_experiment(
    spec: Spec,
    out_dir: str,
    tfds_manual_dir: str | None = None,
    parallel: int = 1,
    arm_names=(),
    retry_failed: bool = False,
    log=print,
) -> dict:
    """Runs, evaluates and aggregates the experiment (module doc); returns results.json."""
    options = check_evaluations(spec)
    selected = select_arms(spec, arm_names)
    arms_lib.run_arms(selected, out_dir, tfds_manual_dir, parallel, retry_failed, log)
    data = {"tfds_manual_dir": tfds_manual_dir}
    for arm in selected:
        record = arms_lib.read_record(out_dir, arm.name)
        if not record or record["status"] != "ok":
            continue
        for evaluation in spec.evaluations:
            if evaluation.applies_to(arm.name):
                _evaluate(arm.name, evaluation, options[evaluation.name], out_dir, data, log)
    results = aggregate(spec, out_dir)
    write_outputs(spec, results, out_dir)
    return results


def _genome_hash(path: str) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def _evaluate(arm: str, evaluation, options: dict, out_dir: str, data: dict, log) -> dict:
    folder = arms_lib.arm_dir(out_dir, arm)
    genome = os.path.join(folder, "genome.json")
    path = os.path.join(folder, f"eval_{evaluation.name}.json")
    key = {"kind": evaluation.kind, "options": options, "genome_sha256": _genome_hash(genome)}
    try:
        with open(path) as f:
            cached = json.load(f)
        if cached.get("key") == key:
            return cached
    except (OSError, ValueError):
        pass
    log(f"arm {arm}: evaluation {evaluation.name} ({evaluation.kind})")
    result = measures.measure(
        evaluation.kind, options, genome, os.path.join(folder, f"eval_{evaluation.name}"), data
    )
    entry = {"key": key, **result}
    write_json_atomic(path, entry)
    _write_eval_tensorboard(os.path.join(folder, "tb_eval"), evaluation.name, entry)
    return entry


def _write_eval_tensorboard(logdir: str, name: str, entry: dict) -> None:
    import tensorflow as tf  # pylint: disable=g-import-not-at-top

    writer = tf.summary.create_file_writer(logdir)
    with writer.as_default():
        for panel, curve in entry.get("curves", {}).items():
            for step, (mean, _) in curve.items():
                tf.summary.scalar(f"{name}/{panel}/accuracy", mean, step=int(step))
        if "curves" not in entry:
            for metric, value in entry["metrics"].items():
                tf.summary.scalar(f"{name}/{metric}", value, step=0)
    writer.close()


def meta_curve(folder: str) -> list:
    """[(meta-step, validation score)] of an arm's TensorBoard events (empty if none)."""
    import tensorflow as tf  # pylint: disable=g-import-not-at-top

    tb = os.path.join(folder, "tb")
    points = {}
    if not os.path.isdir(tb):
        return []
    for name in sorted(os.listdir(tb)):
        if "tfevents" not in name:
            continue
        for event in tf.compat.v1.train.summary_iterator(os.path.join(tb, name)):
            for value in event.summary.value:
                if value.tag == "validation/score":
                    points[int(event.step)] = float(tf.make_ndarray(value.tensor))
    return sorted(points.items())


def _summary_metrics(folder: str) -> dict:
    try:
        with open(os.path.join(folder, "summary.json")) as f:
            summary = json.load(f)
    except (OSError, ValueError):
        return {}
    accuracy = summary.get("validation", {}).get("accuracy") or {}
    metrics = {"validation_score": (float(np.mean(list(accuracy.values()))) if accuracy else None)}
    for key in ("meta_steps", "generations", "meta_steps_per_second", "generations_per_second"):
        if summary.get(key) is not None:
            metrics[key] = summary[key]
    metrics.update(summary.get("metrics") or {})  # a launcher's own evaluation (flp_train)
    return metrics


def aggregate(spec: Spec, out_dir: str) -> dict:
    """results.json: every arm of the spec with its status, wall time and metrics."""
    rows = {}
    for arm in spec.arms:
        folder = arms_lib.arm_dir(out_dir, arm.name)
        record = arms_lib.read_record(out_dir, arm.name)
        entry = {
            "status": record["status"] if record else "missing",
            "error": record.get("error") if record else None,
            "wall_seconds": round(record["wall_seconds"], 1) if record else None,
            "command": record["command"] if record else None,
            "metrics": {},
            "curves": {},
            "meta_curve": meta_curve(folder),
        }
        entry["metrics"].update(_summary_metrics(folder))
        for evaluation in spec.evaluations:
            path = os.path.join(folder, f"eval_{evaluation.name}.json")
            if not (
                record
                and record["status"] == "ok"
                and evaluation.applies_to(arm.name)
                and os.path.exists(path)
            ):
                continue
            with open(path) as f:
                result = json.load(f)
            entry["metrics"].update(
                {f"{evaluation.name}:{k}": v for k, v in result["metrics"].items()}
            )
            entry["curves"].update(
                {f"{evaluation.name}:{k}": v for k, v in result.get("curves", {}).items()}
            )
            for kind in IMAGE_KINDS:
                if kind in result:
                    entry.setdefault("images", {})[evaluation.name] = {
                        "kind": kind,
                        "path": result[kind],
                        "steps": result.get("steps"),
                    }
        rows[arm.name] = entry
    results = {
        "title": spec.title,
        "arms": rows,
        "summaries": list(spec.summarize),
        "bars": list(spec.bars),
    }
    summarize(rows, spec.summarize)
    if spec.correlate:
        results["correlation"] = correlation(rows, *spec.correlate)
    if spec.matrix:
        results["matrix"] = matrix(rows, spec.matrix)
    return results


def panel_values(metrics: dict, column: str) -> dict:
    """{panel: value} of an evaluation at one horizon: `column` = '<evaluation>@<T>' selects
    every metric '<evaluation>:<panel>@<T>' that has a value."""
    evaluation, horizon = column.rsplit("@", 1)
    prefix, suffix = evaluation + ":", f"@{horizon}"
    return {
        k[len(prefix) : -len(suffix)]: v
        for k, v in metrics.items()
        if k.startswith(prefix) and k.endswith(suffix) and v is not None
    }


def panel_mean(metrics: dict, column: str) -> float | None:
    """The mean of `panel_values` (None if there is none)."""
    values = list(panel_values(metrics, column).values())
    return float(np.mean(values)) if values else None


def panel_spread(curves: dict, column: str) -> float | None:
    """The spread over synapse initializations at one horizon: `column` = '<evaluation>@<T>'
    averages, over the evaluation's panels, the standard deviation of test accuracy across
    the fresh networks after T steps (None if there is none)."""
    evaluation, horizon = column.rsplit("@", 1)
    values = [
        curve[horizon][1]
        for k, curve in curves.items()
        if k.startswith(evaluation + ":") and horizon in curve
    ]
    return float(np.mean(values)) if values else None


def summarize(rows: dict, columns) -> None:
    """Adds to every arm, per column '<evaluation>@<T>': 'mean:<column>' (`panel_mean`),
    'sd:<column>' (`panel_spread`, over synapse initializations) and 'sd_tasks:<column>' (the
    standard deviation of the panels' means, e.g. over a set of fixed episodes)."""
    for entry in rows.values():
        for column in columns:
            values = list(panel_values(entry["metrics"], column).values())
            entry["metrics"][f"mean:{column}"] = panel_mean(entry["metrics"], column)
            entry["metrics"][f"sd:{column}"] = panel_spread(entry["curves"], column)
            entry["metrics"][f"sd_tasks:{column}"] = float(np.std(values)) if values else None


def correlation(rows: dict, x: str, y: str) -> dict:
    """`summarize`s x and y for every arm and returns the Pearson correlation of their means
    over the arms that have both."""
    summarize(rows, (x, y))
    pairs = []
    for entry in rows.values():
        a, b = entry["metrics"][f"mean:{x}"], entry["metrics"][f"mean:{y}"]
        if a is not None and b is not None:
            pairs.append((a, b))
    r = None
    if len(pairs) >= 3 and np.std([p[0] for p in pairs]) > 0 and np.std([p[1] for p in pairs]) > 0:
        r = float(np.corrcoef(np.array(pairs).T)[0, 1])
    return {"x": x, "y": y, "pearson_r": r, "arms": len(pairs)}


def matrix(rows: dict, column: str) -> dict:
    """Arms × panels of one evaluation at one horizon (paper Fig. 10: train depth × evaluation
    depth): {'column', 'panels' (in first-seen order), 'rows': {arm: [value or None, …]}}."""
    per_arm = {name: panel_values(e["metrics"], column) for name, e in rows.items()}
    panels = list(dict.fromkeys(p for values in per_arm.values() for p in values))
    return {
        "column": column,
        "panels": panels,
        "rows": {
            name: [values.get(p) for p in panels] for name, values in per_arm.items() if values
        },
    }


def _metric_columns(results: dict) -> list[str]:
    columns = []
    for entry in results["arms"].values():
        columns += [k for k in entry["metrics"] if k not in columns]
    return columns


def _cell(value) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return ""
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def markdown_table(results: dict) -> str:
    """One row per arm: status, wall time, the meta-training metrics and, for accuracy curves,
    the last horizon of each panel (results.csv holds every metric)."""
    columns = [
        c for c in _metric_columns(results) if "@" not in c or c == _last_horizon(results, c)
    ]
    header = ["arm", "status", "wall s", *columns]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name, entry in results["arms"].items():
        status = entry["status"] + (f": {entry['error']}" if entry["error"] else "")
        cells = [
            name,
            status.replace("|", "/"),
            _cell(entry["wall_seconds"]),
            *[_cell(entry["metrics"].get(c)) for c in columns],
        ]
        lines.append("| " + " | ".join(cells) + " |")
    if "correlation" in results:
        c = results["correlation"]
        lines += [
            "",
            f"Pearson r(mean {c['x']}, mean {c['y']}) = {_cell(c['pearson_r'])}"
            f" over {c['arms']} arms.",
        ]
    if results.get("matrix", {}).get("rows"):
        m = results["matrix"]
        lines += ["", f"{m['column']}, arms × panels:", ""]
        lines += [
            "| arm | " + " | ".join(m["panels"]) + " |",
            "|" + "---|" * (len(m["panels"]) + 1),
        ]
        lines += [
            f"| {name} | " + " | ".join(_cell(v) for v in values) + " |"
            for name, values in m["rows"].items()
        ]
    return "\n".join([f"# {results['title']}", "", *lines, ""])


def _last_horizon(results: dict, column: str) -> str:
    panel = column.rsplit("@", 1)[0]
    steps = [
        int(c.rsplit("@", 1)[1])
        for c in _metric_columns(results)
        if c.rsplit("@", 1)[0] == panel and "@" in c
    ]
    return f"{panel}@{max(steps)}"


def write_outputs(spec: Spec, results: dict, out_dir: str) -> None:
    """results.json, results.csv, results.md and <figure>.png (module doc)."""
    write_json_atomic(os.path.join(out_dir, "results.json"), results)
    columns = _metric_columns(results)
    tables.write_csv_atomic(
        os.path.join(out_dir, "results.csv"),
        [
            {
                "arm": name,
                "status": e["status"],
                "wall_seconds": e["wall_seconds"],
                **{c: e["metrics"].get(c) for c in columns},
            }
            for name, e in results["arms"].items()
        ],
    )
    atomic_write(os.path.join(out_dir, "results.md"), lambda f: f.write(markdown_table(results)))
    plot(results, os.path.join(out_dir, f"{spec.figure}.png"))


def plot(results: dict, path: str) -> None:
    """The experiment's figure (module doc); nothing is written when there is nothing to plot."""
    arms = results["arms"]
    panels = []
    if any(e["meta_curve"] for e in arms.values()):
        panels.append(("meta-training: validation score", "meta", None))
    curve_panels = sorted({p for e in arms.values() for p in e["curves"]})
    panels += [(p, "curve", p) for p in curve_panels]
    panels += [(f"mean {c}", "bars", c) for c in results.get("summaries", [])]
    panels += [(m, "metric_bars", m) for m in results.get("bars", [])]
    if results.get("correlation", {}).get("arms"):
        panels.append(("correlation", "scatter", results["correlation"]))
    if results.get("matrix", {}).get("rows"):
        panels.append(("matrix", "matrix", results["matrix"]))
    panels += [
        (f"{name} [{ev}]", "image", image)
        for name, e in arms.items()
        for ev, image in e.get("images", {}).items()
    ]
    if not panels:
        return
    plt = plotting.pyplot()
    columns = min(4, len(panels))
    rows = -(-len(panels) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(4 * columns, 3.4 * rows), squeeze=False)
    for ax in axes.flat[len(panels) :]:
        ax.axis("off")
    legend_drawn = False  # one legend for the curve panels: the arms are the same in each
    for ax, (title, kind, what) in zip(axes.flat, panels):
        if kind == "meta":
            for name, e in arms.items():
                if e["meta_curve"]:
                    steps, scores = zip(*e["meta_curve"])
                    ax.plot(steps, scores, marker="o", ms=3, label=name)
            plotting.accuracy_axes(
                ax, title, fontsize=8, xlabel="meta-step", legend={"fontsize": 6}
            )
        elif kind == "curve":
            for name, e in arms.items():
                if what in e["curves"]:
                    curve = e["curves"][what]  # {step (a JSON string): [mean, std]}
                    steps = sorted(curve, key=int)
                    x = [int(s) for s in steps]
                    mean, sd = (np.array([curve[s][i] for s in steps]) for i in (0, 1))
                    (line,) = ax.plot(x, mean, marker="o", ms=3, label=name)
                    # The spread over synapse initializations: ± one std over the networks.
                    ax.fill_between(x, mean - sd, mean + sd, color=line.get_color(), alpha=0.12)
            plotting.accuracy_axes(
                ax,
                "\n".join(textwrap.wrap(what, 48)),
                fontsize=7,
                log_x=True,
                unit_y=True,
                legend=None if legend_drawn else {"fontsize": 5},
            )
            legend_drawn = True
        elif kind == "bars":
            _bars(ax, arms, what)
        elif kind == "metric_bars":
            _metric_bars(ax, arms, what)
        elif kind == "scatter":
            _scatter(ax, arms, what)
        elif kind == "matrix":
            _heat_map(fig, ax, what)
        elif what["kind"] == "jacobian":
            from blur_tf.asymmetry import asymmetry, log_asymmetry  # pylint: disable=g-import-not-at-top

            jacobian = np.load(what["path"])
            image = ax.imshow(log_asymmetry(jacobian), cmap="viridis", vmin=-16, vmax=2)
            fig.colorbar(image, ax=ax, fraction=0.046)
            ax.set_title(f"{title}\nln|J−Jᵀ|, ‖J−Jᵀ‖/‖J‖ = {asymmetry(jacobian):.2g}", fontsize=8)
        else:
            _regions(ax, title, np.load(what["path"]), what["steps"])
    plotting.save_png(fig, path)


def _heat_map(fig, ax, m: dict) -> None:
    """Arms × panels at one horizon (paper Fig. 10), each cell labelled with its value."""
    values = np.array([[np.nan if v is None else v for v in row] for row in m["rows"].values()])
    image = ax.imshow(values, cmap="viridis", vmin=0, vmax=1, aspect="auto")
    fig.colorbar(image, ax=ax, fraction=0.046)
    ax.set_xticks(range(len(m["panels"])), m["panels"], rotation=60, ha="right", fontsize=5)
    ax.set_yticks(range(len(m["rows"])), list(m["rows"]), fontsize=6)
    for (i, j), v in np.ndenumerate(values):
        if np.isfinite(v):
            ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=5, color="w")
    ax.set_title(m["column"], fontsize=8)


def _bars(ax, arms: dict, column: str) -> None:
    """One bar per arm (paper Fig. 9): the mean over the evaluation's panels at one horizon,
    ± the standard deviation over the panels (`sd_tasks`) where there are several."""
    named = [
        (n, e["metrics"].get(f"mean:{column}"), e["metrics"].get(f"sd_tasks:{column}"))
        for n, e in arms.items()
    ]
    _bar_panel(ax, named, f"mean {column} ± sd over panels", "accuracy", unit=True)


def _metric_bars(ax, arms: dict, metric: str) -> None:
    """One bar per arm of a launcher's own metric (a `bars` key), ± its `<metric>_se`; a log
    axis when the values span more than a factor of 10."""
    named = [
        (n, e["metrics"].get(metric), e["metrics"].get(f"{metric}_se")) for n, e in arms.items()
    ]
    _bar_panel(ax, named, f"{metric} ± s.e.", metric, unit=False)


def _bar_panel(ax, named, title: str, xlabel: str, unit: bool) -> None:
    named = [(n, v, s) for n, v, s in named if v is not None]
    if not named:
        return
    names, values, spreads = zip(*named)
    ax.barh(range(len(names)), values, xerr=[s or 0.0 for s in spreads], color="C0", alpha=0.8)
    ax.set_yticks(range(len(names)), names, fontsize=5)
    ax.invert_yaxis()
    if unit:
        ax.set_xlim(0.0, 1.0)
    elif min(values) > 0 and max(values) > 10 * min(values):
        ax.set_xscale("log")
    ax.set_xlabel(xlabel, fontsize=7)
    ax.set_title(title, fontsize=8)
    ax.grid(True, axis="x", alpha=0.3)
    ax.tick_params(labelsize=6)


def _scatter(ax, arms: dict, c: dict) -> None:
    """Held-out against training accuracy (paper Fig. 4): one point per arm."""
    for name, e in arms.items():
        a, b = e["metrics"].get(f"mean:{c['x']}"), e["metrics"].get(f"mean:{c['y']}")
        if a is not None and b is not None:
            ax.scatter([a], [b], s=12)
            ax.annotate(name, (a, b), fontsize=5)
    ax.set_xlabel(f"mean {c['x']}", fontsize=7)
    ax.set_ylabel(f"mean {c['y']}", fontsize=7)
    ax.set_title(f"Pearson r = {_cell(c['pearson_r'])} ({c['arms']} arms)", fontsize=8)
    ax.tick_params(labelsize=6)


def _regions(ax, title: str, maps: np.ndarray, steps) -> None:
    """The predicted classes after the last horizon, the true boundaries as contours."""
    extent = (-1, 1, -1, 1)
    ax.imshow(maps[-1], origin="lower", extent=extent, cmap="coolwarm", interpolation="nearest")
    ax.contour(
        maps[0], levels=np.arange(maps[0].max()) + 0.5, extent=extent, colors="k", linewidths=0.6
    )
    accuracy = float(np.mean(maps[-1] == maps[0]))
    ax.set_title(f"{title} after {steps[-1]} steps\ngrid accuracy {accuracy:.3f}", fontsize=8)
    ax.set_xticks([])
    ax.set_yticks([])

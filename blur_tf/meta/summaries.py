"""TensorBoard summaries of meta-training (written eagerly, between compiled meta-steps).

Tags (the contract tests check):

| tag | kind | what |
|---|---|---|
| `meta/loss` | scalar | meta-loss, mean over genomes with a finite loss |
| `meta/train_accuracy/<task>` | scalar | held-out accuracy after the unroll, per training task |
| `meta/unroll_length` | scalar | inner steps of the meta-step |
| `meta/skipped_steps` | scalar | cumulative number of skipped (non-finite) genome updates |
| `meta/steps_per_second` | scalar | meta-steps per second since the last log |
| `meta/gradient_norm` | scalar | mean per-genome meta-gradient norm (before clipping) |
| `validation/accuracy/<task>` | scalar | best genome's accuracy after T inner steps |
| `validation/score` | scalar | best genome's mean validation accuracy |
| `validation/curve/<task>` | image | accuracy per inner step (every genome; best one bold) |
| `genome/<field>` | histogram | the genome's values (all genomes) |
| `genome_heatmap/<field>` | image | K×K transforms of the best genome as heat maps |
| `flags` | text | the run's flags / configuration |

CMA-ES runs (`CmaTrainer`, step = generation) write `validation/*`, `genome*/*` and `flags` as
above (the validated genomes: best so far, distribution mean, last generation's best) and:

| tag | kind | what |
|---|---|---|
| `cma/fitness_best`, `cma/fitness_mean`, `cma/fitness_worst` | scalar | held-out accuracy of the generation's finite candidates |
| `cma/sigma` | scalar | CMA-ES step size σ after the generation |
| `cma/non_finite` | scalar | cumulative number of non-finite candidates |
| `cma/unroll_length` | scalar | inner steps of the generation |
| `cma/generations_per_second` | scalar | 1 / wall time of the generation |
"""

from __future__ import annotations

import io

import numpy as np
import tensorflow as tf

from blur_tf.genome import FIELD_KINDS, Genome

MATRIX_FIELDS = tuple(name for name, kind in FIELD_KINDS.items() if kind == "KxK")


def _tag_safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "._-" else "_" for c in name)


def heatmap_image(matrix: np.ndarray, cell: int = 16) -> np.ndarray:
    """A K×K matrix as an RGB uint8 image [1, K·cell, K·cell, 3]: blue < 0 < red, white = 0."""
    matrix = np.asarray(matrix, np.float32)
    scale = max(float(np.max(np.abs(matrix))), 1e-6)
    v = np.clip(matrix / scale, -1.0, 1.0)
    red = np.where(v < 0, 1.0 + v, 1.0)
    blue = np.where(v > 0, 1.0 - v, 1.0)
    green = 1.0 - np.abs(v)
    rgb = np.stack([red, green, blue], axis=-1)
    rgb = np.repeat(np.repeat(rgb, cell, axis=0), cell, axis=1)
    return (rgb[None] * 255).astype(np.uint8)


def curve_image(curves: np.ndarray, best: int, title: str) -> np.ndarray:
    """Accuracy-per-inner-step curves [G, T+1] plotted to an RGB image [1, H, W, 3]."""
    import matplotlib  # pylint: disable=g-import-not-at-top
    matplotlib.use("Agg")
    from matplotlib import pyplot as plt  # pylint: disable=g-import-not-at-top
    fig, ax = plt.subplots(figsize=(4, 3), dpi=80)
    steps = np.arange(curves.shape[1])
    for g, curve in enumerate(curves):
        ax.plot(steps, curve, lw=2.5 if g == best else 0.8, alpha=1.0 if g == best else 0.5)
    ax.set_xlabel("inner step")
    ax.set_ylabel("accuracy")
    ax.set_ylim(0, 1)
    ax.set_title(title, fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    return tf.image.decode_png(buffer.getvalue(), channels=3)[None].numpy()


class SummaryWriter:
    """Thin wrapper over `tf.summary.create_file_writer` with the tags of the module doc."""

    def __init__(self, logdir: str):
        self.writer = tf.summary.create_file_writer(logdir)

    def flags(self, text: str, step: int = 0):
        with self.writer.as_default(step=step):
            tf.summary.text("flags", "```\n" + text + "\n```")
        self.writer.flush()

    def train(self, step: int, loss: float, task_accuracy: dict, unroll_length: int,
              skipped: int, steps_per_second: float | None, gradient_norm: float):
        with self.writer.as_default(step=step):
            tf.summary.scalar("meta/loss", loss)
            for task, accuracy in task_accuracy.items():
                tf.summary.scalar(f"meta/train_accuracy/{_tag_safe(task)}", accuracy)
            tf.summary.scalar("meta/unroll_length", unroll_length)
            tf.summary.scalar("meta/skipped_steps", skipped)
            tf.summary.scalar("meta/gradient_norm", gradient_norm)
            if steps_per_second is not None:
                tf.summary.scalar("meta/steps_per_second", steps_per_second)

    def scalars(self, step: int, values: dict):
        """Writes {tag: value} scalars at `step` (e.g. CMA-ES generation statistics)."""
        with self.writer.as_default(step=step):
            for tag, value in values.items():
                tf.summary.scalar(tag, value)

    def validation(self, step: int, result, best: int):
        with self.writer.as_default(step=step):
            for task, curves in result.curves.items():
                tag = _tag_safe(task)
                tf.summary.scalar(f"validation/accuracy/{tag}", float(curves[best, -1]))
                tf.summary.image(f"validation/curve/{tag}",
                                 curve_image(curves, best, f"{task}, T={result.length}"))
            tf.summary.scalar("validation/score", float(result.scores()[best]))
        self.writer.flush()

    def genome(self, step: int, genome: Genome, best: int):
        values = genome.numpy()
        with self.writer.as_default(step=step):
            for name in Genome._fields:
                tf.summary.histogram(f"genome/{name}", getattr(values, name))
            for name in MATRIX_FIELDS:
                tf.summary.image(f"genome_heatmap/{name}",
                                 heatmap_image(getattr(values, name)[best]))
        self.writer.flush()

    def flush(self):
        self.writer.flush()

    def close(self):
        self.writer.close()

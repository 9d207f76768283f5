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
| `cma/fitness_best`, `_mean`, `_worst` | scalar | held-out accuracy of the finite candidates |
| `cma/sigma` | scalar | CMA-ES step size σ after the generation |
| `cma/non_finite` | scalar | cumulative number of non-finite candidates |
| `cma/unroll_length` | scalar | inner steps of the generation |
| `cma/generations_per_second` | scalar | 1 / wall time of the generation |
"""

from __future__ import annotations

import tensorflow as tf

from blur_tf.genome import FIELD_KINDS, Genome
from blur_tf.plotting import curve_image, heatmap_image  # the images of the tags above

MATRIX_FIELDS = tuple(name for name, kind in FIELD_KINDS.items() if kind == "KxK")


def _tag_safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "._-" else "_" for c in name)


class SummaryWriter:
    """Thin wrapper over `tf.summary.create_file_writer` with the tags of the module doc."""

    def __init__(self, logdir: str):
        self.writer = tf.summary.create_file_writer(logdir)

    def flags(self, text: str, step: int = 0):
        with self.writer.as_default(step=step):
            tf.summary.text("flags", "```\n" + text + "\n```")
        self.writer.flush()

    def train(
        self,
        step: int,
        loss: float,
        task_accuracy: dict,
        unroll_length: int,
        skipped: int,
        steps_per_second: float | None,
        gradient_norm: float,
    ):
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
                tf.summary.image(
                    f"validation/curve/{tag}",
                    curve_image(curves, best, f"{task}, T={result.length}"),
                )
            tf.summary.scalar("validation/score", float(result.scores()[best]))
        self.writer.flush()

    def genome(self, step: int, genome: Genome, best: int):
        values = genome.numpy()
        with self.writer.as_default(step=step):
            for name in Genome._fields:
                tf.summary.histogram(f"genome/{name}", getattr(values, name))
            for name in MATRIX_FIELDS:
                tf.summary.image(
                    f"genome_heatmap/{name}", heatmap_image(getattr(values, name)[best])
                )
        self.writer.flush()

    def flush(self):
        self.writer.flush()

    def close(self):
        self.writer.close()

"""Held-out accuracy tables: a learned genome next to reference genomes (e.g. a random one).

Small and self-contained on purpose (the full evaluation suite with SGD/Adam baselines lives in
`blur_tf.evaluation`); the meta_train / main launchers use it to print their result.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from blur_tf.genome import Genome
from blur_tf.meta.problem import task_name  # noqa: F401  re-exported (training.py)
from blur_tf.meta.validation import Validator
from blur_tf.rule import Rule
from blur_tf.tables import text_table


def accuracy_table(
    genomes: Mapping[str, Genome],
    tasks: Sequence,
    hidden_sizes: Sequence[int],
    rule: Rule,
    length: int,
    batch_size: int,
    networks: int = 8,
    eval_examples: int = 1000,
    seed: int = 12345,
) -> dict:
    """{task: {genome name: accuracy after `length` inner steps}}, averaged over `networks`.

    Every genome (population 1 each) sees the same data and initial synapses per task.
    """
    names = list(genomes)
    population = Genome.concat([genomes[n] for n in names])
    validator = Validator(
        tasks,
        hidden_sizes,
        rule,
        batch_size,
        networks=networks,
        eval_examples=eval_examples,
        seed=seed,
    )
    result = validator(population, length)
    return {
        task: {name: float(final[i]) for i, name in enumerate(names)}
        for task, final in result.final().items()
    }


def majority_rate(task, examples: int = 4000) -> float:
    """Accuracy of always predicting the most frequent class of the task's eval stream."""
    _, labels = task.eval_set(examples)
    counts = np.bincount(np.asarray(labels).ravel())
    return float(counts.max() / counts.sum())


def format_table(table: dict, title: str = "", chance: Mapping[str, float] | None = None) -> str:
    """A fixed-width text table of `accuracy_table`'s output (plus a mean row)."""
    tasks = list(table)
    names = list(next(iter(table.values()))) if table else []
    rows = [[table[task][n] for n in names] + ([chance[task]] if chance else []) for task in tasks]
    means = [np.mean([table[t][n] for t in tasks]) for n in names]
    if chance:
        means.append(np.mean([chance[t] for t in tasks]))
    cells = [
        [task] + [f"{v:.3f}" for v in row] for task, row in zip(tasks + ["mean"], rows + [means])
    ]
    header = ["task"] + names + (["chance"] if chance else [])
    task_width = max(len(c[0]) for c in cells) + 2  # a wider gap after the task column
    return text_table(
        header,
        cells,
        title=[title] if title else [],
        align="l" + "r" * (len(header) - 1),
        min_widths=[task_width] + [8] * (len(header) - 1),
    )

"""Evaluation of genomes against gradient baselines: accuracy per inner step, tables, plots.

A small package, one module per stage (every public name is re-exported here, so
`from blur_tf import evaluation; evaluation.X` keeps working):

  * `sources`: `--genome` as a `Learner` (`load_learner`: 'backprop' or a genome.json path).
  * `curves`: `seeded_batches`, `genome_curves`, `baseline_curves` (same batches, same
    initial weights for every method).
  * `selection`: `best_per_horizon` → one `HorizonBest` per horizon (the best configuration
    by mean accuracy over seeds at that horizon).
  * `runs`: `evaluate_run`, one task × architecture as a JSON-ready dict (results.json).
  * `reports`: text tables, results.csv rows (`ResultRow`), curves.png / sweep.png and
    TensorBoard scalars of such dicts (via `blur_tf.tables` and `blur_tf.plotting`).
"""

from blur_tf.evaluation.curves import (
    GenomeCurves,
    baseline_curves,
    count_blur_correct,
    genome_curves,
    seeded_batches,
)
from blur_tf.evaluation.reports import (
    SWEEP_OPTIMIZERS,
    ResultRow,
    architecture_name,
    format_table,
    generalization_table,
    plot_curves,
    plot_sweep,
    result_rows,
    write_csv_atomic,
    write_tensorboard,
)
from blur_tf.evaluation.runs import METHOD_BLUR, evaluate_run
from blur_tf.evaluation.selection import HorizonBest, best_per_horizon
from blur_tf.evaluation.sources import (
    BACKPROP,
    Learner,
    load_learner,
    parse_rule_overrides,
    read_genome_file,
)

__all__ = [
    "BACKPROP",
    "GenomeCurves",
    "HorizonBest",
    "Learner",
    "METHOD_BLUR",
    "ResultRow",
    "SWEEP_OPTIMIZERS",
    "architecture_name",
    "baseline_curves",
    "best_per_horizon",
    "count_blur_correct",
    "evaluate_run",
    "format_table",
    "generalization_table",
    "genome_curves",
    "load_learner",
    "parse_rule_overrides",
    "plot_curves",
    "plot_sweep",
    "read_genome_file",
    "result_rows",
    "seeded_batches",
    "write_csv_atomic",
    "write_tensorboard",
]

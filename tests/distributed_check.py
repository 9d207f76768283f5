"""Single device vs `MirroredStrategy` over 2 logical CPU devices, in a fresh process.

    python -m tests.distributed_check OUT_DIR    # prints one JSON line

Run by tests/test_distribute.py: logical devices can only be configured before TensorFlow
initializes, and the pytest process has long done that. With op determinism on, the same
MetaTrainer (a few meta-steps, with a checkpoint and a resume under the strategy) and CmaTrainer
(a few generations, λ = 5 over 2 replicas: one padded candidate) run on one device and under
the strategy; the JSON holds the largest differences and the facts the test asserts.
"""

import json
import os
import sys

from blur_tf.meta import distribute


def _meta_trainer(strategy, checkpoint_dir=None, meta_batch=4):
    from blur_tf import MetaTrainer, Rule  # pylint: disable=g-import-not-at-top
    from blur_tf.meta import InnerProblem, parse_schedule  # pylint: disable=g-import-not-at-top
    from blur_tf.tasks import get_task  # pylint: disable=g-import-not-at-top

    problem = InnerProblem([get_task("toy.and"), get_task("toy.xor")], [8], Rule(), batch_size=16)
    return MetaTrainer(
        problem,
        parse_schedule("constant:3"),
        population=2,
        meta_batch=meta_batch,
        seed=1,
        learning_rate=1e-2,
        strategy=strategy,
        checkpoint_dir=checkpoint_dir,
        log_every=0,
        validate_every=0,
        checkpoint_every=0,
    )


def _cma_trainer(strategy):
    from blur_tf import CmaTrainer, Rule  # pylint: disable=g-import-not-at-top
    from blur_tf.meta import InnerProblem, parse_schedule  # pylint: disable=g-import-not-at-top
    from blur_tf.tasks import get_task  # pylint: disable=g-import-not-at-top

    problem = InnerProblem(
        [get_task("toy.and"), get_task("toy.xor")], [8], Rule(), batch_size=16, eval_batch_size=32
    )
    return CmaTrainer(
        problem,
        parse_schedule("constant:4"),
        population=5,
        sigma0=0.2,
        seed=1,
        networks=2,
        eval_batches=2,
        log_every=0,
        validate_every=0,
        checkpoint_every=0,
        strategy=strategy,
    )


def _max_difference(a, b) -> float:
    import numpy as np  # pylint: disable=g-import-not-at-top

    return float(max(np.max(np.abs(np.asarray(x) - np.asarray(y))) for x, y in zip(a, b)))


def main(out_dir: str) -> dict:
    strategy = distribute.make_strategy("mirrored", 2)
    import numpy as np  # pylint: disable=g-import-not-at-top
    import tensorflow as tf  # pylint: disable=g-import-not-at-top

    tf.config.experimental.enable_op_determinism()
    report = {"replicas": strategy.num_replicas_in_sync}
    # MetaTrainer: 3 meta-steps on one device, and under the strategy with a checkpoint after
    # 2 and a fresh trainer resuming from it for the 3rd.
    single = _meta_trainer(None)
    steps = [single.step() for _ in range(3)]
    first = _meta_trainer(strategy, os.path.join(out_dir, "ckpt"))
    distributed = [first.step() for _ in range(2)]
    first.save()
    resumed = _meta_trainer(strategy, os.path.join(out_dir, "ckpt"))
    report["resumed"] = resumed.restore() and resumed.step_count == 2
    distributed.append(resumed.step())
    report["meta_genome"] = _max_difference(single.genome.numpy(), resumed.genome.numpy())
    report["meta_losses"] = _max_difference(
        [s.losses for s in steps], [s.losses for s in distributed]
    )
    report["meta_diagnostics_equal"] = all(
        np.array_equal(a.task_ids, b.task_ids) and np.allclose(a.accuracy, b.accuracy)
        for a, b in zip(steps, distributed)
    )
    report["meta_traces"] = resumed.trace_count
    copies = [v.numpy() for v in strategy.experimental_local_results(resumed.genome[0])]
    report["replica_copies_equal"] = bool(np.array_equal(*copies))
    try:
        _meta_trainer(strategy, meta_batch=3)
        report["indivisible_error"] = None
    except ValueError as e:
        report["indivisible_error"] = str(e)
    # CmaTrainer: 3 generations.
    runs = []
    for s in (None, strategy):
        trainer = _cma_trainer(s)
        runs.append(([trainer.step().fitness for _ in range(3)], trainer))
    (fit_a, cma_a), (fit_b, cma_b) = runs
    report["cma_fitness"] = _max_difference(fit_a, fit_b)
    report["cma_mean"] = float(np.max(np.abs(cma_a.es.mean - cma_b.es.mean)))
    report["cma_best"] = _max_difference(cma_a.best_genome(), cma_b.best_genome())
    return report


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1])), flush=True)

"""Reading a run's TensorBoard scalars back (e.g. the validation curve of a meta-training run)."""

from __future__ import annotations

import glob
import os

import numpy as np
import tensorflow as tf


def read_scalars(logdir: str, tag: str) -> list[tuple[int, float]]:
    """(step, value) of scalar `tag` in every event file of `logdir`, sorted by step.

    A step written more than once (a run resumed from an older checkpoint) keeps its last value.
    ValueError when `logdir` has no event file.
    """
    files = sorted(glob.glob(os.path.join(logdir, "events.out.tfevents.*")))
    if not files:
        raise ValueError(f"{logdir}: no TensorBoard event file")
    values = {}
    for path in files:
        for event in tf.compat.v1.train.summary_iterator(path):
            for value in event.summary.value:
                if value.tag == tag:
                    number = (
                        tf.make_ndarray(value.tensor)
                        if value.HasField("tensor")
                        else value.simple_value
                    )
                    values[int(event.step)] = float(np.asarray(number))
    return sorted(values.items())

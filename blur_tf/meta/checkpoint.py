"""Checkpointing of meta-training and graceful stop on SIGTERM / SIGINT.

Everything a run needs to continue bit-for-bit is in `tf.train.Checkpoint`: the genome
variables, the outer learner's state, the meta-step counter (which is also the unroll-schedule
position and the RNG state: every seed is derived from (seed, meta_step), see `seeds`), the
population bookkeeping (best genome index, its validation score, the last synchronized stage)
and the skipped-step counter. `tf.train.CheckpointManager` keeps the last N checkpoints; TF
writes each checkpoint to temporary files and renames them, then updates the index, so a run
killed at any moment (even by SIGKILL) resumes from the last complete checkpoint.

In a multi-worker job (`tf.distribute.MultiWorkerMirroredStrategy`) only the chief keeps
checkpoints, following TensorFlow's documented pattern: every worker saves (saving may need the
collectives of every worker), a non-chief worker (`chief=False`) into a temporary folder that is
deleted right away; every worker restores from `directory`, the chief's folder.
"""

from __future__ import annotations

import contextlib
import shutil
import signal
import tempfile

import tensorflow as tf


class CheckpointState:
    """The restorable state of a MetaTrainer, saved through a `tf.train.CheckpointManager`.

    Args:
      directory: checkpoint folder (created if needed).
      max_to_keep: checkpoints kept (keep-N).
      optional: names of trackables that checkpoints written before they existed lack; such a
        checkpoint still restores (strictly, everything else), and they keep their values.
      chief: False on a non-chief worker of a multi-worker job: `save` writes to a temporary
        folder and deletes it (module doc); restoring still reads `directory`.
      **trackables: objects saved (variables, modules).
    """

    def __init__(self, directory: str, max_to_keep: int = 3, optional=(), chief: bool = True,
                 **trackables):
        if not isinstance(max_to_keep, int) or max_to_keep < 1:
            raise ValueError(f"checkpoints to keep must be an int >= 1, got {max_to_keep!r}")
        self.trackables, self.optional, self.chief = trackables, tuple(optional), chief
        self.checkpoint = tf.train.Checkpoint(**trackables)
        self.manager = tf.train.CheckpointManager(self.checkpoint, directory,
                                                  max_to_keep=max_to_keep)

    def restore_latest(self) -> str | None:
        """Restores the latest checkpoint if there is one; returns its path (or None)."""
        path = self.manager.latest_checkpoint
        if path:
            saved = {key.split("/")[0]
                     for key in tf.train.load_checkpoint(path).get_variable_to_shape_map()}
            absent = [name for name in self.optional if name not in saved]
            checkpoint = self.checkpoint if not absent else tf.train.Checkpoint(
                **{k: v for k, v in self.trackables.items() if k not in absent})
            checkpoint.restore(path).assert_existing_objects_matched()
        return path

    def save(self, step: int) -> str | None:
        """Writes checkpoint `step`; its path, or None on a non-chief worker (nothing kept)."""
        if self.chief:
            return self.manager.save(checkpoint_number=int(step))
        scratch = tempfile.mkdtemp(prefix="blur_tf_worker_checkpoint_")
        try:
            tf.train.CheckpointManager(self.checkpoint, scratch, max_to_keep=1).save(
                checkpoint_number=int(step))
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        return None


class StopRequest:
    """Turns SIGTERM / SIGINT into a flag the training loop polls between meta-steps.

    Use as a context manager; previous handlers are restored on exit. Only installable from the
    main thread (elsewhere it is a no-op flag that is never set by signals).
    """

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self):
        self.signum = None
        self._previous = {}

    def _handle(self, signum, frame):
        del frame
        self.signum = signum

    @property
    def requested(self) -> bool:
        return self.signum is not None

    def __enter__(self):
        with contextlib.suppress(ValueError):  # not the main thread
            for s in self.SIGNALS:
                self._previous[s] = signal.signal(s, self._handle)
        return self

    def __exit__(self, *exc):
        for s, handler in self._previous.items():
            signal.signal(s, handler)
        self._previous.clear()
        return False

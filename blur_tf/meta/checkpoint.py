"""Checkpointing of meta-training and graceful stop on SIGTERM / SIGINT.

Everything a run needs to continue bit-for-bit is in `tf.train.Checkpoint`: the genome
variables, the outer learner's state, the meta-step counter (which is also the unroll-schedule
position and the RNG state: every seed is derived from (seed, meta_step), see `seeds`), the
population bookkeeping (best genome index, its validation score, the last synchronized stage)
and the skipped-step counter. `tf.train.CheckpointManager` keeps the last N checkpoints; TF
writes each checkpoint to temporary files and renames them, then updates the index, so a run
killed at any moment (even by SIGKILL) resumes from the last complete checkpoint. A checkpoint
whose files were damaged later (truncated, overwritten) is skipped with a warning and the next
older one restored; if none restores, `CheckpointError` names the folder.

In a multi-worker job (`tf.distribute.MultiWorkerMirroredStrategy`) only the chief keeps
checkpoints, following TensorFlow's documented pattern: every worker saves (saving may need the
collectives of every worker), a non-chief worker (`chief=False`) into a temporary folder that is
deleted right away; every worker restores from `directory`, the chief's folder.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import signal
import tempfile

import tensorflow as tf

log = logging.getLogger(__name__)
_CHECKPOINT_FILE = re.compile(r"^ckpt-(\d+)\.index$")  # CheckpointManager's names


def _one_line(error: BaseException) -> str:
    """The first line of an error's message (TensorFlow's carry op context below it)."""
    text = str(error).strip().splitlines()[0] if str(error).strip() else ""
    text = re.sub(r"\{\{function_node [^}]*\}\}\s*|\s*\[Op:\w+\]$", "", text)
    return f"{type(error).__name__}: {text}"


class CheckpointError(RuntimeError):
    """Checkpoints exist but none restores (the run cannot resume)."""


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

    def __init__(
        self, directory: str, max_to_keep: int = 3, optional=(), chief: bool = True, **trackables
    ):
        if not isinstance(max_to_keep, int) or max_to_keep < 1:
            raise ValueError(f"checkpoints to keep must be an int >= 1, got {max_to_keep!r}")
        self.trackables, self.optional, self.chief = trackables, tuple(optional), chief
        self.checkpoint = tf.train.Checkpoint(**trackables)
        self.manager = tf.train.CheckpointManager(
            self.checkpoint, directory, max_to_keep=max_to_keep
        )

    def restore_latest(self) -> str | None:
        """Restores the newest checkpoint that restores; returns its path (None if none kept).

        Without a readable index file, the folder's `ckpt-N` files are tried, newest first.
        A checkpoint that fails to read (truncated or corrupt files) is skipped with a warning
        naming it and the reason, and the next older one is tried; `CheckpointError` naming
        the folder if checkpoints exist but none restores.
        """
        paths = list(reversed(self.manager.checkpoints)) or self._found()
        if not paths:
            return None
        failures = []
        for path in paths:
            try:
                self._restore(path)
            except (tf.errors.OpError, ValueError, IndexError, AssertionError) as e:
                reason = _one_line(e)
                log.warning("skipping checkpoint %s: it does not restore (%s)", path, reason)
                failures.append(f"{os.path.basename(path)}: {reason}")
                continue
            return path
        raise CheckpointError(
            f"no checkpoint in {self.manager.directory} restores "
            f"({'; '.join(failures)}); delete that folder to start the run over, "
            "or use another --out_dir"
        )

    def _found(self) -> list[str]:
        """Checkpoints in the folder, newest first, when its `checkpoint` index file is
        missing or unreadable (TensorFlow then lists none)."""
        directory = self.manager.directory
        if not os.path.isdir(directory):
            return []
        steps = [
            int(m.group(1)) for name in os.listdir(directory) if (m := _CHECKPOINT_FILE.match(name))
        ]
        return [os.path.join(directory, f"ckpt-{step}") for step in sorted(steps, reverse=True)]

    def _restore(self, path: str) -> None:
        saved = {
            key.split("/")[0] for key in tf.train.load_checkpoint(path).get_variable_to_shape_map()
        }
        absent = [name for name in self.optional if name not in saved]
        checkpoint = (
            self.checkpoint
            if not absent
            else tf.train.Checkpoint(
                **{k: v for k, v in self.trackables.items() if k not in absent}
            )
        )
        checkpoint.restore(path).assert_existing_objects_matched()

    def save(self, step: int) -> str | None:
        """Writes checkpoint `step`; its path, or None on a non-chief worker (nothing kept).

        A failed write (e.g. a full disk) removes what it left (`ckpt-N.*`, TensorFlow's
        temporary `ckpt-N_temp`) and raises OSError naming the checkpoint and the cause.
        """
        if self.chief:
            try:
                return self.manager.save(checkpoint_number=int(step))
            except (tf.errors.OpError, OSError) as e:
                directory, prefix = self.manager.directory, f"ckpt-{int(step)}"
                for name in os.listdir(directory) if os.path.isdir(directory) else ():
                    if name.startswith(f"{prefix}.") or name.startswith(f"{prefix}_temp"):
                        path = os.path.join(directory, name)
                        if os.path.isdir(path):
                            shutil.rmtree(path, ignore_errors=True)
                        else:
                            os.remove(path)
                raise OSError(
                    getattr(e, "errno", None),
                    _one_line(e),
                    os.path.join(directory, f"ckpt-{int(step)}"),
                ) from None
        scratch = tempfile.mkdtemp(prefix="blur_tf_worker_checkpoint_")
        try:
            tf.train.CheckpointManager(self.checkpoint, scratch, max_to_keep=1).save(
                checkpoint_number=int(step)
            )
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

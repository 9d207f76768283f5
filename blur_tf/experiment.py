"""The run directory: what every launcher that writes an --out_dir repeats, once.

`RunDirectory(path)` checks, before any work, that `path` can be written (ValueError naming
the problem). A run that writes into it holds `lock()` for its lifetime: a second process on
the same folder is refused at once (ValueError naming the folder and the holder's process id).
The lock is an exclusive `flock` on `path/.lock`, which the kernel releases on any exit of the
holder (even SIGKILL), so a crashed run leaves nothing to clean up; a run that ends removes
the file. A training run then:

* refuses to resume a folder whose recorded flags (`flags.json`) differ outside the flags a
  resumed run may change (`check_resume`; a flag absent from an older record counts as its
  default value, so adding a flag never orphans existing runs);
* records its flags (`record_flags`), trains under SIGTERM / SIGINT handling (`train`: a
  signal saves a checkpoint and raises `Interrupted`, whose `status` is 128 + signal);
* writes genome, summary and report files atomically (a temporary file, then a rename:
  nothing is ever half-written).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import resource

from blur_tf.files import check_output_folder, write_json_atomic
from blur_tf.genome import Genome
from blur_tf.meta.checkpoint import StopRequest

TIMING_KEYS = (
    "wall_seconds_this_call",
    "meta_steps_this_call",
    "meta_steps_per_second",
    "peak_rss_mb",
)


class Interrupted(Exception):
    """Training stopped by a signal after saving a checkpoint; `status` = 128 + signal."""

    def __init__(self, signum: int):
        super().__init__(
            f"interrupted by signal {signum}; checkpoint saved, rerun the same command to resume"
        )
        self.signum, self.status = int(signum), 128 + int(signum)


def peak_rss_mb() -> float:
    """Peak resident set size of this process in MiB (Linux ru_maxrss is in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _same_file(fd: int, path: str) -> bool:
    """True if `path` still names the open file `fd`."""
    try:
        return os.path.samestat(os.fstat(fd), os.stat(path))
    except FileNotFoundError:
        return False


class RunDirectory:
    """An output folder written in place (module doc); `path` is absolute."""

    def __init__(self, path: str | None):
        if not path:
            raise ValueError("--out_dir is required")
        try:
            self.path = check_output_folder(path)
        except ValueError as e:
            raise ValueError(f"--out_dir: {e}") from None

    @contextlib.contextmanager
    def lock(self):
        """Holds the folder's lock (module doc) while the `with` body runs. The folder is
        created if needed, and removed again if the body left nothing in it; `.lock` is
        removed on release (a killed holder leaves it, unlocked and harmless)."""
        created = not os.path.isdir(self.path)
        os.makedirs(self.path, exist_ok=True)
        lock_file = self.file(".lock")
        while True:
            fd = os.open(lock_file, os.O_RDWR | os.O_CREAT, 0o666)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
                os.close(fd)
                raise ValueError(
                    f"{self.path} is in use by another run (process {holder}); "
                    "wait for it to end or use another --out_dir"
                ) from None
            if _same_file(fd, lock_file):
                break
            os.close(fd)  # locked a file its previous holder had just removed: retry
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
            yield self
        finally:
            if _same_file(fd, lock_file):  # not if someone removed or replaced it meanwhile
                os.remove(lock_file)  # before releasing it: see _same_file
            if created and not os.listdir(self.path):
                os.rmdir(self.path)
            os.close(fd)  # releases the lock

    def file(self, name: str) -> str:
        return os.path.join(self.path, name)

    def check_resume(self, values: dict, defaults: dict, resumable) -> None:
        """ValueError if the folder holds a run whose recorded flags differ from `values`
        outside `resumable` (absent records count as `defaults`)."""
        path = self.file("flags.json")
        if not os.path.exists(path):
            return
        with open(path) as f:
            previous = json.load(f).get("flags", {})
        recorded = lambda k: previous[k] if k in previous else defaults.get(k)
        changed = sorted(
            k
            for k in set(previous) | set(values)
            if k not in resumable and recorded(k) != values.get(k)
        )
        if changed:
            details = "; ".join(f"--{k}: {recorded(k)!r} -> {values.get(k)!r}" for k in changed)
            raise ValueError(
                f"{self.path} holds a run with different training flags "
                f"({details}); use another --out_dir or the original flags to "
                "resume"
            )

    def record_flags(self, command: str, values: dict, summaries=None) -> None:
        """flags.json and, with a `SummaryWriter`, the flags as TensorBoard text."""
        self.write_json("flags.json", {"command": command, "flags": values})
        if summaries is not None:
            summaries.flags(
                "\n".join(f"--{k}={v}" for k, v in values.items()) + f"\n\ncommand: {command}"
            )

    def write_json(self, name: str, data) -> None:
        write_json_atomic(self.file(name), data)

    def write_genome(self, genome: Genome, metadata: dict) -> None:
        genome.save(self.file("genome.json"), metadata=metadata)

    def previous_timing(self) -> dict:
        """The TIMING_KEYS of an existing summary.json ({} if none or unreadable)."""
        try:
            with open(self.file("summary.json")) as f:
                previous = json.load(f)
        except (OSError, ValueError):
            return {}
        return {k: previous[k] for k in TIMING_KEYS if k in previous}

    @staticmethod
    def train(trainer, total: int, progress=None):
        """`trainer.train(total)` resuming from its checkpoint, SIGTERM / SIGINT turned into a
        checkpoint and `Interrupted`; the train result otherwise (any trainer). `progress`:
        called as `progress(done, total)` after every step (`blur_tf.progress.Progress.update`)."""
        with StopRequest() as stop:
            result = trainer.train(total, resume=True, stop=stop, progress=progress)
        if result.interrupted:
            raise Interrupted(result.signum)
        return result

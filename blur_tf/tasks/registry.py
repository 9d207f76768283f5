"""``get_task``: spec string -> :class:`~blur_tf.tasks.base.Task`."""

from __future__ import annotations

from blur_tf.tasks import base
from blur_tf.tasks.images import IMAGE_DATASETS, ImageTask
from blur_tf.tasks.spec import parse_spec
from blur_tf.tasks.toy import PREFIX as TOY_PREFIX
from blur_tf.tasks.toy import TOY_TASKS, ToyTask


def list_tasks() -> tuple[str, ...]:
    """Every task name ``get_task`` knows (image datasets, then toy tasks)."""
    return tuple(IMAGE_DATASETS) + TOY_TASKS


def get_task(spec, *, tfds_manual_dir=None, data_dir=None, download=False) -> base.Task:
    """Builds the task of a spec string ``NAME[:key=value,...]`` (a Task passes through).

    Args:
      spec: e.g. ``"mnist:crop=20,size=10,classes=0-4"`` or ``"toy.xor"``.
      tfds_manual_dir: folder with ``<builder name>/<original files>`` (image tasks); default
        env ``BLUR_TFDS_MANUAL_DIR``.
      data_dir: tfds data folder; default env ``BLUR_TFDS_DATA_DIR``, else
        ``~/tensorflow_datasets``.
      download: let tfds download missing files (default False: raise ValueError instead).

    Raises:
      ValueError: unknown task or option, bad option value, empty class subset, or an image
        dataset that is neither prepared nor available offline.
    """
    if isinstance(spec, base.Task):
        return spec
    parsed = parse_spec(spec)
    if parsed.name.startswith(TOY_PREFIX):
        return ToyTask(parsed)
    if parsed.name in IMAGE_DATASETS:
        return ImageTask(parsed, tfds_manual_dir=tfds_manual_dir, data_dir=data_dir,
                         download=download)
    raise ValueError(f"Unknown task {parsed.name!r}; known tasks: {', '.join(list_tasks())}.")

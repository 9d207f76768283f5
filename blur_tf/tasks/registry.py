"""Spec string -> task: ``get_task`` (a fixed :class:`~blur_tf.tasks.base.Task`) and
``get_source`` (also task sources that draw a new problem per meta-step)."""

from __future__ import annotations

from blur_tf.tasks import base, omniglot_small
from blur_tf.tasks.images import IMAGE_DATASETS, ImageTask
from blur_tf.tasks.spec import TaskSpec, parse_spec
from blur_tf.tasks.toy import PREFIX as TOY_PREFIX
from blur_tf.tasks.toy import TOY_TASKS, ToyTask


def list_tasks() -> tuple[str, ...]:
    """Every task name ``get_task`` knows (image datasets, omniglot_small, then toy tasks)."""
    return tuple(IMAGE_DATASETS) + (omniglot_small.NAME,) + TOY_TASKS


def get_source(spec, *, tfds_manual_dir=None, data_dir=None, download=False) -> base.TaskSource:
    """The task source of a spec string: a task (as :func:`get_task`), or a source that draws a
    new problem every meta-step (``omniglot_small:way=N`` without ``episode=``). What
    meta-training's ``--tasks`` accept; arguments and errors as :func:`get_task`."""
    if isinstance(spec, base.TaskSource):
        return spec
    parsed = parse_spec(spec)
    if parsed.name == omniglot_small.NAME:
        return omniglot_small.make(parsed, tfds_manual_dir=tfds_manual_dir)
    return get_task(parsed, tfds_manual_dir=tfds_manual_dir, data_dir=data_dir, download=download)


def get_task(spec, *, tfds_manual_dir=None, data_dir=None, download=False) -> base.Task:
    """Builds the task of a spec string ``NAME[:key=value,...]`` (a Task passes through).

    Args:
      spec: e.g. ``"mnist:crop=20,size=10,classes=0-4"``, ``"toy.xor"`` or
        ``"omniglot_small:split=test,way=10,episode=3"`` (see :mod:`blur_tf.tasks.omniglot_small`).
      tfds_manual_dir: folder with ``<builder name>/<original files>`` (image tasks); default
        env ``BLUR_TFDS_MANUAL_DIR``.
      data_dir: tfds data folder; default env ``BLUR_TFDS_DATA_DIR``, else
        ``~/tensorflow_datasets``.
      download: let tfds download missing files (default False: raise ValueError instead).

    Raises:
      ValueError: unknown task or option, bad option value, empty class subset, an image
        dataset that is neither prepared nor available offline, or a spec that draws a new
        problem every meta-step (see :func:`get_source`).
    """
    if isinstance(spec, base.Task):
        return spec
    parsed = spec if isinstance(spec, TaskSpec) else parse_spec(spec)
    if parsed.name == omniglot_small.NAME:
        source = omniglot_small.make(parsed, tfds_manual_dir=tfds_manual_dir)
        if not source.fixed:
            raise ValueError(
                f"Task spec {str(parsed)!r} draws a new episode every meta-step (a training "
                "task source, see get_source); where a fixed task is needed (evaluation, "
                "validation) hold one episode fixed with episode=E, e.g. "
                f"'{parsed},episode=0'."
            )
        return source
    if parsed.name.startswith(TOY_PREFIX):
        return ToyTask(parsed)
    if parsed.name in IMAGE_DATASETS:
        return ImageTask(
            parsed, tfds_manual_dir=tfds_manual_dir, data_dir=data_dir, download=download
        )
    raise ValueError(f"Unknown task {parsed.name!r}; known tasks: {', '.join(list_tasks())}.")

"""Task sources that give a different problem each meta-step: task families and N-way episodes.

Both follow the task-source protocol of :mod:`blur_tf.tasks.base`: ``input_size``,
``num_classes`` and ``draw(seed) -> Episode``, where ``draw`` is pure TensorFlow (it works
inside ``tf.function`` / ``tf.while_loop``; the seed picks the problem).

* :class:`TaskFamily` picks one of several fixed tasks per meta-step, with given weights
  (the paper's MNIST family: ``TaskFamily(["mnist", "mnist:classes=0-4",
  "mnist:classes=5-9"])``). All tasks must have the same ``input_size``; the family's
  ``num_classes`` is the largest task's, and each episode reports its own
  ``episode_classes`` (labels stay in ``0..episode_classes-1``).
* :class:`NWayEpisodes` picks ``n`` random classes of one image dataset per meta-step, in
  random order: label ``j`` is the dataset class ``episode.classes[j]``. The pools are
  indexed by class (a class-sorted permutation with per-class offsets and counts), so an
  episode's batch is drawn with a few gathers; evaluation batches use the eval split's
  examples of the same classes. With ``shot``/``query`` each episode keeps only that many
  examples per class (its support / query set). :class:`EpisodeTask` holds one episode fixed
  as an ordinary task (``omniglot_small:...,episode=E``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import tensorflow as tf

from blur_tf.tasks import base
from blur_tf.tasks.images import PoolTask


def _get_task(spec_or_task, **kwargs) -> base.Task:
    from blur_tf.tasks.registry import get_task  # pylint: disable=g-import-not-at-top

    return get_task(spec_or_task, **kwargs)


class TaskFamily(base.TaskSource):
    """A weighted set of tasks; ``draw(seed)`` picks one per meta-step.

    Args:
      tasks: specs or :class:`Task` objects (same ``input_size``).
      weights: non-negative sampling weights (default uniform); normalised.
      **task_kwargs: passed to :func:`get_task` for specs (``tfds_manual_dir``, ...).
    """

    def __init__(self, tasks: Sequence, weights: Sequence[float] | None = None, **task_kwargs):
        if not tasks:
            raise ValueError("TaskFamily needs at least one task.")
        self.tasks = tuple(_get_task(t, **task_kwargs) for t in tasks)
        sizes = sorted({t.input_size for t in self.tasks})
        if len(sizes) > 1:
            raise ValueError(
                "TaskFamily tasks must share input_size; got "
                + ", ".join(f"{t.spec}: {t.input_size}" for t in self.tasks)
            )
        if weights is None:
            weights = [1.0] * len(self.tasks)
        weights = np.asarray(weights, np.float64)
        if weights.shape != (len(self.tasks),) or np.any(weights < 0) or weights.sum() <= 0:
            raise ValueError(
                f"TaskFamily weights must be {len(self.tasks)} non-negative numbers "
                f"with a positive sum, got {weights.tolist()}."
            )
        self.weights = tuple(float(w) for w in weights / weights.sum())
        self.input_size = sizes[0]
        self.num_classes = max(t.num_classes for t in self.tasks)
        self.task_num_classes = tuple(t.num_classes for t in self.tasks)
        self.specs = tuple(t.spec for t in self.tasks)

    def sample_index(self, seed) -> tf.Tensor:
        """The task index (int32 scalar) of the meta-step with this seed."""
        logits = tf.math.log(tf.constant([self.weights], tf.float32))
        return tf.cast(
            tf.random.stateless_categorical(logits, 1, base.as_seed(seed))[0, 0], tf.int32
        )

    def _switch(self, index, stream):
        def sampler(seed, n):
            branches = [(lambda t=t: t._sample(seed, n, stream)) for t in self.tasks]  # pylint: disable=protected-access
            if len(branches) == 1:
                return branches[0]()
            x, y = tf.switch_case(index, branches)
            return tf.ensure_shape(x, [None, self.input_size]), y

        return sampler

    def episode(self, index) -> base.Episode:
        """Task ``index`` (python int or int32 scalar tensor) as an :class:`Episode`."""
        index = tf.convert_to_tensor(index, tf.int32)
        return base.Episode(
            self._switch(index, "train"),
            self._switch(index, "eval"),
            input_size=self.input_size,
            num_classes=self.num_classes,
            episode_classes=tf.gather(tf.constant(self.task_num_classes, tf.int32), index),
            index=index,
        )

    def draw(self, seed) -> base.Episode:
        """The episode of the meta-step with this seed (task chosen by :meth:`sample_index`)."""
        return self.episode(self.sample_index(seed))

    def __repr__(self):
        return f"TaskFamily({list(self.specs)}, weights={list(self.weights)})"


class NWayEpisodes(base.TaskSource):
    """N random classes of one image dataset per meta-step, labels in random order.

    Args:
      dataset: an image task spec or pool task (:class:`~blur_tf.tasks.images.PoolTask`: its
        crop/size/classes/splits define the pools), e.g. ``"mnist:crop=20,size=10"``.
      n: classes per episode (``n <= dataset.num_classes``).
      shot: if given, each episode keeps ``shot`` distinct training examples per class (its
        support set, drawn without replacement per episode); else every training example.
      query: likewise for the held-out examples (the query set).
      spec: the name logs and summaries show (default: the dataset's spec).
      **task_kwargs: passed to :func:`get_task` for a spec.

    ``draw(seed)`` returns an :class:`Episode` whose ``classes`` (int32 ``[n]``) are the
    task's class ids (0-based, after any ``classes=`` remapping) behind labels ``0..n-1``;
    batches draw a label uniformly, then one of that class's examples (of the episode's
    support or query set, if any) uniformly. :meth:`fixed_episode` holds one draw fixed as a
    :class:`~blur_tf.tasks.base.Task`.
    """

    def __init__(
        self,
        dataset,
        n: int,
        *,
        shot: int | None = None,
        query: int | None = None,
        spec: str | None = None,
        **task_kwargs,
    ):
        task = _get_task(dataset, **task_kwargs)
        if not isinstance(task, PoolTask):
            raise ValueError(f"NWayEpisodes needs an image dataset, got {task.spec!r}.")
        if not 1 <= n <= task.num_classes:
            raise ValueError(
                f"NWayEpisodes: n={n} must be in 1..{task.num_classes} "
                f"(the classes of {task.spec!r})."
            )
        self.task = task
        self.n = int(n)
        self.input_size = task.input_size
        self.num_classes = self.n
        self.spec = spec or task.spec
        self.sizes = {"train": shot, "eval": query}
        self._index, self._max_count = {}, {}
        for stream in ("train", "eval"):
            labels = task.pool(stream)[1].numpy()
            counts = np.bincount(labels, minlength=task.num_classes)
            if stream == "eval" and np.any(counts == 0):
                missing = [task.classes[c] for c in np.flatnonzero(counts == 0)]
                raise ValueError(
                    f"NWayEpisodes({task.spec!r}): classes {missing} have no held-out examples."
                )
            size, name = self.sizes[stream], ("shot", "query")[stream == "eval"]
            if size is not None and not 1 <= size <= counts.min():
                raise ValueError(
                    f"NWayEpisodes({self.spec!r}): {name}={size} must be in "
                    f"1..{counts.min()} (the fewest {stream} examples of a class)."
                )
            self._max_count[stream] = int(counts.max())
            order = np.argsort(labels, kind="stable").astype(np.int32)
            offsets = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int32)
            with tf.init_scope():
                self._index[stream] = (
                    tf.constant(order),
                    tf.constant(offsets),
                    tf.constant(counts.astype(np.int32)),
                )

    def sample_classes(self, seed) -> tf.Tensor:
        """``n`` distinct class ids (int32 ``[n]``) in random order: label j -> classes[j]."""
        keys = tf.random.stateless_uniform([self.task.num_classes], base.as_seed(seed))
        return tf.cast(tf.argsort(keys)[: self.n], tf.int32)

    def class_rows(self, stream: str, cls: int) -> np.ndarray:
        """Every pool row of class ``cls`` in ``stream``, in pool order (numpy int32)."""
        order, offsets, counts = (t.numpy() for t in self._index[stream])
        return order[offsets[cls] : offsets[cls] + counts[cls]]

    def sample_members(self, seed, classes, stream: str) -> tf.Tensor | None:
        """The episode's examples of ``stream``: int32 ``[n, size]`` pool rows, ``size``
        distinct examples of class ``classes[j]`` in row j (None when ``size`` is None)."""
        size = self.sizes[stream]
        if size is None:
            return None
        order, offsets, counts = self._index[stream]
        count = tf.gather(counts, classes)
        keys = tf.random.stateless_uniform([self.n, self._max_count[stream]], base.as_seed(seed))
        positions = tf.range(self._max_count[stream])[None, :]
        keys = tf.where(positions < count[:, None], keys, 2.0)  # past a class's end: last
        within = tf.argsort(keys, axis=1)[:, :size]
        return tf.gather(order, tf.gather(offsets, classes)[:, None] + within)

    def _sampler(self, classes, members, stream):
        order, offsets, counts = self._index[stream]

        def sampler(seed, n):
            s = base.split_seed(seed, 2)
            labels = tf.random.stateless_uniform([n], s[0], 0, self.n, dtype=tf.int32)
            u = tf.random.stateless_uniform([n], s[1])
            if members is None:
                cls = tf.gather(classes, labels)
                count = tf.gather(counts, cls)
                within = tf.minimum(tf.cast(u * tf.cast(count, tf.float32), tf.int32), count - 1)
                rows = tf.gather(order, tf.gather(offsets, cls) + within)
            else:
                size = self.sizes[stream]
                within = tf.minimum(tf.cast(u * size, tf.int32), size - 1)
                rows = tf.gather_nd(members, tf.stack([labels, within], axis=1))
            x, _ = self.task.gather(stream, rows)
            return x, labels

        return sampler

    def episode(self, classes, support=None, query=None) -> base.Episode:
        """The episode with these class ids (int32 ``[n]``) behind labels ``0..n-1`` and, if
        given, these support / query pool rows (int32 ``[n, shot]`` / ``[n, query]``)."""
        classes = tf.convert_to_tensor(classes, tf.int32)
        return base.Episode(
            self._sampler(classes, support, "train"),
            self._sampler(classes, query, "eval"),
            input_size=self.input_size,
            num_classes=self.n,
            episode_classes=self.n,
            classes=classes,
        )

    def draw_parts(self, seed):
        """(classes, support, query) of the episode of ``seed``: :meth:`sample_classes`, then
        :meth:`sample_members` of both streams."""
        classes = self.sample_classes(seed)
        return (
            classes,
            self.sample_members(base.fold(seed, 1), classes, "train"),
            self.sample_members(base.fold(seed, 2), classes, "eval"),
        )

    def draw(self, seed) -> base.Episode:
        """The episode of the meta-step with this seed (:meth:`draw_parts`)."""
        return self.episode(*self.draw_parts(seed))

    def fixed_episode(self, index: int) -> EpisodeTask:
        """Episode number ``index`` (the draw of seed ``[FIXED_EPISODE_SEED, index]``) as a task."""
        return EpisodeTask(self, index)

    def __repr__(self):
        return f"NWayEpisodes({self.spec!r}, n={self.n})"


FIXED_EPISODE_SEED = 0x6570  # "ep": the first seed word of NWayEpisodes.fixed_episode


class EpisodeTask(base.Task):
    """One N-way episode of an :class:`NWayEpisodes`, held fixed: an ordinary task for
    evaluation and validation. Training batches come from the episode's support set (or all
    training examples of its classes), ``eval_set`` is its query set (or all held-out examples
    of its classes), class by class in label order.

    Attributes (besides Task's): ``index``, ``classes`` (the source's class ids behind labels
    ``0..n-1``), ``support`` / ``query`` (int32 numpy ``[n, k]`` pool rows, or None).
    """

    def __init__(self, source: NWayEpisodes, index: int, spec: str | None = None):
        if not isinstance(index, (int, np.integer)) or index < 0:
            raise ValueError(f"fixed_episode: index must be an int >= 0, got {index!r}.")
        self.source, self.index = source, int(index)
        self.spec = spec or f"{source.spec} episode {self.index}"
        self.name = self.spec.split(":")[0]
        self.input_size, self.num_classes = source.input_size, source.n
        with tf.init_scope():
            classes, support, query = source.draw_parts(
                tf.constant([FIXED_EPISODE_SEED, self.index], tf.int64)
            )
            self._episode = source.episode(classes, support, query)
            self.classes = classes.numpy()
            self.support = None if support is None else support.numpy()
            self.query = None if query is None else query.numpy()
            rows = (
                list(self.query)
                if self.query is not None
                else [source.class_rows("eval", c) for c in self.classes]
            )
            self._eval_rows = tf.constant(np.concatenate(rows).astype(np.int32))
            self._eval_labels = tf.constant(
                np.repeat(np.arange(self.num_classes), [len(r) for r in rows]).astype(np.int32)
            )

    def _sample(self, seed, n, stream):
        return self._episode.sampler(stream)(seed, n)

    def eval_set(self, max_examples=None):
        """The episode's query set (x float32 ``[N, input_size]``, y int32 ``[N]``)."""
        rows, labels = self._eval_rows, self._eval_labels
        if max_examples is not None:
            rows, labels = rows[:max_examples], labels[:max_examples]
        return self.source.task.gather("eval", rows)[0], labels

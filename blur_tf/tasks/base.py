"""The task interface the inner and outer loops see, and seed helpers.

Every sampler is a *pure* function of a stateless-RNG seed (an int32/int64 tensor of shape
``[2]``): the same seed always gives the same batch, and sampling is plain TensorFlow, so
it runs inside ``tf.function`` / ``tf.while_loop`` with no Python per step.

Streams: ``sample_train`` and ``sample_eval`` fold distinct constants into the seed, so
the same seed passed to both gives unrelated draws (for toy tasks this is what keeps the
evaluation points disjoint from the training stream; image tasks additionally draw
evaluation examples from a different split).

A *task source* (:class:`TaskSource`, the declared seam meta-training draws from) has
``input_size``, ``num_classes``, ``draw(seed)`` and ``fixed``: a :class:`Task` (fixed: every
draw is the task itself), a :class:`~blur_tf.tasks.families.TaskFamily` or
:class:`~blur_tf.tasks.families.NWayEpisodes` (a new problem per draw). ``draw(seed)``
returns an :class:`Episode`, the concrete problem of one meta-step, with the same sampling
methods as a task.
"""

from __future__ import annotations

import abc
from collections.abc import Callable

import tensorflow as tf

# Constants folded into a seed to separate the train and eval streams.
TRAIN_STREAM = 0x7472  # "tr"
EVAL_STREAM = 0x6576  # "ev"
EVAL_SET_SEED = (20210711, 1)  # fixed seed of Task.eval_set for generated (toy) tasks
EVAL_SET_SIZE = 10000


def as_seed(seed) -> tf.Tensor:
    """Converts ``seed`` (python pair, numpy or tensor of shape [2]) to an int32/int64 tensor."""
    seed = tf.convert_to_tensor(seed)
    if seed.dtype not in (tf.int32, tf.int64):
        seed = tf.cast(seed, tf.int64)
    if seed.shape.rank is not None and seed.shape != [2]:
        raise ValueError(f"A seed must have shape [2], got shape {seed.shape}.")
    return seed


def fold(seed, data: int) -> tf.Tensor:
    """A new seed derived from ``seed`` and the integer ``data`` (stateless)."""
    return tf.random.experimental.stateless_fold_in(as_seed(seed), data)


def split_seed(seed, num: int) -> tf.Tensor:
    """``num`` independent seeds ``[num, 2]`` derived from ``seed``."""
    return tf.random.experimental.stateless_split(as_seed(seed), num)


# A sampler maps (seed, n) -> (x float32 [n, input_size], y int32 [n]).
Sampler = Callable[[tf.Tensor, "tf.Tensor | int"], "tuple[tf.Tensor, tf.Tensor]"]


def _batches(sampler: Sampler, seed, num_steps, batch_size, input_size: int):
    x, y = sampler(seed, num_steps * batch_size)
    return (
        tf.reshape(x, [num_steps, batch_size, input_size]),
        tf.reshape(y, [num_steps, batch_size]),
    )


class Episode:
    """The concrete problem of one meta-step (one task of a family, one N-way draw).

    Attributes:
      input_size: flattened input size.
      num_classes: python int, the number of output units the problem needs (a family's
        maximum); ``episode_classes`` (int32 scalar tensor) is this episode's own count.
      index: int32 scalar tensor, the family task index (0 for single tasks and N-way).
      classes: int32 ``[n]`` tensor of the dataset's class ids behind labels ``0..n-1``
        (N-way episodes), else None.
    """

    def __init__(
        self,
        train_sampler: Sampler,
        eval_sampler: Sampler,
        *,
        input_size: int,
        num_classes: int,
        episode_classes,
        index=0,
        classes=None,
    ):
        self._train = train_sampler
        self._eval = eval_sampler
        self.input_size = input_size
        self.num_classes = num_classes
        self.episode_classes = tf.convert_to_tensor(episode_classes, tf.int32)
        self.index = tf.convert_to_tensor(index, tf.int32)
        self.classes = classes

    def sampler(self, stream: str) -> Sampler:
        """The raw sampler ``(seed, n) -> (x, y)`` of ``"train"`` or ``"eval"`` (no stream fold)."""
        return self._train if stream == "train" else self._eval

    def sample_train(self, seed, batch_size):
        """Training batch: x float32 ``[B, input_size]``, y int32 ``[B]``."""
        return self._train(fold(seed, TRAIN_STREAM), batch_size)

    def sample_eval(self, seed, batch_size):
        """Held-out batch: x float32 ``[B, input_size]``, y int32 ``[B]``."""
        return self._eval(fold(seed, EVAL_STREAM), batch_size)

    def train_batches(self, seed, num_steps, batch_size):
        """``num_steps`` fresh training batches: x ``[T, B, input_size]``, y ``[T, B]``."""
        return _batches(
            self._train, fold(seed, TRAIN_STREAM), num_steps, batch_size, self.input_size
        )


class TaskSource(abc.ABC):
    """What meta-training draws its inner problems from (module doc).

    ``fixed``: every draw is the same problem (a task), so a network may keep it across
    meta-steps; False for families, whose every draw is a new problem.
    """

    input_size: int
    num_classes: int
    fixed: bool = False

    @abc.abstractmethod
    def draw(self, seed) -> Episode:
        """The concrete problem of the meta-step of ``seed`` (pure TensorFlow, in-graph)."""


class Task(TaskSource):
    """One fixed inner problem: a labelled input distribution with a held-out counterpart.

    Attributes:
      spec: canonical spec string (``get_task(task.spec)`` rebuilds the task).
      name: the task name (spec without options).
      input_size: flattened input size (2 for toy tasks, side*side for images).
      num_classes: labels are int32 class ids ``0..num_classes-1``.
    """

    spec: str
    name: str
    input_size: int
    num_classes: int
    fixed = True

    @abc.abstractmethod
    def _sample(self, seed: tf.Tensor, n, stream: str):
        """(x, y) of ``n`` examples from stream ``"train"`` or ``"eval"``."""

    @abc.abstractmethod
    def eval_set(self, max_examples: int | None = None):
        """A fixed evaluation set (x float32 ``[N, input_size]``, y int32 ``[N]``)."""

    def _train_sampler(self, seed, n):
        return self._sample(seed, n, "train")

    def _eval_sampler(self, seed, n):
        return self._sample(seed, n, "eval")

    def sample_train(self, seed, batch_size):
        """Training batch: x float32 ``[B, input_size]``, y int32 ``[B]``. Pure in ``seed``."""
        return self._sample(fold(seed, TRAIN_STREAM), batch_size, "train")

    def sample_eval(self, seed, batch_size):
        """Held-out batch (test split for images, a disjoint seed stream for toy tasks)."""
        return self._sample(fold(seed, EVAL_STREAM), batch_size, "eval")

    def train_batches(self, seed, num_steps, batch_size):
        """``num_steps`` fresh training batches: x ``[T, B, input_size]``, y ``[T, B]``."""
        return _batches(
            self._train_sampler, fold(seed, TRAIN_STREAM), num_steps, batch_size, self.input_size
        )

    def draw(self, seed=None) -> Episode:
        """This task as an :class:`Episode` (``seed`` is ignored: a task is one problem)."""
        del seed
        return Episode(
            self._train_sampler,
            self._eval_sampler,
            input_size=self.input_size,
            num_classes=self.num_classes,
            episode_classes=self.num_classes,
        )

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({self.spec!r}, input_size={self.input_size}, "
            f"num_classes={self.num_classes})"
        )

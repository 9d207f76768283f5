"""What the inner loop learns: toy 2-D tasks, tfds image datasets, families, N-way episodes.

    task = get_task("mnist:crop=20,size=10,classes=0-4")
    x, y = task.sample_train(seed, 128)            # seed: int tensor [2]; pure, in-graph
    xs, ys = task.train_batches(seed, 50, 128)     # [T, B, n], [T, B]
    family = TaskFamily(["mnist", "mnist:classes=0-4", "mnist:classes=5-9"])
    episode = family.draw(seed)                    # same sampling methods as a task
    source = get_source("omniglot_small:way=10,shot=5")   # a new 10-way episode per draw
    test = get_task("omniglot_small:split=test,way=10,shot=5,episode=0")   # one, fixed

See spec.py (spec strings), toy.py (toy task table), images.py (datasets, offline
preparation, caching), omniglot_small.py (Omniglot from the two small zips), families.py
(TaskFamily, NWayEpisodes, EpisodeTask), base.py (interface).
"""

from blur_tf.tasks.base import Episode, Task, TaskSource
from blur_tf.tasks.families import EpisodeTask, NWayEpisodes, TaskFamily
from blur_tf.tasks.images import (
    IMAGE_DATASETS,
    ImageTask,
    PoolTask,
    clear_cache,
    prepare_dataset,
    preprocess_images,
)
from blur_tf.tasks.registry import get_source, get_task, list_tasks
from blur_tf.tasks.spec import TaskSpec, parse_classes, parse_spec
from blur_tf.tasks.toy import TOY_TASKS, ToyTask

__all__ = [
    "Episode",
    "Task",
    "TaskSource",
    "TaskFamily",
    "NWayEpisodes",
    "EpisodeTask",
    "ImageTask",
    "PoolTask",
    "ToyTask",
    "TaskSpec",
    "IMAGE_DATASETS",
    "TOY_TASKS",
    "get_task",
    "get_source",
    "list_tasks",
    "parse_spec",
    "parse_classes",
    "prepare_dataset",
    "preprocess_images",
    "clear_cache",
]

"""What the inner loop learns: toy 2-D tasks, tfds image datasets, families, N-way episodes.

    task = get_task("mnist:crop=20,size=10,classes=0-4")
    x, y = task.sample_train(seed, 128)            # seed: int tensor [2]; pure, in-graph
    xs, ys = task.train_batches(seed, 50, 128)     # [T, B, n], [T, B]
    family = TaskFamily(["mnist", "mnist:classes=0-4", "mnist:classes=5-9"])
    episode = family.draw(seed)                    # same sampling methods as a task

See spec.py (spec strings), toy.py (toy task table), images.py (datasets, offline
preparation, caching), families.py (TaskFamily, NWayEpisodes), base.py (interface).
"""

from blur_tf.tasks.base import Episode, Task, TaskSource
from blur_tf.tasks.families import NWayEpisodes, TaskFamily
from blur_tf.tasks.images import (IMAGE_DATASETS, ImageTask, clear_cache, prepare_dataset,
                                  preprocess_images)
from blur_tf.tasks.registry import get_task, list_tasks
from blur_tf.tasks.spec import TaskSpec, parse_classes, parse_spec
from blur_tf.tasks.toy import TOY_TASKS, ToyTask

__all__ = [
    "Episode", "Task", "TaskSource", "TaskFamily", "NWayEpisodes", "ImageTask", "ToyTask", "TaskSpec",
    "IMAGE_DATASETS", "TOY_TASKS", "get_task", "list_tasks", "parse_spec", "parse_classes",
    "prepare_dataset", "preprocess_images", "clear_cache",
]

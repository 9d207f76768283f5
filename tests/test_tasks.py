"""Tests for blur_tf.tasks: specs, toy tasks, tfds image tasks, families, N-way episodes.

Image tests prepare real MNIST and Fashion-MNIST from the manual folder (env
BLUR_TFDS_MANUAL_DIR, default <repo>/../shared/data) into a session temp data_dir, once per
session; they are skipped, naming the missing files, when the originals are not there.
"""

import math
import os
import pathlib
import time

import numpy as np
import pytest
import tensorflow as tf

from blur_tf import tasks
from blur_tf.tasks import images as images_lib

REPO = pathlib.Path(__file__).resolve().parent.parent
MNIST_FILES = (
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
)
SEED = tf.constant([3, 7], tf.int32)


def _manual_dir() -> pathlib.Path:
    return pathlib.Path(os.environ.get("BLUR_TFDS_MANUAL_DIR") or REPO.parent / "shared" / "data")


@pytest.fixture(scope="session")
def image_data(tmp_path_factory):
    """Prepares mnist and fashion_mnist (once) into a temp data_dir; returns get_task kwargs."""
    manual = _manual_dir()
    missing = [
        str(manual / d / f)
        for d in ("mnist", "fashion_mnist")
        for f in MNIST_FILES
        if not (manual / d / f).is_file()
    ]
    if missing:
        pytest.skip(
            "MNIST/Fashion-MNIST originals missing (set BLUR_TFDS_MANUAL_DIR): "
            + ", ".join(missing)
        )
    kwargs = dict(tfds_manual_dir=str(manual), data_dir=str(tmp_path_factory.mktemp("tfds")))
    for name in ("mnist", "fashion_mnist"):
        tasks.get_task(name, **kwargs)
    return kwargs


def _rows(x) -> list[bytes]:
    return [row.tobytes() for row in np.asarray(x)]


# --------------------------------------------------------------------------- specs
def test_parse_spec_examples():
    assert tasks.parse_spec("mnist") == tasks.TaskSpec("mnist")
    spec = tasks.parse_spec("mnist:crop=20,size=10,classes=5-9")
    assert spec.name == "mnist"
    assert spec.option_dict == {"crop": "20", "size": "10", "classes": "5-9"}
    assert str(spec) == "mnist:crop=20,size=10,classes=5-9"
    spec = tasks.parse_spec("mnist:classes=1,3,7,size=10")
    assert spec.option_dict == {"classes": "1,3,7", "size": "10"}
    assert tasks.parse_spec("emnist/letters:size=14").name == "emnist/letters"
    assert tasks.parse_spec("mnist:split=train[:50%]").option_dict == {"split": "train[:50%]"}
    assert tasks.parse_spec("mnist:classes=").option_dict == {"classes": ""}


@pytest.mark.parametrize("bad", ["", ":size=3", "mnist:size=1,size=2", "mnist:20", "mnist:"])
def test_parse_spec_errors(bad):
    with pytest.raises(ValueError):
        tasks.parse_spec(bad)


def test_parse_classes():
    assert tasks.parse_classes("0-4") == (0, 1, 2, 3, 4)
    assert tasks.parse_classes("7,1,3") == (1, 3, 7)
    assert tasks.parse_classes("0-2,7,2") == (0, 1, 2, 7)
    for bad in ("", " ", "4-2", "a", "1-"):
        with pytest.raises(ValueError):
            tasks.parse_classes(bad)


def test_unknown_task_lists_known_names():
    with pytest.raises(ValueError, match="Unknown task 'cifar'.*mnist.*toy.xor"):
        tasks.get_task("cifar")
    with pytest.raises(ValueError, match="toy.blobs"):
        tasks.get_task("toy.nope")


def test_unknown_keys():
    with pytest.raises(ValueError, match="unknown option.*foo.*accepts: crop, size"):
        tasks.get_task("mnist:foo=1,size=3")
    with pytest.raises(ValueError, match="unknown option.*seed.*accepts: \\(none\\)"):
        tasks.get_task("toy.xor:seed=1")
    with pytest.raises(ValueError, match="not an integer"):
        tasks.get_task("toy.circles:seed=abc")


# --------------------------------------------------------------------------- toy tasks
HAND_PICKED = {
    # task: [(point, expected label)]
    "toy.and": [((0.5, 0.5), 1), ((-0.5, 0.5), 0), ((0.5, -0.5), 0), ((-0.5, -0.5), 0)],
    "toy.or": [((0.5, 0.5), 1), ((-0.5, 0.5), 1), ((0.5, -0.5), 1), ((-0.5, -0.5), 0)],
    "toy.xor": [((0.5, 0.5), 1), ((-0.5, 0.5), 0), ((0.5, -0.5), 0), ((-0.5, -0.5), 1)],
    "toy.nxor": [((0.5, 0.5), 0), ((-0.5, 0.5), 1), ((0.5, -0.5), 1), ((-0.5, -0.5), 0)],
    "toy.qand": [((0.5, 0.5), 0), ((-0.5, 0.5), 1), ((0.5, -0.5), 0), ((-0.5, -0.5), 0)],
    "toy.square": [
        ((0.0, 0.0), 1),
        ((0.15, -0.15), 1),
        ((0.25, 0.0), 0),
        ((0.1, 0.3), 0),
        ((0.9, 0.9), 0),
    ],
    "toy.cross": [
        ((0.0, 0.9), 1),
        ((0.9, 0.2), 1),
        ((-0.25, -0.8), 1),
        ((0.5, 0.5), 0),
        ((-0.9, 0.4), 0),
    ],
    "toy.triangle": [
        ((0.0, 0.0), 1),
        ((0.0, 0.9), 1),
        ((0.9, -0.4), 1),
        ((0.0, -0.6), 0),
        ((0.8, 0.8), 0),
        ((-0.8, 0.8), 0),
    ],
    "toy.angular_slice": [
        ((0.9, 0.0), 1),
        ((0.5, 0.45), 1),
        ((0.5, -0.45), 1),
        ((0.5, 0.6), 0),
        ((-0.5, 0.0), 0),
        ((0.0, -0.5), 0),
    ],
    # moons: sklearn coordinates (0, 1), (-1, 0) lie on moon 0 and (1, -0.5), (2, 0.5) on
    # moon 1; mapped by x0 <- (x0 + 1) 2/3 - 1, x1 <- (x1 + 0.5) 2/1.5 - 1.
    "toy.moons": [((-1 / 3, 1.0), 0), ((-1.0, -1 / 3), 0), ((1 / 3, -1.0), 1), ((1.0, 1 / 3), 1)],
    "toy.concentric_circles": [
        ((0.0, 0.0), 0),
        ((0.25, 0.0), 0),
        ((0.0, 0.5), 1),
        ((-0.75, 0.0), 2),
        ((0.7, 0.7), 3),
        ((0.0, -1.2), 3),
    ],
}


@pytest.mark.parametrize("name", sorted(HAND_PICKED))
def test_toy_labels_on_hand_picked_points(name):
    points, expected = zip(*HAND_PICKED[name])
    labels = tasks.get_task(name).label_fn(np.array(points, np.float32))
    assert labels.dtype == tf.int32
    np.testing.assert_array_equal(labels.numpy(), expected)


def test_toy_parametric_labels():
    circle = tasks.get_task("toy.circles:seed=4")
    c, r = circle.params["center"].numpy(), float(circle.params["radius"])
    assert 0.2 <= r < 0.7 and np.all(np.abs(c) <= 1)
    points = np.array([c, c + [r - 0.02, 0], c + [0, r + 0.02], c - [r + 0.1, 0]], np.float32)
    np.testing.assert_array_equal(circle.label_fn(points).numpy(), [1, 1, 0, 0])

    rx = tasks.get_task("toy.random_xor:seed=2")
    proj, bias = rx.params["proj"].numpy(), rx.params["bias"].numpy()
    z = np.array([[1, 1], [1, -1], [-1, 1], [-1, -1]], np.float32) * 0.3
    points = (z - bias) @ np.linalg.inv(proj)  # so that points @ proj + bias == z
    np.testing.assert_array_equal(rx.label_fn(points.astype(np.float32)).numpy(), [1, 0, 0, 1])

    blobs = tasks.get_task("toy.blobs")
    centers = blobs.params["centers"].numpy()
    assert centers.shape == (5, 2)
    np.testing.assert_array_equal(blobs.label_fn(centers).numpy(), np.arange(5))
    np.testing.assert_array_equal(blobs.label_fn(centers + 1e-3).numpy(), np.arange(5))


def test_toy_task_seed_fixes_parameters():
    a, b = tasks.get_task("toy.circles:seed=1"), tasks.get_task("toy.circles:seed=1")
    c = tasks.get_task("toy.circles:seed=2")
    np.testing.assert_array_equal(a.params["center"], b.params["center"])
    assert not np.array_equal(a.params["center"], c.params["center"])
    assert tasks.get_task("toy.circles").spec == "toy.circles"


@pytest.mark.parametrize("name", tasks.TOY_TASKS)
def test_toy_samples_match_definition(name):
    task = tasks.get_task(name)
    x, y = task.sample_train(SEED, 4000)
    assert x.shape == (4000, 2) and x.dtype == tf.float32 and y.dtype == tf.int32
    assert task.input_size == 2
    assert np.all(np.abs(x.numpy()) < 1.6)
    counts = np.bincount(y.numpy(), minlength=task.num_classes)
    assert counts.size == task.num_classes and np.all(counts > 0)
    agreement = np.mean(task.label_fn(x).numpy() == y.numpy())
    generative = name in ("toy.moons", "toy.concentric_circles", "toy.blobs")
    assert agreement >= (0.97 if generative else 1.0)


def test_toy_reproducible_and_streams_disjoint():
    task = tasks.get_task("toy.moons")
    x1, y1 = task.sample_train(SEED, 64)
    x2, y2 = task.sample_train(tf.constant([3, 7], tf.int64), 64)
    np.testing.assert_array_equal(x1, x2)
    np.testing.assert_array_equal(y1, y2)
    x3, _ = task.sample_train(tf.constant([3, 8]), 64)
    xe, _ = task.sample_eval(SEED, 64)
    assert not np.allclose(x1, x3) and not np.allclose(x1, xe)
    ex, ey = task.eval_set()
    assert ex.shape == (10000, 2) and ey.shape == (10000,)
    np.testing.assert_array_equal(task.eval_set(100)[0], ex[:100])
    assert not set(_rows(ex)) & set(
        _rows(task.train_batches(SEED, 10, 100)[0].numpy().reshape(-1, 2))
    )


def test_toy_sampling_inside_compiled_while_loop():
    task = tasks.get_task("toy.xor")

    @tf.function(jit_compile=False)
    def run(seed, steps):
        def body(i, total):
            x, y = task.sample_train(tf.random.experimental.stateless_fold_in(seed, i), 32)
            return i + 1, total + tf.reduce_sum(tf.cast(y, tf.float32))

        return tf.while_loop(lambda i, _: i < steps, body, (tf.constant(0), tf.constant(0.0)))[1]

    expected = sum(
        float(
            tf.reduce_sum(
                tf.cast(
                    task.sample_train(tf.random.experimental.stateless_fold_in(SEED, i), 32)[1],
                    tf.float32,
                )
            )
        )
        for i in range(5)
    )
    assert float(run(SEED, tf.constant(5))) == expected
    assert run.experimental_get_tracing_count() == 1
    run(SEED, tf.constant(7))
    assert run.experimental_get_tracing_count() == 1


def test_train_batches_shapes_and_fresh_steps():
    task = tasks.get_task("toy.blobs")
    xs, ys = task.train_batches(SEED, 6, 16)
    assert xs.shape == (6, 16, 2) and ys.shape == (6, 16)
    assert not np.allclose(xs[0], xs[1])
    xs2, _ = tf.function(lambda s, t: task.train_batches(s, t, 16))(SEED, tf.constant(6))
    np.testing.assert_array_equal(xs, xs2)
    episode_xs, _ = task.draw(SEED).train_batches(SEED, 6, 16)
    np.testing.assert_array_equal(xs, episode_xs)


# --------------------------------------------------------------------------- preprocessing
def test_preprocess_crop_and_resize_pattern():
    img = np.zeros((2, 28, 28), np.uint8)
    img[0, 4, 4] = 255  # the top-left pixel of the central 20x20 crop
    img[1, 23, 23] = 255  # its bottom-right pixel
    out = tasks.preprocess_images(img, crop=20).numpy()
    assert out.shape == (2, 400) and out.dtype == np.float32
    assert out[0, 0] == 1.0 and out[0].sum() == 1.0
    assert out[1, 399] == 1.0 and out[1].sum() == 1.0

    constant = np.full((1, 28, 28), 128, np.uint8)
    np.testing.assert_allclose(
        tasks.preprocess_images(constant, crop=20, size=10), np.full((1, 100), 128 / 255), rtol=1e-6
    )

    # Left half of the crop bright: 2x antialiased bilinear spans 4 input pixels, so output
    # columns 0-3 stay exactly 1 and 6-9 exactly 0; the values never increase left to right.
    half = np.zeros((1, 28, 28), np.uint8)
    half[:, :, :14] = 255
    out = tasks.preprocess_images(half, crop=20, size=10).numpy().reshape(10, 10)
    np.testing.assert_allclose(out[:, :4], 1.0, atol=1e-6)
    np.testing.assert_allclose(out[:, 6:], 0.0, atol=1e-6)
    assert np.all(np.diff(out, axis=1) <= 1e-6) and 0 < out[0, 4] < 1
    expected = tf.image.resize(
        tf.constant(half[:, 4:24, 4:24, None] / 255.0, tf.float32), [10, 10], antialias=True
    )
    np.testing.assert_allclose(out, expected[0, ..., 0], atol=1e-6)


# --------------------------------------------------------------------------- image tasks
def test_image_task_shapes_and_ranges(image_data):
    for spec, size in [
        ("mnist", 784),
        ("mnist:crop=20,size=10", 100),
        ("fashion_mnist:size=14", 196),
    ]:
        task = tasks.get_task(spec, **image_data)
        assert task.input_size == size and task.num_classes == 10
        assert task.num_train == 60000 and task.num_eval == 10000
        x, y = task.sample_train(SEED, 128)
        assert x.shape == (128, size) and x.dtype == tf.float32 and y.dtype == tf.int32
        assert 0.0 <= float(tf.reduce_min(x)) and float(tf.reduce_max(x)) <= 1.0
        assert float(tf.reduce_max(x)) > 0.5
        assert 0 <= int(tf.reduce_min(y)) and int(tf.reduce_max(y)) <= 9


def test_image_sizes_are_views_of_the_same_data(image_data):
    small = tasks.get_task("mnist:crop=20,size=10", **image_data)
    full = tasks.get_task("mnist", **image_data)
    xs, ys = small.sample_train(SEED, 8)
    xf, yf = full.sample_train(SEED, 8)
    np.testing.assert_array_equal(ys, yf)  # same indices, same examples
    expected = tasks.preprocess_images(
        np.round(xf.numpy() * 255).astype(np.uint8).reshape(8, 28, 28), crop=20, size=10
    )
    np.testing.assert_allclose(xs, expected, atol=1e-6)


def test_mnist_and_fashion_mnist_differ(image_data):
    mnist = tasks.get_task("mnist", **image_data)
    fashion = tasks.get_task("fashion_mnist", **image_data)
    xm, _ = mnist.eval_set()
    xf, _ = fashion.eval_set()
    # Mean pixel: MNIST ~0.13, Fashion-MNIST ~0.29 (guards against tfds' extraction cache
    # handing MNIST's files to Fashion-MNIST).
    assert 0.12 < float(tf.reduce_mean(xm)) < 0.14
    assert 0.27 < float(tf.reduce_mean(xf)) < 0.31
    assert (
        float(
            tf.reduce_mean(
                tf.abs(mnist.sample_train(SEED, 256)[0] - fashion.sample_train(SEED, 256)[0])
            )
        )
        > 0.1
    )
    downloads = pathlib.Path(image_data["data_dir"], "downloads")
    assert {"mnist", "fashion_mnist"} <= {p.name for p in downloads.iterdir()}


def test_class_subsets_and_remapping(image_data):
    full = tasks.get_task("mnist", **image_data)
    fx, fy = (t.numpy() for t in full.eval_set())
    for spec, classes in [
        ("mnist:classes=5-9", (5, 6, 7, 8, 9)),
        ("mnist:classes=7,1,3", (1, 3, 7)),
        ("mnist:size=28,classes=0-2,9", (0, 1, 2, 9)),
    ]:
        task = tasks.get_task(spec, **image_data)
        assert task.classes == classes and task.num_classes == len(classes)
        x, y = (t.numpy() for t in task.eval_set())
        keep = np.isin(fy, classes)
        np.testing.assert_array_equal(x, fx[keep])
        np.testing.assert_array_equal(np.array(classes)[y], fy[keep])
        _, ty = task.sample_train(SEED, 500)
        assert set(np.unique(ty.numpy())) == set(range(len(classes)))


def test_train_eval_disjoint_and_reproducible(image_data):
    task = tasks.get_task("mnist:crop=20,size=10", **image_data)
    train_x, _ = task.pool("train")
    eval_x, eval_y = task.eval_set()
    train_rows, eval_rows = set(_rows(train_x)), set(_rows(eval_x))
    xe, ye = task.sample_eval(SEED, 200)
    assert set(_rows(xe)) <= eval_rows
    xt, _ = task.sample_train(SEED, 200)
    assert set(_rows(xt)) <= train_rows
    # The splits are the tfds train and test splits: (almost) no test image is in train.
    assert len(train_rows & eval_rows) < 0.01 * len(eval_rows)
    np.testing.assert_array_equal(task.sample_train(SEED, 64)[0], task.sample_train(SEED, 64)[0])
    assert not np.array_equal(
        task.sample_train(SEED, 64)[0], task.sample_train(tf.constant([3, 8]), 64)[0]
    )
    assert eval_x.shape == (10000, 100) and task.eval_set(50)[1].shape == (50,)
    with pytest.raises(ValueError, match="held-out"):
        tasks.get_task("mnist:split=test", **image_data)
    half = tasks.get_task("mnist:split=train[:50%],eval_split=train[50%:]", **image_data)
    assert half.num_train == 30000 and half.num_eval == 30000


def test_degenerate_image_tasks_are_refused(image_data):
    for spec in ("mnist:classes=5-5", "mnist:classes=3,3"):
        with pytest.raises(
            ValueError,
            match=r"is one class; a classification task needs at "
            "least two",
        ):
            tasks.get_task(spec, **image_data)
    # a small split holds a few classes: not a few-class task in disguise
    _, labels = images_lib.load_raw_pool("mnist", "train[:3]", **image_data)
    held = sorted(set(int(y) for y in labels))
    lacking = sorted(set(range(10)) - set(held))
    with pytest.raises(ValueError) as info:
        tasks.get_task("mnist:split=train[:3]", **image_data)
    assert (
        f"classes {lacking} have no examples in split 'train[:3]'; use a split that holds "
        "every class of the task" in str(info.value)
    ), str(info.value)
    if len(held) >= 2:  # naming the classes it holds is the way to such a task
        chosen = tasks.get_task(
            f"mnist:split=train[:3],classes={','.join(map(str, held))}", **image_data
        )
        assert chosen.num_classes == len(held) and chosen.num_train == 3


def test_image_sampling_in_compiled_loop(image_data):
    task = tasks.get_task("mnist:crop=20,size=10", **image_data)

    @tf.function
    def run(seed, steps):
        xs, ys = task.train_batches(seed, steps, 32)
        return tf.reduce_sum(xs, axis=[1, 2]), ys

    sums, ys = run(SEED, tf.constant(4))
    xs_eager, ys_eager = task.train_batches(SEED, 4, 32)
    assert sums.shape == (4,)
    np.testing.assert_array_equal(ys, ys_eager)
    np.testing.assert_allclose(sums, tf.reduce_sum(xs_eager, axis=[1, 2]), rtol=1e-5)


# --------------------------------------------------------------------------- families
def test_task_family_frequencies():
    family = tasks.TaskFamily(["toy.xor", "toy.and", "toy.blobs"], weights=[2, 1, 1])
    assert family.num_classes == 5 and family.task_num_classes == (2, 2, 5)
    n = 4000
    seeds = tf.stack([tf.range(n), tf.fill([n], 11)], axis=1)
    idx = tf.function(lambda s: tf.map_fn(family.sample_index, s, fn_output_signature=tf.int32))(
        seeds
    )
    counts = np.bincount(idx.numpy(), minlength=3)
    expected = n * np.array(family.weights)
    chi2 = float(np.sum((counts - expected) ** 2 / expected))
    assert chi2 < 13.8, (counts, expected)  # p = 0.001 at 2 degrees of freedom


def test_task_family_episodes_in_graph():
    family = tasks.TaskFamily(["toy.xor", "toy.blobs"])

    @tf.function
    def draw(seed):
        episode = family.draw(seed)
        x, y = episode.sample_train(seed, 64)
        return episode.index, episode.episode_classes, x, y

    seen = set()
    for i in range(12):
        seed = tf.constant([i, 5])
        index, classes, x, y = draw(seed)
        seen.add(int(index))
        assert int(classes) == family.task_num_classes[int(index)]
        assert x.shape == (64, 2) and int(tf.reduce_max(y)) < int(classes)
        expected_x, _ = family.tasks[int(index)].sample_train(seed, 64)
        np.testing.assert_array_equal(x, expected_x)
    assert seen == {0, 1}


def test_task_family_errors():
    with pytest.raises(ValueError, match="input_size"):
        tasks.TaskFamily([tasks.get_task("toy.xor"), _FakeTask()])
    with pytest.raises(ValueError, match="weights"):
        tasks.TaskFamily(["toy.xor", "toy.and"], weights=[1, -1])
    with pytest.raises(ValueError):
        tasks.TaskFamily([])


class _FakeTask(tasks.Task):
    spec = name = "fake"
    input_size, num_classes = 3, 2

    def _sample(self, seed, n, stream):
        return tf.zeros([n, 3]), tf.zeros([n], tf.int32)

    def eval_set(self, max_examples=None):
        return self._sample(None, 1, "eval")


def test_mnist_family(image_data):
    family = tasks.TaskFamily(
        [
            "mnist:crop=20,size=10",
            "mnist:crop=20,size=10,classes=0-4",
            "mnist:crop=20,size=10,classes=5-9",
        ],
        **image_data,
    )
    assert family.input_size == 100 and family.num_classes == 10
    for index in range(3):
        x, y = family.episode(index).sample_train(SEED, 256)
        assert x.shape == (256, 100)
        assert int(tf.reduce_max(y)) < family.task_num_classes[index]


def test_nway_episodes(image_data):
    episodes = tasks.NWayEpisodes("mnist:crop=20,size=10", 3, **image_data)
    train_x, train_y = (t.numpy() for t in episodes.task.pool("train"))
    label_of = dict(zip(_rows(train_x), train_y))
    first_classes = set()

    @tf.function
    def draw(seed):
        episode = episodes.draw(seed)
        x, y = episode.sample_train(seed, 90)
        xe, ye = episode.sample_eval(seed, 30)
        return episode.classes, x, y, xe, ye

    for i in range(8):
        classes, x, y, xe, ye = (t.numpy() for t in draw(tf.constant([i, 1])))
        assert len(set(classes)) == 3 and classes.min() >= 0 and classes.max() < 10
        first_classes.add(int(classes[0]))
        assert set(np.unique(y)) <= {0, 1, 2} and x.shape == (90, 100)
        np.testing.assert_array_equal([label_of[r] for r in _rows(x)], classes[y])
        assert set(np.unique(ye)) <= {0, 1, 2} and xe.shape == (30, 100)
    assert len(first_classes) > 2  # labels are permuted across episodes
    with pytest.raises(ValueError, match="n=11"):
        tasks.NWayEpisodes("mnist:crop=20,size=10", 11, **image_data)
    with pytest.raises(ValueError, match="image dataset"):
        tasks.NWayEpisodes("toy.xor", 2)


# --------------------------------------------------------------------------- errors
def test_class_subset_errors(image_data):
    with pytest.raises(ValueError, match=r"classes \[12, 13, 14, 15\] do not exist.*0-9"):
        tasks.get_task("mnist:classes=12-15", **image_data)
    with pytest.raises(ValueError, match="Empty class subset"):
        tasks.get_task("mnist:classes=", **image_data)
    with pytest.raises(ValueError, match="crop=40"):
        tasks.get_task("mnist:crop=40", **image_data)


def test_missing_dataset_fails_fast(tmp_path):
    manual, data = tmp_path / "manual", tmp_path / "data"
    manual.mkdir()
    start = time.monotonic()
    with pytest.raises(
        ValueError, match="(?s)mnist.*train-images-idx3-ubyte.gz.*BLUR_TFDS_MANUAL_DIR"
    ):
        tasks.get_task("mnist", tfds_manual_dir=str(manual), data_dir=str(data))
    with pytest.raises(ValueError, match="(?s)kmnist.*(no manual folder|lacks)"):
        tasks.get_task("kmnist", tfds_manual_dir="", data_dir=str(data))
    assert time.monotonic() - start < 10


def test_env_vars_choose_folders(tmp_path, monkeypatch):
    manual = tmp_path / "env_manual"
    (manual / "fashion_mnist").mkdir(parents=True)
    monkeypatch.setenv("BLUR_TFDS_MANUAL_DIR", str(manual))
    monkeypatch.setenv("BLUR_TFDS_DATA_DIR", str(tmp_path / "env_data"))
    assert images_lib.resolve_data_dir() == str(tmp_path / "env_data")
    with pytest.raises(ValueError, match="(?s)" + str(manual / "fashion_mnist") + ".*lacks"):
        tasks.get_task("fashion_mnist")


def test_omniglot_partial_files_clear_error(tmp_path):
    if not (_manual_dir() / "omniglot").is_dir():
        pytest.skip(f"no {_manual_dir() / 'omniglot'}")
    with pytest.raises(ValueError, match="(?s)omniglot.*lacks images_background.zip"):
        tasks.get_task("omniglot", tfds_manual_dir=str(_manual_dir()), data_dir=str(tmp_path))


def test_registry_lists_everything():
    names = tasks.list_tasks()
    for name in (
        "mnist",
        "fashion_mnist",
        "kmnist",
        "emnist/letters",
        "omniglot",
        "toy.xor",
        "toy.moons",
        "toy.random_xor",
    ):
        assert name in names
    assert len(tasks.TOY_TASKS) == 14
    assert math.isclose(sum(tasks.TaskFamily(["toy.xor", "toy.or"]).weights), 1.0)


def test_invert_option_gives_one_minus_x_and_rejects_other_values(image_data):
    plain = tasks.get_task("mnist:split=train[:100],eval_split=test[:50]", **image_data)
    inverted = tasks.get_task(
        "mnist:split=train[:100],eval_split=test[:50],invert=true", **image_data
    )
    (x, y), (xi, yi) = plain.eval_set(), inverted.eval_set()
    np.testing.assert_allclose(xi.numpy(), 1.0 - x.numpy(), atol=1e-7)
    np.testing.assert_array_equal(yi, y)
    xs, _ = inverted.sample_train(SEED, 8)
    assert float(tf.reduce_mean(xs)) > 0.5  # mostly bright: MNIST is mostly dark
    with pytest.raises(ValueError, match="invert must be true or false"):
        tasks.get_task("mnist:invert=yes", **image_data)

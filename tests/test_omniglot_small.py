"""Tests for the omniglot_small task family: de-duplication, the alphabet and drawer splits,
N-way K-shot episodes, spec errors, and a backprop genome that learns a held-out episode.

Tests that read the real zips find them in <manual dir>/omniglot/ (env BLUR_TFDS_MANUAL_DIR,
default <repo>/../shared/data) and are skipped, naming the missing files, when they are absent.
"""

import collections
import hashlib
import os
import pathlib
import zipfile

import numpy as np
import pytest
import tensorflow as tf

from blur_tf import BlurModel, BlurNetwork, Genome, Rule, tasks
from blur_tf.tasks import omniglot_small as og

REPO = pathlib.Path(__file__).resolve().parent.parent
SIZE = 14  # every test reads the same pools (one decode per session)


@pytest.fixture(scope="session")
def manual():
    """The manual folder holding omniglot/<the two zips>; skips naming what is missing."""
    folder = pathlib.Path(os.environ.get("BLUR_TFDS_MANUAL_DIR") or REPO.parent / "shared" / "data")
    missing = [
        str(folder / og.FOLDER / z) for z in og.ZIPS if not (folder / og.FOLDER / z).is_file()
    ]
    if missing:
        pytest.skip("Omniglot small zips missing (set BLUR_TFDS_MANUAL_DIR): " + ", ".join(missing))
    return str(folder)


def _rows(x) -> list[bytes]:
    return [row.tobytes() for row in np.asarray(x)]


def _write_zip(path, top, files):
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in files.items():
            archive.writestr(f"{top}/{name}", data)


def _alphabet(name, characters, salt=b""):
    return {
        f"{name}/character{c:02d}/{c:04d}_{d:02d}.png": f"{name}{c}{d}".encode() + salt
        for c in range(1, characters + 1)
        for d in range(1, 21)
    }


# --------------------------------------------------------------------------- no files needed
def test_deduplication_keeps_identical_folders_once_and_refuses_different_ones(tmp_path):
    one, two = tmp_path / "a.zip", tmp_path / "b.zip"
    _write_zip(one, "small1", {**_alphabet("Shared", 2), **_alphabet("Only1", 3)})
    _write_zip(two, "small2", {**_alphabet("Shared", 2), **_alphabet("Only2", 1)})
    collection = og.read_collection([one, two])
    assert collection.files == 20 * (2 + 3 + 2 + 1)
    assert collection.duplicates == ("Shared",)
    assert collection.alphabets == ("Only1", "Only2", "Shared")
    assert len(collection.characters) == 6 and len(collection.drawings) == 6 * 20
    _write_zip(two, "small2", _alphabet("Shared", 2, salt=b"x"))
    with pytest.raises(ValueError, match="'Shared' differs between a.zip and b.zip"):
        og.read_collection([one, two])
    files = _alphabet("Broken", 1)
    del files["Broken/character01/0001_07.png"]
    _write_zip(two, "small2", files)
    with pytest.raises(ValueError, match="Broken/character01 has drawers"):
        og.read_collection([two])


def test_bad_specs_fail_before_reading_files(tmp_path):
    kwargs = dict(tfds_manual_dir=str(tmp_path))  # no zips here: options are checked first
    for spec, message in [
        ("omniglot_small:split=valid", "split must be one of train, test"),
        ("omniglot_small:size=106", "size=106 is larger than the 105x105"),
        ("omniglot_small:shot=5", "shot need way=N"),
        ("omniglot_small:way=5,shot=11", "shot=11 must be <= 10"),
        ("omniglot_small:way=5,query=0", "query=0 must be >= 1"),
        ("omniglot_small:way=5,episode=-1", "episode=-1 must be >= 0"),
        ("omniglot_small:way=5,crop=20", "unknown option.*crop"),
    ]:
        with pytest.raises(ValueError, match=message):
            tasks.get_source(spec, **kwargs)
    with pytest.raises(ValueError, match="missing .*images_background_small1.zip"):
        tasks.get_task("omniglot_small", **kwargs)


def test_omniglot_refusal_points_to_omniglot_small(tmp_path):
    (tmp_path / "manual" / "omniglot").mkdir(parents=True)
    with pytest.raises(ValueError, match="(?s)lacks images_background.zip.*omniglot_small"):
        tasks.get_task(
            "omniglot", tfds_manual_dir=str(tmp_path / "manual"), data_dir=str(tmp_path / "data")
        )


# --------------------------------------------------------------------------- the real zips
def test_counts_against_an_independent_walk_of_the_zips(manual):
    """Identical alphabet folders, distinct alphabets/characters/drawings (docs/tasks.md)."""
    folders = collections.defaultdict(list)  # alphabet -> [{relative path: sha256}] per zip
    digests = set()
    for name in og.ZIPS:
        with zipfile.ZipFile(os.path.join(manual, og.FOLDER, name)) as archive:
            content = collections.defaultdict(dict)
            for path in archive.namelist():
                if path.endswith(".png"):
                    _, alphabet, rest = path.split("/", 2)
                    content[alphabet][rest] = hashlib.sha256(archive.read(path)).hexdigest()
                    digests.add(content[alphabet][rest])
        for alphabet, files in content.items():
            folders[alphabet].append(files)
    identical = sorted(
        a for a, copies in folders.items() if len(copies) == 2 and copies[0] == copies[1]
    )
    characters = {(a, rest.split("/")[0]) for a, copies in folders.items() for rest in copies[0]}
    counts = og.describe(manual)
    assert counts["identical_in_both_zips"] == identical == ["Greek", "Latin"]
    assert counts["alphabets"] == len(folders) == 8
    assert counts["characters"] == len(characters) == 242
    assert counts["drawings"] == len(digests) == 4840  # no two kept drawings share bytes
    assert counts["train_characters"] + counts["test_characters"] == 242


def test_split_by_alphabet_and_by_drawer_is_disjoint(manual):
    train = tasks.get_task(f"omniglot_small:split=train,size={SIZE}", tfds_manual_dir=manual)
    test = tasks.get_task(f"omniglot_small:split=test,size={SIZE}", tfds_manual_dir=manual)
    assert {a for a, _ in train.classes} == set(og.SPLITS["train"])
    assert {a for a, _ in test.classes} == set(og.SPLITS["test"])
    assert not set(og.SPLITS["train"]) & set(og.SPLITS["test"])
    assert (train.num_classes, test.num_classes) == (154, 88)
    for task in (train, test):
        assert (task.num_train, task.num_eval) == (10 * task.num_classes, 10 * task.num_classes)
        assert np.all(np.bincount(task.pool("eval")[1].numpy()) == 10)
        x, _ = task.pool("train")
        assert x.shape[1] == SIZE * SIZE and 0.0 <= float(tf.reduce_min(x))
        assert float(tf.reduce_mean(x)) < 0.3  # strokes are 1 on a background of 0
    pools = {
        (t.split, s): set(_rows(t.pool(s)[0].numpy()))
        for t in (train, test)
        for s in ("train", "eval")
    }
    for a in pools:
        for b in pools:
            if a != b:
                assert not pools[a] & pools[b], (a, b)
    for split in og.SPLITS:
        _, _, drawers, _ = og.load_split(split, manual)
        assert set(drawers) == set(range(1, 21))


def test_episodes_classes_shots_and_permuted_labels(manual):
    spec = f"omniglot_small:split=test,size={SIZE},way=5,shot=3,query=4"
    source = tasks.get_source(spec, tfds_manual_dir=manual)
    assert not source.fixed and source.num_classes == 5 and source.spec == spec
    pool_x, pool_y = (t.numpy() for t in source.task.pool("train"))
    label_of = dict(zip(_rows(pool_x), pool_y))

    @tf.function
    def draw(seed):
        classes, support, query = source.draw_parts(seed)
        x, y = source.episode(classes, support, query).sample_train(seed, 120)
        return classes, support, query, x, y

    first = set()
    for i in range(6):
        classes, support, query, x, y = (t.numpy() for t in draw(tf.constant([i, 5])))
        assert len(set(classes)) == 5 and 0 <= classes.min() and classes.max() < 88
        first.add(int(classes[0]))
        assert support.shape == (5, 3) and query.shape == (5, 4)
        for j in range(5):
            assert len(set(support[j])) == 3 and set(pool_y[support[j]]) == {classes[j]}
        np.testing.assert_array_equal([label_of[r] for r in _rows(x)], classes[y])
        assert set(_rows(x)) <= set(_rows(pool_x[support.ravel()]))  # only support images
        assert set(y) == set(range(5))
    assert len(first) > 2  # labels are permuted across episodes

    fixed = tasks.get_task(spec + ",episode=3", tfds_manual_dir=manual)
    again = source.fixed_episode(3)
    np.testing.assert_array_equal(fixed.classes, again.classes)
    np.testing.assert_array_equal(fixed.query, again.query)
    assert not np.array_equal(fixed.classes, source.fixed_episode(4).classes)
    xe, ye = fixed.eval_set()
    np.testing.assert_array_equal(ye.numpy(), np.repeat(np.arange(5), 4))
    eval_y = source.task.pool("eval")[1].numpy()
    np.testing.assert_array_equal(eval_y[fixed.query.ravel()], np.repeat(fixed.classes, 4))
    assert not set(_rows(xe.numpy())) & set(_rows(pool_x))  # a query is never a support image
    whole = tasks.NWayEpisodes(source.task, 3).fixed_episode(0)  # no query: all query drawers
    xe, ye = whole.eval_set()
    np.testing.assert_array_equal(
        eval_y[[r for c in whole.classes for r in np.flatnonzero(eval_y == c)]],
        np.repeat(whole.classes, 10),
    )
    np.testing.assert_array_equal(ye.numpy(), np.repeat(np.arange(3), 10))
    assert whole.support is None and xe.shape == (30, SIZE * SIZE)
    with pytest.raises(ValueError, match="episode=E"):
        tasks.get_task(spec, tfds_manual_dir=manual)
    with pytest.raises(ValueError, match="way=89 exceeds the 88 characters"):
        tasks.get_source(f"omniglot_small:split=test,size={SIZE},way=89", tfds_manual_dir=manual)


def test_backprop_genome_learns_held_out_episodes_above_chance(manual):
    """Backprop (a genome) on 10-way 10-shot episodes of the evaluation alphabets."""
    accuracies = []
    for episode in (0, 1):
        task = tasks.get_task(
            f"omniglot_small:split=test,size={SIZE},way=10,episode={episode}",
            tfds_manual_dir=manual,
        )
        x, y = (t.numpy() for t in task.sample_train(tf.constant([episode, 0]), 60 * 32))
        model = BlurModel([SIZE * SIZE, 64, 10], Genome.backprop(0.5), Rule.backprop("tanh"))
        model.fit(x, y, batch_size=32, verbose=0)
        x_query, y_query = (t.numpy() for t in task.eval_set())
        assert x_query.shape == (100, SIZE * SIZE)
        accuracies.append(model.evaluate(x_query, y_query, batch_size=100))
    assert min(accuracies) > 0.35, accuracies  # chance: 0.1


@pytest.mark.parametrize("order", ["iid", "continual"])
def test_online_episodes(manual, order):
    """Online 5-way 3-shot episodes: one image per step, the order, disjoint alphabets, queries
    from the query drawers only."""
    from blur_tf.tasks.online import OnlineEpisodes  # pylint: disable=g-import-not-at-top

    episodes = OnlineEpisodes(5, 3, 4, order, SIZE, manual)
    assert (episodes.length, episodes.blocks, episodes.block_length) == (15, 5, 3)
    xs, ys, xq, yq = (t.numpy() for t in episodes.sample(tf.constant([1, 2], tf.int64), 2))
    assert xs.shape == (15, 2, 1, SIZE * SIZE) and ys.shape == (15, 2, 1)
    assert xq.shape == (2, 20, SIZE * SIZE)
    np.testing.assert_array_equal(yq, np.tile(np.repeat(np.arange(5), 4), (2, 1)))
    for p in range(2):
        labels = ys[:, p, 0]
        assert np.array_equal(np.bincount(labels, minlength=5), [3] * 5)
        if order == "continual":
            np.testing.assert_array_equal(labels, np.repeat(np.arange(5), 3))
        else:
            assert not np.array_equal(labels, np.repeat(np.arange(5), 3))
        images = _rows(xs[:, p, 0])
        assert len(set(images)) == 15  # K distinct drawings per class, each shown once
        assert not set(images) & set(_rows(xq[p]))  # a query is never a support image
    train_pool = _rows(episodes.sources["train"].task.pool("train")[0].numpy())
    test_pool = _rows(episodes.sources["eval"].task.pool("train")[0].numpy())
    assert set(_rows(xs[:, 0, 0])) <= set(train_pool)  # meta-training: training alphabets
    xs, *_ = episodes.sample(tf.constant([1, 2], tf.int64), 1, "eval")
    assert set(_rows(xs.numpy()[:, 0, 0])) <= set(test_pool) - set(train_pool)
    with pytest.raises(ValueError, match="shot must be an int in 1..10"):
        OnlineEpisodes(5, 11, 4, order, SIZE, manual)


def test_blur_and_flp_meta_train_on_online_episodes(manual):
    """Both learner families on the same online episodes: finite, non-zero meta-gradients for
    every BLUR genome field and FLP field, and the classification evaluation's references."""
    from blur_tf import flp  # pylint: disable=g-import-not-at-top
    from blur_tf.evaluation.episodes import evaluate_episodes  # pylint: disable=g-import-not-at-top
    from blur_tf.meta.episodes import EpisodeProblem  # pylint: disable=g-import-not-at-top
    from blur_tf.meta.estimators import FullUnrollGradient  # pylint: disable=g-import-not-at-top
    from blur_tf.tasks.online import OnlineEpisodes  # pylint: disable=g-import-not-at-top

    episodes = OnlineEpisodes(3, 2, 2, "continual", SIZE, manual)
    sizes = [SIZE * SIZE, 16, 3]
    rule = Rule(normalize_forward=False, normalize_backward=False)
    networks = [
        EpisodeProblem(BlurNetwork(sizes, rule), episodes, 4.0),
        EpisodeProblem(flp.FlpNetwork(sizes, 2, "flp", regression=False), episodes),
        EpisodeProblem(flp.FlpNetwork(sizes, 2, "gradient", regression=False), episodes),
    ]
    for problem in networks:
        params = problem.initial_params(0, 1)
        if isinstance(params, flp.FlpParams):
            params = params._replace(
                plasticity=tuple(np.full_like(a, 1e-2) for a in params.plasticity)
            )
        state = problem.init_synapses(2, 0)
        losses, gradients, _ = FullUnrollGradient(problem, meta_batch=2)(
            tf.nest.map_structure(tf.constant, params),
            state,
            tf.constant([1, 2], tf.int64),
            tf.constant(problem.length),
        )
        assert np.all(np.isfinite(losses))
        for g in tf.nest.flatten(gradients):
            assert np.all(np.isfinite(g.numpy()))
        # every field the rule uses: BLUR's but the normalization, Oja and saturation terms;
        # FLP's but the readout's feedback (the readout is clamped to the one-hot label)
        used = tf.nest.flatten(gradients)
        if isinstance(gradients, Genome):
            used = gradients[:8]
        elif gradients.feedback:
            readout = (gradients.feedback[1], gradients.feedback_biases[1])
            readout += (gradients.feedback_strength[1],)
            assert all(np.all(g.numpy() == 0) for g in readout)
            used = [g for g in used if all(g is not r for r in readout)]
        for g in used:
            assert np.any(g.numpy() != 0)
        metrics = evaluate_episodes(problem.network, params, episodes, 4, seed=3)
        assert metrics["error_chance"] == pytest.approx(2 / 3)
        assert 0 <= metrics["error"] <= 1 and len(metrics["error_by_class"]) == 3
    with pytest.raises(ValueError, match="a BLUR regressor"):
        from blur_tf.tasks.sine import SineEpisodes  # pylint: disable=g-import-not-at-top

        EpisodeProblem(BlurNetwork([11, 4, 1], rule), SineEpisodes())

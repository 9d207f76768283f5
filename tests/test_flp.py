"""FLP learner family: the inner steps against independent oracles, meta-gradients, episodes."""

import numpy as np
import pytest
import tensorflow as tf

from blur_tf import flp
from blur_tf.evaluation.episodes import evaluate_episodes
from blur_tf.meta.algorithms.gradient import GradientMetaTraining
from blur_tf.meta.episodes import EpisodeProblem
from blur_tf.meta.estimators import FullUnrollGradient
from blur_tf.meta.learners import PopulationAdam
from blur_tf.meta.outer_loop import OuterLoop
from blur_tf.meta.schedules import ConstantSchedule
from blur_tf.tasks.sine import SineEpisodes

SIZES = [5, 7, 6, 3]


def _params(learner="flp", num_plastic=2, population=2, seed=0, regression=True):
    """Initial params with non-zero α and β ∉ {0, 1}, so that every term of the rule acts."""
    network = flp.FlpNetwork(SIZES, num_plastic, learner, regression=regression)
    params = network.initial_params(population, seed)
    rng = np.random.default_rng(seed + 1)
    if learner == "flp":
        params = params._replace(
            plasticity=tuple(
                rng.uniform(0, 0.05, a.shape).astype(np.float32) for a in params.plasticity
            ),
            feedback_biases=tuple(
                rng.normal(0, 0.3, b.shape).astype(np.float32) for b in params.feedback_biases
            ),
            feedback_strength=tuple(
                rng.uniform(0.2, 0.8, b.shape).astype(np.float32) for b in params.feedback_strength
            ),
        )
    params = params._replace(
        biases=tuple(rng.normal(0, 0.3, c.shape).astype(np.float32) for c in params.biases)
    )
    return network, params


def _numpy_flp_step(params, plastic, x, y, regression, hidden_scale=1.0):
    """Oracle: one network at a time, explicit loops over the batch for the Oja sums."""
    new = []
    for p in range(x.shape[0]):
        front = len(params.weights) - len(plastic)
        weights = [w[p] for w in params.weights[:front]] + [w[p] for w in plastic]
        acts = [x[p]]
        for l, (w, c) in enumerate(zip(weights, params.biases)):
            z = acts[-1] @ w + c[p]
            acts.append(z if l == len(weights) - 1 else np.maximum(z, 0))
        out = acts[-1]
        s = (y[p][:, None] - out) if regression else np.eye(out.shape[1])[y[p]]
        member = []
        for j in range(len(plastic)):
            l = front + j
            w = plastic[j][p]
            fb = np.maximum(s @ params.feedback[j][p] + params.feedback_biases[j][p], 0)
            beta = params.feedback_strength[j][p]
            h = beta * fb + (1 - beta) * acts[l + 1]
            if not regression and l == len(weights) - 1:
                h = s
            delta = np.zeros_like(w)
            for b in range(x.shape[1]):
                delta += np.outer(acts[l][b], h[b]) - w * h[b] ** 2
            scale = 1.0 if l == len(weights) - 1 else hidden_scale
            member.append(w + scale * params.plasticity[j][p] * delta)
        new.append(member)
    return [np.stack([new[p][j] for p in range(x.shape[0])]) for j in range(len(plastic))]


@pytest.mark.parametrize("regression", [True, False])
def test_flp_step_matches_numpy(regression):
    network, params = _params(regression=regression)
    rng = np.random.default_rng(3)
    x = rng.normal(size=(2, 4, SIZES[0])).astype(np.float32)
    y = (
        rng.normal(size=(2, 4)).astype(np.float32)
        if regression
        else rng.integers(0, SIZES[-1], (2, 4)).astype(np.int32)
    )
    plastic = tuple(params.weights[-2:])
    got = network.step(params, plastic, tf.constant(x), tf.constant(y))
    want = _numpy_flp_step(params, plastic, x, y, regression)
    for g, w, before in zip(got, want, plastic):
        assert not np.allclose(w, before)  # the step changed the weights
        np.testing.assert_allclose(g.numpy(), w, rtol=2e-4, atol=2e-5)


def test_hidden_plasticity_scale_and_clamped_feedback_strength():
    """The classification options: hidden updates × scale (numpy oracle), β without gradient."""
    network, params = _params(regression=False)
    network = flp.FlpNetwork(
        SIZES, 2, regression=False, learn_feedback_strength=False, hidden_plasticity_scale=7.0
    )
    rng = np.random.default_rng(5)
    x = rng.normal(size=(2, 4, SIZES[0])).astype(np.float32)
    y = rng.integers(0, SIZES[-1], (2, 4)).astype(np.int32)
    plastic = tuple(params.weights[-2:])
    want = _numpy_flp_step(params, plastic, x, y, False, hidden_scale=7.0)
    beta = tuple(tf.constant(b) for b in params.feedback_strength)
    with tf.GradientTape() as tape:
        tape.watch(beta)
        got = network.step(params._replace(feedback_strength=beta), plastic, x, y)
        total = tf.add_n([tf.reduce_sum(w) for w in got])
    for g, w in zip(got, want):
        np.testing.assert_allclose(g.numpy(), w, rtol=2e-4, atol=2e-5)
    assert all(g is None for g in tape.gradient(total, beta))
    with pytest.raises(ValueError, match="hidden_plasticity_scale"):
        flp.FlpNetwork(SIZES, 2, hidden_plasticity_scale=0)


def test_sgd_step_matches_gradient_tape_and_sgd():
    network, params = _params("gradient", num_plastic=2)
    rng = np.random.default_rng(4)
    x = tf.constant(rng.normal(size=(2, 4, SIZES[0])).astype(np.float32))
    y = tf.constant(rng.normal(size=(2, 4)).astype(np.float32))
    plastic = tuple(tf.constant(w) for w in params.weights[-2:])
    got = network.step(params, plastic, x, y)
    for p in range(2):  # an independent SGD per network, Keras' optimizer
        variables = [tf.Variable(w[p]) for w in plastic]
        with tf.GradientTape() as tape:
            h = x[p]
            weights = [params.weights[0][p], *variables]
            for l, (w, c) in enumerate(zip(weights, params.biases)):
                h = h @ w + c[p]
                h = h if l == 2 else tf.nn.relu(h)
            loss = tf.reduce_mean(tf.reduce_sum(tf.square(h - y[p][:, None]), -1))
        tf.keras.optimizers.SGD(0.003).apply_gradients(
            zip(tape.gradient(loss, variables), variables)
        )
        for g, v in zip(got, variables):
            np.testing.assert_allclose(g[p].numpy(), v.numpy(), rtol=1e-5, atol=1e-6)
    # first order: the new plastic weights do not depend on the front weights
    front = tf.constant(params.weights[0])
    with tf.GradientTape() as tape:
        tape.watch(front)
        new = flp.sgd_step(
            params._replace(weights=(front, *params.weights[1:])), plastic, x, y, 0.003
        )
        total = tf.add_n([tf.reduce_sum(w) for w in new])
    assert tape.gradient(total, front) is None


def _problem(learner="flp", num_plastic=2, order="iid"):
    episodes = SineEpisodes(
        num_functions=3,
        steps_per_function=2,
        batch_size=4,
        order=order,
        pool_size=20,
        query_points=4,
    )
    network = flp.FlpNetwork([episodes.input_size, 8, 8, 1], num_plastic, learner)
    return EpisodeProblem(network, episodes)


def _meta_gradient(problem, params):
    estimator = FullUnrollGradient(problem, meta_batch=2)
    params = tf.nest.map_structure(tf.constant, params)
    losses, gradients, _ = estimator(
        params, (), tf.constant([1, 2], tf.int64), tf.constant(problem.length)
    )
    return losses, gradients


def test_meta_gradient_finite_and_nonzero_for_every_field():
    problem = _problem()
    params = problem.initial_params(0, 1)
    # at α = 0 the weights never change: only α (and the forward weights) get a gradient
    losses, gradients = _meta_gradient(problem, params)
    assert np.all(np.isfinite(losses))
    assert all(np.any(g.numpy() != 0) for g in gradients.plasticity)
    assert all(np.all(g.numpy() == 0) for g in gradients.feedback + gradients.feedback_strength)
    # α's gradient dominates the global norm: clipping by it would starve the weights
    norm = lambda values: np.sqrt(sum(np.sum(np.square(v.numpy())) for v in values))
    assert norm(gradients.plasticity) > 10 * norm(gradients.weights + gradients.biases)
    params = params._replace(plasticity=tuple(np.full_like(a, 1e-3) for a in params.plasticity))
    losses, gradients = _meta_gradient(problem, params)
    for field, values in zip(flp.FlpParams._fields, gradients):
        for l, g in enumerate(values):
            g = g.numpy()
            assert np.all(np.isfinite(g)), (field, l)
            assert np.any(g != 0), (field, l)
    # the gradient learner: every W and c, the frozen front layer included
    problem = _problem("gradient")
    _, gradients = _meta_gradient(problem, problem.initial_params(0, 1))
    for g in gradients.weights + gradients.biases:
        assert np.all(np.isfinite(g.numpy())) and np.any(g.numpy() != 0)


@pytest.mark.parametrize("order", ["iid", "continual"])
def test_episode_construction(order):
    episodes = SineEpisodes(
        num_functions=4,
        steps_per_function=3,
        batch_size=5,
        order=order,
        pool_size=6,
        query_points=7,
    )
    seed = tf.constant([3, 4], tf.int64)
    xs, ys, xq, yq = (t.numpy() for t in episodes.sample(seed, 2))
    assert xs.shape == (12, 2, 5, 5) and ys.shape == (12, 2, 5)
    assert xq.shape == (2, 28, 5) and yq.shape == (2, 28)
    ids = xs[..., 1:].argmax(-1)  # [T, P, B]
    assert np.all(xs[..., 1:].sum(-1) == 1) and np.all(np.abs(xs[..., 0]) <= 5)
    for p in range(2):
        assert np.array_equal(np.bincount(ids[:, p].ravel(), minlength=4), [15] * 4)
    if order == "continual":
        assert np.array_equal(ids, np.repeat(np.arange(4), 3)[:, None, None] * np.ones_like(ids))
    else:
        assert len(set(ids[:, 0].ravel()[:15].tolist())) > 1  # early steps mix functions
    # targets are one sine per (member, function), from the fixed pool; queries the same
    a_pool, phi_pool = (t.numpy() for t in episodes.pool())
    for p in range(2):
        for k in range(4):
            x = np.concatenate([xs[..., 0][:, p][ids[:, p] == k], xq[p, 7 * k : 7 * k + 7, 0]])
            y = np.concatenate([ys[:, p][ids[:, p] == k], yq[p, 7 * k : 7 * k + 7]])
            fits = np.abs(a_pool[:, None] * np.sin(x[None] + phi_pool[:, None]) - y).max(1)
            assert fits.min() < 1e-4
    # evaluation draws fresh functions: none of the pool's fits
    xs, ys, _, _ = (t.numpy() for t in episodes.sample(seed, 1, "eval"))
    x, y = xs[..., 0].ravel(), ys.ravel()
    fits = np.abs(a_pool[:, None] * np.sin(x[None] + phi_pool[:, None]) - y).max(1)
    assert fits.min() > 1e-2


def test_per_field_learning_rates_and_meta_training_lowers_the_loss():
    problem = _problem(order="continual")
    with pytest.raises(ValueError, match="unknown fields"):
        GradientMetaTraining(problem, field_learning_rates={"alpha": 1e-4})
    with pytest.raises(ValueError, match="learning_rate"):
        PopulationAdam([tf.Variable(tf.zeros([1, 2]))], [1e-3, 1e-3])
    algorithm = GradientMetaTraining(
        problem,
        meta_batch=4,
        learning_rate=3e-3,
        clip_norm=0,
        field_learning_rates={"plasticity": 1e-5},
    )
    start = [tf.identity(v) for v in tf.nest.flatten(algorithm.genome)]
    loop = OuterLoop(
        algorithm,
        ConstantSchedule(problem.length),
        log_every=0,
        validate_every=0,
        checkpoint_every=0,
    )
    first = algorithm.step(0, problem.length).losses
    loop.step_count = 1
    loop.train(40, resume=False)
    moved = [
        np.abs(v.numpy() - s.numpy()).max()
        for v, s in zip(tf.nest.flatten(algorithm.genome), start)
    ]
    fields = [
        f
        for f, value in zip(flp.FlpParams._fields, algorithm.genome)
        for _ in tf.nest.flatten(value)
    ]
    # Adam moves each value by at most about its rate per step: α by ~1e-5, W by ~3e-3
    for field, m in zip(fields, moved):
        limit = 40 * (1e-5 if field == "plasticity" else 3e-3) * 1.01
        assert 0 < m <= limit, (field, m)
    assert algorithm.recent_losses.numpy()[0] < first[0]


def test_episode_evaluation_references():
    problem = _problem(order="continual")
    network, episodes = problem.network, problem.episodes
    frozen = evaluate_episodes(network, network.initial_params(1, 0), episodes, 3, seed=5)
    assert frozen["mse"] == pytest.approx(frozen["mse_no_plasticity"], rel=1e-6)
    assert frozen["interference"] == 0.0  # α = 0: nothing changes within the episode
    params = network.initial_params(1, 0)
    params = params._replace(plasticity=tuple(np.full_like(a, 1e-3) for a in params.plasticity))
    plastic = evaluate_episodes(network, params, episodes, 3, seed=5)
    assert plastic["interference"] > 0 and plastic["mse"] != frozen["mse"]
    assert plastic["mse_zero"] == frozen["mse_zero"] > 0  # the same fresh episodes
    _, _, _, y_query = episodes.sample(tf.constant([5, 12345], tf.int64), 3, "eval")
    assert frozen["mse_zero"] == pytest.approx(float(np.mean(y_query.numpy() ** 2)), rel=1e-6)
    with pytest.raises(ValueError, match="num_episodes"):
        evaluate_episodes(network, params, episodes, 0)


def test_flp_train_refuses_bad_flags(tmp_path):
    from absl import flags  # pylint: disable=g-import-not-at-top

    from launchers import flp_train  # pylint: disable=g-import-not-at-top

    fv = flags.FlagValues()
    flp_train.define_flags(fv)
    for bad, message in (
        ("--clip_norm=-1", "--clip_norm"),
        ("--meta_batch=0", "--meta_batch"),
        ("--plasticity_learning_rate=0", "--plasticity_learning_rate"),
        ("--layer_sizes=10,x", "layer_sizes"),
    ):
        fv.unparse_flags()
        fv(["flp_train", f"--out_dir={tmp_path}", bad])
        with pytest.raises(ValueError, match=message):
            flp_train.settings(fv)
    fv.unparse_flags()
    fv(["flp_train", f"--out_dir={tmp_path}", "--init_params=/nonexistent.npz", "--layer_sizes=4"])
    with pytest.raises(ValueError, match="--init_params"):
        flp_train.build(flp_train.settings(fv))
    for argv, message in (
        (["--learner=blur"], "sine episodes need feedback=target"),
        (["--learner=blur", "--episodes=omniglot", "--rule=feedback=target"], "class feedback"),
        (["--learner=blur", "--episodes=omniglot", "--rule=num_states=x"], "num_states"),
        (["--learner=blur", "--episodes=omniglot", "--init_params=/no/genome.json"], "genome"),
    ):
        fv.unparse_flags()
        fv(["flp_train", f"--out_dir={tmp_path}", *argv])
        with pytest.raises(ValueError, match=message):
            flp_train.settings(fv)

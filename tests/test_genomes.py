"""The shipped genomes: they load with their rule and learn what their cards say."""

import glob
import os
import re

import pytest
import tensorflow as tf

from blur_tf import BlurModel, Genome, Rule
from blur_tf.tasks import get_task
from tests.test_tasks import image_data  # noqa: F401  (pytest fixture)

GENOMES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "genomes")
CONFIGS = os.path.join(os.path.dirname(GENOMES), "launchers", "configs")


@pytest.mark.parametrize(
    "path", sorted(glob.glob(os.path.join(GENOMES, "*.json"))), ids=os.path.basename
)
def test_shipped_genome_loads_with_rule_and_card(path):
    genome, metadata = Genome.load_with_metadata(path)
    rule = Rule.from_dict(metadata["rule"])
    rule.check_genome(genome)
    assert genome.population == 1
    assert os.path.isfile(path[: -len(".json")] + ".md"), "every genome ships with a card"


def _xor_accuracy(genome, rule, steps, seed):
    task = get_task("toy.xor")
    x, y = task.sample_train(tf.constant([seed, 0]), steps * 64)
    model = BlurModel([2, 32, 2], genome, rule, seed=seed)
    model.fit(x.numpy(), y.numpy(), batch_size=64, verbose=0)
    xt, yt = task.sample_eval(tf.constant([seed, 1]), 2048)
    return model.evaluate(xt.numpy(), yt.numpy(), batch_size=512, verbose=0)


def test_long_horizon_genome_keeps_learning_past_its_horizon():
    """genomes/toy2d_long.json on xor: ≥ 0.9 after 200 steps for each of 2 seeds (card: 0.952),
    where genomes/toy2d.json (meta-trained for 20 steps) has collapsed (card: 0.544)."""
    genome, metadata = Genome.load_with_metadata(os.path.join(GENOMES, "toy2d_long.json"))
    rule = Rule.from_dict(metadata["rule"])
    assert rule.saturation
    accuracies = [_xor_accuracy(genome, rule, 200, seed) for seed in range(2)]
    assert min(accuracies) >= 0.9, accuracies
    short = Genome.load(os.path.join(GENOMES, "toy2d.json"))
    assert _xor_accuracy(short, Rule(), 200, 0) < min(accuracies) - 0.1


@pytest.mark.parametrize(
    "name, hidden, batch, minimum",
    [
        ("mnist_fast", 32, 64, {"mnist": 0.7, "fashion_mnist": 0.5}),
        ("mnist_scratch", 128, 128, {"mnist": 0.8, "fashion_mnist": 0.6}),
    ],
)
def test_mnist_genome_learns_mnist_and_fashion_mnist_in_ten_steps(
    image_data, name, hidden, batch, minimum
):
    """genomes/mnist_fast.json and mnist_scratch.json, regression guards after 10 inner steps:
    well above chance (0.1) on MNIST and on Fashion-MNIST, which they never saw in meta-training
    (cards, at 784-128-10 and batch 128, full test split: 0.877 / 0.703 and 0.874 / 0.713).
    mnist_scratch is checked at its training shape, the one its card reports."""
    genome, metadata = Genome.load_with_metadata(os.path.join(GENOMES, f"{name}.json"))
    rule = Rule.from_dict(metadata["rule"])
    assert rule.normalize_forward and not rule.normalize_output
    accuracies = {}
    for dataset in ("mnist", "fashion_mnist"):
        task = get_task(dataset, **image_data)
        x, y = task.sample_train(tf.constant([0, 0]), 10 * batch)
        model = BlurModel([784, hidden, 10], genome, rule, seed=0)
        model.fit(x.numpy(), y.numpy(), batch_size=batch, verbose=0)
        xt, yt = task.eval_set(2000)
        accuracies[dataset] = model.evaluate(xt.numpy(), yt.numpy(), batch_size=500, verbose=0)
    assert all(accuracies[d] >= minimum[d] for d in minimum), accuracies


def test_mnist_scratch_was_meta_learned_from_a_random_genome():
    """Its metadata: stage 2 (launchers/configs/mnist_scratch_stage2.cfg) of `make
    genome-mnist-scratch`, started from stage 1's output: CMA-ES (mnist_scratch_cma.cfg), whose
    flagfile starts from a random genome (`--init_genome=` empty)."""
    _, metadata = Genome.load_with_metadata(os.path.join(GENOMES, "mnist_scratch.json"))
    assert re.fullmatch(
        r"runs/mnist_scratch_cma[\w-]*/genome\.json", metadata["flags"]["init_genome"]
    )
    assert "mnist_scratch_stage2.cfg" in metadata["command"]
    with open(os.path.join(CONFIGS, "mnist_scratch_cma.cfg")) as f:
        assert "--init_genome=\n" in f.read()
    with open(os.path.join(os.path.dirname(GENOMES), "Makefile")) as f:
        target = f.read().split("genome-mnist-scratch:")[1].split("\n\n")[0]
    assert "cma_train --flagfile=launchers/configs/mnist_scratch_cma.cfg" in target
    assert "--init_genome=runs/mnist_scratch_cma$(SUFFIX)/genome.json" in target
    assert not any(
        "test" in spec or "fashion" in spec
        for key in ("tasks", "validation_tasks")
        for spec in metadata["flags"][key]
    )


SELECTION_FLAGS = ("--tasks=", "--validation_tasks=")  # not --test_tasks: report table only


def _selection_specs(path):
    """The task specs a flagfile trains, takes its held-out loss or selects genomes on
    (following nested --flagfile lines, relative to the repository root)."""
    specs = []
    with open(path) as f:
        for line in f:
            line = line.strip()
            if line.startswith("--flagfile="):
                specs += _selection_specs(
                    os.path.join(os.path.dirname(GENOMES), line.split("=", 1)[1])
                )
            elif line.startswith(SELECTION_FLAGS):
                specs += [s for s in line.split("=", 1)[1].split(";") if s.strip()]
    return specs


@pytest.mark.parametrize(
    "path", sorted(glob.glob(os.path.join(CONFIGS, "*.cfg"))), ids=os.path.basename
)
def test_no_shipped_flagfile_trains_or_selects_on_a_test_split(path):
    """Issue 18: every image task of --tasks / --validation_tasks names a training split for
    both its inner steps and its held-out examples (eval_split defaults to 'test')."""
    from blur_tf.tasks.images import IMAGE_DATASETS
    from blur_tf.tasks.spec import parse_spec

    specs = _selection_specs(path)
    assert specs, f"{path} names no task"
    for spec in map(parse_spec, specs):
        if spec.name not in IMAGE_DATASETS:
            continue  # synthetic toy tasks have no test split
        options = spec.option_dict
        for key, default in (("split", "train"), ("eval_split", "test")):
            value = options.get(key, default)
            assert value.startswith("train"), (
                f"{os.path.basename(path)}: {spec} uses {key}={value!r}"
            )

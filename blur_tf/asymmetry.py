"""Is one inner step the gradient step of some loss? The Jacobian test of paper §3.5 (Fig. 2).

If a full-batch update were ΔW = −γ ∂L/∂W for some loss L, its Jacobian
J_ij = ∂ΔW_i/∂W_j = −γ ∂²L/∂W_i∂W_j would be a Hessian, hence symmetric (paper Eq. 10).
`update_jacobian` measures J over the free forward weights of a network (all layers, weights
and biases, flattened layer by layer in the channel-major layout [K, n+1, m]; a single-channel
rule has one free channel, the others are copies of it); backward synapses (asymmetric rules)
are held fixed. `asymmetry(J)` = ‖J − Jᵀ‖_F / ‖J‖_F: float error for a gradient step (the
backprop genome), well above it for an update that is no gradient of any loss.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from blur_tf.genome import Genome
from blur_tf.network import BlurNetwork


def _free_channels(network: BlurNetwork) -> int:
    return network.rule.num_states if network.rule.multichannel else 1


def update_jacobian(network: BlurNetwork, genome: Genome, synapses, x, y) -> np.ndarray:
    """J [N, N] with J_ij = ∂(W′ − W)_i / ∂W_j for one inner step W → W′ on the batch (x, y).

    Args:
      network: the network (its rule decides the free channels, module doc).
      genome: a genome of population 1.
      synapses: public-layout synapses of population 1 (`network.init_synapses(1, seed)`).
      x: [B, n_0] inputs; y: [B] labels (the full batch, the same at every step).
    """
    if genome.population != 1:
        raise ValueError(f"update_jacobian needs a genome of population 1, got {genome.population}")
    network.rule.check_genome(genome)
    forwards, backwards = network.to_channel_major(synapses)
    if int(forwards[0].shape[0]) != 1:
        raise ValueError("update_jacobian needs synapses of population 1")
    free, k = _free_channels(network), network.rule.num_states
    shapes = [(free, *w.shape[2:]) for w in forwards]
    sizes = [int(np.prod(s)) for s in shapes]
    theta = tf.concat([tf.reshape(w[0, :free], [-1]) for w in forwards], axis=0)
    x = tf.convert_to_tensor(x, tf.float32)[None]
    y = tf.convert_to_tensor(y, tf.int32)[None]

    def unflatten(flat):
        parts = tf.split(flat, sizes)
        return tuple(
            tf.tile(tf.reshape(p, s)[None], [1, k // free, 1, 1]) for p, s in zip(parts, shapes)
        )

    with tf.GradientTape() as tape:
        tape.watch(theta)
        new, _, _ = network.step_channel_major(genome, unflatten(theta), backwards, x, y)
        delta = tf.concat([tf.reshape(w[0, :free], [-1]) for w in new], axis=0) - theta
    return tape.jacobian(delta, theta).numpy()


def asymmetry(jacobian: np.ndarray) -> float:
    """‖J − Jᵀ‖_F / ‖J‖_F (0 for the Jacobian of a gradient step, up to float error)."""
    j = np.asarray(jacobian, np.float64)
    if j.ndim != 2 or j.shape[0] != j.shape[1]:
        raise ValueError(f"asymmetry needs a square matrix, got shape {j.shape}")
    norm = np.linalg.norm(j)
    return float(np.linalg.norm(j - j.T) / norm) if norm > 0 else 0.0


def log_asymmetry(jacobian: np.ndarray, floor: float = 1e-12) -> np.ndarray:
    """ln|J − Jᵀ| elementwise (the paper's Fig. 2 image), |·| floored at `floor`."""
    j = np.asarray(jacobian, np.float64)
    return np.log(np.maximum(np.abs(j - j.T), floor))

"""The project's one plotter: matplotlib (Agg) set-up, PNG output and the shared axes style.

Used by `blur_tf.evaluation.reports` (curves.png, sweep.png), `blur_tf.meta.summaries`
(TensorBoard images: `curve_image`, `heatmap_image`) and `launchers.validation_report`.
matplotlib is imported on first use only (meta-training without images never loads it).
"""

from __future__ import annotations

import io

import numpy as np

from blur_tf.files import atomic_write


def pyplot():
    """matplotlib.pyplot with the non-interactive Agg backend."""
    import matplotlib  # pylint: disable=g-import-not-at-top

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt  # pylint: disable=g-import-not-at-top

    return plt


def accuracy_axes(
    ax,
    title: str = "",
    fontsize: float = 10,
    xlabel: str = "inner step",
    ylabel: str = "accuracy",
    log_x: bool = False,
    unit_y: bool = False,
    legend: dict | None = None,
) -> None:
    """The shared look of an accuracy-per-step panel: labels, title, grid, optional log-x,
    y in [0, 1] (`unit_y`) and a legend (`legend`: its keyword arguments)."""
    if log_x:
        ax.set_xscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if unit_y:
        ax.set_ylim(0.0, 1.0)
    if title:
        ax.set_title(title, fontsize=fontsize)
    ax.grid(True, which="both" if log_x else "major", alpha=0.3)
    if legend is not None:
        ax.legend(**legend)


def save_png(fig, path: str, dpi: int = 100) -> None:
    """Lays out `fig`, writes it as a PNG file (temporary file + atomic rename), closes it."""
    fig.tight_layout()
    atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=dpi), binary=True)
    pyplot().close(fig)


def png_image(fig) -> np.ndarray:
    """Lays out and closes `fig`; its pixels as an RGB uint8 image [1, H, W, 3] (TensorBoard)."""
    import tensorflow as tf  # pylint: disable=g-import-not-at-top

    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    pyplot().close(fig)
    return tf.image.decode_png(buffer.getvalue(), channels=3)[None].numpy()


def curve_image(curves: np.ndarray, best: int, title: str) -> np.ndarray:
    """Accuracy-per-inner-step curves [G, T+1] plotted to an RGB image [1, H, W, 3]."""
    fig, ax = pyplot().subplots(figsize=(4, 3), dpi=80)
    steps = np.arange(curves.shape[1])
    for g, curve in enumerate(curves):
        ax.plot(steps, curve, lw=2.5 if g == best else 0.8, alpha=1.0 if g == best else 0.5)
    accuracy_axes(ax, title, fontsize=8, unit_y=True)
    return png_image(fig)


def heatmap_image(matrix: np.ndarray, cell: int = 16) -> np.ndarray:
    """A K×K matrix as an RGB uint8 image [1, K·cell, K·cell, 3]: blue < 0 < red, white = 0."""
    matrix = np.asarray(matrix, np.float32)
    scale = max(float(np.max(np.abs(matrix))), 1e-6)
    v = np.clip(matrix / scale, -1.0, 1.0)
    red = np.where(v < 0, 1.0 + v, 1.0)
    blue = np.where(v > 0, 1.0 - v, 1.0)
    green = 1.0 - np.abs(v)
    rgb = np.stack([red, green, blue], axis=-1)
    rgb = np.repeat(np.repeat(rgb, cell, axis=0), cell, axis=1)
    return (rgb[None] * 255).astype(np.uint8)

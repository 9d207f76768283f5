"""Image classification tasks from tensorflow-datasets, prepared offline and kept in memory.

Spec: ``NAME[:crop=C][,size=S][,classes=...][,split=...][,eval_split=...]`` with NAME one of
``mnist``, ``fashion_mnist`` (files shipped in ``../shared/data``), ``kmnist``,
``emnist/letters``, ``omniglot`` (usable once their data is prepared or provided; with only
the two small background zips, use :mod:`blur_tf.tasks.omniglot_small`). :class:`PoolTask` is
the in-memory pool task both build on.

Options:
  crop:       keep the central ``C x C`` pixels (offset ``(H - C) // 2``).
  size:       resize to ``S x S`` (``tf.image.resize``, bilinear, antialias), after the crop.
  classes:    class subset, ``0-4`` or ``1,3,7`` (original label ids); labels are remapped to
              ``0..n-1`` in sorted order of the subset. Default: every class present in the
              training split.
  split:      tfds split the training pool comes from (default ``train``; tfds slicing
              syntax works, e.g. ``train[:50000]``).
  eval_split: tfds split of the held-out pool (default ``test``); must differ from ``split``
              (overlapping slices of one split are the caller's responsibility).
  invert:     ``true`` gives 1 - x (dark strokes on a bright field): a derived task with
              other input statistics (default ``false``).

Preprocessing: pixels are scaled to ``[0, 1]`` (colour images averaged to grey; Omniglot
inverted so strokes are 1), optionally cropped then resized, and flattened row-major to
``input_size = side * side`` float32 features.

Data preparation (never hangs on the network): ``data_dir`` (argument, else env
``BLUR_TFDS_DATA_DIR``, else ``~/tensorflow_datasets``) is where tfds keeps prepared
datasets. If a dataset is not prepared there, its original files are taken from
``<manual dir>/<builder name>/`` (argument ``tfds_manual_dir``, else env
``BLUR_TFDS_MANUAL_DIR``), where the builder checks their registered checksums. Each
builder gets its own download folder ``<data_dir>/downloads/<builder name>``, because tfds
caches extracted files by file name and MNIST and Fashion-MNIST use the same file names
(sharing one folder silently turns Fashion-MNIST into MNIST). With ``download=False`` (the
default) a dataset that is neither prepared nor complete in the manual folder raises a
ValueError immediately, naming the expected files; ``download=True`` lets tfds fetch them,
after one bounded connection attempt per download host (:func:`check_reachable`), so that no
network fails within seconds, naming the host, instead of after minutes of tfds retries. A
spec is checked against the builder's static info (image shape, number of classes) before
anything is prepared.

Per-process cache (the module's only mutable state): raw pools (uint8) are loaded once per
``(builder, data_dir, split)`` into ``_RAW_POOLS`` and preprocessed tensors once per
``(pool, crop, size, classes)`` into ``_TENSOR_POOLS`` (``omniglot_small`` keeps its decoded
zips and pools there too, under keys starting with its name); :func:`clear_cache` empties both.
Pools with no crop/resize stay uint8 on device and are scaled after the gather. Batches
are drawn on device (``tf.random.stateless_uniform`` indices + ``tf.gather``), with
replacement.
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
import socket
import threading
import urllib.parse
import urllib.request

import numpy as np
import tensorflow as tf

from blur_tf.tasks import base
from blur_tf.tasks.spec import TaskSpec, check_keys, parse_classes, parse_int

MANUAL_DIR_ENV = "BLUR_TFDS_MANUAL_DIR"
DATA_DIR_ENV = "BLUR_TFDS_DATA_DIR"
# Seconds one connection attempt to a download host may take before download=True gives up.
DOWNLOAD_PROBE_SECONDS = 10.0
IMAGE_KEYS = ("crop", "size", "classes", "split", "eval_split", "invert")


@dataclasses.dataclass(frozen=True)
class ImageDataset:
    """A registered tfds image dataset.

    Attributes:
      builder: tfds builder name, with config (``emnist/letters``).
      invert: map pixel p to 1 - p (Omniglot: black strokes on white -> strokes = 1).
      hint: appended to the error when the dataset is not available offline.
    """

    builder: str
    invert: bool = False
    hint: str = ""

    @property
    def builder_name(self) -> str:
        """The builder's name without config: the manual and download sub-folder name."""
        return self.builder.split("/")[0]


IMAGE_DATASETS: dict[str, ImageDataset] = {
    "mnist": ImageDataset("mnist"),
    "fashion_mnist": ImageDataset("fashion_mnist"),
    "kmnist": ImageDataset("kmnist"),
    "emnist/letters": ImageDataset("emnist/letters"),
    "omniglot": ImageDataset(
        "omniglot",
        invert=True,
        hint="Only omniglot/images_background_small1.zip and images_background_small2.zip at "
        "hand? Use the task family omniglot_small (it reads those two zips directly).",
    ),
}

# Per-process caches (see module docstring).
_RAW_POOLS: dict[tuple, tuple] = {}
_TENSOR_POOLS: dict[tuple, tuple[tf.Tensor, tf.Tensor]] = {}


def clear_cache() -> None:
    """Forgets every dataset loaded in this process."""
    _RAW_POOLS.clear()
    _TENSOR_POOLS.clear()


def resolve_data_dir(data_dir=None) -> str:
    """``data_dir``, else env BLUR_TFDS_DATA_DIR, else ``~/tensorflow_datasets`` (absolute)."""
    data_dir = data_dir or os.environ.get(DATA_DIR_ENV) or "~/tensorflow_datasets"
    return os.path.abspath(os.path.expanduser(os.fspath(data_dir)))


def resolve_manual_dir(tfds_manual_dir=None) -> str | None:
    """``tfds_manual_dir``, else env BLUR_TFDS_MANUAL_DIR, else None."""
    manual = tfds_manual_dir or os.environ.get(MANUAL_DIR_ENV)
    return os.path.abspath(os.path.expanduser(os.fspath(manual))) if manual else None


def _tfds():
    import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top

    return tfds


def prepare_dataset(name: str, *, tfds_manual_dir=None, data_dir=None, download=False):
    """Returns the prepared tfds builder of dataset ``name``, preparing it if needed.

    Preparation reads ``<manual dir>/<builder name>/<original files>`` when they are all
    there (checksums verified by tfds), else downloads only if ``download`` is True, else
    raises ValueError at once (before any preparation work).
    """
    dataset = _dataset(name)
    tfds = _tfds()
    data_dir = resolve_data_dir(data_dir)
    builder = tfds.builder(dataset.builder, data_dir=data_dir)
    if builder.is_prepared():
        return builder
    manual_root = resolve_manual_dir(tfds_manual_dir)
    manual = pathlib.Path(manual_root, dataset.builder_name) if manual_root else None
    files = sorted({info.filename for info in (builder.url_infos or {}).values() if info.filename})
    missing = [f for f in files if manual is None or not (manual / f).is_file()]
    if not files and not (manual is not None and manual.is_dir() and any(manual.iterdir())):
        missing = ["(the builder registers no file names: provide its manual folder)"]
    if missing and not download:
        where = (
            f"the manual folder {manual} lacks {', '.join(missing)}"
            if manual
            else f"no manual folder was given (argument tfds_manual_dir, flag --tfds_manual_dir "
            f"or env {MANUAL_DIR_ENV})"
        )
        raise ValueError(
            f"Dataset {name!r} (tfds builder {dataset.builder!r}) is not prepared in data_dir "
            f"{data_dir} and {where}. Provide it offline: put the original files "
            f"{', '.join(files) or '(see the tfds builder)'} in <DIR>/{dataset.builder_name}/ "
            f"and pass tfds_manual_dir=DIR (--tfds_manual_dir DIR, env {MANUAL_DIR_ENV}=DIR); "
            f"or prepare it into data_dir (env {DATA_DIR_ENV}) beforehand; or allow a network "
            "download with download=True." + (" " + dataset.hint if dataset.hint else "")
        )
    if missing:
        check_reachable(name, builder.url_infos or {})
    config = tfds.download.DownloadConfig(
        manual_dir=os.fspath(manual) if manual is not None and manual.is_dir() else None
    )
    download_dir = os.path.join(data_dir, "downloads", dataset.builder_name)
    try:
        builder.download_and_prepare(download_dir=download_dir, download_config=config)
    except (OSError, tfds.download.DownloadError) as e:
        if not missing:
            raise
        raise ValueError(f"Dataset {name!r}: the download failed: {e}") from e
    return builder


def check_reachable(name: str, urls, timeout: float | None = None) -> None:
    """ValueError naming the host and the reason unless every host of `urls` (or the proxy
    urllib would use for it) accepts a TCP connection within `timeout` seconds (default
    DOWNLOAD_PROBE_SECONDS).

    Decision: tfds retries a failed download with exponential back-off (10 retries, over a
    minute with no network); one bounded connection attempt per host first turns "no
    network" into an error within seconds. The attempt runs in a daemon thread, so a hanging
    name lookup is bounded too.
    """
    timeout = DOWNLOAD_PROBE_SECONDS if timeout is None else timeout
    proxies = urllib.request.getproxies()
    targets = set()
    for url in urls:
        parts = urllib.parse.urlsplit(url)
        if not parts.hostname or parts.scheme not in ("http", "https"):
            continue
        target = parts.hostname, parts.port or (443 if parts.scheme == "https" else 80)
        proxy = proxies.get(parts.scheme)
        if proxy and not urllib.request.proxy_bypass(parts.hostname):
            proxy = urllib.parse.urlsplit(proxy if "//" in proxy else "//" + proxy)
            target = proxy.hostname, proxy.port or 80
        targets.add(target)
    for host, port in sorted(targets):
        errors = []

        def attempt(host=host, port=port, errors=errors):
            try:
                socket.create_connection((host, port), timeout=timeout).close()
            except OSError as e:
                errors.append(e)

        thread = threading.Thread(target=attempt, daemon=True)
        thread.start()
        thread.join(timeout)
        reason = (
            f"no answer within {timeout:g} s"
            if thread.is_alive()
            else str(errors[0])
            if errors
            else None
        )
        if reason:
            raise ValueError(
                f"Dataset {name!r}: download=True but {host}:{port} cannot be reached "
                f"({reason}); no network? Provide the original files offline instead "
                f"(tfds_manual_dir, --tfds_manual_dir or env {MANUAL_DIR_ENV})."
            )


def _dataset(name: str) -> ImageDataset:
    if name not in IMAGE_DATASETS:
        raise ValueError(f"Unknown image dataset {name!r}; known: {', '.join(IMAGE_DATASETS)}.")
    return IMAGE_DATASETS[name]


def load_raw_pool(
    name: str, split: str, *, tfds_manual_dir=None, data_dir=None, download=False
) -> tuple[np.ndarray, np.ndarray]:
    """All examples of one split as numpy: grey uint8 images ``[N, H, W]``, int64 labels ``[N]``.

    Cached per process; Omniglot-style inversion and colour-to-grey are applied here.
    """
    dataset = _dataset(name)
    key = (dataset.builder, resolve_data_dir(data_dir), split)
    if key not in _RAW_POOLS:
        tfds = _tfds()
        builder = prepare_dataset(
            name, tfds_manual_dir=tfds_manual_dir, data_dir=data_dir, download=download
        )
        try:
            data = tfds.as_numpy(builder.as_dataset(split=split, batch_size=-1))
        except (ValueError, KeyError) as e:
            raise ValueError(
                f"Dataset {name!r} has no split {split!r} "
                f"(splits: {', '.join(builder.info.splits)}): {e}"
            ) from e
        images = np.asarray(data["image"])
        if images.ndim == 4 and images.shape[-1] > 1:
            images = np.round(images.mean(axis=-1)).astype(np.uint8)
        elif images.ndim == 4:
            images = images[..., 0]
        if dataset.invert:
            images = 255 - images
        _RAW_POOLS[key] = (
            np.ascontiguousarray(images, np.uint8),
            np.asarray(data["label"], np.int64),
        )
    return _RAW_POOLS[key]


def preprocess_images(
    images, crop: int | None = None, size: int | None = None, chunk: int = 8192
) -> tf.Tensor:
    """uint8 ``[N, H, W]`` -> float32 ``[N, side*side]`` in [0, 1]: central crop, then resize.

    ``crop``: keep rows/columns ``(H-crop)//2 .. +crop`` (and likewise for W). ``size``:
    ``tf.image.resize`` to ``size x size``, bilinear with antialias, clipped to [0, 1].
    Works in chunks of ``chunk`` images to bound memory.
    """
    images = np.asarray(images)
    if images.ndim != 3:
        raise ValueError(f"preprocess_images expects [N, H, W] images, got shape {images.shape}.")
    _, height, width = images.shape
    if crop is not None:
        if crop > min(height, width):
            raise ValueError(f"crop={crop} is larger than the {height}x{width} images.")
        top, left = (height - crop) // 2, (width - crop) // 2
        images = images[:, top : top + crop, left : left + crop]
    outputs = []
    for start in range(0, max(len(images), 1), chunk):
        x = tf.convert_to_tensor(images[start : start + chunk], tf.float32) / 255.0
        if size is not None and (size, size) != tuple(x.shape[1:3]):
            x = tf.image.resize(x[..., None], [size, size], method="bilinear", antialias=True)
            x = tf.clip_by_value(x[..., 0], 0.0, 1.0)
        outputs.append(tf.reshape(x, [x.shape[0], -1]))
    return tf.concat(outputs, axis=0)


def _static_info(name, data_dir) -> tuple[tuple, int]:
    """(image height and width, number of label classes) from the builder's static info: no
    data is read or prepared, so a spec is checked against them first. A height or width
    the builder leaves open is None."""
    features = (
        _tfds().builder(_dataset(name).builder, data_dir=resolve_data_dir(data_dir)).info.features
    )
    return tuple(features["image"].shape[:2]), int(features["label"].num_classes)


class PoolTask(base.Task):
    """A task over two in-memory pools of flattened images, ``"train"`` and ``"eval"``.

    Subclasses (:class:`ImageTask`, ``omniglot_small``) set ``spec``, ``name``, ``classes``,
    ``num_classes``, ``side``, ``input_size`` and ``_pools`` (``stream -> (x uint8 or float32
    [N, input_size], y int32 [N] in 0..num_classes-1)``); batches are drawn with replacement.
    """

    invert = False
    _pools: dict

    @property
    def num_train(self) -> int:
        return int(self._pools["train"][1].shape[0])

    @property
    def num_eval(self) -> int:
        return int(self._pools["eval"][1].shape[0])

    def pool(self, stream: str):
        """The cached ``(x, y)`` pool of ``"train"`` or ``"eval"`` (x uint8 or float32)."""
        return self._pools[stream]

    def to_float(self, x: tf.Tensor) -> tf.Tensor:
        """Gathered pool rows -> float32 features in [0, 1] (1 - x if ``invert``)."""
        x = tf.cast(x, tf.float32) / 255.0 if x.dtype == tf.uint8 else x
        return 1.0 - x if self.invert else x

    def gather(self, stream: str, indices):
        """Examples ``indices`` of a pool as (x float32, y int32)."""
        x, y = self._pools[stream]
        return self.to_float(tf.gather(x, indices)), tf.gather(y, indices)

    def _sample(self, seed, n, stream):
        size = tf.shape(self._pools[stream][1], out_type=tf.int32)[0]
        indices = tf.random.stateless_uniform([n], seed, 0, size, dtype=tf.int32)
        return self.gather(stream, indices)

    def eval_set(self, max_examples=None):
        """The whole eval split in dataset order (the first ``max_examples`` if given)."""
        x, y = self._pools["eval"]
        if max_examples is not None:
            x, y = x[:max_examples], y[:max_examples]
        return self.to_float(x), y


class ImageTask(PoolTask):
    """A (preprocessed, class-subset) tfds image dataset as a task; see the module docstring.

    Attributes (besides Task's): ``dataset`` (registry name), ``crop``, ``size``, ``side``
    (final image side), ``classes`` (original label ids behind labels 0..n-1), ``split``,
    ``eval_split``, ``num_train``, ``num_eval``.
    """

    def __init__(self, spec: TaskSpec, *, tfds_manual_dir=None, data_dir=None, download=False):
        _dataset(spec.name)
        check_keys(spec, IMAGE_KEYS)
        opts = spec.option_dict
        self.dataset = self.name = spec.name
        self.spec = str(spec)
        self.crop = parse_int(spec, "crop", opts["crop"]) if "crop" in opts else None
        self.size = parse_int(spec, "size", opts["size"]) if "size" in opts else None
        if opts.get("invert", "false") not in ("true", "false"):
            raise ValueError(
                f"Task spec {self.spec!r}: invert must be true or false, got {opts['invert']!r}."
            )
        self.invert = opts.get("invert") == "true"
        self.split = opts.get("split", "train") or "train"
        self.eval_split = opts.get("eval_split", "test") or "test"
        if self.split == self.eval_split:
            raise ValueError(
                f"Task spec {self.spec!r}: split and eval_split are both "
                f"{self.split!r}; evaluation must use held-out data."
            )
        (height, width), total = _static_info(spec.name, data_dir)
        if self.crop is not None and self.crop > min(height or self.crop, width or self.crop):
            raise ValueError(
                f"Task spec {self.spec!r}: crop={self.crop} is larger than the "
                f"{height}x{width} {spec.name} images."
            )
        requested = None
        if "classes" in opts:
            try:
                requested = parse_classes(opts["classes"])
            except ValueError as e:
                raise ValueError(f"Task spec {self.spec!r}: {e}") from None
            bad = [c for c in requested if c >= total]
            if bad:
                raise ValueError(
                    f"Task spec {self.spec!r}: classes {bad} do not exist; "
                    f"{spec.name} has classes 0-{total - 1}."
                )
            if len(requested) < 2:
                raise ValueError(
                    f"Task spec {self.spec!r}: classes={opts['classes']} is one "
                    "class; a classification task needs at least two."
                )
        loader = dict(tfds_manual_dir=tfds_manual_dir, data_dir=data_dir, download=download)
        train_images, train_labels = load_raw_pool(spec.name, self.split, **loader)
        eval_images, eval_labels = load_raw_pool(spec.name, self.eval_split, **loader)
        present = np.unique(train_labels)
        if requested is None:  # the dataset's classes, not those a small split happens to hold
            requested = tuple(range(total))
        absent = sorted(set(requested) - set(int(c) for c in present))
        if absent:
            raise ValueError(
                f"Task spec {self.spec!r}: classes {absent} have no examples in "
                f"split {self.split!r}; use a split that holds every class of the "
                "task, or classes= to choose the ones it holds."
            )
        self.classes = tuple(requested)
        self.num_classes = len(self.classes)
        height, width = train_images.shape[1:]
        side = self.crop if self.crop is not None else height
        if self.crop is None and height != width and self.size is None:
            raise ValueError(f"{spec.name} images are {height}x{width}; give crop= or size=.")
        self.side = self.size if self.size is not None else side
        self.input_size = self.side * self.side
        self._pools = {
            "train": self._tensor_pool(train_images, train_labels, self.split, data_dir),
            "eval": self._tensor_pool(eval_images, eval_labels, self.eval_split, data_dir),
        }
        if self.num_eval == 0:
            raise ValueError(
                f"Task spec {self.spec!r}: eval split {self.eval_split!r} has no "
                f"examples of classes {list(self.classes)}; choose another "
                "eval_split."
            )

    def _tensor_pool(self, images, labels, split, data_dir):
        key = (self.dataset, resolve_data_dir(data_dir), split, self.crop, self.size, self.classes)
        if key not in _TENSOR_POOLS:
            lookup = np.full(int(labels.max()) + 1 if labels.size else 1, -1, np.int64)
            for new, old in enumerate(self.classes):
                if old < lookup.size:
                    lookup[old] = new
            remapped = lookup[labels] if labels.size else labels
            keep = remapped >= 0
            images, remapped = images[keep], remapped[keep]
            with tf.init_scope():
                if self.crop is None and (self.size is None or self.size == images.shape[1]):
                    x = tf.constant(images.reshape(len(images), -1))  # uint8, scaled after gather
                else:
                    x = preprocess_images(images, self.crop, self.size)
                _TENSOR_POOLS[key] = (x, tf.constant(remapped, tf.int32))
        return _TENSOR_POOLS[key]

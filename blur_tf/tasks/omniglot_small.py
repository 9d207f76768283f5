"""``omniglot_small``: Omniglot from the two small background zips, read directly (no tfds).

Files: ``<manual dir>/omniglot/images_background_small1.zip`` and
``images_background_small2.zip`` (manual dir: argument ``tfds_manual_dir``, flag
``--tfds_manual_dir``, else env ``BLUR_TFDS_MANUAL_DIR``), laid out as
``images_background_smallN/<alphabet>/<characterNN>/<id>_<drawer>.png`` (105x105, 1 bit).

De-duplication: an alphabet folder present in both zips is kept once if the two copies are
byte-identical (same file names, same bytes); if they differ the loader refuses (ValueError).
In the published zips Greek and Latin are in both, identical: 10 alphabet folders, 5840 files
-> 8 alphabets, 242 characters, 4840 drawings (20 drawers per character); :func:`describe`
counts them.

Fixed split by alphabet (no alphabet on both sides; Greek and Latin, related scripts, on one
side; every evaluation alphabet has >= 17 characters):
  ``split=train`` (meta-training): Early_Aramaic, Greek, Korean, Latin, Sanskrit (154 characters)
  ``split=test`` (evaluation):     Balinese, Japanese_(katakana), Tagalog (88 characters)
Drawers: within every character, drawers 01-10 are the support pool (the ``train`` stream)
and drawers 11-20 the query pool (the ``eval`` stream), so a query is never a support image.

Spec: ``omniglot_small[:split=train|test][,size=S][,way=N[,shot=K][,query=Q][,episode=E]]``
  size:    side of the resized images (default 28; ``tf.image.resize``, bilinear, antialias,
           of 105x105 images with strokes 1 and background 0).
  (no way) one task: every character of the split is a class (train: support drawers,
           eval: query drawers).
  way=N:   N-way episodes (:class:`~blur_tf.tasks.families.NWayEpisodes`): N distinct
           characters per episode, labels in random order; a training task source that draws
           a new episode every meta-step (``get_source``).
  shot=K:  K support drawings per class per episode, drawn without replacement from the 10
           support drawers (default 10: all of them).
  query=Q: Q query drawings per class (default 10: all query drawers); ``eval_set`` of a
           fixed episode is its N*Q query images.
  episode=E: hold episode number E fixed: an ordinary task (``get_task``), for evaluation
           and validation.

Decoded images are cached per process in ``images._RAW_POOLS`` (``images.clear_cache``).
"""

from __future__ import annotations

import dataclasses
import os
import re
import zipfile

import numpy as np
import tensorflow as tf

from blur_tf.tasks import base, families, images
from blur_tf.tasks.spec import TaskSpec, check_keys, parse_int

NAME = "omniglot_small"
FOLDER = "omniglot"
ZIPS = ("images_background_small1.zip", "images_background_small2.zip")
SPLITS = {
    "train": ("Early_Aramaic", "Greek", "Korean", "Latin", "Sanskrit"),
    "test": ("Balinese", "Japanese_(katakana)", "Tagalog"),
}
DRAWERS = 20
SUPPORT_DRAWERS = tuple(range(1, 11))  # drawers 01-10; 11-20 are the query drawers
SIDE = 105
DEFAULT_SIZE = 28
KEYS = ("split", "size", "way", "shot", "query", "episode")
_PATH_RE = re.compile(r"^[^/]+/([^/]+)/([^/]+)/\d+_(\d+)\.png$")


@dataclasses.dataclass(frozen=True)
class Collection:
    """The de-duplicated contents of the zips.

    Attributes:
      drawings: ``{(alphabet, character, drawer): png bytes}``.
      folders: ``{alphabet: zips holding it}`` (before de-duplication).
      files: PNG files read over all zips.
    """

    drawings: dict
    folders: dict
    files: int

    @property
    def alphabets(self) -> tuple[str, ...]:
        return tuple(sorted({a for a, _, _ in self.drawings}))

    @property
    def characters(self) -> tuple[tuple[str, str], ...]:
        return tuple(sorted({(a, c) for a, c, _ in self.drawings}))

    @property
    def duplicates(self) -> tuple[str, ...]:
        """Alphabets found (byte-identical) in more than one zip."""
        return tuple(sorted(a for a, zips in self.folders.items() if len(zips) > 1))


def zip_paths(tfds_manual_dir=None) -> tuple[str, ...]:
    """The two zip paths; ValueError naming the missing ones (before any work)."""
    manual = images.resolve_manual_dir(tfds_manual_dir)
    if manual is None:
        raise ValueError(
            f"Task {NAME!r} needs {FOLDER}/{ZIPS[0]} and {ZIPS[1]} in a manual "
            f"folder: pass tfds_manual_dir=DIR (--tfds_manual_dir DIR, env "
            f"{images.MANUAL_DIR_ENV}=DIR)."
        )
    paths = tuple(os.path.join(manual, FOLDER, z) for z in ZIPS)
    missing = [p for p in paths if not os.path.isfile(p)]
    if missing:
        raise ValueError(
            f"Task {NAME!r}: missing {', '.join(missing)} (the Omniglot small "
            f"background zips; tfds_manual_dir / --tfds_manual_dir / env "
            f"{images.MANUAL_DIR_ENV} points at their parent's parent)."
        )
    return paths


def read_collection(paths) -> Collection:
    """Reads the zips and de-duplicates alphabet folders (module doc); ValueError if an
    alphabet differs between zips or a character does not have drawers 01-20."""
    per_zip = []
    files = 0
    for path in paths:
        folders: dict = {}
        with zipfile.ZipFile(path) as archive:
            for name in archive.namelist():
                if not name.endswith(".png"):
                    continue
                match = _PATH_RE.match(name)
                if not match:
                    raise ValueError(
                        f"{path}: unexpected file {name!r} (want "
                        "<zip>/<alphabet>/<character>/<id>_<drawer>.png)."
                    )
                alphabet, character, drawer = match.group(1), match.group(2), int(match.group(3))
                folders.setdefault(alphabet, {})[(character, drawer)] = archive.read(name)
                files += 1
        per_zip.append((os.path.basename(path), folders))
    drawings, where, first = {}, {}, {}
    for zip_name, folders in per_zip:
        for alphabet, content in folders.items():
            if alphabet in first:
                if content != first[alphabet]:
                    raise ValueError(
                        f"Alphabet {alphabet!r} differs between {where[alphabet][0]} "
                        f"and {zip_name}: cannot de-duplicate."
                    )
                where[alphabet].append(zip_name)
                continue
            first[alphabet], where[alphabet] = content, [zip_name]
            for (character, drawer), data in content.items():
                drawings[(alphabet, character, drawer)] = data
    for alphabet, content in first.items():
        for character in {c for c, _ in content}:
            drawers = sorted(d for c, d in content if c == character)
            if drawers != list(range(1, DRAWERS + 1)):
                raise ValueError(
                    f"{alphabet}/{character} has drawers {drawers}, expected 01-{DRAWERS:02d}."
                )
    return Collection(drawings, {a: tuple(z) for a, z in where.items()}, files)


def describe(tfds_manual_dir=None) -> dict:
    """Counts of the de-duplicated collection and of each split (module doc)."""
    collection = read_collection(zip_paths(tfds_manual_dir))
    characters = collection.characters
    return {
        "files": collection.files,
        "alphabet_folders": sum(len(z) for z in collection.folders.values()),
        "identical_in_both_zips": list(collection.duplicates),
        "alphabets": len(collection.alphabets),
        "characters": len(characters),
        "drawings": len(collection.drawings),
        **{
            f"{split}_characters": sum(a in alphabets for a, _ in characters)
            for split, alphabets in SPLITS.items()
        },
    }


def load_split(split: str, tfds_manual_dir=None):
    """(images uint8 ``[N, 105, 105]`` with strokes 255, labels int64 ``[N]``, drawers ``[N]``,
    characters) of one alphabet split; label i is ``characters[i]``, the split's
    ``(alphabet, character)`` pairs in sorted order."""
    paths = zip_paths(tfds_manual_dir)
    key = (NAME, paths, split)
    if key not in images._RAW_POOLS:  # pylint: disable=protected-access
        collection = read_collection(paths)
        absent = sorted(set(SPLITS[split]) - set(collection.alphabets))
        if absent:
            raise ValueError(
                f"Task {NAME!r}: split {split!r} needs alphabets {absent}, which "
                f"the zips {', '.join(paths)} do not hold."
            )
        characters = [ac for ac in collection.characters if ac[0] in SPLITS[split]]
        items = [
            (label, drawer, collection.drawings[(a, c, drawer)])
            for label, (a, c) in enumerate(characters)
            for drawer in range(1, DRAWERS + 1)
        ]
        decoded = np.stack(
            [tf.io.decode_png(data, channels=1).numpy()[..., 0] for _, _, data in items]
        )
        images._RAW_POOLS[key] = (  # pylint: disable=protected-access
            np.ascontiguousarray(255 - decoded, np.uint8),
            np.array([label for label, _, _ in items], np.int64),
            np.array([drawer for _, drawer, _ in items], np.int64),
            tuple(characters),
        )
    return images._RAW_POOLS[key]  # pylint: disable=protected-access


class OmniglotSmallTask(images.PoolTask):
    """Every character of one alphabet split as a class: ``train`` stream = support drawers,
    ``eval`` stream = query drawers (module doc). Attributes: ``split``, ``size``, ``side``,
    ``classes`` (``(alphabet, character)`` behind labels 0..n-1)."""

    def __init__(
        self,
        split: str = "train",
        size: int = DEFAULT_SIZE,
        tfds_manual_dir=None,
        spec: str | None = None,
    ):
        if split not in SPLITS:
            raise ValueError(
                f"Task {NAME!r}: split must be one of {', '.join(SPLITS)}, got {split!r}."
            )
        if not 1 <= size <= SIDE:
            raise ValueError(f"Task {NAME!r}: size={size} must be in 1..{SIDE}.")
        self.name, self.split, self.size = NAME, split, int(size)
        self.spec = spec or f"{NAME}:split={split},size={size}"
        self.side, self.input_size = self.size, self.size * self.size
        raw, labels, drawers, self.classes = load_split(split, tfds_manual_dir)
        self.num_classes = len(self.classes)
        support = np.isin(drawers, SUPPORT_DRAWERS)
        self._pools = {}
        for stream, keep in (("train", support), ("eval", ~support)):
            key = (NAME, zip_paths(tfds_manual_dir), split, stream, self.size)
            if key not in images._TENSOR_POOLS:  # pylint: disable=protected-access
                with tf.init_scope():
                    images._TENSOR_POOLS[key] = (  # pylint: disable=protected-access
                        images.preprocess_images(raw[keep], None, self.size),
                        tf.constant(labels[keep], tf.int32),
                    )
            self._pools[stream] = images._TENSOR_POOLS[key]  # pylint: disable=protected-access


def make(spec: TaskSpec, tfds_manual_dir=None) -> base.TaskSource:
    """The task or episode source of an ``omniglot_small`` spec (module doc); ValueError for
    bad options before any file is read."""
    check_keys(spec, KEYS)
    opts = spec.option_dict
    split = opts.get("split", "train")
    if split not in SPLITS:
        raise ValueError(
            f"Task spec {str(spec)!r}: split must be one of {', '.join(SPLITS)}, got {split!r}."
        )
    size = parse_int(spec, "size", opts.get("size", str(DEFAULT_SIZE)))
    if size > SIDE:
        raise ValueError(
            f"Task spec {str(spec)!r}: size={size} is larger than the {SIDE}x{SIDE} images."
        )
    numbers = {
        k: parse_int(spec, k, opts[k], 0 if k == "episode" else 1)
        for k in ("way", "shot", "query", "episode")
        if k in opts
    }
    if "way" not in numbers and len(numbers) > 0:
        raise ValueError(f"Task spec {str(spec)!r}: {', '.join(numbers)} need way=N.")
    half = len(SUPPORT_DRAWERS)
    for key in ("shot", "query"):
        if numbers.get(key, 0) > half:
            raise ValueError(
                f"Task spec {str(spec)!r}: {key}={numbers[key]} must be <= {half} "
                f"(each character has {half} {('support', 'query')[key == 'query']} "
                "drawers)."
            )
    task = OmniglotSmallTask(
        split, size, tfds_manual_dir, spec=str(spec) if "way" not in numbers else None
    )
    if "way" not in numbers:
        return task
    if numbers["way"] > task.num_classes:
        raise ValueError(
            f"Task spec {str(spec)!r}: way={numbers['way']} exceeds the "
            f"{task.num_classes} characters of split {split!r}."
        )
    source = families.NWayEpisodes(
        task,
        numbers["way"],
        shot=numbers.get("shot", half),
        query=numbers.get("query", half),
        spec=str(spec),
    )
    if "episode" in numbers:
        return families.EpisodeTask(source, numbers["episode"], spec=str(spec))
    return source

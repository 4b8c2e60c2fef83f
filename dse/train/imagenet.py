"""ImageNet-scale data streamed from files: only the file list is held in memory; DataLoader workers decode.

`load(root, ...)` lists an ImageFolder tree, `<root>/train/<class>/*.JPEG` and `<root>/val/<class>/*`, and
returns a `Streamed`: the same geometry fields as `dse.train.datasets.Data`, splits that are file lists (`Files`),
and `batches(...)`, which dse.train.fit uses in place of `dse.train.datasets.Batches`. `data.format=litdata` reads
shards written by `litdata` (for object stores) instead of a tree (`Shards`; `python -m dse.train.imagenet
to-litdata TREE OUT` writes them from a tree).

- Labels: the sorted class-folder names of `train/` -> 0..K-1; `val/` uses the same mapping (a val class that
  train lacks is an error). K is the tree's own count (1000 for ImageNet-1k).
- Training: a random-resized crop (8-100% of the area, aspect 3/4-4/3) to `image_size` and a horizontal flip;
  evaluation: the shorter side resized to image_size * 256/224, then the center image_size crop. Batches
  travel as uint8 and are normalized with ImageNet's mean/std on the training device.
- Determinism: each epoch's order comes from (seed, epoch) and each image's crop and flip from
  (seed, epoch, index), so a seed gives the same batches whatever the number of workers.
- DDP: `shard(rank, world)` (dse.train.fit's Feed callback passes Lightning's global rank and world size) gives
  each rank every world-th place of the epoch's order: disjoint, equal in size, together the whole split
  but fewer than `world` images (train draws a new order each epoch, so those differ every epoch).
- A file that cannot be decoded stops the fit with a one-line `BadImage` naming it; PIL's decompression-bomb
  limit stays on (larger images are refused the same way).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from dse.errors import UserError, choose

MEAN = (0.485, 0.456, 0.406)  # ImageNet's per-channel RGB mean and std (pixels in [0, 1])
STD = (0.229, 0.224, 0.225)
EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".pgm", ".tif", ".tiff", ".webp"})
FORMATS = ("folder", "litdata")
SCALE, RATIO = (0.08, 1.0), (3 / 4, 4 / 3)  # random-resized crop: share of the area, width/height
EVAL_RESIZE = 256 / 224  # evaluation: shorter side to image_size * 256/224, then the center crop


class BadImage(UserError):
    """An image file that cannot be decoded (or is over PIL's pixel limit): one line naming its path."""


@dataclass(frozen=True, eq=False)
class Files:
    """One split as a file list: `x` the paths relative to the data root (one numpy bytes array, which forked
    DataLoader workers share without copying), `y` the int64 labels. The same two fields as
    `dse.train.datasets.Split`, so code that cuts a split (dse.trials.sizing) works on either."""

    x: np.ndarray
    y: np.ndarray

    def __len__(self) -> int:
        return len(self.y)

    def take(self, idx) -> "Files":
        """The files at positions `idx`."""
        return Files(self.x[idx], self.y[idx])


@dataclass(frozen=True, eq=False)
class Streamed:
    """A dataset read from files per batch: geometry and normalization as in `dse.train.datasets.Data`."""

    name: str
    root: str
    train: object  # Files (or any split with x = paths, y = labels)
    val: object
    test: object
    num_classes: int
    image_size: int
    classes: tuple[str, ...]
    in_chans: int = 3
    mean: tuple[float, ...] = MEAN
    std: tuple[float, ...] = STD
    augment: bool = True  # random-resized crop + flip when training (false: the evaluation transform)
    workers: int | None = None  # DataLoader workers per process (None: this process's share of the cores)

    def batches(self, split, batch_size: int, train: bool = False, seed: int = 0, limit: int | None = None):
        """The iterable dse.train.fit feeds Lightning (what `dse.train.datasets.Batches` is for in-memory data)."""
        kind = _ShardDecode if isinstance(split, Shards) else _Decode
        dataset = kind(self.root, split, self.image_size, train and self.augment, seed)
        return Stream(dataset, self, batch_size, train=train, seed=seed, limit=limit)


# ----- listing the tree -----

def _folders(path: Path) -> list[str]:
    """Sorted names of the sub-folders of `path` (hidden ones left out)."""
    return sorted(e.name for e in os.scandir(path) if e.is_dir() and not e.name.startswith("."))


def _images(path: Path) -> list[str]:
    """Sorted names of the image files in `path` (by extension, case-insensitive; hidden files left out)."""
    return sorted(e.name for e in os.scandir(path) if not e.name.startswith(".") and e.is_file()
                  and os.path.splitext(e.name)[1].lower() in EXTENSIONS)


def _list(root: Path, part: str, index: dict[str, int]) -> Files:
    """The images of root/part/<class>/, labelled by the train classes' `index`."""
    paths, labels = [], []
    for name in _folders(root / part):
        if name not in index:
            raise UserError(f"data: {root / part / name} is a class that {root / 'train'} does not have; "
                            "val and train need the same class folders")
        files = _images(root / part / name)
        if part == "train" and not files:
            raise UserError(f"data: {root / part / name} holds no images ({', '.join(sorted(EXTENSIONS))})")
        paths += [os.fsencode(f"{part}/{name}/{f}") for f in files]
        labels += [index[name]] * len(files)
    if not paths:
        raise UserError(f"data: {root / part} has no images in class folders; imagenet reads "
                        f"{root}/train/<class>/<images> and {root}/val/<class>/<images> (move ImageNet's val "
                        "images into one folder per class first)")
    return Files(np.array(paths), np.array(labels, dtype=np.int64))


def _positive(key: str, value) -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value <= 0):
        raise UserError(f"data.{key}: must be a positive integer or null, got {value!r}")


def load(root, subset: int | None = None, val_subset: int | None = None, val_fraction: float = 0.0,
         seed: int = 0, image_size: int | None = None, augment: bool = True, workers: int | None = None,
         format: str = "folder", name: str = "imagenet") -> Streamed:
    """The file lists of an ImageFolder tree (or litdata shards); val_fraction > 0 holds out part of train
    as the validation split, else `<root>/val` is both validation and test set (what the papers report)."""
    choose("data.format", format, dict.fromkeys(FORMATS))
    for key, value in (("subset", subset), ("val_subset", val_subset), ("image_size", image_size)):
        _positive(key, value)
    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int) or workers < 0):
        raise UserError(f"data.workers: must be an integer >= 0 or null, got {workers!r}")
    size = image_size or 224
    if format == "litdata":
        if val_fraction:
            raise UserError("data.val_fraction: litdata shards validate on <root>/val; set data.val_fraction=0")
        return _load_shards(str(root), subset, val_subset, seed, size, augment, workers, name)
    root = Path(root)
    for part in ("train", "val"):
        if not (root / part).is_dir():
            raise UserError(f"data: imagenet needs {root / part}/<class>/<images>; set data.root")
    classes = _folders(root / "train")
    index = {c: i for i, c in enumerate(classes)}
    train, test = _list(root, "train", index), _list(root, "val", index)
    rng = np.random.default_rng([seed, 17])
    train = train.take(rng.permutation(len(train)))
    val = test
    if val_fraction:
        n_val = int(round(len(train) * val_fraction))
        val, train = train.take(np.arange(n_val)), train.take(np.arange(n_val, len(train)))
    if subset:
        train = train.take(np.arange(min(subset, len(train))))
    if val_subset:
        val = val.take(np.sort(rng.permutation(len(val))[:val_subset]))
    return Streamed(name=name, root=str(root), train=train, val=val, test=test, num_classes=len(classes),
                    image_size=size, classes=tuple(classes), augment=augment, workers=workers)


# ----- one image -----

def crop_box(width: int, height: int, rng: np.random.Generator) -> tuple[int, int, int, int]:
    """A random-resized-crop box (left, top, right, bottom): 8-100% of the area, aspect 3/4-4/3, ten tries,
    else the center crop at the nearest allowed aspect."""
    area = width * height
    for _ in range(10):
        target = area * rng.uniform(*SCALE)
        aspect = np.exp(rng.uniform(np.log(RATIO[0]), np.log(RATIO[1])))
        w, h = int(round(np.sqrt(target * aspect))), int(round(np.sqrt(target / aspect)))
        if 0 < w <= width and 0 < h <= height:
            left, top = int(rng.integers(0, width - w + 1)), int(rng.integers(0, height - h + 1))
            return left, top, left + w, top + h
    aspect = min(max(width / height, RATIO[0]), RATIO[1])
    w, h = (width, int(round(width / aspect))) if width / height <= aspect else (int(round(height * aspect)), height)
    w, h = min(w, width), min(h, height)
    left, top = (width - w) // 2, (height - h) // 2
    return left, top, left + w, top + h


def center_box(width: int, height: int) -> tuple[float, float, float, float]:
    """The box that resizing the shorter side to size * 256/224 and center-cropping `size` keeps."""
    side = min(width, height) / EVAL_RESIZE  # the crop's side in original pixels
    left, top = (width - side) / 2, (height - side) / 2
    return left, top, left + side, top + side


def read_image(source, size: int, rng: np.random.Generator | None, label: str) -> np.ndarray:
    """Decode `source` (a path or a file object) to a size x size x 3 uint8 array: random-resized crop and
    flip with `rng`, the evaluation crop without. Anything that fails is a one-line BadImage naming `label`."""
    from PIL import Image

    try:
        with Image.open(source) as img:
            limit = Image.MAX_IMAGE_PIXELS
            if limit and img.width * img.height > limit:
                raise BadImage(f"data: {label} has {img.width}x{img.height} pixels, over PIL's decompression-bomb "
                               f"limit of {limit}")
            img = img.convert("RGB")
            box = crop_box(img.width, img.height, rng) if rng is not None else center_box(img.width, img.height)
            img = img.resize((size, size), Image.Resampling.BILINEAR, box=box)
            if rng is not None and rng.random() < 0.5:
                img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
            return np.array(img, dtype=np.uint8)
    except BadImage:
        raise
    except Exception as exc:  # noqa: BLE001 - whatever a broken file makes PIL raise is the same user error
        why = " ".join(str(exc).split())[:160]
        raise BadImage(f"data: {label} is not a readable image ({type(exc).__name__}: {why})") from None


class _Decode(torch.utils.data.Dataset):
    """Map-style dataset over one file split; a key is epoch * len + index (the epoch seeds the augmentation)."""

    def __init__(self, root: str, split, size: int, augment: bool, seed: int):
        self.root, self.x, self.y = root, np.asarray(split.x), np.asarray(split.y, dtype=np.int64)
        self.size, self.augment, self.seed = size, augment, seed

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, key):
        epoch, i = divmod(int(key), len(self.y))
        path = os.path.join(self.root, os.fsdecode(self.x[i]))
        rng = np.random.default_rng([self.seed, epoch, i]) if self.augment else None
        return torch.from_numpy(read_image(path, self.size, rng, path)), int(self.y[i])


# ----- batches -----

def _cores() -> int:
    """CPU cores this process may use."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


class _Epoch:
    """The DataLoader's batch sampler: the keys of this pass's batches, set by Stream before each pass (the
    sampler runs in the main process, so workers never need to know the epoch)."""

    def __init__(self):
        self.batches: list[np.ndarray] = []

    def __iter__(self):
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)


class Stream:
    """Batches of one split decoded by DataLoader workers, normalized on the training device.

    An iterable with `__len__`, like `dse.train.datasets.Batches`, with the same `to(device, channels_last)` and
    `shard(rank, world)`: each pass draws a new seeded order (training) and every rank takes its own share.
    """

    def __init__(self, dataset, data, batch_size: int, train: bool = False, seed: int = 0,
                 limit: int | None = None):
        self.dataset, self.data, self.batch_size, self.train, self.seed = dataset, data, batch_size, train, seed
        self.limit, self.rank, self.world, self.epoch = limit, 0, 1, 0
        self.device, self.channels_last = torch.device("cpu"), False
        self._sampler, self._loader, self._stats = _Epoch(), None, None

    def to(self, device, channels_last: bool = False) -> "Stream":
        """Deliver batches on `device` (pinned host memory when it is a GPU), channels_last or not."""
        self.device, self.channels_last = torch.device(device), channels_last
        self._loader = self._stats = None
        return self

    def shard(self, rank: int, world: int) -> "Stream":
        """Use only this rank's share (equal sizes, so DDP ranks take the same number of steps)."""
        self.rank, self.world = rank, world
        self._loader = None
        return self

    def _count(self) -> int:
        return len(self.dataset) // self.world

    def __len__(self) -> int:
        n = self._count()
        steps = n // self.batch_size if self.train else -(-n // self.batch_size)
        steps = max(steps, 1) if n else 0
        return min(steps, self.limit) if self.limit else steps

    def order(self) -> np.ndarray:
        """This rank's positions in the current pass (a seeded permutation per epoch when training)."""
        n = self._count() * self.world
        if not self.train:
            return np.arange(n)[self.rank::self.world]
        return np.random.default_rng([self.seed, self.epoch]).permutation(len(self.dataset))[:n][self.rank::self.world]

    def _keys(self) -> list[np.ndarray]:
        order, bs = self.order(), self.batch_size
        batches = []
        for i in range(len(self)):
            idx = order[i * bs:(i + 1) * bs]
            if self.train and len(idx) < bs:
                idx = order[:bs]
            batches.append(idx.astype(np.int64) + self.epoch * len(self.dataset))
        return batches

    def _make_loader(self):
        workers = self.data.workers if self.data.workers is not None else max(1, _cores() // self.world)
        return torch.utils.data.DataLoader(self.dataset, batch_sampler=self._sampler, num_workers=workers,
                                           pin_memory=self.device.type == "cuda")

    def _normalizer(self):
        if self._stats is None:
            shape = (1, -1, 1, 1)
            mean = torch.tensor(self.data.mean, device=self.device).view(shape) * 255
            std = torch.tensor(self.data.std, device=self.device).view(shape) * 255
            self._stats = (mean, 1.0 / std)
        return self._stats

    def __iter__(self):
        self._sampler.batches = self._keys()
        self.epoch += int(self.train)
        if self._loader is None:
            self._loader = self._make_loader()
        try:
            for x, y in self._loader:
                yield self._batch(x, y)
        except BadImage as exc:  # from a worker its message is a formatted traceback: keep our own last line
            raise BadImage(_own_line(str(exc))) from None

    def _batch(self, x: torch.Tensor, y: torch.Tensor):
        x = x.to(self.device, non_blocking=True).permute(0, 3, 1, 2)  # N x H x W x 3 bytes -> NCHW view
        mean, inv_std = self._normalizer()
        x = (x.float() - mean) * inv_std
        x = x.contiguous(memory_format=torch.channels_last if self.channels_last else torch.contiguous_format)
        return x, y.to(self.device, non_blocking=True)


def _own_line(message: str) -> str:
    """A BadImage message as raised: the last line of a worker's traceback, without the class name."""
    last = message.strip().splitlines()[-1] if message.strip() else message
    prefix = f"{BadImage.__module__}.{BadImage.__qualname__}: "
    return last[len(prefix):] if last.startswith(prefix) else last


# ----- litdata shards (data.format=litdata; object stores) -----

def _litdata():
    """The litdata package, or a one-line UserError saying how to get it."""
    try:
        import litdata
    except ImportError:
        raise UserError("data.format=litdata needs the litdata package: pip install litdata") from None
    return litdata


@dataclass(frozen=True, eq=False)
class Shards:
    """One split as litdata shards: `url` (a local folder or an object-store URL) and the item positions used."""

    url: str
    x: np.ndarray  # positions of the items in the shards

    def __len__(self) -> int:
        return len(self.x)

    def take(self, idx) -> "Shards":
        """The items at positions `idx` of this split."""
        return Shards(self.url, self.x[idx])


def _join(root: str, part: str) -> str:
    return f"{root.rstrip('/')}/{part}"


def _load_shards(root: str, subset, val_subset, seed: int, size: int, augment: bool, workers, name: str):
    """The litdata datasets `<root>/train`, `<root>/val` and `<root>/classes` (one item: the class names, one a
    line, line i = label i), in a local folder or under an object-store URL."""
    ld = _litdata()
    splits = {}
    for part in ("classes", "train", "val"):
        try:
            n = len(ld.StreamingDataset(_join(root, part)))
        except Exception as exc:  # noqa: BLE001 - a missing or broken index is one user error
            raise UserError(f"data: {_join(root, part)} is not a litdata dataset "
                            f"({type(exc).__name__}: {' '.join(str(exc).split())[:160]})") from None
        splits[part] = Shards(_join(root, part), np.arange(n))
    classes = tuple(str(ld.StreamingDataset(_join(root, "classes"))[0]["classes"]).splitlines())
    rng = np.random.default_rng([seed, 17])
    train, test = splits["train"], splits["val"]
    if subset:
        train = train.take(np.sort(rng.permutation(len(train))[:subset]))
    val = test.take(np.sort(rng.permutation(len(test))[:val_subset])) if val_subset else test
    return Streamed(name=name, root=root, train=train, val=val, test=test, num_classes=len(classes),
                    image_size=size, classes=classes, augment=augment, workers=workers)


class _ShardDecode(torch.utils.data.Dataset):
    """Map-style dataset over litdata items {"image": encoded bytes, "label": int}; keys as in `_Decode`."""

    def __init__(self, root: str, split: Shards, size: int, augment: bool, seed: int):
        self.url, self.x, self.size, self.augment, self.seed = split.url, split.x, size, augment, seed
        self._items = None  # opened in the process that reads (each DataLoader worker its own)

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, key):
        import io

        if self._items is None:
            self._items = _litdata().StreamingDataset(self.url)
        epoch, i = divmod(int(key), len(self.x))
        item = self._items[int(self.x[i])]
        label = f"{self.url} item {int(self.x[i])}"
        rng = np.random.default_rng([self.seed, epoch, i]) if self.augment else None
        return torch.from_numpy(read_image(io.BytesIO(item["image"]), self.size, rng, label)), int(item["label"])


def _shard_item(entry):
    """One litdata item from (path, label): the file's bytes as they are (decoded when read)."""
    path, label = entry
    return {"image": Path(path).read_bytes(), "label": int(label)}


def _classes_item(text: str):
    return {"classes": text}


def to_litdata(tree, out, workers: int = 1) -> str:
    """Write an ImageFolder tree as litdata shards: OUT/train, OUT/val and OUT/classes (the class names);
    OUT may be an object-store URL (litdata uploads the chunks)."""
    ld, data, out = _litdata(), load(tree), str(out)
    options = dict(num_workers=workers, start_method="fork", reorder_files=False, keep_data_ordered=True,
                   verbose=False)
    for part, split in (("train", data.train), ("val", data.test)):
        order = np.argsort(split.x, kind="stable")  # tree order, not the seeded shuffle of load()
        inputs = [(os.path.join(data.root, os.fsdecode(split.x[i])), int(split.y[i])) for i in order]
        ld.optimize(fn=_shard_item, inputs=inputs, output_dir=_join(out, part), chunk_bytes="64MB", **options)
    ld.optimize(fn=_classes_item, inputs=["\n".join(data.classes)], output_dir=_join(out, "classes"),
                chunk_bytes="64MB", **options)
    return out


def main(argv=None) -> int:
    """`python -m dse.train.imagenet to-litdata TREE OUT [--workers N]`; user mistakes exit 2 with one line."""
    import argparse
    import sys

    parser = argparse.ArgumentParser(prog="python -m dse.train.imagenet")
    sub = parser.add_subparsers(dest="command", required=True)
    conv = sub.add_parser("to-litdata", help="write an ImageFolder tree as litdata shards")
    conv.add_argument("tree")
    conv.add_argument("out")
    conv.add_argument("--workers", type=int, default=1)
    args = parser.parse_args(argv)
    try:
        print(f"litdata shards: {to_litdata(args.tree, args.out, args.workers)}")
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

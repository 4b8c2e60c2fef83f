"""Image-classification data held as tensors: load a named dataset once, then slice batches on the device.

`load(name, ...)` returns a `Data`: uint8 NCHW images and int64 labels for train / val / test, plus the
geometry and the per-channel mean/std used to normalize on the device. Validation is a seeded split of the
training set; the test set is kept for final numbers. `Batches` is the iterable a trainer consumes: it
shuffles, pads-and-crops and flips whole batches on the device, so there is no per-sample loader cost.

Data root: `root`, else the environment variable `DSE_DATA`, else `~/.cache/dse`. Under it each dataset
lives where torchvision keeps it (`<root>/FashionMNIST/raw`, `<root>/cifar-10-batches-py`, ...).
"""
from __future__ import annotations

import functools
import gzip
import io
import os
import pickle
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from dse.errors import UserError, choose

DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
FASHION_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
                 "t10k-labels-idx1-ubyte")


@dataclass(frozen=True)
class Split:
    """Images `x` (uint8, N x C x H x W) and labels `y` (int64, N)."""

    x: torch.Tensor
    y: torch.Tensor

    def __len__(self) -> int:
        return len(self.y)

    def to(self, device) -> "Split":
        """The same split on `device`."""
        return Split(self.x.to(device), self.y.to(device))


@dataclass(frozen=True, eq=False)
class Data:
    """A loaded dataset: splits, geometry, normalization and the augmentation it takes."""

    name: str
    train: Split
    val: Split
    test: Split
    num_classes: int
    in_chans: int
    image_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    pad: int = 0  # pad-and-crop augmentation (pixels); 0 = none
    flip: bool = False  # random horizontal flip
    classes: tuple[str, ...] = field(default=())


# ----- raw loaders: each returns (x_train, y_train, x_test, y_test, num_classes, classes) as numpy -----

def _root(root) -> Path:
    return Path(os.path.expanduser(str(root or os.environ.get("DSE_DATA") or "~/.cache/dse")))


def _read_idx(path: Path) -> np.ndarray:
    """Parse an idx file (MNIST format), gzipped or not."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        blob = f.read()
    dims = blob[3]
    shape = tuple(int.from_bytes(blob[4 + 4 * i:8 + 4 * i], "big") for i in range(dims))
    return np.frombuffer(blob, dtype=np.uint8, offset=4 + 4 * dims).reshape(shape)


def _idx_folder(folder: Path) -> list[Path] | None:
    """The four Fashion-MNIST files in `folder` (plain or .gz), or None when any is missing."""
    found = []
    for stem in FASHION_FILES:
        plain, gz = folder / stem, folder / f"{stem}.gz"
        if plain.is_file():
            found.append(plain)
        elif gz.is_file():
            found.append(gz)
        else:
            return None
    return found


def _fashion_mnist(root: Path, image_size=None):
    """Fashion-MNIST from torchvision's folder, the Debian package's folder, or a download."""
    files = _idx_folder(root / "FashionMNIST" / "raw") or _idx_folder(DEBIAN_FASHION_MNIST)
    if files is None:
        try:
            from torchvision.datasets import FashionMNIST

            FashionMNIST(str(root), train=True, download=True)
            FashionMNIST(str(root), train=False, download=True)
        except Exception:  # offline, or the mirror is down
            raise UserError(
                f"data: Fashion-MNIST not found in {root / 'FashionMNIST' / 'raw'} or {DEBIAN_FASHION_MNIST} and "
                "could not be downloaded; run `apt-get install dataset-fashion-mnist` (Debian/Ubuntu) or go online "
                "once so torchvision can download it, or set data.root") from None
        files = _idx_folder(root / "FashionMNIST" / "raw")
    xtr, ytr, xte, yte = (_read_idx(p) for p in files)
    classes = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
               "Ankle boot")
    return xtr[:, None], ytr, xte[:, None], yte, 10, classes


# CIFAR on disk (torchvision's layout): folder, training files, test file, meta file, key of the class names
CIFAR = {False: ("cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)], "test_batch", "batches.meta",
                 "label_names", "CIFAR10"),
         True: ("cifar-100-python", ["train"], "test", "meta", "fine_label_names", "CIFAR100")}


def _latin1(text, encoding="latin1"):
    """`_codecs.encode` as Python 3 pickles of bytes use it (protocol 2), for latin-1 only."""
    if encoding != "latin1" or not isinstance(text, str):
        raise pickle.UnpicklingError(f"_codecs.encode is only allowed for latin1 text, got {encoding!r}")
    return text.encode("latin1")


@functools.cache
def _pickle_globals() -> dict:
    """The only globals a CIFAR pickle may name: numpy's array/dtype rebuilders and the bytes decoder."""
    try:
        from numpy._core.multiarray import _reconstruct
        from numpy._core.numeric import _frombuffer
    except ImportError:  # numpy < 2
        from numpy.core.multiarray import _reconstruct
        from numpy.core.numeric import _frombuffer
    allowed = {("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): np.dtype, ("_codecs", "encode"): _latin1}
    for core in ("numpy.core", "numpy._core"):
        allowed[(f"{core}.multiarray", "_reconstruct")] = _reconstruct
        allowed[(f"{core}.numeric", "_frombuffer")] = _frombuffer
    return allowed


class _CifarUnpickler(pickle.Unpickler):
    """An unpickler that builds containers and numpy arrays only: any other global is refused, never imported."""

    def find_class(self, module, name):
        """Look `module.name` up in the allow-list (so nothing is imported or called from outside it)."""
        allowed = _pickle_globals()
        if (module, name) not in allowed:
            raise pickle.UnpicklingError(f"it names {module}.{name}, which a CIFAR file never does")
        return allowed[(module, name)]


def _read_pickle(path: Path, keys: tuple[str, ...]) -> dict:
    """Unpickle one CIFAR file safely: a dict holding `keys`, else a one-line UserError naming the file."""
    try:  # from bytes already read, so no length in the file makes the unpickler allocate beyond its size
        entry = _CifarUnpickler(io.BytesIO(path.read_bytes()), encoding="latin1").load()
    except Exception as exc:  # noqa: BLE001 - any failure of a hostile or broken file is the same user error
        raise UserError(f"data: {path} is not a CIFAR pickle ({type(exc).__name__}: {_one_line(exc)})") from None
    missing = [k for k in keys if not isinstance(entry, dict) or k not in entry]
    if missing:
        raise UserError(f"data: {path} is not a CIFAR pickle: it has no {', '.join(missing)}")
    return entry


def _one_line(exc: BaseException) -> str:
    """An exception's message on one line, at most 200 characters."""
    return " ".join(str(exc).split())[:200]


def _flat(value, kind: type) -> bool:
    """Whether `value` is a plain list of `kind` (nested or shared lists could blow up when converted)."""
    return isinstance(value, list) and all(type(v) is kind for v in value)


def _cifar_split(folder: Path, names: list[str], label_key: str):
    """Images (N x 3 x 32 x 32 uint8) and labels from CIFAR batch files."""
    xs, ys = [], []
    for name in names:
        path = folder / name
        entry = _read_pickle(path, ("data",))
        x, y = entry["data"], entry["labels"] if "labels" in entry else entry.get(label_key)
        if not (isinstance(x, np.ndarray) and x.dtype == np.uint8 and x.size % 3072 == 0 and _flat(y, int)):
            raise UserError(f"data: {path} is not a CIFAR pickle: it needs 'data' (a uint8 array of 3x32x32 images)"
                            f" and '{label_key}' (a list of ints)")
        if len(x.reshape(-1, 3072)) != len(y):
            raise UserError(f"data: {path} has {len(x.reshape(-1, 3072))} images but {len(y)} labels")
        xs.append(x.reshape(-1, 3, 32, 32))
        ys.append(np.asarray(y, dtype=np.int64))
    return np.concatenate(xs), np.concatenate(ys)


def _cifar(root: Path, hundred: bool):
    """CIFAR-10/100 from the python-pickle files in `root` (torchvision's layout; not checksummed, so subsets in
    the same format load too; unpickled by an allow-list of containers and numpy arrays, so no file runs code)."""
    base, train_names, test_name, meta_name, class_key, tv_name = CIFAR[hundred]
    folder = root / base
    missing = [n for n in (*train_names, test_name, meta_name) if not (folder / n).is_file()]
    if missing:
        raise UserError(f"data: {tv_name} not found in {folder} (missing {', '.join(missing)}); download it once "
                        f"with torchvision.datasets.{tv_name}({str(root)!r}, download=True) or set data.root")
    label_key = "fine_labels" if hundred else "labels"
    xtr, ytr = _cifar_split(folder, train_names, label_key)
    xte, yte = _cifar_split(folder, [test_name], label_key)
    classes = _read_pickle(folder / meta_name, (class_key,))[class_key]
    if not _flat(classes, str):
        raise UserError(f"data: {folder / meta_name} is not a CIFAR pickle: '{class_key}' must be a list of strings")
    classes = tuple(classes)
    return xtr, ytr, xte, yte, len(classes), classes


def _cifar10(root: Path, image_size=None):
    return _cifar(root, hundred=False)


def _cifar100(root: Path, image_size=None):
    return _cifar(root, hundred=True)


def _digits(root: Path, image_size=None):
    """scikit-learn's 8x8 digits (1,797 images, values 0-16 scaled to 0-255); last 297 are the test set."""
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        raise UserError("data: digits needs scikit-learn; pip install scikit-learn") from None
    d = load_digits()
    x = np.round(d.images * (255.0 / 16.0)).astype(np.uint8)[:, None]
    y = d.target.astype(np.int64)
    return x[:1500], y[:1500], x[1500:], y[1500:], 10, tuple(map(str, range(10)))


def _imagefolder(root: Path, image_size=None):
    """torchvision ImageFolder: `<root>/train/<class>/*` and `<root>/val/<class>/*` (val is the test set)."""
    from torchvision.datasets import ImageFolder

    for part in ("train", "val"):
        if not (root / part).is_dir():
            raise UserError(f"data: imagefolder needs {root / part}/<class>/<images>; set data.root")
    train, test = ImageFolder(str(root / "train")), ImageFolder(str(root / "val"))
    if train.classes != test.classes:
        raise UserError(f"data: {root}/train and {root}/val have different class folders")

    def read(folder):
        imgs = [folder.loader(p).convert("RGB") for p, _ in folder.samples]
        if image_size:
            imgs = [i.resize((image_size, image_size)) for i in imgs]
        imgs = [np.asarray(i) for i in imgs]
        sizes = {i.shape for i in imgs}
        if len(sizes) != 1:
            raise UserError(f"data: imagefolder images must share one size (set data.image_size); found {sorted(sizes)[:3]}")
        return np.stack(imgs).transpose(0, 3, 1, 2).copy(), np.asarray(folder.targets)

    (xtr, ytr), (xte, yte) = read(train), read(test)
    return xtr, ytr, xte, yte, len(train.classes), tuple(train.classes)


def synthetic_arrays(n_train: int = 2000, n_test: int = 500, num_classes: int = 10, size: int = 16,
                     chans: int = 1, seed: int = 0):
    """Random but learnable images: a smooth class template (4x4 blocks) plus noise and a one-pixel shift."""
    rng = np.random.default_rng(seed)
    coarse = rng.uniform(0, 1, (num_classes, chans, 4, 4)) > 0.5
    templates = np.kron(coarse, np.ones((size // 4, size // 4))).astype(np.float32) * 0.6 + 0.2

    def draw(n):
        y = rng.integers(0, num_classes, n)
        x = templates[y] + rng.normal(0, 0.2, (n, chans, size, size))
        shift = rng.integers(-1, 2, (n, 2))
        x = np.stack([np.roll(img, tuple(s), axis=(1, 2)) for img, s in zip(x, shift)])
        return np.clip(x * 255, 0, 255).astype(np.uint8), y.astype(np.int64)

    (xtr, ytr), (xte, yte) = draw(n_train), draw(n_test)
    return xtr, ytr, xte, yte, num_classes, tuple(map(str, range(num_classes)))


def _synthetic(root: Path, image_size=None):
    return synthetic_arrays()


# name -> (loader, pad-and-crop pixels, horizontal flip)
DATASETS = {
    "fashion_mnist": (_fashion_mnist, 2, True),
    "cifar10": (_cifar10, 4, True),
    "cifar100": (_cifar100, 4, True),
    "digits": (_digits, 1, False),
    "imagefolder": (_imagefolder, 4, True),
    "imagenet": (None, 0, True),  # streamed from files by dse.train.imagenet: only the file list is held in memory
    "synthetic": (_synthetic, 1, False),
}


# ----- assembling a Data -----

def _resize(x: torch.Tensor, size: int) -> torch.Tensor:
    """Bilinear resize of uint8 images to size x size (chunked to bound memory)."""
    if x.shape[-1] == size and x.shape[-2] == size:
        return x
    out = [F.interpolate(c.float(), size=(size, size), mode="bilinear", align_corners=False, antialias=True)
           for c in x.split(4096)]
    return torch.cat(out).round().clamp(0, 255).to(torch.uint8)


def load(name: str, root=None, subset: int | None = None, val_fraction: float = 0.1, seed: int = 0,
         device="cpu", image_size: int | None = None, val_subset: int | None = None, augment: bool = True,
         format: str = "folder", workers: int | None = None) -> Data:
    """Load dataset `name`: seeded train/val split, `subset` training samples at most, tensors on `device`.

    `augment` keeps the dataset's standard augmentation (pad-and-crop, flip); short proxy budgets train
    better without it.
    `format` and `workers` are for the streamed datasets (imagenet: dse.train.imagenet), which return a
    `dse.train.imagenet.Streamed` instead.
    """
    loader, pad, flip = choose("dataset", name, DATASETS)
    if not isinstance(augment, bool):
        raise UserError(f"data.augment: must be true or false, got {augment!r}")
    if not augment:
        pad, flip = 0, False
    if not 0.0 <= val_fraction < 1.0:
        raise UserError(f"data.val_fraction: must be in [0, 1), got {val_fraction}")
    for key, value in (("subset", subset), ("val_subset", val_subset), ("image_size", image_size)):
        if value is not None and (not isinstance(value, int) or value <= 0):
            raise UserError(f"data.{key}: must be a positive integer or null, got {value!r}")
    if loader is None:
        from dse.train import imagenet
        where = str(root) if "://" in str(root) else _root(root)  # litdata may read an object store URL
        return imagenet.load(where, subset, val_subset, val_fraction, seed, image_size, augment, workers,
                             format, name)
    xtr, ytr, xte, yte, num_classes, classes = loader(_root(root), image_size)
    xtr, xte = torch.from_numpy(np.array(xtr)), torch.from_numpy(np.array(xte))
    ytr, yte = torch.from_numpy(np.array(ytr, dtype=np.int64)), torch.from_numpy(np.array(yte, dtype=np.int64))
    if image_size:
        xtr, xte = _resize(xtr, image_size), _resize(xte, image_size)
    perm = torch.randperm(len(ytr), generator=torch.Generator().manual_seed(seed))
    n_val = int(round(len(ytr) * val_fraction))
    val_idx, train_idx = perm[:n_val], perm[n_val:]
    if subset:
        train_idx = train_idx[:subset]
    if val_subset:
        val_idx = val_idx[:val_subset]
    train, val, test = Split(xtr[train_idx], ytr[train_idx]), Split(xtr[val_idx], ytr[val_idx]), Split(xte, yte)
    scaled = train.x.float().div_(255)
    mean = tuple(scaled.mean(dim=(0, 2, 3)).tolist())
    std = tuple(max(s, 1e-3) for s in scaled.std(dim=(0, 2, 3)).tolist())
    return Data(name=name, train=train.to(device), val=val.to(device), test=test.to(device),
                num_classes=num_classes, in_chans=xtr.shape[1], image_size=xtr.shape[-1], mean=mean, std=std,
                pad=pad, flip=flip, classes=classes)


# ----- batches -----

class Batches:
    """Batches of one split, sliced from device tensors; normalized (and augmented when training) there.

    An iterable with `__len__` (Lightning reads a plain list as several loaders). Each pass draws a new
    seeded permutation. `shard(rank, world)` gives each DDP rank its own equal share of every epoch.
    """

    def __init__(self, split: Split, data: Data, batch_size: int, train: bool = False, seed: int = 0,
                 limit: int | None = None):
        self.split, self.data, self.batch_size, self.train, self.seed = split, data, batch_size, train, seed
        self.limit, self.rank, self.world, self.epoch = limit, 0, 1, 0
        self.channels_last = False
        self._stats = None

    def to(self, device, channels_last: bool = False) -> "Batches":
        """Move the split to `device` (once) and choose the memory format of the batches."""
        if self.split.x.device != torch.device(device):
            self.split = self.split.to(device)
        self.channels_last = channels_last
        self._stats = None
        return self

    def shard(self, rank: int, world: int) -> "Batches":
        """Use only this rank's share (equal sizes, so DDP ranks take the same number of steps)."""
        self.rank, self.world = rank, world
        return self

    def _count(self) -> int:
        return len(self.split) // self.world

    def __len__(self) -> int:
        n = self._count()
        steps = n // self.batch_size if self.train else -(-n // self.batch_size)
        steps = max(steps, 1) if n else 0
        return min(steps, self.limit) if self.limit else steps

    def _normalizer(self):
        if self._stats is None:
            dev = self.split.x.device
            shape = (1, -1, 1, 1)
            mean = torch.tensor(self.data.mean, device=dev).view(shape) * 255
            std = torch.tensor(self.data.std, device=dev).view(shape) * 255
            self._stats = (mean, 1.0 / std)
        return self._stats

    def _order(self) -> torch.Tensor:
        dev = self.split.x.device
        n = self._count() * self.world
        if not self.train:
            return torch.arange(self.rank, n, self.world, device=dev)
        gen = torch.Generator(device=dev).manual_seed(self.seed * 100003 + self.epoch)
        perm = torch.randperm(len(self.split), generator=gen, device=dev)[:n]
        return perm[self.rank::self.world]

    def __iter__(self):
        order = self._order()
        self.epoch += int(self.train)
        bs = self.batch_size
        for i in range(len(self)):
            idx = order[i * bs:(i + 1) * bs]
            if self.train and len(idx) < bs:
                idx = order[:bs]
            yield self._batch(idx)

    def _batch(self, idx: torch.Tensor):
        x, y = self.split.x.index_select(0, idx), self.split.y.index_select(0, idx)
        if self.train and self.data.pad:
            x = random_crop(x, self.data.pad)  # black border, as on the raw images
        mean, inv_std = self._normalizer()
        x = (x.float() - mean) * inv_std
        if self.train and self.data.flip:
            flip = torch.rand(len(x), device=x.device) < 0.5
            x = torch.where(flip.view(-1, 1, 1, 1), x.flip(3), x)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x, y


def random_crop(x: torch.Tensor, pad: int) -> torch.Tensor:
    """Zero-pad by `pad` and crop back at a random offset per image (N x C x H x W, any dtype)."""
    n, c, h, w = x.shape
    wide = w + 2 * pad
    padded = F.pad(x, (pad, pad, pad, pad)).view(n, c, -1)
    dy = torch.randint(0, 2 * pad + 1, (n, 1, 1), device=x.device)
    dx = torch.randint(0, 2 * pad + 1, (n, 1, 1), device=x.device)
    grid = torch.arange(h, device=x.device).view(1, h, 1) * wide + torch.arange(w, device=x.device).view(1, 1, w)
    index = (grid + dy * wide + dx).view(n, 1, h * w).expand(n, c, h * w)
    return padded.gather(2, index).view(n, c, h, w)

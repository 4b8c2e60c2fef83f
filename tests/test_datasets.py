"""dse.train.datasets: every loader on real files (CIFAR pickles and PNGs written here), splits, batches."""
import gzip
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from dse.train import datasets
from dse.errors import UserError


def write_cifar(root: Path, hundred: bool = False, per_batch: int = 20, seed: int = 0) -> None:
    """Write a small dataset in CIFAR's on-disk pickle format (torchvision's folder layout)."""
    rng = np.random.default_rng(seed)
    folder = root / ("cifar-100-python" if hundred else "cifar-10-batches-py")
    folder.mkdir(parents=True)
    classes = 100 if hundred else 10
    label_key = "fine_labels" if hundred else "labels"
    names = ["train"] if hundred else [f"data_batch_{i}" for i in range(1, 6)]
    for name in names + ["test" if hundred else "test_batch"]:
        entry = {"data": rng.integers(0, 256, (per_batch, 3 * 32 * 32), dtype=np.uint8),
                 label_key: rng.integers(0, classes, per_batch).tolist()}
        (folder / name).write_bytes(pickle.dumps(entry))
    meta_name, key = ("meta", "fine_label_names") if hundred else ("batches.meta", "label_names")
    (folder / meta_name).write_bytes(pickle.dumps({key: [f"c{i}" for i in range(classes)]}))


def write_idx(path: Path, array: np.ndarray) -> None:
    """Write an idx file (MNIST format), gzipped."""
    header = bytes([0, 0, 8, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


def test_cifar10_from_pickle_files(tmp_path):
    write_cifar(tmp_path)
    data = datasets.load("cifar10", root=tmp_path, val_fraction=0.2)
    assert (len(data.train), len(data.val), len(data.test)) == (80, 20, 20)
    assert data.train.x.shape[1:] == (3, 32, 32) and data.train.x.dtype == torch.uint8
    assert data.num_classes == 10 and data.in_chans == 3 and data.image_size == 32
    assert data.classes[:2] == ("c0", "c1") and data.flip and data.pad == 4


def test_cifar10_pixels_keep_channel_order(tmp_path):
    write_cifar(tmp_path)
    raw = pickle.loads((tmp_path / "cifar-10-batches-py" / "test_batch").read_bytes())
    data = datasets.load("cifar10", root=tmp_path)
    first = torch.from_numpy(raw["data"][0].reshape(3, 32, 32))
    assert torch.equal(data.test.x[0], first)
    assert data.test.y[0].item() == raw["labels"][0]


def test_cifar100_from_pickle_files(tmp_path):
    write_cifar(tmp_path, hundred=True, per_batch=50)
    data = datasets.load("cifar100", root=tmp_path, val_fraction=0.1)
    assert data.num_classes == 100 and len(data.train) == 45 and len(data.test) == 50


def test_missing_cifar_says_where(tmp_path):
    with pytest.raises(UserError, match="cifar-10-batches-py"):
        datasets.load("cifar10", root=tmp_path)


def test_imagefolder_with_pngs(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    for part, n in (("train", 6), ("val", 2)):
        for cls in ("cat", "dog", "eel"):
            (tmp_path / part / cls).mkdir(parents=True)
            for i in range(n):
                Image.fromarray(rng.integers(0, 256, (12, 12, 3), dtype=np.uint8)).save(tmp_path / part / cls / f"{i}.png")
    data = datasets.load("imagefolder", root=tmp_path, val_fraction=1 / 6)
    assert data.classes == ("cat", "dog", "eel") and data.num_classes == 3
    assert (len(data.train), len(data.val), len(data.test)) == (15, 3, 6)
    assert data.train.x.shape[1:] == (3, 12, 12)
    resized = datasets.load("imagefolder", root=tmp_path, image_size=8)
    assert resized.image_size == 8 and resized.test.x.shape[1:] == (3, 8, 8)


def test_digits():
    data = datasets.load("digits")
    assert data.image_size == 8 and data.in_chans == 1 and data.num_classes == 10
    assert len(data.train) + len(data.val) == 1500 and len(data.test) == 297
    assert not data.flip  # a mirrored digit is another digit
    assert data.train.x.max() > 200


def test_synthetic_is_deterministic_and_learnable_shape():
    a, b = datasets.load("synthetic", seed=3), datasets.load("synthetic", seed=3)
    assert torch.equal(a.train.x, b.train.x) and torch.equal(a.val.y, b.val.y)
    c = datasets.load("synthetic", seed=4)
    assert not torch.equal(a.train.y, c.train.y)  # another split of the same images
    # class-dependent: per-class mean images differ far more than noise would make them
    x, y = a.train.x.float(), a.train.y
    means = torch.stack([x[y == k].mean(0) for k in range(10)])
    assert (means[0] - means[1]).abs().mean() > 20


def test_fashion_mnist_from_debian_folder(tmp_path):
    if datasets._idx_folder(datasets.DEBIAN_FASHION_MNIST) is None:
        pytest.skip("dataset-fashion-mnist is not installed (CI installs it)")
    data = datasets.load("fashion_mnist", root=tmp_path, subset=1000, val_subset=500)
    assert len(data.train) == 1000 and len(data.val) == 500 and len(data.test) == 10000
    assert data.train.x.shape[1:] == (1, 28, 28) and data.num_classes == 10
    assert data.classes[0] == "T-shirt/top"


def test_fashion_mnist_prefers_torchvision_folder(tmp_path):
    rng = np.random.default_rng(0)
    raw = tmp_path / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    write_idx(raw / "train-images-idx3-ubyte.gz", rng.integers(0, 256, (30, 28, 28)))
    write_idx(raw / "train-labels-idx1-ubyte.gz", rng.integers(0, 10, 30))
    write_idx(raw / "t10k-images-idx3-ubyte.gz", rng.integers(0, 256, (7, 28, 28)))
    write_idx(raw / "t10k-labels-idx1-ubyte.gz", rng.integers(0, 10, 7))
    data = datasets.load("fashion_mnist", root=tmp_path, val_fraction=0.1)
    assert len(data.train) == 27 and len(data.val) == 3 and len(data.test) == 7


def test_missing_fashion_mnist_says_how_to_get_it(tmp_path, monkeypatch):
    import torchvision.datasets

    monkeypatch.setattr(datasets, "DEBIAN_FASHION_MNIST", tmp_path / "nowhere")

    def offline(*args, **kwargs):  # this machine has no internet; make that explicit for online machines too
        raise RuntimeError("offline")

    monkeypatch.setattr(torchvision.datasets, "FashionMNIST", offline)
    with pytest.raises(UserError, match="apt-get install dataset-fashion-mnist"):
        datasets.load("fashion_mnist", root=tmp_path)


def test_unknown_dataset_lists_valid_names():
    with pytest.raises(UserError, match="valid: cifar10, cifar100, digits, fashion_mnist, imagefolder, imagenet, synthetic"):
        datasets.load("mnist")


def test_val_split_is_disjoint_seeded_and_subset_limits_train():
    data = datasets.load("synthetic", seed=1, val_fraction=0.25)
    arrays = datasets.synthetic_arrays()
    full = torch.from_numpy(arrays[0]).flatten(1)
    def rows(split):
        return {tuple(r.tolist()) for r in split.x.flatten(1)}
    assert not rows(data.train) & rows(data.val)
    assert len(data.train) + len(data.val) == len(full) and len(data.val) == 500
    small = datasets.load("synthetic", seed=1, val_fraction=0.25, subset=100)
    assert len(small.train) == 100 and torch.equal(small.val.x, data.val.x)  # same val at every fidelity


def test_batches_normalize_and_augment():
    torch.manual_seed(0)
    data = datasets.load("fashion_mnist" if datasets._idx_folder(datasets.DEBIAN_FASHION_MNIST) else "synthetic",
                         subset=1024)
    train = datasets.Batches(data.train, data, 128, train=True, seed=0)
    assert len(train) == 8
    xs, ys = zip(*train)
    x = torch.cat(xs)
    assert x.dtype == torch.float32 and abs(x.mean().item()) < 0.2 and 0.8 < x.std().item() < 1.2
    assert sorted(torch.cat(ys).tolist()) == sorted(data.train.y.tolist())  # one epoch: each sample once
    again = torch.cat([b[1] for b in train])
    assert not torch.equal(again, torch.cat(ys))  # next epoch: another order
    val = datasets.Batches(data.val, data, 500)
    assert len(val) == -(-len(data.val) // 500)
    assert torch.equal(torch.cat([b[1] for b in val]), data.val.y)  # no shuffle, no drop


def test_random_crop_shifts_within_padding():
    torch.manual_seed(0)
    x = torch.arange(1, 17, dtype=torch.uint8).view(1, 1, 4, 4).repeat(64, 1, 1, 1)
    out = datasets.random_crop(x, 1)
    assert out.shape == x.shape
    for img in out:
        inner = img[0][img[0] > 0]
        assert len(inner) >= 9  # at most one row and one column fall off
    assert len({tuple(o.flatten().tolist()) for o in out}) > 3  # offsets vary per image


def test_batches_shard_by_rank():
    data = datasets.load("synthetic")
    shards = [datasets.Batches(data.train, data, 100, train=True).shard(r, 2) for r in range(2)]
    assert len(shards[0]) == len(shards[1]) == len(data.train) // 2 // 100  # DDP ranks step in lockstep
    evals = [datasets.Batches(data.val, data, 64).shard(r, 2) for r in range(2)]
    parts = [torch.cat([b[1] for b in e]) for e in evals]
    assert torch.equal(torch.stack(parts, 1).flatten(), data.val.y[:len(parts[0]) * 2])  # disjoint, complete


class _Payload:
    """A pickle that runs a shell command when unpickled by plain `pickle.load`."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        import os

        return os.system, (f"touch {self.marker}",)


def test_cifar_pickle_that_runs_code_is_refused_without_running(tmp_path):
    write_cifar(tmp_path)
    marker, planted = tmp_path / "pwned", tmp_path / "cifar-10-batches-py" / "data_batch_1"
    planted.write_bytes(pickle.dumps({"data": _Payload(marker), "labels": [0]}))
    with pytest.raises(UserError) as info:
        datasets.load("cifar10", root=tmp_path)
    message = str(info.value)
    assert "\n" not in message and str(planted) in message and "system" in message
    assert not marker.exists()


@pytest.mark.timeout(10, method="thread")
def test_cifar_pickle_of_shared_lists_is_refused_fast(tmp_path):
    write_cifar(tmp_path)
    row = [0] * 1000
    bomb = [[[row] * 1000] * 1000]  # a few kB pickled (shared references), 10**9 ints if converted
    planted = tmp_path / "cifar-10-batches-py" / "test_batch"
    planted.write_bytes(pickle.dumps({"data": bomb, "labels": bomb}))
    with pytest.raises(UserError, match="test_batch is not a CIFAR pickle: it needs 'data'"):
        datasets.load("cifar10", root=tmp_path)


@pytest.mark.parametrize("content", [b"not a pickle", pickle.dumps([1, 2, 3]), b"\x80\x04\x95"])
def test_broken_cifar_file_is_one_line_naming_it(tmp_path, content):
    write_cifar(tmp_path)
    (tmp_path / "cifar-10-batches-py" / "batches.meta").write_bytes(content)
    with pytest.raises(UserError, match="batches.meta is not a CIFAR pickle") as info:
        datasets.load("cifar10", root=tmp_path)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("protocol", [2, 5])
def test_cifar_pickles_of_any_protocol_load(tmp_path, protocol):
    write_cifar(tmp_path)
    folder = tmp_path / "cifar-10-batches-py"
    for path in folder.iterdir():
        path.write_bytes(pickle.dumps(pickle.loads(path.read_bytes()), protocol=protocol))
    data = datasets.load("cifar10", root=tmp_path, val_fraction=0.2)
    assert len(data.train) == 80 and data.classes[:2] == ("c0", "c1")

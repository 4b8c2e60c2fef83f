"""data=imagenet (dse.train.imagenet): an ImageFolder tree of generated JPEGs, streamed by DataLoader workers, on CPU."""
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from dse.train import datasets

from dse.train import imagenet

from dse.train import fit as train
from dse.errors import UserError
from dse.point import Point, Stage, Stem

from search_helpers import env

CLASSES = ("cat", "dog", "eel")
SIZE = 32  # crop size here (ImageNet's is 224), to keep the tests fast
POINT = Point(stages=(Stage("basic", 1, 8), Stage("basic", 1, 16, stride=2)), stem=Stem(width=8),
              image_size=SIZE, in_chans=3, num_classes=len(CLASSES))


def write_tree(root: Path, per_class=(4, 2), seed: int = 0) -> Path:
    """root/train/<class>/*.JPEG and root/val/<class>/*: class-tinted noise of varied sizes, one grey JPEG and
    one PNG among them."""
    rng = np.random.default_rng(seed)
    for part, n in zip(("train", "val"), per_class):
        for k, cls in enumerate(CLASSES):
            (root / part / cls).mkdir(parents=True)
            for i in range(n):
                h, w = int(rng.integers(36, 90)), int(rng.integers(36, 90))
                pixels = np.clip(rng.normal(60 + 60 * k, 40, (h, w, 3)), 0, 255).astype(np.uint8)
                img = Image.fromarray(pixels)
                if (k, i) == (0, 0):
                    img.convert("L").save(root / part / cls / f"{cls}_{i}.JPEG")
                elif (k, i) == (1, 1):
                    img.save(root / part / cls / f"{cls}_{i}.png")
                else:
                    img.save(root / part / cls / f"{cls}_{i}.JPEG", quality=85)
    (root / "train" / "cat" / "notes.txt").write_text("not an image: left out by extension")
    return root


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> Path:
    return write_tree(tmp_path_factory.mktemp("imagenet"))


def load(root, **kw):
    return datasets.load("imagenet", root=root, val_fraction=kw.pop("val_fraction", 0.0),
                         image_size=kw.pop("image_size", SIZE), workers=kw.pop("workers", 0), **kw)


def first(stream):
    return next(iter(stream))


def test_labels_are_the_sorted_train_folders_for_train_and_val(tree):
    data = load(tree)
    assert isinstance(data, imagenet.Streamed)
    assert data.classes == CLASSES and data.num_classes == 3 and data.in_chans == 3 and data.image_size == SIZE
    assert (len(data.train), len(data.val), len(data.test)) == (12, 6, 6)  # val = <root>/val = the test set
    for split in (data.train, data.test):
        names = [p.decode().split("/")[1] for p in split.x]
        assert [CLASSES[y] for y in split.y] == names
    assert not any(p.endswith(b".txt") for p in data.train.x)
    held = load(tree, val_fraction=0.25)  # or hold out part of train instead
    assert (len(held.train), len(held.val), len(held.test)) == (9, 3, 6)
    assert not set(held.train.x) & set(held.val.x)


def test_val_class_missing_from_train_is_one_line(tmp_path, tree):
    shutil.copytree(tree, tmp_path / "t")
    shutil.copytree(tmp_path / "t" / "val" / "eel", tmp_path / "t" / "val" / "yak")
    with pytest.raises(UserError, match="val/yak is a class that .*train does not have") as info:
        load(tmp_path / "t")
    assert "\n" not in str(info.value)
    shutil.rmtree(tmp_path / "t" / "val" / "yak")
    shutil.rmtree(tmp_path / "t" / "val" / "dog")  # val with fewer classes keeps train's mapping
    data = load(tmp_path / "t")
    assert data.num_classes == 3 and sorted(set(data.val.y.tolist())) == [0, 2]


def test_missing_tree_and_flat_val_say_what_is_expected(tmp_path):
    with pytest.raises(UserError, match="imagenet needs .*train/<class>/<images>; set data.root"):
        load(tmp_path)
    write_tree(tmp_path / "t", per_class=(2, 0))
    Image.new("RGB", (8, 8)).save(tmp_path / "t" / "val" / "ILSVRC2012_val_00000001.JPEG")
    with pytest.raises(UserError, match="move ImageNet's val images into one folder per class"):
        load(tmp_path / "t")


def test_batch_shapes_dtypes_and_normalization(tree):
    data = load(tree)
    x, y = first(data.batches(data.train, 5, train=True))
    assert x.shape == (5, 3, SIZE, SIZE) and x.dtype == torch.float32 and y.dtype == torch.int64
    assert x.is_contiguous() and -3 < x.mean().item() < 3
    val = data.batches(data.val, 4)
    assert len(val) == 2 and [len(b[1]) for b in val] == [4, 2]  # evaluation keeps the last partial batch
    assert len(data.batches(data.train, 5, train=True)) == 2  # training drops it
    x224, _ = first(datasets.load("imagenet", root=tree, workers=0).batches(data.val, 2))
    assert x224.shape == (2, 3, 224, 224)  # ImageNet's geometry by default


def test_same_seed_same_batches_whatever_the_workers(tree):
    data = load(tree)
    a = data.batches(data.train, 6, train=True, seed=3)
    xa, ya = first(a)
    xb, yb = first(load(tree, workers=2).batches(data.train, 6, train=True, seed=3))
    assert torch.equal(xa, xb) and torch.equal(ya, yb)  # order, crops and flips
    xc, yc = first(data.batches(data.train, 6, train=True, seed=4))
    assert not torch.equal(xa, xc)
    x2, _ = first(a)  # the next epoch: another order and other crops
    assert not torch.equal(xa, x2)
    val = data.batches(data.val, 6)
    assert torch.equal(first(val)[0], first(val)[0])  # evaluation: the same resize + center crop every pass


def test_crops_follow_the_standard_geometry():
    rng = np.random.default_rng(0)
    for _ in range(200):
        left, top, right, bottom = imagenet.crop_box(500, 375, rng)
        w, h = right - left, bottom - top
        assert 0 <= left and right <= 500 and 0 <= top and bottom <= 375
        assert 0.08 * 500 * 375 * 0.98 <= w * h <= 500 * 375 and 3 / 4 * 0.97 <= w / h <= 4 / 3 * 1.03
    assert imagenet.center_box(500, 375) == pytest.approx((85.9375, 23.4375, 414.0625, 351.5625))  # 375*224/256


@pytest.mark.parametrize("world", [2, 3])
def test_ddp_shards_are_disjoint_equal_and_cover_the_split(tree, world):
    data = load(tree)
    for split, is_train in ((data.train, True), (data.val, False)):
        shards = [data.batches(split, 2, train=is_train, seed=1).shard(r, world) for r in range(world)]
        orders = [s.order() for s in shards]
        assert len({len(o) for o in orders}) == 1 and len({len(s) for s in shards}) == 1
        assert sorted(np.concatenate(orders).tolist()) == list(range(len(split)))  # 12 and 6 divide by 2 and 3
        for s, o in zip(shards, orders):  # the batches hold exactly the shard's images, in its order
            assert torch.cat([b[1] for b in s]).tolist() == split.y[o].tolist()
    odd = data.train.take(np.arange(7))
    shards = [data.batches(odd, 1, train=True).shard(r, 3) for r in range(3)]
    orders = [set(s.order().tolist()) for s in shards]
    assert [len(o) for o in orders] == [2, 2, 2] and not (orders[0] & orders[1] or orders[1] & orders[2])


def broken_tree(tmp_path, tree, content: bytes) -> Path:
    root = tmp_path / "t"
    shutil.copytree(tree, root)
    (root / "train" / "dog" / "broken.JPEG").write_bytes(content)
    return root


def truncated_jpeg(tree) -> bytes:
    blob = (tree / "train" / "eel" / "eel_0.JPEG").read_bytes()
    return blob[:len(blob) // 2]


@pytest.mark.parametrize("kind", ["garbage", "truncated"])
@pytest.mark.parametrize("workers", [0, 1])
def test_bad_image_is_one_line_naming_its_path(tmp_path, tree, kind, workers):
    content = b"this is not a JPEG" * 10 if kind == "garbage" else truncated_jpeg(tree)
    root = broken_tree(tmp_path, tree, content)
    data = load(root, workers=workers)
    with pytest.raises(imagenet.BadImage) as info:
        list(data.batches(data.train, 13, train=True))
    message = str(info.value)
    assert "\n" not in message and str(root / "train" / "dog" / "broken.JPEG") in message
    assert message.startswith("data: ") and "not a readable image" in message


def test_decompression_bomb_limit_stays_on(tree, monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    data = load(tree)
    with pytest.raises(imagenet.BadImage, match=r"(?i)cat_0.JPEG .*decompression.bomb"):
        first(data.batches(data.val, 2))


def test_one_training_step_through_dse_train(tree):
    data = load(tree)
    recipe = train.recipe({"max_epochs": 1, "batch_size": 6, "lr": 0.05, "threads": 1, "limit_batches": 2,
                           "eval_test": True, "schedule": "constant"})
    result = train.fit(POINT, data, recipe, progress=False)
    assert result.status == "ok", result.reason
    assert result.epochs == 1 and np.isfinite(result.history[0]["train/loss"])
    assert 0.0 <= result.val_acc <= 1.0 and 0.0 <= result.test_acc <= 1.0


def test_search_with_a_bad_image_ends_in_one_line_exit_nonzero(tmp_path, tree):
    import subprocess
    import sys

    root = broken_tree(tmp_path, tree, b"\xff\xd8\xff broken")
    proc = subprocess.run(
        [sys.executable, "-m", "dse.search", "space=resnet", "fidelity=smoke", "progress=false", "trainer.threads=1",
         "data=imagenet", f"data.root={root}", "data.image_size=16", "data.workers=0", "study.n_trials=1",
         "study.timeout=null", f"run_dir={tmp_path / 'run'}"],
        cwd=Path(__file__).resolve().parents[1], env=env(), capture_output=True, text=True, timeout=120)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 2 and "Traceback" not in out, out[-3000:]  # the study stops: a user error
    lines = [line for line in out.splitlines() if str(root / "train" / "dog" / "broken.JPEG") in line]
    assert lines and "not a readable image" in lines[0], out[-3000:]
    assert "no trial was trained" not in out  # not blamed on the budget


def test_paper_fidelity_command_of_resnext_table3(tree, tmp_path):
    from dse import search

    cfg = search.compose(["study=resnext_table3", "data=imagenet", f"data.root={tree}", "fidelity=paper",
                          "trainer.recipe=resnext_imagenet", f"run_dir={tmp_path}"])
    job = search.prepare(cfg)
    assert isinstance(job.data, imagenet.Streamed) and job.data.image_size == 224 and len(job.data.train) == 12
    assert job.recipe.epochs == 100 and job.recipe.milestones == (30, 60, 90) and job.recipe.eval_test
    assert len(job.cells) == 10


def test_imagenet_recipes_are_the_papers():
    for name, epochs, milestones in (("resnext_imagenet", 100, (30, 60, 90)), ("resnet_imagenet", 90, (30, 60)),
                                     ("wrn_imagenet", 90, (30, 60))):
        r = train.RECIPES[name]
        assert (r.epochs, r.batch_size, r.lr, r.momentum, r.weight_decay) == (epochs, 256, 0.1, 0.9, 1e-4)
        assert r.schedule == "step" and r.milestones == milestones and r.gamma == 0.1
        lrs = [train.lr_factor(r, int(e * 100), 100) for e in (0, 29.99, 30, 59.99, 60, 89.99)]
        assert lrs[:5] == pytest.approx([1, 1, 0.1, 0.1, 0.01])


def test_unknown_format_lists_the_formats(tree):
    with pytest.raises(UserError, match="valid: folder, litdata"):
        load(tree, format="tfrecord")


def test_litdata_missing_says_pip_install(tree, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "litdata", None)  # import litdata now fails, installed or not
    with pytest.raises(UserError, match="pip install litdata") as info:
        load(tree, format="litdata")
    assert "\n" not in str(info.value)


def test_litdata_round_trip(tmp_path, tree):
    pytest.importorskip("litdata")
    out = imagenet.to_litdata(tree, tmp_path / "shards")
    shards, folder = load(out, format="litdata"), load(tree)
    assert shards.classes == CLASSES and (len(shards.train), len(shards.val)) == (12, 6)
    xs, ys = first(shards.batches(shards.val, 6))
    xf, yf = first(folder.batches(folder.val, 6))
    assert torch.equal(xs, xf) and torch.equal(ys, yf)  # the same bytes, decoded and cropped alike
    xt, yt = first(shards.batches(shards.train, 12, train=True, seed=2))
    assert xt.shape == (12, 3, SIZE, SIZE) and sorted(yt.tolist()) == sorted(folder.train.y.tolist())
    with pytest.raises(UserError, match="is not a litdata dataset"):
        load(tmp_path / "nowhere", format="litdata")

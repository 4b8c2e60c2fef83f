"""GPU-resident trials, trainer.compile, the loss watch, several trials per GPU, and bench/gpu.py.

The unmarked tests run on CPU (the wiring, the packing rule with given memory numbers, the bench's smoke run).
Tests marked `gpu` need CUDA: tests/conftest.py skips them without it; bench/gpu_check.sh runs them.
"""
from __future__ import annotations

import json
import re
import runpy
import sys
from pathlib import Path

import pytest
import torch

from dse.train import datasets

from dse.trials import pool

from dse.train import fit as train
from dse.train import module
from dse.errors import UserError
from dse.point import Point, Stage, Stem

ROOT = Path(__file__).resolve().parents[1]
GIB = 1 << 30
POINT = Point(stages=(Stage("basic", 1, 8), Stage("basic", 1, 16, stride=2)), stem=Stem(width=8),
              image_size=16, in_chans=1)
RGB = POINT.replace(in_chans=3)
gpu = pytest.mark.gpu


@pytest.fixture(scope="module")
def data():
    return datasets.load("synthetic", subset=1024, val_subset=256)


@pytest.fixture(scope="module")
def rgb():
    """Three-channel 16 px synthetic data (channels_last means something only with C > 1)."""
    xtr, ytr, xte, yte, k, classes = datasets.synthetic_arrays(1024, 256, chans=3)
    train_split = datasets.Split(torch.from_numpy(xtr), torch.from_numpy(ytr))
    test_split = datasets.Split(torch.from_numpy(xte), torch.from_numpy(yte))
    return datasets.Data(name="rgb", train=train_split, val=test_split, test=test_split, num_classes=k, in_chans=3,
                         image_size=16, mean=(0.5,) * 3, std=(0.25,) * 3, pad=1, flip=True, classes=classes)


def small(**changes) -> train.Recipe:
    return train.recipe({"max_epochs": 1, "batch_size": 64, "lr": 0.05, "threads": 1, **changes})


# ----- trainer.compile -----

def test_compile_key_takes_auto_true_false_and_names_a_bad_value():
    assert train.recipe({}).compile == "auto"
    assert train.recipe({"compile": True}).compile is True and train.recipe({"compile": "false"}).compile == "false"
    with pytest.raises(UserError, match=r"^trainer.compile: must be auto, true or false, got 'yes'$"):
        train.recipe({"compile": "yes"})
    with pytest.raises(UserError, match="trainer.compile"):
        train.recipe({"compile": 1})
    assert train.compiles(train.recipe({}), on_cuda=False) is False  # auto never compiles on CPU
    assert train.compiles(train.recipe({"compile": True}), on_cuda=False) is True
    assert train.compiles(train.recipe({"compile": "false"}), on_cuda=True) is False


def test_compile_key_is_in_the_root_config(tmp_path):
    from search_helpers import search_here

    proc = search_here("space=resnext", "trainer.compile=yes", cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.strip() == "error: trainer.compile: must be auto, true or false, got 'yes'"


class Counting:
    """Stands in for torch.compile's result: counts the calls that go through it."""

    def __init__(self, model):
        self.model, self.calls = model, 0

    def __call__(self, x):
        self.calls += 1
        return self.model(x)


def test_training_steps_and_only_they_go_through_the_compiled_net(data, monkeypatch):
    made = []
    monkeypatch.setattr(torch, "compile", lambda model, **kw: made.append(Counting(model)) or made[-1])
    result = train.fit(POINT, data, small(limit_batches=5), progress=False)  # auto on CPU: no compile
    assert result.status == "ok" and made == []
    result = train.fit(POINT, data, small(limit_batches=5, compile=True), progress=False)
    assert result.status == "ok" and len(made) == 1
    assert made[0].calls == 5  # the 5 training steps; validation ran the same net eagerly


# ----- the step loop: metrics on the device, NaN watch without a sync -----

def test_val_acc_and_loss_are_those_of_the_trained_net(data):
    net = train._build(POINT, data)
    result = train.fit(net, data, small(eval_test=True), progress=False)
    net.eval()
    correct = total = 0
    loss = 0.0
    with torch.no_grad():
        for x, y in datasets.Batches(data.val, data, 100):
            logits = net(x)
            correct += int((logits.argmax(1) == y).sum())
            loss += float(torch.nn.functional.cross_entropy(logits, y, reduction="sum"))
            total += len(y)
    assert total == len(data.val) and result.val_acc == pytest.approx(correct / total, abs=1e-6)
    assert result.history[-1]["val/loss"] == pytest.approx(loss / total, rel=1e-4)
    hits = sum(int((net(x).argmax(1) == y).sum()) for x, y in datasets.Batches(data.test, data, 100))
    assert result.test_acc == pytest.approx(hits / len(data.test), abs=1e-6)


def test_loss_watch_stops_a_nan_run_mid_epoch(data, monkeypatch):
    monkeypatch.setattr(module, "WATCH_EVERY", 4)
    monkeypatch.setenv("DSE_TEST_FAULT", "nan")  # dse.train.faults: NaN weights before the first step
    result = train.fit(POINT, data, small(batch_size=8), progress=False)  # 128 steps in the epoch
    assert result.status == "diverged"
    assert "step 4 (seen at step 8)" in result.reason  # on CPU the copy made at step 4 is read at step 8


def test_loss_watch_reads_only_landed_copies():
    total = torch.zeros(())
    watch = module.LossWatch(every=2, like=total)
    for step in range(1, 7):
        total += 1.0
        watch.look(total, step, 0)  # finite: never raises
    total += float("inf")
    watch.look(total, 7, 0)  # not a multiple of 2: no look
    watch.look(total, 8, 0)  # reads step 6's copy (finite), copies the inf sum
    with pytest.raises(module.Diverged, match="step 8 .seen at step 10"):
        watch.look(total, 10, 0)


# ----- several trials per GPU: the packing rule, with given memory numbers -----

def test_trials_per_gpu_rule():
    assert pool.trials_per_gpu(free=80 * GIB, footprint=2 * GIB, cores=16) == 8  # 26 fit; capped at 8
    assert pool.trials_per_gpu(free=10 * GIB, footprint=int(2.5 * GIB), cores=16) == 2  # (10-2)/(1.5*2.5) = 2.1
    assert pool.trials_per_gpu(free=80 * GIB, footprint=GIB, cores=3) == 3  # at least one core each
    assert pool.trials_per_gpu(free=10 * GIB, footprint=20 * GIB, cores=16) == 1  # never fewer than the probe
    assert pool.trials_per_gpu(free=GIB, footprint=GIB // 10, cores=16) == 1  # under the 2 GiB reserve
    assert pool.trials_per_gpu(free=140 * GIB, footprint=GIB, cores=64, cap=32) == 32


def test_footprint_counts_the_context_from_free_memory_before():
    probe = {"free": int(135.5 * GIB), "reserved": 3 * GIB, "peak_reserved": 4 * GIB}
    assert pool.footprint(probe, free_before=139 * GIB) == (139 * GIB, int(4.5 * GIB))  # context 0.5 GiB
    assert pool.footprint(probe, free_before=None) == (int(139.5 * GIB), 5 * GIB)  # context guessed: 1 GiB


def test_plan_packs_workers_round_robin_on_gpus():
    slots = pool.plan("auto", 1, gpus=["0", "1"], cores=16, per_gpu=3)
    assert [s.gpus for s in slots] == [("0",), ("1",)] * 3 and {s.threads for s in slots} == {2}
    assert [s.env()["CUDA_VISIBLE_DEVICES"] for s in pool.plan(4, 1, gpus=["3"], cores=8, per_gpu=4)] == ["3"] * 4
    with pytest.raises(UserError, match=r"workers=4 .* needs 4 GPUs; 1 visible \(0\); workers_per_gpu=4 packs them"):
        pool.plan(4, 1, gpus=["0"], cores=8)
    with pytest.raises(UserError, match="workers_per_gpu=2 packs single-GPU trials; trainer.devices=2"):
        pool.plan("auto", 2, gpus=[str(i) for i in range(8)], cores=32, per_gpu=2)
    cpu = pool.plan("auto", 1, gpus=[], cores=8, per_gpu=4)  # on CPU workers_per_gpu changes nothing
    assert len(cpu) == 4 and "CUDA_VISIBLE_DEVICES" not in cpu[0].env()


def test_workers_per_gpu_values():
    assert pool.per_gpu_setting("auto") == "auto" and pool.per_gpu_setting(3) == 3
    for bad in ("two", 0, True, 1.5):
        with pytest.raises(UserError, match="workers_per_gpu: .* is not 'auto' or a positive integer"):
            pool.per_gpu_setting(bad)


def test_probe_files_decide_how_many_workers_join(tmp_path, monkeypatch):
    monkeypatch.setattr(pool.os, "cpu_count", lambda: 16)
    probes = []
    for i, gpu_id in enumerate(("0", "1")):
        path = tmp_path / f"probe{i}.json"
        path.write_text(json.dumps({"free": 70 * GIB, "reserved": 5 * GIB, "peak_reserved": 6 * GIB}))
        probes.append(pool.Slot(i, (gpu_id,), 8, probe=str(path)))
    said = []
    free_before = {"0": 80 * GIB, "1": 80 * GIB}  # footprint 6 + (80 - 70 - 5) = 11 GiB; (80-2)/16.5 = 4 per GPU
    more = pool._packed(probes, ["0", "1"], free_before, total=100, say=said.append)
    assert [(s.index, s.gpus) for s in more] == [(2, ("0",)), (3, ("1",)), (4, ("0",)), (5, ("1",)), (6, ("0",)),
                                                (7, ("1",))]
    assert "one trial holds 11.00 GiB, 80.0 GiB free -> 4 per GPU" in said[0] and said[-1].startswith("pool: +6")
    assert len(pool._packed(probes, ["0", "1"], free_before, total=5, say=said.append)) == 3  # 5 trials: 5 workers


class FakeWorker:
    """Stands in for a worker process: the probe worker writes its probe at its first poll; each ends after 3."""

    def __init__(self, slot):
        self.slot, self.polls, self.pid = slot, 0, 1000 + slot.index

    def poll(self):
        if self.slot.probe and not Path(self.slot.probe).exists():
            Path(self.slot.probe).parent.mkdir(parents=True, exist_ok=True)
            Path(self.slot.probe).write_text(json.dumps({"free": 79 * GIB, "reserved": GIB // 2,
                                                         "peak_reserved": GIB}))
        self.polls += 1
        return None if self.polls < 3 else 0

    def wait(self):
        return 0


def test_pool_run_starts_the_packed_workers_once_the_probe_is_written(tmp_path, monkeypatch):
    from dse.trials import signals
    started = []
    monkeypatch.setattr(pool, "_start", lambda argv, url, run_dir, slot: started.append(slot) or FakeWorker(slot))
    monkeypatch.setattr(pool, "visible_gpus", lambda env=None: ["0"])
    monkeypatch.setattr(pool, "free_memory", lambda gpu: 80 * GIB)
    monkeypatch.setattr(pool.os, "cpu_count", lambda: 16)
    monkeypatch.setattr(pool.time, "sleep", lambda s: None)
    monkeypatch.setattr(pool, "_update", lambda *a: None)
    monkeypatch.setattr(signals, "install", lambda: None)
    monkeypatch.setattr(pool, "open_storage", lambda url, run_dir: None)  # no database: x.db stays unwritten
    said = []
    config = pool.PoolConfig(workers="auto", per_gpu="auto", progress=False)
    code = pool.run([], config, "sqlite:///x.db", "s", tmp_path, total=20, counted=None, say=said.append)
    assert code == 0
    assert [s.index for s in started] == list(range(8)) and {s.gpus for s in started} == {("0",)}
    assert started[0].probe and not any(s.probe for s in started[1:])  # only the first worker measures
    assert any("one trial holds 1.50 GiB, 80.0 GiB free -> 8 per GPU" in line for line in said), said


def test_probe_env_reaches_the_worker():
    slot = pool.Slot(0, ("0",), 4, probe="/tmp/p.json")
    assert slot.env()[pool.MEMORY_PROBE_ENV] == "/tmp/p.json"
    assert slot.env()["TORCHINDUCTOR_COMPILE_THREADS"] == "4"  # a packed worker's compiles use its own cores
    assert pool.MEMORY_PROBE_ENV not in pool.Slot(0, ("0",), 4).env()


# ----- bench/gpu.py on CPU: a smoke run of the code -----

@pytest.fixture
def bench(capsys, monkeypatch):
    """Run `python bench/gpu.py --smoke ARGS…` in this process (torch and dse are imported already: a fresh
    interpreter spent most of the test's time importing them); its stdout lines. --pack's workers are still
    processes of their own. The torch thread count and sys.path the bench sets are put back."""
    def run(*args: str) -> list[str]:
        monkeypatch.setattr(sys, "argv", [str(ROOT / "bench" / "gpu.py"), "--smoke", *args])
        monkeypatch.setattr(sys, "path", list(sys.path))
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")
        threads = torch.get_num_threads()
        try:
            runpy.run_path(str(ROOT / "bench" / "gpu.py"), run_name="__main__")
        finally:
            torch.set_num_threads(threads)
        return capsys.readouterr().out.strip().splitlines()
    return run


def test_bench_gpu_smoke(bench):
    lines = bench()
    for name in ("resnet20", "wrn_16_4", "resnet18_cifar"):
        row = next(ln for ln in lines if ln.startswith(name + " "))
        numbers = [float(v) for v in row.split("(")[0].split()[1:]]
        assert len(numbers) == 8 and all(v > 0 for v in numbers), row
    assert re.fullmatch(r"ratio: \d+\.\d{3}", lines[-1]) and float(lines[-1].split()[1]) > 0


@pytest.mark.slow
def test_bench_gpu_pack_smoke(bench):
    lines = bench("--pack")
    for k in (1, 2):
        assert re.match(rf"K={k}: {k} trials in [\d.]+ s = \d+ trials/hour", next(ln for ln in lines
                                                                                    if ln.startswith(f"K={k}:")))
    assert re.fullmatch(r"ratio: \d+\.\d\d", lines[-1])


# ----- on a GPU (bench/gpu_check.sh) -----

def _first_conv(net: torch.nn.Module) -> torch.nn.Module:
    return next(m for m in net.modules() if isinstance(m, torch.nn.Conv2d))


@gpu
def test_bf16_channels_last_trial_on_gpu(rgb):
    net = train._build(RGB, rgb)
    seen = []
    _first_conv(net).register_forward_hook(
        lambda m, inp, out: seen.append((inp[0].is_contiguous(memory_format=torch.channels_last), out.dtype,
                                         out.device.type)) if m.training else None)
    result = train.fit(net, rgb, small(max_epochs=3, lr=0.2, compile=False), progress=False)
    assert result.status == "ok" and result.val_acc > 0.3  # learns (chance is 0.1)
    assert train._precision(small(), on_gpu=True) == "bf16-mixed"
    assert seen and set(seen) == {(True, torch.bfloat16, "cuda")}


class SyncGuard:
    """Lightning callback: CUDA sync debug mode 'error' from the 3rd step of each epoch until validation."""

    def __init__(self, leak_at: int | None = None):
        import lightning.pytorch as pl

        guard = self

        class Guard(pl.Callback):
            def on_train_batch_start(self, trainer, module, batch, batch_idx):
                if batch_idx == 2:
                    torch.cuda.set_sync_debug_mode("error")
                if guard.leak_at is not None and batch_idx == guard.leak_at:
                    module._loss_sum.item()  # a host sync, to show that the guard would catch one

            def on_validation_start(self, trainer, module):
                torch.cuda.set_sync_debug_mode(0)

            def on_exception(self, trainer, module, exc):
                torch.cuda.set_sync_debug_mode(0)

        self.leak_at, self.callback = leak_at, Guard()


@gpu
@pytest.mark.parametrize("compile_", [False, True])
def test_no_host_sync_in_the_step_loop(rgb, monkeypatch, compile_):
    monkeypatch.setattr(module, "WATCH_EVERY", 4)  # the NaN watch copies and reads inside the guarded steps
    try:
        result = train.fit(RGB, rgb, small(max_epochs=2, compile=compile_), callbacks=[SyncGuard().callback])
        assert result.status == "ok" and result.epochs == 2
        with pytest.raises(RuntimeError, match="synchroniz"):
            train.fit(RGB, rgb, small(compile=compile_), callbacks=[SyncGuard(leak_at=6).callback], progress=False)
    finally:
        torch.cuda.set_sync_debug_mode(0)


@gpu
def test_compile_on_gpu_traces_graphs_and_trains(rgb):
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    counters.clear()
    eager = train.fit(RGB, rgb, small(max_epochs=2, lr=0.2, compile=False), progress=False)
    assert eager.status == "ok" and counters["stats"]["unique_graphs"] == 0
    assert train.compiles(small(), on_cuda=True)  # auto compiles on CUDA
    compiled = train.fit(RGB, rgb, small(max_epochs=2, lr=0.2), progress=False)
    assert compiled.status == "ok" and counters["stats"]["unique_graphs"] >= 1
    assert compiled.val_acc > 0.3 and abs(compiled.val_acc - eager.val_acc) < 0.25


class Hog(torch.nn.Module):
    """A net whose training forward also allocates `per_sample` bytes per image: a real CUDA OOM above a size."""

    def __init__(self, per_sample: int):
        super().__init__()
        self.per_sample, self.sizes, self.errors = per_sample, [], []
        self.net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 16 * 16, 10))

    def forward(self, x):
        if self.training:
            self.sizes.append(len(x))
            try:
                torch.empty(len(x) * self.per_sample, dtype=torch.uint8, device=x.device)  # freed at once
            except torch.cuda.OutOfMemoryError as exc:
                self.errors.append(exc)
                raise
        return self.net(x)


@gpu
def test_real_cuda_oom_retries_at_half_batch(rgb):
    torch.cuda.empty_cache()
    free, _ = torch.cuda.mem_get_info()
    hog = Hog(per_sample=int(0.6 * free) // 32)  # batch 32 takes 0.6 x free; batch 64, 1.2 x free
    result = train.fit(hog, rgb, small(limit_batches=3, oom_retry=True, compile=False), progress=False)
    assert hog.errors and isinstance(hog.errors[0], torch.cuda.OutOfMemoryError)
    assert "total capacity" in str(hog.errors[0])  # the allocator's own message, not a simulated one
    assert result.status == "ok" and result.batch_size == 32 and "retried at batch size 32" in result.reason
    assert hog.sizes[0] == 64 and set(hog.sizes[1:]) == {32}


@gpu
def test_loss_watch_on_cuda_stops_mid_epoch(rgb, monkeypatch):
    monkeypatch.setattr(module, "WATCH_EVERY", 4)
    monkeypatch.setenv("DSE_TEST_FAULT", "nan")
    result = train.fit(RGB, rgb, small(batch_size=8, compile=False), progress=False)  # 128 steps
    assert result.status == "diverged"
    seen = int(re.search(r"seen at step (\d+)", result.reason).group(1))
    assert seen < 128  # well before the epoch's end, without waiting for the device


def _search(*args, tmp_path):
    from search_helpers import ok, search

    return ok(search("space=resnext", "trainer.compile=false", *args, cwd=tmp_path, timeout=400))


@gpu
def test_workers_auto_measures_a_trial_then_packs(tmp_path, monkeypatch):
    from search_helpers import load_study

    monkeypatch.setenv("DSE_TEST_FAULT", "sleep=3")  # trials slow enough that the packed workers get some
    proc = _search("study.n_trials=16", "study.name=pk", "workers=auto", tmp_path=tmp_path)
    lines = proc.stdout.splitlines()
    assert any("workers_per_gpu=auto" in ln for ln in lines), proc.stdout
    rule = next(ln for ln in lines if "one trial holds" in ln)
    k = int(re.search(r"-> (\d+) per GPU", rule).group(1))
    assert k >= 2, rule  # a smoke net is a sliver of a large GPU
    probe = json.loads((tmp_path / "runs/pk/workers/0/probe.json").read_text())
    assert probe["peak_reserved"] > 0 and probe["free"] < probe["total"] and probe["device"]
    trials = load_study(tmp_path / "runs/pk", "pk").trials
    done = [t for t in trials if t.user_attrs.get("status") == "ok"]
    assert len(done) >= 16
    gpus = len(pool.visible_gpus())
    assert len({t.system_attrs["dse:owner"]["pid"] for t in done}) > gpus  # packed workers trained too


@gpu
def test_workers_per_gpu_packs_two_workers_on_one_gpu(tmp_path, monkeypatch):
    from search_helpers import load_study

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", pool.visible_gpus()[0])
    monkeypatch.setenv("DSE_TEST_FAULT", "sleep=2")  # so that one worker cannot take every trial
    proc = _search("study.n_trials=6", "study.name=two", "workers=2", "workers_per_gpu=2", tmp_path=tmp_path)
    gpu_id = pool.visible_gpus()[0]
    assert f"(#0: GPU {gpu_id}, #1: GPU {gpu_id})" in proc.stdout
    done = [t for t in load_study(tmp_path / "runs/two", "two").trials if t.user_attrs.get("status") == "ok"]
    assert len(done) >= 6 and len({t.system_attrs["dse:owner"]["pid"] for t in done}) == 2


@gpu
@pytest.mark.skipif(not torch.cuda.is_available() or torch.cuda.device_count() < 2,
                    reason="needs 2 CUDA GPUs (bench/gpu_check.sh runs it on such a machine)")
def test_ddp_trial_on_two_gpus(tmp_path):
    from search_helpers import load_study

    _search("study.n_trials=2", "study.name=ddp", "trainer.devices=2", "trainer.strategy=ddp",
            "trainer.max_epochs=2", tmp_path=tmp_path)
    trials = load_study(tmp_path / "runs/ddp", "ddp").trials
    assert sum(t.user_attrs.get("status") in ("ok", "pruned") for t in trials) == 2

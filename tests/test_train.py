"""dse.train.fit: real Lightning fits on small synthetic data (one thread, a few dozen steps each)."""
import pytest
import torch

from dse.train import datasets

from dse.train import fit as train
from dse.errors import UserError
from dse.point import Point, Stage, Stem

torch.set_num_threads(1)

POINT = Point(stages=(Stage("basic", 1, 8), Stage("basic", 1, 16, stride=2)), stem=Stem(width=8),
              image_size=16, in_chans=1)


@pytest.fixture(scope="module")
def data():
    return datasets.load("synthetic", subset=1024, val_subset=256)


def small(**changes) -> train.Recipe:
    return train.recipe({"max_epochs": 1, "batch_size": 64, "lr": 0.05, "threads": 1, **changes})


def test_smoke_fit_learns_above_chance(data):
    result = train.fit(POINT, data, small(max_epochs=3, lr=0.2), progress=False)
    assert result.status == "ok" and result.epochs == 3
    assert result.val_acc > 0.3  # chance is 0.1
    assert [h["epoch"] for h in result.history] == [1, 2, 3]
    assert result.history[1]["train/loss"] < result.history[0]["train/loss"]
    assert result.test_acc is None


def test_eval_test_scores_the_test_set(data):
    result = train.fit(POINT, data, small(eval_test=True, limit_batches=4), progress=False)
    assert result.status == "ok" and 0.0 <= result.test_acc <= 1.0


def test_same_seed_same_result(data):
    a = train.fit(POINT, data, small(limit_batches=6, seed=5), progress=False)
    b = train.fit(POINT, data, small(limit_batches=6, seed=5), progress=False)
    c = train.fit(POINT, data, small(limit_batches=6, seed=6), progress=False)
    assert a.history[0]["train/loss"] == b.history[0]["train/loss"] and a.val_acc == b.val_acc
    assert c.history[0]["train/loss"] != a.history[0]["train/loss"]


def test_huge_lr_diverges(data):
    result = train.fit(POINT, data, small(lr=1e8, schedule="constant"), progress=False)
    assert result.status == "diverged" and result.reason.startswith("diverged")


class OOMOnBigBatches(torch.nn.Module):
    """Raises CUDA's out-of-memory error for batches above `limit` (no GPU here: the error is simulated)."""

    def __init__(self, limit: int):
        super().__init__()
        self.limit, self.sizes = limit, []
        self.net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(256, 10))

    def forward(self, x):
        self.sizes.append(len(x))
        if self.training and len(x) > self.limit:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return self.net(x)


def test_oom_ends_the_fit(data):
    model = OOMOnBigBatches(limit=32)
    result = train.fit(model, data, small(limit_batches=2), progress=False)
    assert result.status == "oom" and "out of memory" in result.reason


def test_oom_retry_halves_the_batch(data):
    model = OOMOnBigBatches(limit=32)
    result = train.fit(model, data, small(limit_batches=2, oom_retry=True), progress=False)
    assert result.status == "ok" and result.batch_size == 32
    assert "retried at batch size 32" in result.reason
    assert 64 in model.sizes and 32 in model.sizes


def test_other_errors_propagate(data):
    class Broken(torch.nn.Module):
        def forward(self, x):
            raise ValueError("broken block")

    with pytest.raises(ValueError, match="broken block"):
        train.fit(Broken(), data, small(limit_batches=1), progress=False)


def test_step_schedule_milestones():
    r = train.recipe({"recipe": "wrn"})
    assert (r.epochs, r.lr, r.milestones, r.gamma, r.nesterov, r.weight_decay) == (200, 0.1, (60, 120, 160), 0.2,
                                                                                   True, 5e-4)
    steps = 10
    factors = [train.lr_factor(r, e * steps, steps) for e in (0, 59, 60, 119, 120, 160, 199)]
    assert factors == pytest.approx([1, 1, 0.2, 0.2, 0.04, 0.008, 0.008])
    x = train.recipe({"recipe": "resnext"})
    assert x.epochs == 300 and x.milestones == (150, 225) and x.gamma == 0.1


def test_scheduler_drives_the_optimizer():
    r = train.recipe({"recipe": "wrn", "max_epochs": 4, "milestones": [1, 3], "lr": 1.0})
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=r.lr)
    sched = train.scheduler(r, opt, steps_per_epoch=2)
    lrs = []
    for _ in range(8):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs == pytest.approx([1, 1, 0.2, 0.2, 0.2, 0.2, 0.04, 0.04])


def test_cosine_and_onecycle_end_low():
    for schedule in ("cosine", "onecycle"):
        r = train.recipe({"max_epochs": 2, "schedule": schedule, "lr": 0.1, "warmup_epochs": 0.5})
        opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=r.lr)
        sched = train.scheduler(r, opt, steps_per_epoch=10)
        lrs = []
        for _ in range(20):
            lrs.append(opt.param_groups[0]["lr"])
            opt.step()
            sched.step()
        assert max(lrs) == pytest.approx(0.1, rel=0.05) and lrs[0] < 0.05 and lrs[-1] < 0.01, schedule


def test_recipe_rejects_unknown_keys_and_names():
    with pytest.raises(UserError, match="unknown key 'epochz'; valid: .*batch_size"):
        train.recipe({"epochz": 3})
    with pytest.raises(UserError, match="valid: proxy, resnet, resnet_imagenet, resnext, resnext_imagenet, wrn, "
                                        "wrn_imagenet"):
        train.recipe({"recipe": "vgg"})
    with pytest.raises(UserError, match="schedule"):
        train.recipe({"schedule": "poly"})
    assert train.recipe({"max_epochs": 7}).epochs == 7  # Lightning's name works as an override


def pruners(trial) -> list:
    """The pruning callback a trial hands to fit (dse.trials.pruning), as a callbacks list."""
    from dse.trials import pruning

    found = pruning.callback(trial)
    return [] if found is None else [found]


def test_pruning_in_single_objective_study(data):
    import optuna

    study = optuna.create_study(direction="maximize",
                                pruner=optuna.pruners.ThresholdPruner(lower=0.99))  # prunes after epoch 1
    result = train.fit(POINT, data, small(max_epochs=3, limit_batches=2), callbacks=pruners(study.ask()),
                       progress=False)
    assert result.status == "pruned" and result.epochs == 1
    multi = optuna.create_study(directions=["maximize", "minimize"])
    result = train.fit(POINT, data, small(max_epochs=2, limit_batches=2), callbacks=pruners(multi.ask()),
                       progress=False)
    assert result.status == "ok" and result.epochs == 2  # no pruning under several objectives


def test_progress_line_at_most_every_interval_without_a_bar(data):
    # A trial ran 368 s with nothing on the screen (issue 21): without a bar, a line at least every 30 s.
    # The clock is injected: each read advances it 4 s, so 30 s pass every ~8 training steps.
    from dse.trials.progress import Progress

    ticks, lines = iter(range(0, 100000, 4)), []
    clock = lambda: float(next(ticks))  # noqa: E731
    cb = Progress("trial 7", every=30.0, clock=clock, out=lines.append)
    result = train.fit(POINT, data, small(max_epochs=2), progress=False, callbacks=[cb])
    assert result.status == "ok"
    steps = 2 * 1024 // 64  # 32 steps, one clock read each after the start's: 128 s
    assert len(lines) == steps * 4 // 32  # a line every 8 steps (32 s >= 30 s, 28 s < 30 s): 4, never more
    assert lines[0] == "trial 7: epoch 1/2, step 8/32, 4.00 s/step, ends in ~96 s", lines
    assert lines[-1] == f"trial 7: epoch 2/2, step {steps}/{steps}, 4.00 s/step, ends in ~0 s", lines

"""Signal you can see (issue 21): the default run trains one point again with the next seed, pools a seed-noise
estimate, prints it, draws it as error bars and marks front neighbours within it '≈' instead of ranking them.

The pooled numbers are worked by hand below; the chi-square quantiles are the tables' (chi2(0.975, 1) = 5.024,
chi2(0.025, 1) = 0.000982). The run tests train real smoke-sized studies (dse.search in this process, SQLite)."""
from __future__ import annotations

import math

import pytest

from dse.results import figures, noise
from search_helpers import load_study, ok, read_csv, search_here

# The sizes the default study's sizing always picks at smoke fidelity (512 samples is its floor there, and 512
# samples x 1 epoch gets batch 16: dse.trials.sizing.batch_for), typed so the run trains the same trials without
# first timing a point (the sizing itself is tested in test_timeout.py and test_provenance_outputs.py).
SIZED = ["data.subset=512", "trainer.batch_size=16"]


def _row(number, acc, flops, point_id, **extra):
    return {"number": number, "status": "ok", "accuracy": acc, "flops": flops, "params": 1000,
            "point_id": point_id, "seeds": None, "val_acc_std": None, **extra}


def test_the_pooled_estimate_by_hand():
    rows = [_row(0, 0.80, 2e6, "a"), _row(1, 0.84, 2e6, "a"),  # one point, two seeds: (4 points)^2 / 2 = 8, 1 df
            _row(2, 0.70, 3e6, "b", seeds=3, val_acc_std=0.01),  # three seeds, std 1 point: 2 x 1 = 2, 2 df
            _row(3, 0.90, 6e6, "c")]  # one seed: no spread
    found = noise.estimate(rows)
    assert (found.points, found.runs, found.df) == (2, 5, 3)
    assert 100 * found.sigma == pytest.approx(math.sqrt(10 / 3))
    one = noise.estimate(rows[:2])
    assert 100 * one.sigma == pytest.approx(math.sqrt(8))
    lo, hi = one.interval()
    assert lo / one.sigma == pytest.approx(math.sqrt(1 / 5.024), rel=1e-3)
    assert hi / one.sigma == pytest.approx(math.sqrt(1 / 0.000982), rel=1e-3)
    assert "1 repeated point, 2 seeds; 1 degree of freedom" in one.words() and "rough" in one.words()
    assert noise.estimate([rows[0], rows[3]]) is None  # every point once: nothing to pool


def test_front_neighbours_within_noise_tie():
    # sigma = 1 point (two seeds of 'a' at 0.80 and 0.8141...: (1.414)^2 / 2 = 1). A tie between two one-seed
    # points: |difference| < 2 x sqrt(2) = 2.83 points; between the two-seed point and a one-seed point:
    # 2 x sqrt(1/2 + 1) = 2.45 points.
    rows = [_row(0, 0.80, 1e6, "a"), _row(1, 0.80 + 0.01 * math.sqrt(2), 1e6, "a"),
            _row(2, 0.83, 2e6, "b"),  # 0.83 - 0.8071 = 2.29 points < 2.45: tie
            _row(3, 0.86, 3e6, "c"),  # 3 points > 2.83: ranked
            _row(4, 0.88, 4e6, "d")]  # 2 points < 2.83: tie
    found = noise.estimate(rows)
    assert 100 * found.sigma == pytest.approx(1.0)
    front = [rows[1], rows[2], rows[3], rows[4]]
    marked = noise.front_rows(front, rows, found)
    assert [r["point_id"] for r in marked] == ["a", "b", "c", "d"]
    assert [r["tie"] for r in marked] == [False, True, False, True]
    assert marked[0]["runs"] == 2 and marked[0]["accuracy"] == pytest.approx(0.80 + 0.005 * math.sqrt(2))
    assert not any(r["tie"] for r in noise.front_rows(front, rows, None))  # no estimate: nothing is marked


def test_the_figure_draws_the_pooled_noise_on_one_seed_points(tmp_path):
    from matplotlib.container import ErrorbarContainer

    rows = [_row(0, 0.80, 2e6, "a"), _row(1, 0.84, 2e6, "a"), _row(2, 0.86, 5e6, "b"), _row(3, 0.87, 8e6, "c")]
    front = [rows[1], rows[2], rows[3]]
    fig, plt, *_ = figures.draw(rows, front, "t")
    bars = [c for c in fig.axes[0].containers if isinstance(c, ErrorbarContainer)]
    segments = [seg for c in bars for seg in c.lines[2][0].get_segments()]
    plt.close(fig)
    halves = sorted(round((s[1][1] - s[0][1]) / 2, 3) for s in segments)
    assert halves == [round(math.sqrt(8), 3)] * 3  # a's own std (2.83) and the pooled 2.83 on b and c
    figures.write_static(tmp_path, "s", rows, front, "s")
    caption = (tmp_path / "pareto.caption.txt").read_text()
    assert "the 2 points trained with one seed: the seed noise pooled over the study, ±2.83 points" in caption
    assert "(1 repeated point, 2 seeds; 1 degree of freedom" in caption and "On the front, ≈ marks" in caption


@pytest.fixture(scope="module")
def repeated(tmp_path_factory):
    """A real smoke study of 4 trials with the default study's noise_after 3: (cwd, its output)."""
    cwd = tmp_path_factory.mktemp("noise")
    proc = ok(search_here("space=resnext", "study.n_trials=4", "study.name=nz", "sampler=random", *SIZED, cwd=cwd))
    return cwd, proc


def test_the_default_run_repeats_its_fastest_point_with_the_next_seed(repeated):
    cwd, proc = repeated
    trials = load_study(cwd / "runs/nz", "nz").trials
    trained = [t for t in trials if t.user_attrs.get("status") == "ok"]
    assert len(trained) == 4, proc.stdout[-3000:]  # the repeat is one of the 4 trials
    again = [t for t in trained if t.user_attrs.get("repeat_of") is not None]
    assert len(again) == 1
    first = next(t for t in trained if t.number == again[0].user_attrs["repeat_of"])
    firsts = [t for t in trained if t.number < again[0].number]
    assert first.user_attrs["train_seconds"] == min(t.user_attrs["train_seconds"] for t in firsts)
    assert again[0].user_attrs["point_id"] == first.user_attrs["point_id"]
    assert again[0].user_attrs["seed"] == first.user_attrs["seed"] + 1
    assert again[0].params == first.params
    assert f"trial {first.number}'s point again, for the seed noise" in proc.stdout
    assert "seed noise: ±" in proc.stdout and "(1 repeated point, 2 seeds; 1 degree of freedom" in proc.stdout
    assert "Pareto front, cheapest first" in proc.stdout


def test_the_report_shows_the_noise_and_the_marked_front(repeated):
    from search_helpers import run

    cwd, _ = repeated
    run_dir = cwd / "runs/nz"
    ok(run("dse.report", str(run_dir), cwd=cwd, timeout=180))
    page = (run_dir / "report.html").read_text()
    assert "<p class=noise>seed noise: ±" in page and "1 repeated point, 2 seeds" in page
    assert "within seed noise of the cheaper point before it" in page
    assert "Error bars on the " in (run_dir / "pareto.caption.txt").read_text()
    rows = read_csv(run_dir / "trials.csv")
    assert len({r["point_id"] for r in rows if r["status"] == "ok"}) == 3


def test_no_repeat_when_it_does_not_fit_n_trials_or_is_off(tmp_path):
    proc = ok(search_here("space=resnext", "study.n_trials=3", "study.name=n3", "sampler=random", *SIZED,
                          cwd=tmp_path))
    assert "seed noise: not measured" in proc.stdout
    off = ok(search_here("space=resnext", "study.n_trials=4", "study.noise_after=0", "study.name=off",
                         "sampler=random", *SIZED, cwd=tmp_path))
    trials = load_study(tmp_path / "runs/off", "off").trials
    assert not [t for t in trials if t.user_attrs.get("repeat_of") is not None]
    assert "seed noise: not measured" in off.stdout


def _trained_study(seconds: list[float]):
    """An in-memory Optuna study holding trained trials (status ok) that took these training seconds."""
    import optuna

    study = optuna.create_study(directions=["maximize", "minimize"])
    dist = optuna.distributions.IntDistribution(0, 100)
    for i, s in enumerate(seconds):
        study.add_trial(optuna.trial.create_trial(
            state=optuna.trial.TrialState.COMPLETE, values=[0.8, 1e6], params={"x": i}, distributions={"x": dist},
            user_attrs={"status": "ok", "seed": 0, "point_id": f"p{i}", "train_seconds": s}))
    return study


def test_the_repeat_is_the_fastest_point_and_only_where_it_fits():
    import time

    from dse.trials.sampling import FeasibleStart

    def sampler(**kw):
        return FeasibleStart(None, None, 0, repeat_after=3, **kw)

    assert sampler().repeat(_trained_study([30.0, 20.0])) is None  # 2 trained of the 3 it waits for
    assert sampler(n_trials=3).repeat(_trained_study([30.0, 20.0, 40.0])) is None  # n_trials all taken
    short = sampler(deadline=time.monotonic() + 25.0)  # 25 s left: under 1.5 x the fastest's 20 s
    assert short.repeat(_trained_study([30.0, 20.0, 40.0])) is None
    study = _trained_study([30.0, 20.0, 40.0])
    roomy = sampler(n_trials=10, deadline=time.monotonic() + 100.0)
    assert roomy.repeat(study) == 1  # trial 1 trained fastest
    waiting = [t for t in study.get_trials() if t.state.name == "WAITING"]
    assert len(waiting) == 1 and waiting[0].user_attrs == {"seed": 1, "repeat_of": 1}
    assert waiting[0].system_attrs["fixed_params"] == {"x": 1}
    assert sampler(n_trials=10).repeat(study) is None  # the study holds its repeat: none again

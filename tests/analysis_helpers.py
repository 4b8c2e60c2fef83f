"""A stored study of made-up trained trials (real SQLite Optuna storage, real Points; no training)."""
from __future__ import annotations

import random

import optuna

optuna.logging.set_verbosity(optuna.logging.WARNING)
D = optuna.distributions


def make_study(run_dir, n: int = 12):
    """A stored study of `n` trained trials of the nds_resnet space with histories (no training)."""
    from dse.cost import complexity
    from dse.space.parse import load

    run_dir.mkdir(parents=True)
    study = optuna.create_study(study_name=run_dir.name, storage=f"sqlite:///{run_dir / 'study.db'}",
                                directions=["maximize", "minimize"])
    study.set_user_attr("space", "nds_resnet")
    study.set_user_attr("objectives", ["accuracy", "flops"])
    space = load("nds_resnet").with_geometry(image_size=28, in_chans=1, num_classes=10)
    rng = random.Random(0)
    for i in range(n):
        point, values = space.sample_with_values(rng)
        c = complexity(point)
        acc = 0.6 + 0.3 * rng.random()
        params = {k: space.params[k].label(v) for k, v in values.items()}
        dists = {k: (D.CategoricalDistribution(list(space.params[k].values)) if space.params[k].type == "choice"
                     else D.IntDistribution(int(space.params[k].low), int(space.params[k].high))) for k in params}
        history = [{"epoch": 1, "val/acc": acc - 0.2, "train/loss": 1.5},
                   {"epoch": 2, "val/acc": acc, "train/loss": 0.9}]
        attrs = {"status": "ok", "val_acc": acc, "flops": c.flops, "params": c.params, "point": point.to_dict(),
                 "point_id": point.id, "history": history, "epochs": 2, "train_seconds": 1.0}
        study.add_trial(optuna.trial.create_trial(params=params, distributions=dists, user_attrs=attrs,
                                                  values=[acc, c.flops]))
    rejected = {"status": "rejected", "reason": "over_budget", "flops": 9e9, "params": 1}
    study.add_trial(optuna.trial.create_trial(params={}, distributions={}, user_attrs=rejected, values=[0.0, 9e9]))
    return study

"""A grid worker for the claims tests, run as a subprocess: the real dse.trials.claims/dse.storage/dse.trials.signals code
around a trial function that only sleeps (no training), so many trials fit in a few seconds. Each trial records
its owner first (dse.trials.owners.mark), as dse's own trial function does.

usage: python tests/claims_worker.py URL STUDY LABELS(comma) SEEDS SLEEP_S
"""
import sys
import time

import optuna

from dse.trials import claims, owners

from dse.trials import signals
from dse.storage import open_storage


def main(url: str, name: str, labels: str, seeds: str, sleep_s: str) -> int:
    """Join the study, enqueue the grid once, run cells until none are left."""
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    signals.install()
    labels, seeds, sleep_s = labels.split(","), int(seeds), float(sleep_s)
    storage = open_storage(url, ".")
    study = optuna.create_study(study_name=name, storage=storage, load_if_exists=True)
    claims.enqueue_once(study, labels, seeds)

    def objective(trial):
        owners.mark(trial)
        if "label" not in trial.user_attrs:  # the queue ran dry between the check and the pop
            trial.study.stop()
            trial.set_user_attr("status", "skipped")
            raise optuna.TrialPruned("grid_exhausted")
        cell = trial.suggest_categorical("cell", labels)
        seed = trial.suggest_int("seed", 0, seeds - 1)
        print(f"start {trial.number} {cell} {seed}", flush=True)
        time.sleep(sleep_s)
        trial.set_user_attr("status", "ok")
        return float(seed)

    try:
        if claims.has_work(study, poll_s=0.2):
            claims.optimize(study, signals.guard(objective), callbacks=[claims.WaitForWork(0.2), signals.StopOnSignal()])
    except signals.TrialInterrupted:
        pass
    return signals.exit_code()


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))

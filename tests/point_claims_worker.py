"""A claimer for the point-claim race test, run as a subprocess: opens the study, prints `ready`, waits for a line on
stdin (the caller writes it to every claimer once all are ready), then claims keys k0..k{N-1} of the study through
the real dse.trials.claims.claim and prints the keys it won. With a fifth argument OLD it takes the keys over from
trial id OLD instead (dse.trials.claims.take_over: the retries of one dead holder racing for its point).

usage: python tests/point_claims_worker.py URL STUDY N HOLDER [OLD]
"""
import sys

import optuna

from dse.trials import claims
from dse.storage import open_storage


def main(url: str, name: str, n: str, holder: str, old: str | None = None) -> int:
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    study = optuna.load_study(study_name=name, storage=open_storage(url, "."))
    print("ready", flush=True)
    sys.stdin.readline()  # the go line: every claimer has imported and opened the storage
    if old is None:
        won = [f"k{i}" for i in range(int(n)) if claims.claim(study, f"k{i}", int(holder)) is None]
    else:
        won = [f"k{i}" for i in range(int(n)) if claims.take_over(study, f"k{i}", int(holder), int(old))]
    print(" ".join(won), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))

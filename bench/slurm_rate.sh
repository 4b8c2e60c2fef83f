#!/usr/bin/env bash
# Trials per hour of one smoke study with 1 and with 2 SLURM array tasks (launcher=slurm), twice each, on the
# SLURM that $SLURM_CONF names (docs/cluster.md "Measured"). Needs sbatch/squeue on PATH; writes under $OUT.
# Prints per run: tasks, trained trials, wall time from submit to results, and the study's own span (first trial's
# start to last trial's end; startup left out).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-$(mktemp -d /tmp/dse-slurm-rate-XXXX)}
for n in 1 2 1 2; do
  d=$OUT/tasks$n-$RANDOM
  s=$(date +%s.%N)
  .venv/bin/python -m dse.search space=resnext fidelity=smoke data=synthetic sampler=random progress=false \
    trainer.threads=1 study.timeout=null study.trials_per_timeout=null study.n_trials=12 study.name=rate \
    run_dir=$d launcher=slurm launcher.nodes=$n launcher.cpus_per_task=1 launcher.shared_fs=true workers=1 \
    > $d.log 2>&1
  e=$(date +%s.%N)
  .venv/bin/python - "$d" "$n" "$s" "$e" <<'PY'
import sys, optuna
d, n, s, e = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4])
optuna.logging.set_verbosity(optuna.logging.ERROR)
t = optuna.load_study(study_name="rate", storage=f"sqlite:///{d}/study.db").get_trials(deepcopy=False)
ok = [x for x in t if x.user_attrs.get("status") == "ok"]
span = (max(x.datetime_complete for x in ok) - min(x.datetime_start for x in t)).total_seconds()
print(f"tasks={n} trained={len(ok)} wall={e - s:.0f}s trials/hour={3600 * len(ok) / (e - s):.0f} "
      f"in-study span={span:.0f}s trials/hour={3600 * len(ok) / span:.0f}", flush=True)
PY
  uptime
done

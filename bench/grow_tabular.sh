#!/usr/bin/env bash
# Grow the two-space tabular benchmark (issue 24) in steps of 5 sampled points, both schedules, at the fidelity of
# bench/data/resnext_tabular_{onecycle,wsd}.csv: all 37 feasible resnext points, then up to 200 of nds_resnext's
# 1,907 feasible points. Resumable: bench/make_tabular.py skips the points already in a table, so stop it at any
# time (kill, or SIGSTOP/SIGCONT around a timing run) and start it again. About 35 CPU s per point and schedule.
#     nohup bash bench/grow_tabular.sh > /tmp/grow.log 2>&1 &
set -euo pipefail
cd "$(dirname "$0")/.."
F="--subset 1800 --val-subset 500 --epochs 3 --batch-size 64 --threads 1 --rungs 1/9,1/3,2/3 --sample-seed 0"
for s in onecycle wsd; do
  nice -n 19 .venv/bin/python bench/make_tabular.py --out "bench/data/resnext_tabular_$s.csv" --schedule $s --sample 37 $F
done
for n in $(seq 5 5 200); do
  for s in onecycle wsd; do
    nice -n 19 .venv/bin/python bench/make_tabular.py --space nds_resnext --out "bench/data/nds_resnext_tabular_$s.csv" \
      --schedule $s --sample "$n" $F
  done
done

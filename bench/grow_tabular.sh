#!/usr/bin/env bash
# Grow the two-space tabular benchmark (issue 24), both schedules, at the fidelity of
# bench/data/resnext_tabular_{onecycle,wsd}.csv: all 37 feasible resnext points, then all 170 feasible points of
# bench/spaces/nds_resnext_w3.yaml (nds_resnext with two blocks per stage, widths 16/32/64, bottleneck ratio 2
# or 4), in a seeded order. Resumable: bench/make_tabular.py writes a row per point and skips the points already in a table, so stop
# it at any time (kill, or SIGSTOP/SIGCONT around a timing run) and start it again. About 15-35 CPU s per point
# and schedule.
#     nohup bash bench/grow_tabular.sh > /tmp/grow.log 2>&1 &
# On two cores, grow the schedules side by side, one process each (each trains with one thread):
#     nohup bash bench/grow_tabular.sh onecycle > /tmp/grow-onecycle.log 2>&1 &
#     nohup bash bench/grow_tabular.sh wsd > /tmp/grow-wsd.log 2>&1 &
set -euo pipefail
cd "$(dirname "$0")/.."
SCHEDULES="${1:-onecycle wsd}"
F="--subset 1800 --val-subset 500 --epochs 3 --batch-size 64 --threads 1 --rungs 1/9,1/3,2/3 --sample-seed 0"
for s in $SCHEDULES; do
  nice -n 19 .venv/bin/python bench/make_tabular.py --out "bench/data/resnext_tabular_$s.csv" --schedule $s --sample 37 $F
done
for s in $SCHEDULES; do
  nice -n 19 .venv/bin/python bench/make_tabular.py --space bench/spaces/nds_resnext_w3.yaml \
    --out "bench/data/nds_resnext_w3_tabular_$s.csv" --schedule $s --sample 170 $F
done

#!/usr/bin/env bash
# Grow the longer-budget table of issue 24: all 170 points of bench/spaces/nds_resnext_w3.yaml within budget,
# trained 9 epochs instead of 3 (same data, batch and lr), so that moasha (eta 3) has rungs at epochs 1 and 3 and
# a paused point costs a ninth or a third of its training. Ranked by the training loss, no rung branches are
# needed, so none are trained (no --rungs). About 80 CPU s per point and schedule on this machine (3x the
# 3-epoch table's); one-cycle first, then wsd. Resumable: bench/make_tabular.py writes a row per point in a
# seeded order and skips the points already in the table, so a partial table is a random sample of the space.
#     nohup bash bench/grow_tabular_long.sh > /tmp/grow-long.log 2>&1 &
#     nohup bash bench/grow_tabular_long.sh onecycle > /tmp/grow-long.log 2>&1 &   # one schedule
set -euo pipefail
cd "$(dirname "$0")/.."
SCHEDULES="${1:-onecycle wsd}"
F="--subset 1800 --val-subset 500 --epochs 9 --batch-size 64 --threads 1 --sample-seed 0"
for s in $SCHEDULES; do
  nice -n 19 .venv/bin/python bench/make_tabular.py --space bench/spaces/nds_resnext_w3.yaml \
    --out "bench/data/nds_resnext_w3_e9_tabular_$s.csv" --schedule $s --sample 170 $F
done

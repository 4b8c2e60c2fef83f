#!/bin/bash
# The design-space comparison of results/nds: random points of nds_resnet and nds_resnext at 2-6 MFLOPs,
# trained at the studies' CPU proxy (4k Fashion-MNIST images x 2 epochs, one thread), in alternating chunks of
# 8 so that both studies grow together (a resumed study runs only up to the new study.n_trials). Then the analysis.
# (The committed run wrote into run_dir=/work/nds/<study>; here the default runs/<study>.)
set -e
for n in 8 16 24 32 40; do
  for s in nds_resnet nds_resnext; do
    python -m dse.search study=$s study.n_trials=$n progress=false
  done
done
python -m dse.analyze runs/nds_resnet runs/nds_resnext --out results/nds

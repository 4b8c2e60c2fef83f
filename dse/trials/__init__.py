"""The run loop and what serves it: one trial (objective), the samplers, exactly-once claims, trial owners,
the worker pool, pruning, signals, the screen, sizing, the deadline and the budget."""

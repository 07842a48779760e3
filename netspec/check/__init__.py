"""Cross-checks between backends: the number-by-number check, trajectories, bisection, mask checks, random networks."""

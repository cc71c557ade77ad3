"""tabml benchmarks: tabml against the bare script a user would write, measured side by side.

`python -m benchmarks.run` (or `make bench`) runs every case and writes
benchmarks/results/latest.json and latest.md; see benchmarks/README.md.
"""

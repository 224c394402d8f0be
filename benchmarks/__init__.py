"""Reproducible benchmarks of streaming-proxy against the real local stack.

`python -m benchmarks` (what `make bench` runs) starts its own stack on free loopback
ports, runs every benchmark (each bounded in count and time), prints a table and rewrites
docs/benchmarks.md; `--no-write` only prints.
"""

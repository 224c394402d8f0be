"""`python -m benchmarks` (what `make bench` runs): every benchmark against a fresh local stack.

Each stack benchmark gets a stack of its own, started before it and stopped after it: moto
serves one request at a time and answers a Query by sorting the whole table, so on a shared
stack a benchmark would pay for the rows and the `$disconnect` cleanups of those before it.

Options: `--no-write` prints only (docs/benchmarks.md untouched); `--only NAME ...` runs a
subset (cold_import, dynamo_units, ttft, post_cost, fanout, sse_overhead, coalescing,
concurrency, delivery, tool_round) and never writes the doc.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from . import (
    coalescing,
    cold_import,
    concurrency,
    delivery,
    dynamo_units,
    fanout,
    post_cost,
    sse_overhead,
    tool_round,
    ttft,
)
from .common import Result
from .report import DOC_PATH, machine_facts, render_markdown, render_text
from .stack import Stack, start_stack, stop_stack

STACK_BENCHMARKS: dict[str, Callable[[Stack], Result]] = {
    "ttft": ttft.run,
    "post_cost": post_cost.run,
    "fanout": fanout.run,
    "sse_overhead": sse_overhead.run,
    "coalescing": coalescing.run,
    "concurrency": concurrency.run,
    "delivery": delivery.run,
    "tool_round": tool_round.run,
}
ALL = ["cold_import", "dynamo_units", *STACK_BENCHMARKS]


@contextlib.contextmanager
def fresh_stack(name: str) -> Iterator[Stack]:
    """A local stack (and stamped upstream) for one benchmark, stopped after it; on failure
    the stack's last log lines go to stderr."""
    with tempfile.TemporaryDirectory(prefix=f"bench-{name}-") as tmp:
        t0 = time.perf_counter()
        stack = start_stack(Path(tmp))
        print(f"local stack ready in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
        try:
            yield stack
        except BaseException:
            print(f"--- last stack log lines ---\n{stack.logs()[-3000:]}", file=sys.stderr)
            raise
        finally:
            stop_stack(stack)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("--no-write", action="store_true", help="print only, keep the doc")
    parser.add_argument("--only", nargs="+", choices=ALL, help="run only these benchmarks")
    args = parser.parse_args(argv)
    selected = args.only or ALL
    started = time.perf_counter()
    results: list[Result] = []

    def timed(name: str, fn: Callable[[], Result]) -> None:
        print(f"running {name} ...", file=sys.stderr, flush=True)
        t0 = time.perf_counter()
        result = fn()
        result.seconds = time.perf_counter() - t0
        results.append(result)
        print(render_text([result]), flush=True)

    if "cold_import" in selected:
        timed("cold_import", cold_import.run)
    if "dynamo_units" in selected:  # in-process against moto, in a subprocess: no stack
        timed("dynamo_units", dynamo_units.run)
    for name in (name for name in STACK_BENCHMARKS if name in selected):
        with fresh_stack(name) as stack:
            timed(name, functools.partial(STACK_BENCHMARKS[name], stack))
    total = time.perf_counter() - started
    print(f"total {total:.1f} s", file=sys.stderr)
    if args.no_write or args.only:
        return 0
    DOC_PATH.write_text(render_markdown(results, machine_facts(), total), encoding="utf-8")
    print(f"wrote {DOC_PATH}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

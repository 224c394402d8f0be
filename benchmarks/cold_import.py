"""Cold import: what a Lambda cold start pays to import each function's code path.

Each target runs in a fresh `python -c` subprocess (warm .pyc and page cache, so this is
the floor: a real cold start also reads the files from the layer's disk). The wall time
includes interpreter start-up; the `python -c pass` row is that baseline.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import time
from collections import defaultdict

from .common import Result, ms, summary
from .stack import ROOT

RUNS = 7

STREAM = "import streaming_proxy.api.app"
CONNECTIONS = (
    "import importlib.util as u; "
    "s = u.spec_from_file_location('connections_app', 'functions/connections/app.py'); "
    "m = u.module_from_spec(s); s.loader.exec_module(m)"
)

TARGETS: list[tuple[str, str, str, str | None]] = [
    ("python", "interpreter only (`pass`)", "pass", None),
    ("stream", "stream function: `import streaming_proxy.api.app`", STREAM, None),
    ("connections", "connections function: `functions/connections/app.py`", CONNECTIONS, None),
    ("boto3", "`import boto3` (part of the stream path)", "import boto3", "boto3"),
    ("openai", "`import openai` (SDK, not used)", "import openai", "openai"),
    ("anthropic", "`import anthropic` (SDK, not used)", "import anthropic", "anthropic"),
    ("stream+openai", "stream function + `import openai`", f"{STREAM}; import openai", "openai"),
]


def _wall(code: str) -> float:
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, capture_output=True)
    return time.perf_counter() - started


def import_breakdown(code: str, top: int = 8) -> list[tuple[str, float]]:
    """Self import time summed per top-level package (`python -X importtime`), largest first."""
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", code],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
    )
    per_root: dict[str, float] = defaultdict(float)
    for line in done.stderr.splitlines():
        if not line.startswith("import time:") or "self [us]" in line:
            continue
        head, _, name = line.rpartition("|")
        self_us = head.split(":", 1)[1].split("|")[0]
        per_root[name.strip().split(".")[0]] += int(self_us) / 1e6
    return sorted(per_root.items(), key=lambda item: -item[1])[:top]


def run() -> Result:
    result = Result(
        key="cold_import",
        title="Cold import of the Lambda code path",
        method=(
            f"Wall time of a fresh `{sys.executable.rsplit('/', 1)[-1]} -c <import>` subprocess "
            f"(cwd = repo root), median and p95 of {RUNS} runs after one discarded warm-up run "
            "(so .pyc files exist: the floor of a cold start, which also reads the layer "
            "from disk). Includes interpreter start-up; the first row is that baseline. "
            "SDKs that are not installed are skipped. The breakdown is `python -X importtime` "
            "self time summed per top-level package (importtime itself adds overhead). "
            "The local venv has `cryptography` (a moto "
            "dependency), which PyJWT then imports; the deployed layer "
            "(layers/core/requirements.txt) does not ship it."
        ),
        columns=["import", "median ms", "p95 ms", "minus interpreter ms"],
    )
    baseline = 0.0
    for key, label, code, module in TARGETS:
        if module is not None and importlib.util.find_spec(module) is None:
            result.notes.append(f"{label}: not installed, skipped.")
            continue
        _wall(code)
        stats = summary([_wall(code) for _ in range(RUNS)])
        if code == "pass":
            baseline = stats["median"]
        result.rows.append(
            [label, ms(stats["median"]), ms(stats["p95"]), ms(stats["median"] - baseline)]
        )
        result.data[key] = stats
    breakdown = import_breakdown(STREAM)
    result.data["breakdown"] = breakdown
    parts = ", ".join(f"{name} {seconds * 1000:.0f} ms" for name, seconds in breakdown)
    result.notes.append(f"Largest packages in `import streaming_proxy.api.app`: {parts}.")
    return result

"""Cold import: what a Lambda cold start pays to import each function's code, and then its
first requests.

Each target runs in a fresh `python -c` subprocess (warm .pyc and page cache, so this is
the floor: a real cold start also reads the files from the layer's disk), timed inside the
process around the import; the process's wall time, minus that of `python -c pass`, is
reported too. The first requests run in a fresh process each as well
(benchmarks/first_request.py), against a moto DynamoDB server this benchmark starts.
"""

from __future__ import annotations

import importlib.util
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from . import deployed_shape
from .common import Result, ms, summary
from .deployed_shape import DeployedShape
from .stack import ROOT

RUNS = 7

# Every subprocess sees the deployed layer's packages: no `cryptography` (deployed_layer/).
# Bytecode is written whatever the caller's PYTHONDONTWRITEBYTECODE says: with it set, the
# warm-up wrote no .pyc and every run compiled our modules from source (~25 ms of the stream
# function's import) while the libraries came from their installed .pyc files.
LAYER_ENV = {
    **{name: value for name, value in os.environ.items() if name != "PYTHONDONTWRITEBYTECODE"},
    "PYTHONPATH": os.pathsep.join(
        filter(None, [str(ROOT / "benchmarks" / "deployed_layer"), os.environ.get("PYTHONPATH")])
    ),
}
FIRST_REQUEST_RUNS = 5
# Fewer: a run from sources alone compiles everything, 1-2 s each here.
DEPLOYED_RUNS = 3


def _entry(function: str) -> str:
    """Load `functions/<function>/app.py` as the Lambda runtime (or uvicorn) does."""
    return (
        "import importlib.util as u; "
        f"s = u.spec_from_file_location('{function}_app', 'functions/{function}/app.py'); "
        "m = u.module_from_spec(s); s.loader.exec_module(m)"
    )


STREAM = _entry("stream")
STREAM_PACKAGE = "import streaming_proxy.api.app"
CONNECTIONS = _entry("connections")

# What no code of ours can go below: the libraries each function needs for its first
# request, one pydantic model built, collector paused and pydantic's plugin search off as
# the functions' entries do (coldstart.py), and the package's `__init__`, which keeps
# httpx's CLI out, as the functions do.
FLOOR = (
    "import gc, os; gc.disable(); os.environ.setdefault('PYDANTIC_DISABLE_PLUGINS', '__all__'); "
    "import streaming_proxy; "
    "import botocore.session, botocore.config, pydantic_settings, "
    "aws_lambda_powertools.logging, aws_lambda_powertools.metrics; "
    "from pydantic import create_model; create_model('M', x=(int, 0))"
)

TARGETS: list[tuple[str, str, str, str | None]] = [
    ("python", "interpreter only (`pass`)", "pass", None),
    ("stream", "stream function: `functions/stream/app.py` (builds the app)", STREAM, None),
    (
        "stream_package",
        "`import streaming_proxy.api.app` alone (collector not paused)",
        STREAM_PACKAGE,
        None,
    ),
    ("connections", "connections function: `functions/connections/app.py`", CONNECTIONS, None),
    ("floor_connections", "floor: the connections function's libraries alone", FLOOR, None),
    (
        "floor_stream",
        "floor: the stream function's libraries alone",
        f"{FLOOR}; import starlette.applications, httpx, httpx_sse",
        None,
    ),
    ("boto3", "`import boto3` (not imported by either function)", "import boto3", "boto3"),
    ("openai", "`import openai` (SDK, not used)", "import openai", "openai"),
    ("anthropic", "`import anthropic` (SDK, not used)", "import anthropic", "anthropic"),
    ("stream+openai", "stream function + `import openai`", f"{STREAM}; import openai", "openai"),
]

# (key, label, function, with bytecode) of the deployed rows: each function imported as
# Lambda holds it (benchmarks/deployed_shape.py), from read-only folders with
# PYTHONDONTWRITEBYTECODE set, with the sources alone (the python3.12 build method's
# artifacts) and with the bytecode deploy/Makefile's compile step writes.
DEPLOYED = [
    ("deployed_stream_source", "stream function, deployed, sources only", "stream", False),
    (
        "deployed_stream_bytecode",
        "stream function, deployed, with the build's bytecode",
        "stream",
        True,
    ),
    (
        "deployed_connections_source",
        "connections function, deployed, sources only",
        "connections",
        False,
    ),
    (
        "deployed_connections_bytecode",
        "connections function, deployed, with the build's bytecode",
        "connections",
        True,
    ),
]

# (function, timing key, label) of the first-request rows, in table order.
FIRST_REQUESTS = [
    ("stream", "startup", "stream: lifespan startup (settings, clients, service)"),
    ("stream", "health", "stream: first GET /health"),
    ("stream", "query", "stream: first POST /llm/query (mock, no delay, `stream: false`)"),
    ("stream", "query_again", "stream: second POST /llm/query (warm)"),
    # Route families loaded on their first request (api/app.py, decision 40), after those.
    ("stream", "token", "stream: then first POST /channels/token (mints a subscribe token)"),
    ("stream", "v1_chat", "stream: then first POST /v1/chat/completions (mock, not streamed)"),
    ("stream", "assistant_create", "stream: then first POST /assistants"),
    ("stream", "thread_messages", "stream: then first GET /threads/{id}/messages (404)"),
    ("connections", "connect", "connections: first `$connect` (valid token)"),
    ("connections", "connect_again", "connections: second `$connect` (warm)"),
]
# The same runs on the deployed shape with the build's bytecode: botocore's data trimmed as
# the layer build does (deploy/trim_botocore.py), which the clients' creation reads.
DEPLOYED_FIRST_REQUESTS = [
    ("stream", "startup", "stream, deployed: lifespan startup (settings, clients, service)"),
    ("stream", "query", "stream, deployed: first POST /llm/query"),
    ("connections", "connect", "connections, deployed: first `$connect` (valid token)"),
]

APP = "bench"
APP_KEY = "bench-app-key-for-cold-starts"
TOKEN_SECRET = "bench-token-secret-" + "x" * 24
TABLE = "streaming-proxy-bench"


def _timed(
    code: str, env: dict[str, str] = LAYER_ENV, cwd: Path = ROOT, flags: tuple[str, ...] = ()
) -> tuple[float, float]:
    """(seconds inside the process around `code`, wall seconds of the whole process).

    The first is what a cold start pays; the second adds interpreter start-up and exit,
    and exit grows with what is left to collect, which a cold start never pays."""
    wrapped = f"import time as _t; _s = _t.perf_counter()\n{code}\nprint(_t.perf_counter() - _s)"
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, *flags, "-c", wrapped],
        cwd=cwd,
        env=env,
        check=True,
        capture_output=True,
        text=True,
    )
    wall = time.perf_counter() - started
    return float(done.stdout.strip().splitlines()[-1]), wall


def import_breakdown(code: str, top: int = 8) -> list[tuple[str, float]]:
    """Self import time summed per top-level package (`python -X importtime`), largest first."""
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", code],
        cwd=ROOT,
        env=LAYER_ENV,
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


def _first_request_bodies() -> dict[str, str]:
    import jwt

    query = {
        "apiKey": APP_KEY,
        "actionName": "onBench",
        "payload": {
            "provider": "mock",
            "stream": False,
            "messages": [{"role": "user", "content": "one two three four five"}],
            "providerArgs": {"delayMs": 0},  # the proxy's time, not the mock's pacing
        },
    }
    now = int(time.time())
    claims = {"app": APP, "channels": ["room"], "iat": now, "exp": now + 3600}
    connect = json.loads((ROOT / "events" / "ws-connect.json").read_text())
    connect["queryStringParameters"]["token"] = jwt.encode(claims, TOKEN_SECRET, algorithm="HS256")
    return {"stream": json.dumps(query), "connections": json.dumps(connect)}


def _first_request(
    function: str, env: dict[str, str], body: str, shape: DeployedShape | None
) -> dict[str, float]:
    """One cold start and first requests of `function`: from the venv (cwd = repo root), or
    from `shape` as Lambda holds it (its folders alone on sys.path, read-only, `-S`)."""
    script = str(ROOT / "benchmarks" / "first_request.py")
    command, cwd = [sys.executable, script, function], ROOT
    if shape is not None:
        command = [sys.executable, "-S", script, function, "app.py"]
        cwd = shape.tasks[function]
        env = {**env, "PYTHONPATH": shape.path(function), "PYTHONDONTWRITEBYTECODE": "1"}
    done = subprocess.run(
        command,
        cwd=cwd,
        env={**env, "BENCH_FIRST_REQUEST": body},
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    )
    timings: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    return timings


def first_requests(shape: DeployedShape) -> dict[str, dict[str, dict[str, list[float]]]]:
    """Timings of FIRST_REQUEST_RUNS cold starts per function, from the venv ("venv") and
    from the deployed `shape` ("deployed"), interleaved, against the local stack's DynamoDB
    (devstack.dynamodb.start_dynamodb) and settings (`DevSettings.product_env`)."""
    from devstack.dynamodb import start_dynamodb
    from devstack.process import free_port
    from devstack.settings import DevSettings

    dev = DevSettings(
        host="127.0.0.1",
        dynamodb_port=free_port(),
        ws_port=9,  # $connect posts nothing
        table_name=TABLE,
        app_id=APP,
        api_key=APP_KEY,
        token_secret=TOKEN_SECRET,
        log_level="INFO",  # template.yaml's default LogLevel
        metrics=True,  # as deployed: each stream's EMF record is written
    )
    moto = start_dynamodb(dev)
    try:
        env = {**LAYER_ENV, **dev.product_env()}
        bodies = _first_request_bodies()
        runs: dict[str, dict[str, dict[str, list[float]]]] = {
            where: {"stream": {}, "connections": {}} for where in ("venv", "deployed")
        }
        for _ in range(FIRST_REQUEST_RUNS):
            for where, functions in runs.items():
                for function, timings in functions.items():
                    got = _first_request(
                        function, env, bodies[function], shape if where == "deployed" else None
                    )
                    for key, seconds in got.items():
                        timings.setdefault(key, []).append(seconds)
        return runs
    finally:
        moto.stop()


def _import_rows(result: Result) -> None:
    """Every target RUNS times, interleaved round by round, so a burst of load on the
    machine falls on all of them alike rather than on one row."""
    targets = []
    for key, label, code, module in TARGETS:
        if module is not None and importlib.util.find_spec(module) is None:
            result.notes.append(f"{label}: not installed, skipped.")
            continue
        _timed(code)
        targets.append((key, label, code))
    inside: dict[str, list[float]] = {key: [] for key, _, _ in targets}
    walls: dict[str, list[float]] = {key: [] for key, _, _ in targets}
    for _ in range(RUNS):
        for key, _, code in targets:
            seconds, wall = _timed(code)
            inside[key].append(seconds)
            walls[key].append(wall)
    baseline = statistics.median(walls["python"])
    result.data["wall"] = {}
    for key, label, _ in targets:
        stats = summary(inside[key])
        wall = statistics.median(walls[key]) - baseline
        result.rows.append([label, ms(stats["median"]), ms(stats["p95"]), ms(wall)])
        result.data[key] = stats
        result.data["wall"][key] = wall


def _deployed_timings(shapes: dict[bool, DeployedShape]) -> dict[str, list[float]]:
    """DEPLOYED_RUNS imports of each target after one warm-up (page cache), interleaved.

    `-S`: the venv's site-packages stay off sys.path, so only the deployed folders serve."""
    base = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    runs: dict[str, list[float]] = {key: [] for key, *_ in DEPLOYED}
    for round_ in range(DEPLOYED_RUNS + 1):
        for key, _, function, bytecode in DEPLOYED:
            shape = shapes[bytecode]
            env = {**base, "PYTHONPATH": shape.path(function), "PYTHONDONTWRITEBYTECODE": "1"}
            seconds, _ = _timed("import app", env, shape.tasks[function], ("-S",))
            if round_:
                runs[key].append(seconds)
    return runs


def _deployed_rows(result: Result, shapes: dict[bool, DeployedShape]) -> None:
    deployed_shape.set_writable(shapes[False].root.parent, False)
    try:
        runs = _deployed_timings(shapes)
    finally:
        deployed_shape.set_writable(shapes[False].root.parent, True)
    for key, label, _, _ in DEPLOYED:
        stats = summary(runs[key])
        result.rows.append([label, ms(stats["median"]), ms(stats["p95"]), "-"])
        result.data[key] = stats


def _first_request_rows(result: Result, shape: DeployedShape) -> None:
    deployed_shape.set_writable(shape.root, False)
    try:
        runs = first_requests(shape)
    finally:
        deployed_shape.set_writable(shape.root, True)
    first: dict[str, Any] = {}
    for where, rows in (("venv", FIRST_REQUESTS), ("deployed", DEPLOYED_FIRST_REQUESTS)):
        prefix = "" if where == "venv" else "deployed."
        for function, key, label in rows:
            stats = summary(runs[where][function][key])
            first[f"{prefix}{function}.{key}"] = stats
            result.rows.append([label, ms(stats["median"]), ms(stats["p95"]), "-"])
        # The import as timed inside the same processes (no interpreter start-up in it).
        for function in ("stream", "connections"):
            first[f"{prefix}{function}.import"] = summary(runs[where][function]["import"])
    result.data["first_request"] = first


def run() -> Result:
    result = Result(
        key="cold_import",
        title="Cold import of the Lambda code path, then the first requests",
        method=(
            "Each target runs in a fresh "
            f"`{sys.executable.rsplit('/', 1)[-1]} -c` subprocess (cwd = repo root), "
            f"{RUNS} runs after one discarded warm-up run (so .pyc files exist, written "
            "whatever the caller's PYTHONDONTWRITEBYTECODE says: the floor of a cold start "
            "from a layer that ships bytecode, which also reads it from disk), the targets "
            "interleaved "
            "round by round. Median and p95 are timed inside the process, from just before "
            "the import to just after it: what a cold start pays over a started interpreter. "
            "The last column is the older measure, the whole process's wall time minus that "
            "of `pass`: it also counts the interpreter's exit, which collects what is left "
            "and never happens in a cold start. The function rows load "
            "`functions/<name>/app.py` as Lambda (or uvicorn) does, so they include its "
            "collector pause (streaming_proxy/coldstart.py); the floor rows import only the "
            "libraries a function needs for its first request. SDKs that are not installed "
            "are skipped. The breakdown is `python -X importtime` self time summed per "
            "top-level package (importtime itself adds overhead). First-request rows: "
            f"{FIRST_REQUEST_RUNS} fresh processes per function (benchmarks/first_request.py) "
            "each load the entry module, then the stream function runs its ASGI lifespan "
            "startup and answers GET /health and two POST /llm/query (mock provider without "
            "delay, `stream: false`, no channels) as raw ASGI calls, with no HTTP server or "
            "client, then the first request of each route family that loads on its first "
            "use (api/app.py): a POST /channels/token, a POST /v1/chat/completions, a POST "
            "/assistants, a GET /threads/{id}/messages of a thread that does not exist (its "
            "read, then 404); "
            "the connections function's handler takes two `$connect` events holding "
            "a valid token. DynamoDB is a moto server this benchmark starts on loopback, so "
            "a table write costs a local round trip, not AWS's. Every subprocess sees the "
            "deployed layer's packages: `cryptography`, which the venv has (a moto "
            "dependency) and PyJWT imports when present, is hidden "
            "(benchmarks/deployed_layer/sitecustomize.py), as layers/core/requirements.txt "
            "does not ship it. Deployed rows: each function's folder and the layer's "
            "python/ folder as `sam build` lays them out, built from the venv's installed "
            "files of the pinned distributions (their RECORD) and our sources "
            "(benchmarks/deployed_shape.py), made read-only, imported (`import app`, cwd = "
            "the function's folder, `-S` so nothing else is on sys.path) with "
            "PYTHONDONTWRITEBYTECODE set: with the sources alone every run compiles what "
            "it imports, as a cold start from the python3.12 build method's artifacts did; "
            "with the bytecode of deploy/Makefile's compile step (unchecked-hash) none does. "
            f"{DEPLOYED_RUNS} runs each after one discarded warm-up, interleaved. The layer's "
            "botocore keeps the data of the services the proxy calls, as the layer build "
            "trims it (deploy/trim_botocore.py). The deployed first-request rows run "
            "benchmarks/first_request.py (`-S`) over the deployed shape with bytecode, "
            f"{FIRST_REQUEST_RUNS} cold starts per function interleaved with the others."
        ),
        columns=["import", "median ms", "p95 ms", "process wall minus `pass` ms"],
    )
    _import_rows(result)
    with tempfile.TemporaryDirectory(prefix="deployed-") as folder:
        root = Path(folder)
        source = deployed_shape.build(root / "source")
        shapes = {False: source, True: deployed_shape.with_bytecode(source, root / "bytecode")}
        _deployed_rows(result, shapes)
        _first_request_rows(result, shapes[True])
    breakdown = import_breakdown(STREAM)
    result.data["breakdown"] = breakdown
    parts = ", ".join(f"{name} {seconds * 1000:.0f} ms" for name, seconds in breakdown)
    result.notes.append(f"Largest packages in `functions/stream/app.py`: {parts}.")
    return result

"""What each function's cold start imports: none of the packages kept off its path."""

from __future__ import annotations

import gc
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.cold_import import CONNECTIONS, STREAM
from streaming_proxy.coldstart import importing_code

ROOT = Path(__file__).resolve().parents[2]

# What each costs a cold start, and why the proxy does without it.
KEPT_OFF = {
    "boto3": "botocore's session API makes the same clients",
    "s3transfer": "boto3's S3 transfer manager",
    "aws_lambda_powertools.utilities.parser": "every event model Powertools ships",
    "rich": "httpx's command-line client",
    "click": "httpx's command-line client",
}


def imported_by(code: str) -> set[str]:
    probe = f"{code}; import sys, json; print(json.dumps(sorted(sys.modules)))"
    env = {**os.environ, "PYTHONPATH": f"{ROOT / 'layers/core'}{os.pathsep}{ROOT}"}
    done = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, env=env, capture_output=True, text=True, check=True
    )
    return set(json.loads(done.stdout))


def test_the_layer_ships_pyjwt_without_cryptography() -> None:
    """PyJWT imports `cryptography` whenever it is installed (the venv has it, for moto):
    the layer must not ship it, so subscribe tokens cost HMAC only at a cold start."""
    lines = (ROOT / "layers/core/requirements.txt").read_text().splitlines()
    pins = {line.split("==")[0].strip().lower() for line in lines if "==" in line}
    assert "pyjwt" in pins
    assert not [line for line in lines if "crypto" in line.lower()], "no [crypto] extra"


@pytest.mark.parametrize("code", [STREAM, CONNECTIONS], ids=["stream", "connections"])
def test_a_cold_start_imports_none_of_the_heavy_extras(code: str) -> None:
    modules = imported_by(code)
    loaded = {name: why for name, why in KEPT_OFF.items() if name in modules}
    assert loaded == {}


def test_the_connections_function_imports_pyjwt_with_its_code() -> None:
    """Every `$connect` verifies a token: PyJWT, which the stream function imports on first
    use, is no cost moved into the connections function's first event."""
    assert "jwt" in imported_by(CONNECTIONS)


def test_the_collector_is_paused_while_code_is_imported_and_what_it_made_is_frozen() -> None:
    assert gc.isenabled()
    frozen_before = gc.get_freeze_count()
    try:
        with importing_code():
            assert not gc.isenabled()
            made = [[i] for i in range(100)]  # lists are always tracked
        assert gc.isenabled()
        assert gc.get_freeze_count() >= frozen_before + len(made)
    finally:
        gc.unfreeze()


def test_a_collector_paused_before_stays_paused() -> None:
    gc.disable()
    try:
        with importing_code():
            pass
        assert not gc.isenabled()
    finally:
        gc.enable()
        gc.unfreeze()

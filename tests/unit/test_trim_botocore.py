"""The layer's botocore keeps the data of the services the proxy calls, and only theirs
(deploy/trim_botocore.py, run by deploy/Makefile's build-CoreLayer after the install step).

What must hold: every client the code makes, and every one botocore's credential chain may
make, finds its model; and for each of them the trimmed data resolves the same endpoint and
signing scope as botocore's full data, in every partition.
"""

from __future__ import annotations

import ast
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import botocore
import pytest

from streaming_proxy import aws
from tests.unit.test_bytecode_build import make

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "deploy" / "trim_botocore.py"
AWS_PY = ROOT / "layers" / "core" / "streaming_proxy" / "aws.py"
PACKAGE = ROOT / "layers" / "core" / "streaming_proxy"
BOTOCORE = Path(botocore.__file__).parent
KEPT = (*aws.BOTOCORE_SERVICES, *aws.CREDENTIAL_SERVICES)
# One region of each partition botocore knows, plus FIPS where it is offered.
REGIONS = ("us-east-1", "eu-central-1", "cn-north-1", "us-gov-west-1", "us-iso-east-1")


def trim(site: Path, aws_py: Path = AWS_PY) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SCRIPT), str(site), str(aws_py)],
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture(scope="module")
def trimmed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A site-packages holding a copy of the installed botocore, its data trimmed as the
    layer build trims it (botocore reads its own data folder as built-in data: a copy of
    the data alone, passed as a search path, would be resolved as customer data)."""
    site = tmp_path_factory.mktemp("site")
    shutil.copytree(BOTOCORE, site / "botocore", ignore=shutil.ignore_patterns("__pycache__"))
    done = trim(site)
    assert done.returncode == 0, done.stderr
    assert "removed" in done.stdout
    return site


# Run in a fresh interpreter over one botocore: for each kept service, region and FIPS
# setting, where its first call would go and how it would be signed (url, credential
# scope), or the error botocore raises instead. Nothing is sent: a before-send hook raises.
PROBE = """
import json, re, sys
import botocore
from botocore.config import Config
from botocore.session import Session

class Sent(Exception):
    pass

def read(request, **_):
    authorization = str(request.headers.get("Authorization", ""))
    scope = re.search(r"Credential=[^/]+/[0-9]{8}/([^,]+)", authorization)
    raise Sent(request.url, scope.group(1) if scope else authorization)

def operation(client):
    # An operation whose required inputs are all strings (fewest first), each filled to
    # its minimum length.
    model = client.meta.service_model
    found = []
    for name in sorted(model.operation_names):
        shape = model.operation_model(name).input_shape
        members = {} if shape is None else {m: shape.members[m] for m in shape.required_members}
        if all(member.type_name == "string" for member in members.values()):
            params = {m: "x" * max(1, v.metadata.get("min", 1)) for m, v in members.items()}
            found.append((len(params), name, params))
    _, name, params = min(found)
    method = next(k for k, v in client.meta.method_to_api_mapping.items() if v == name)
    return method, params

def first_call(session, service, region, fips):
    try:
        client = session.create_client(
            service, region_name=region, aws_access_key_id="AKIDEXAMPLE",
            aws_secret_access_key="example-secret",
            config=Config(use_fips_endpoint=fips, retries={"total_max_attempts": 1}),
        )
    except Exception as e:
        return ["client error", type(e).__name__, str(e)]
    method, params = operation(client)
    client.meta.events.register("before-send", read)
    try:
        getattr(client, method)(**params)
    except Sent as sent:
        return ["sent", *sent.args]
    except Exception as e:
        return ["call error", type(e).__name__, str(e)]
    return ["not sent"]

services, regions = json.loads(sys.argv[1]), json.loads(sys.argv[2])
session = Session()
print(json.dumps({
    "botocore": botocore.__file__,
    "calls": {
        f"{service} {region} fips={fips}": first_call(session, service, region, fips)
        for service in services for region in regions for fips in (False, True)
    },
}))
"""


def probe(site: Path | None) -> dict[str, Any]:
    """PROBE's answer with the venv's botocore (None) or the one in `site`."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    if site is not None:
        env["PYTHONPATH"] = str(site)
    done = subprocess.run(
        [sys.executable, "-c", PROBE, json.dumps(KEPT), json.dumps(REGIONS)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    answer: dict[str, Any] = json.loads(done.stdout)
    return answer


def test_the_layer_build_trims_after_installing_and_before_compiling(tmp_path: Path) -> None:
    """`make -n` of the target sam build calls for the layer, in the layer's folder."""
    done = make(ROOT / "layers" / "core", "-n", "build-CoreLayer", f"ARTIFACTS_DIR={tmp_path}")
    lines = done.stdout.splitlines()
    trim_line = f'python3.12 "{SCRIPT}" "{tmp_path / "python"}" "{AWS_PY}"'
    assert trim_line in lines
    position = lines.index(trim_line)
    assert any("-m pip install" in line for line in lines[:position])
    assert any("-m compileall" in line for line in lines[position:])


def test_every_client_the_code_makes_is_of_a_kept_service() -> None:
    """Every `_client("<service>", ...)` call in the package names a service the build keeps,
    and `_client` refuses any other (so a new one fails here, not in Lambda)."""
    called: set[str] = set()
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Name)
                and node.func.id == "_client"
            ):
                first = node.args[0]
                assert isinstance(first, ast.Constant), f"{path}: a literal service name"
                assert isinstance(first.value, str)
                called.add(first.value)
    assert called == set(aws.BOTOCORE_SERVICES)
    with pytest.raises(LookupError, match="not in BOTOCORE_SERVICES"):
        aws._client("s3", region_name="us-east-1")


def test_the_credential_services_are_every_one_botocore_may_call() -> None:
    """botocore's credential and token providers make clients of their own; a botocore
    upgrade that adds one must add it to CREDENTIAL_SERVICES."""
    pattern = re.compile(
        r"(?:_client_creator|create_nested_client)\(\s*(?:self\._session,\s*)?['\"]([a-z0-9-]+)"
    )
    called = {
        name
        for module in ("credentials.py", "tokens.py")
        for name in pattern.findall((BOTOCORE / module).read_text(encoding="utf-8"))
    }
    assert called, "the pattern no longer matches botocore's source"
    assert called <= set(aws.CREDENTIAL_SERVICES)


def test_the_trim_keeps_only_the_named_services_and_their_endpoints(trimmed: Path) -> None:
    data = trimmed / "botocore" / "data"
    folders = {path.name for path in data.iterdir() if path.is_dir()}
    assert folders == set(KEPT)
    files = {path.name for path in data.iterdir() if path.is_file()}
    assert files == {path.name for path in (BOTOCORE / "data").iterdir() if path.is_file()}
    full = (BOTOCORE / "data" / "endpoints.json").stat().st_size
    assert (data / "endpoints.json").stat().st_size < full / 10


def test_trimmed_data_resolves_every_kept_service_as_the_full_data_does(trimmed: Path) -> None:
    full, lean = probe(None), probe(trimmed)
    assert lean["botocore"].startswith(str(trimmed))
    assert not full["botocore"].startswith(str(trimmed))
    assert lean["calls"] == full["calls"]
    sent = [key for key, call in full["calls"].items() if call[0] == "sent"]
    for service in KEPT:
        assert f"{service} us-east-1 fips=False" in sent, service


def test_a_service_botocore_does_not_have_fails_the_build(tmp_path: Path) -> None:
    site = tmp_path / "site"
    (site / "botocore" / "data" / "dynamodb").mkdir(parents=True)
    aws_py = tmp_path / "aws.py"
    aws_py.write_text(
        'BOTOCORE_SERVICES = ("dynamodb", "nosuchservice")\nCREDENTIAL_SERVICES = ()\n'
    )
    done = trim(site, aws_py)
    assert done.returncode != 0
    assert "nosuchservice" in done.stderr
    assert (site / "botocore" / "data" / "dynamodb").is_dir()  # nothing removed


def test_an_aws_py_without_the_lists_fails_the_build(tmp_path: Path) -> None:
    aws_py = tmp_path / "aws.py"
    aws_py.write_text('BOTOCORE_SERVICES = ("dynamodb",)\n')
    site = tmp_path / "site"
    (site / "botocore" / "data").mkdir(parents=True)
    done = trim(site, aws_py)
    assert done.returncode != 0
    assert "CREDENTIAL_SERVICES" in done.stderr


def test_a_layer_without_botocore_is_left_as_it_is(tmp_path: Path) -> None:
    done = trim(tmp_path)
    assert done.returncode == 0
    assert "nothing to trim" in done.stdout

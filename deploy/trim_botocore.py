"""Trim botocore's service data in a built layer to the services the proxy calls.

botocore ships the model of every AWS service (over 400 folders, ~28 MB). Creating any
client lists them all (`Loader.list_available_services` looks into every folder) and parses
`endpoints.json`, which holds every service's endpoints (~1.2 MB): both in every cold start
that makes a client. After the build's install step, this keeps the folders of the services
`streaming_proxy/aws.py` names (`BOTOCORE_SERVICES`, the clients it makes, and
`CREDENTIAL_SERVICES`, the ones botocore's credential chain may call) and those services'
entries in `endpoints.json`. Nothing botocore reads for these services changes.

Usage: python trim_botocore.py <site-packages folder> <path of streaming_proxy/aws.py>
Stdlib only: it runs under the build's Python, before anything of the layer is importable.
"""

from __future__ import annotations

import ast
import gzip
import json
import shutil
import sys
from pathlib import Path

NAMES = ("BOTOCORE_SERVICES", "CREDENTIAL_SERVICES")


def kept_services(aws_py: Path) -> list[str]:
    """The service names of aws.py's module-level tuples named in NAMES, read without
    importing it (it imports botocore, which the build host need not have)."""
    found: dict[str, list[str]] = {}
    for node in ast.parse(aws_py.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1:
            target, value = node.targets[0], node.value
        elif isinstance(node, ast.AnnAssign) and node.value is not None:
            target, value = node.target, node.value
        else:
            continue
        if isinstance(target, ast.Name) and target.id in NAMES:
            found[target.id] = list(ast.literal_eval(value))
    missing = [name for name in NAMES if name not in found]
    if missing:
        raise SystemExit(f"{aws_py}: no module-level {', '.join(missing)}")
    return [service for name in NAMES for service in found[name]]


def _load(path: Path) -> object:
    if path.suffix == ".gz":
        with gzip.open(path, "rt", encoding="utf-8") as file:
            return json.load(file)
    return json.loads(path.read_text(encoding="utf-8"))


def endpoint_prefix(service: Path) -> str:
    """`metadata.endpointPrefix` of the service's newest API version: the key its endpoints
    have in endpoints.json (apigatewaymanagementapi's is execute-api)."""
    models = sorted(service.glob("*/service-2.json*"), key=lambda path: path.parent.name)
    if not models:
        raise SystemExit(f"{service}: no service-2 model")
    model = _load(models[-1])
    assert isinstance(model, dict)
    return str(model["metadata"]["endpointPrefix"])


def trim(data: Path, keep: list[str]) -> tuple[int, int]:
    """Trim botocore's `data` folder in place; returns (folders removed, bytes saved)."""
    absent = [service for service in keep if not (data / service).is_dir()]
    if absent:
        raise SystemExit(f"{data}: botocore has no data for {absent}")
    before = _size(data)
    removed = 0
    for child in sorted(data.iterdir()):
        if child.is_dir() and child.name not in keep:
            shutil.rmtree(child)
            removed += 1
    prefixes = {endpoint_prefix(data / service) for service in keep}
    endpoints_path = data / "endpoints.json"
    endpoints = _load(endpoints_path)
    assert isinstance(endpoints, dict)
    for partition in endpoints["partitions"]:
        services = partition["services"]
        partition["services"] = {k: v for k, v in services.items() if k in prefixes}
    endpoints_path.write_text(json.dumps(endpoints, separators=(",", ":")), encoding="utf-8")
    return removed, before - _size(data)


def _size(folder: Path) -> int:
    return sum(path.stat().st_size for path in folder.rglob("*") if path.is_file())


def main(argv: list[str]) -> None:
    if len(argv) != 2:
        raise SystemExit(__doc__)
    site, aws_py = Path(argv[0]), Path(argv[1])
    data = site / "botocore" / "data"
    if not data.is_dir():
        print(f"trim_botocore: {site} has no botocore: nothing to trim")
        return
    keep = kept_services(aws_py)
    removed, saved = trim(data, keep)
    print(f"trim_botocore: kept {', '.join(keep)}; removed {removed} services, {saved:,} bytes")


if __name__ == "__main__":
    main(sys.argv[1:])

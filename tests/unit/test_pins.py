"""The deployed requirements pin exactly what pyproject.toml installs for development and
tests, so local runs and benchmarks exercise the versions Lambda gets."""

from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DEPLOYED = ("layers/core/requirements.txt", "functions/stream/requirements.txt")


def _pins(lines: list[str]) -> dict[str, str]:
    pins: dict[str, str] = {}
    for line in lines:
        requirement = line.split("#", 1)[0].strip()
        if not requirement:
            continue
        name, sep, version = requirement.partition("==")
        assert sep, f"not pinned with ==: {line!r}"
        pins[name.strip().lower()] = version.strip()
    return pins


def _pyproject_pins() -> dict[str, str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    return _pins(project["dependencies"])


def _deployed_pins(relative: str) -> dict[str, str]:
    return _pins((ROOT / relative).read_text(encoding="utf-8").splitlines())


def test_every_deployed_pin_is_the_version_pyproject_installs() -> None:
    project = _pyproject_pins()
    for relative in DEPLOYED:
        for name, version in _deployed_pins(relative).items():
            assert project.get(name) == version, f"{relative}: {name}=={version}"


def test_every_runtime_dependency_is_deployed_once() -> None:
    """The layer and the stream function share one interpreter: a package in both would be
    two copies on sys.path, and one missing from both would be missing in Lambda."""
    layer = _deployed_pins(DEPLOYED[0])
    function = _deployed_pins(DEPLOYED[1])
    assert not set(layer) & set(function)
    assert set(layer) | set(function) == set(_pyproject_pins())

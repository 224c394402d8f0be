"""The deployed artifacts carry bytecode: every function and the layer are built by
deploy/Makefile (template.yaml: BuildMethod makefile, ContextPath deploy), whose
compile step writes unchecked-hash .pyc files the runtime loads without looking at the source.

No network: the install step is pointed at an empty requirements file, and the build runs
with this interpreter (PYTHON_VERSION set to its version) instead of Lambda's 3.12.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from devstack.template import load_template

ROOT = Path(__file__).resolve().parents[2]
RUNNING = f"{sys.version_info.major}.{sys.version_info.minor}"
TAG = sys.implementation.cache_tag
FLAG_UNCHECKED_HASH = 0b01  # PEP 552: hash-based, check_source off
MAKEFILE = ROOT / "deploy" / "Makefile"


def makefile_builds() -> dict[str, tuple[Path, dict[str, Any]]]:
    """Logical id -> (the folder SAM copies and runs the Makefile in, resource) for every
    built resource."""
    builds: dict[str, tuple[Path, dict[str, Any]]] = {}
    for name, resource in load_template()["Resources"].items():
        properties = resource.get("Properties", {})
        if resource["Type"] == "AWS::Serverless::Function":
            builds[name] = (ROOT / properties["CodeUri"], resource)
        elif resource["Type"] == "AWS::Serverless::LayerVersion":
            builds[name] = (ROOT / properties["ContentUri"], resource)
    return builds


BUILDS = makefile_builds()
# What each artifact holds of ours, relative to ARTIFACTS_DIR.
OURS = {
    "CoreLayer": ["python/streaming_proxy/__init__.py", "python/streaming_proxy/config.py"],
    "StreamFunction": ["app.py", "run.sh"],
    "RelayFunction": ["app.py", "run.sh"],
    "ConnectionsFunction": ["app.py"],
    "DeadLetterFunction": ["app.py"],
}


def make(folder: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """deploy/Makefile run in `folder`, as sam build runs it in its copy of the CodeUri."""
    return subprocess.run(
        ["make", "--no-print-directory", "--makefile", str(MAKEFILE), *args],
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=300,
        check=check,
    )


def pyc_flags(pyc: Path) -> int:
    return int.from_bytes(pyc.read_bytes()[4:8], "little")


def test_every_function_and_the_layer_are_built_by_the_deploy_makefile() -> None:
    assert set(BUILDS) == set(OURS)
    for name, (folder, resource) in BUILDS.items():
        assert resource["Metadata"]["BuildMethod"] == "makefile", name
        assert resource["Metadata"]["ContextPath"] == "deploy", name
        assert not (folder / "Makefile").exists(), f"{name}: one Makefile, deploy/'s"
    layer = BUILDS["CoreLayer"][1]
    assert layer["Metadata"]["BuildArchitecture"] == "arm64"
    assert layer["Properties"]["CompatibleArchitectures"] == ["arm64"]


@pytest.mark.parametrize("name", sorted(OURS))
def test_the_target_sam_calls_installs_arm64_wheels_for_the_runtime_and_compiles(
    name: str, tmp_path: Path
) -> None:
    """`make -n` (commands printed, not run) of build-<LogicalId> with sam's ARTIFACTS_DIR."""
    folder = BUILDS[name][0]
    runtime = str(load_template()["Globals"]["Function"]["Runtime"])  # python3.12
    done = make(folder, "-n", f"build-{name}", f"ARTIFACTS_DIR={tmp_path}")
    out = done.stdout
    site = tmp_path / "python" if name == "CoreLayer" else tmp_path
    compile_line = f'{runtime} -m compileall -q -f -j 0 --invalidation-mode unchecked-hash "{site}"'
    assert compile_line in out
    has_pins = any(
        line.strip() and not line.startswith("#")
        for line in (folder / "requirements.txt").read_text().splitlines()
    )
    if has_pins:
        pip = " ".join(out.split())  # the command spans continuation lines
        for option in (
            f"{runtime} -m pip install",
            "--no-compile",
            "--platform manylinux2014_aarch64 --implementation cp",
            f"--python-version {runtime.removeprefix('python')}",
            "--only-binary=:all:",
            f'--target "{site}" -r "{folder / "requirements.txt"}"',
        ):
            assert option in pip, option


@pytest.fixture
def empty_requirements(tmp_path: Path) -> Path:
    path = tmp_path / "no-requirements.txt"
    path.write_text("# nothing: the test has no network\n")
    return path


def build(name: str, source: Path, artifacts: Path, requirements: Path) -> None:
    make(
        source,
        f"build-{name}",
        f"ARTIFACTS_DIR={artifacts}",
        f"PYTHON={sys.executable}",
        f"PYTHON_VERSION={RUNNING}",
        f"REQUIREMENTS={requirements}",
    )


@pytest.mark.parametrize("name", sorted(OURS))
def test_a_build_holds_our_code_with_bytecode_for_its_python_and_nothing_else(
    name: str, tmp_path: Path, empty_requirements: Path
) -> None:
    """Built from a copy of the folder, as sam build does, holding a stale __pycache__ of
    another interpreter (a developer's): none of it reaches the artifact."""
    source = tmp_path / "source"
    shutil.copytree(BUILDS[name][0], source, ignore=shutil.ignore_patterns("__pycache__"))
    stale = next(source.rglob("*.py")).parent / "__pycache__" / "app.cpython-39.pyc"
    stale.parent.mkdir(exist_ok=True)
    stale.write_bytes(b"stale")
    artifacts = tmp_path / "artifacts"
    build(name, source, artifacts, empty_requirements)

    files = {path.relative_to(artifacts).as_posix() for path in artifacts.rglob("*")}
    assert set(OURS[name]) <= files
    assert not {"Makefile", "requirements.txt", "python/Makefile"} & files
    pycs = {p for p in artifacts.rglob("*.pyc")}
    sources = list(artifacts.rglob("*.py"))
    assert {Path(importlib.util.cache_from_source(str(p))) for p in sources} == pycs
    assert all(p.name.endswith(f".{TAG}.pyc") for p in pycs)
    assert {pyc_flags(p) for p in pycs} == {FLAG_UNCHECKED_HASH}
    if name == "CoreLayer":  # the whole package, under python/ (on the runtime's sys.path)
        assert {p.relative_to(artifacts / "python") for p in sources} == {
            p.relative_to(source) for p in (source / "streaming_proxy").rglob("*.py")
        }
    if "run.sh" in OURS[name]:
        assert os.access(artifacts / "run.sh", os.X_OK), "run.sh is the handler"


def test_a_build_with_another_python_than_the_runtime_fails_and_says_why(
    tmp_path: Path, empty_requirements: Path
) -> None:
    done = make(
        BUILDS["ConnectionsFunction"][0],
        "build-ConnectionsFunction",
        f"ARTIFACTS_DIR={tmp_path / 'out'}",
        f"PYTHON={sys.executable}",
        "PYTHON_VERSION=3.99",
        check=False,
    )
    assert done.returncode != 0
    assert f"is Python {RUNNING}, Lambda runs 3.99: bytecode is per Python version" in done.stderr
    assert not (tmp_path / "out").exists()


def test_a_build_without_sams_artifacts_dir_fails_and_says_why(tmp_path: Path) -> None:
    """Run by hand without ARTIFACTS_DIR, a target would write under `/` (the layer's
    `$(ARTIFACTS_DIR)/python`): it stops before any step instead."""
    source = tmp_path / "source"
    shutil.copytree(BUILDS["ConnectionsFunction"][0], source)
    before = snapshot(source)
    done = make(
        source,
        "build-ConnectionsFunction",
        "ARTIFACTS_DIR=",
        f"PYTHON={sys.executable}",
        f"PYTHON_VERSION={RUNNING}",
        check=False,
    )
    assert done.returncode != 0
    assert "ARTIFACTS_DIR is not set (sam build sets it)" in done.stderr
    assert snapshot(source) == before


def test_the_compile_step_refuses_a_folder_that_is_not_there(tmp_path: Path) -> None:
    missing = tmp_path / "missing"
    done = make(
        tmp_path, "compile-bytecode", f"DIR={missing}", f"PYTHON={sys.executable}", check=False
    )
    assert done.returncode != 0
    assert f"compile-bytecode: DIR={missing} is not a directory" in done.stderr
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------- compile step


def compile_bytecode(directory: Path) -> None:
    make(directory, "compile-bytecode", f"DIR={directory}", f"PYTHON={sys.executable}")


def snapshot(directory: Path) -> dict[str, tuple[int, int]]:
    return {
        str(path): (path.stat().st_mtime_ns, path.stat().st_size) for path in directory.rglob("*")
    }


@pytest.fixture
def read_only(tmp_path: Path) -> Iterator[Path]:
    """A folder made read-only (as /opt and /var/task are) once filled; writable again after."""
    folder = tmp_path / "task"
    folder.mkdir()
    yield folder
    for path in [folder, *folder.rglob("*")]:
        path.chmod(path.stat().st_mode | 0o200)


def freeze(folder: Path) -> None:
    for path in [*folder.rglob("*"), folder]:
        path.chmod(path.stat().st_mode & ~0o222)


def import_answer(folder: Path, *, dont_write: bool) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env["PYTHONPATH"] = str(folder)
    if dont_write:
        env["PYTHONDONTWRITEBYTECODE"] = "1"
    return subprocess.run(
        [sys.executable, "-c", "import probe.answer as a; print(a.ANSWER)"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )


def write_probe(folder: Path) -> Path:
    package = folder / "probe"
    package.mkdir()
    (package / "__init__.py").write_text("")
    source = package / "answer.py"
    source.write_text('ANSWER = "built"\n')
    return source


def edit_after_the_build(source: Path) -> None:
    """What zip extraction does to a source next to its .pyc: newer mtime, here new text too."""
    source.write_text('ANSWER = "edited after the build"\n')
    stat = source.stat()
    os.utime(source, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**10))


def test_the_compiled_code_runs_whatever_the_source_says_and_writes_nothing(
    read_only: Path,
) -> None:
    source = write_probe(read_only)
    compile_bytecode(read_only)
    edit_after_the_build(source)
    freeze(read_only)
    before = snapshot(read_only)
    for dont_write in (True, False):
        done = import_answer(read_only, dont_write=dont_write)
        assert (done.stdout.strip(), done.stderr) == ("built", "")
    assert snapshot(read_only) == before, "nothing was (re)written: a read-only folder is fine"


def test_timestamp_bytecode_would_be_recompiled_which_is_what_the_build_avoids(
    read_only: Path,
) -> None:
    """The control: compileall's default (timestamp) .pyc is not used once the source looks
    newer, so every cold start from a read-only folder would compile again."""
    source = write_probe(read_only)
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(read_only)], check=True)
    edit_after_the_build(source)
    freeze(read_only)
    done = import_answer(read_only, dont_write=True)
    assert done.stdout.strip() == "edited after the build"


def test_every_module_of_ours_gets_bytecode_for_the_running_python(tmp_path: Path) -> None:
    copy = tmp_path / "streaming_proxy"
    shutil.copytree(
        ROOT / "layers/core/streaming_proxy", copy, ignore=shutil.ignore_patterns("__pycache__")
    )
    compile_bytecode(tmp_path)
    sources = sorted(copy.rglob("*.py"))
    assert len(sources) > 50
    for path in sources:
        pyc = Path(importlib.util.cache_from_source(str(path)))
        assert pyc.is_file(), path
        assert pyc_flags(pyc) == FLAG_UNCHECKED_HASH, path

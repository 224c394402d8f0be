"""The functions as `sam build` lays them out, built from the venv without network: each
function's folder (/var/task) and the layer's python/ folder (/opt/python), holding the
installed files of the pinned distributions and our sources, with or without the bytecode
deploy/Makefile's compile step writes (`compile-bytecode`).
"""

from __future__ import annotations

import importlib.metadata
import os
import shutil
import subprocess
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from .stack import ROOT

LAYER_REQUIREMENTS = ROOT / "layers/core/requirements.txt"
STREAM_REQUIREMENTS = ROOT / "functions/stream/requirements.txt"
NO_CACHE = shutil.ignore_patterns("__pycache__", "*.pyc")
MAKE = ("make", "--no-print-directory", "--makefile", str(ROOT / "deploy" / "Makefile"))
AWS_PY = ROOT / "layers/core/streaming_proxy/aws.py"


@dataclass(frozen=True)
class DeployedShape:
    """One build under `root`: `tasks[function]` is its /var/task, `layer` /opt/python."""

    root: Path
    layer: Path
    tasks: dict[str, Path]

    def moved(self, root: Path) -> DeployedShape:
        def there(path: Path) -> Path:
            return root / path.relative_to(self.root)

        return DeployedShape(root, there(self.layer), {k: there(v) for k, v in self.tasks.items()})

    def path(self, function: str) -> str:
        """PYTHONPATH of a function, in the runtime's order (its code before the layer)."""
        return os.pathsep.join([str(self.tasks[function]), str(self.layer)])


def _pins(path: Path) -> list[Requirement]:
    lines = (line.split("#", 1)[0].strip() for line in path.read_text().splitlines())
    return [Requirement(line) for line in lines if line]


def distributions(requirement_files: Iterable[Path]) -> list[importlib.metadata.Distribution]:
    """The installed distributions the pins need, dependencies included (no extras)."""
    found: dict[str, importlib.metadata.Distribution] = {}
    todo = [pin for path in requirement_files for pin in _pins(path)]
    while todo:
        requirement = todo.pop()
        if requirement.marker and not requirement.marker.evaluate({"extra": ""}):
            continue
        name = canonicalize_name(requirement.name)
        if name in found:
            continue
        found[name] = importlib.metadata.distribution(requirement.name)
        todo.extend(Requirement(text) for text in found[name].requires or [])
    return list(found.values())


def _install(dists: Iterable[importlib.metadata.Distribution], target: Path) -> None:
    """Copy what each distribution installed into site-packages (RECORD), bytecode left out."""
    for dist in dists:
        for file in dist.files or []:
            if file.parts[0] == ".." or "__pycache__" in file.parts or file.suffix == ".pyc":
                continue
            destination = target / file
            destination.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(Path(str(dist.locate_file(file))), destination)


def _make(*arguments: str) -> None:
    """A target of deploy/Makefile, run with this Python."""
    subprocess.run(
        [*MAKE, *arguments, f"PYTHON={sys.executable}"],
        check=True,
        capture_output=True,
        timeout=300,
    )


def build(root: Path) -> DeployedShape:
    """Sources and libraries only (no bytecode), botocore's data trimmed as deploy/Makefile's
    build-CoreLayer trims it (`trim-botocore`)."""
    layer = root / "opt" / "python"
    _install(distributions([LAYER_REQUIREMENTS]), layer)
    _make("trim-botocore", f"TARGET={layer}", f"AWS_PY={AWS_PY}")
    shutil.copytree(
        ROOT / "layers/core/streaming_proxy", layer / "streaming_proxy", ignore=NO_CACHE
    )
    tasks = {"stream": root / "stream", "connections": root / "connections"}
    _install(distributions([STREAM_REQUIREMENTS]), tasks["stream"])
    for function, task in tasks.items():
        task.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / "functions" / function / "app.py", task / "app.py")
    return DeployedShape(root, layer, tasks)


def with_bytecode(shape: DeployedShape, root: Path) -> DeployedShape:
    """A hard-linked copy of `shape` compiled by deploy/Makefile's compile step (this Python)."""
    shutil.copytree(shape.root, root, copy_function=os.link)
    compiled = shape.moved(root)
    for folder in (compiled.layer, *compiled.tasks.values()):
        _make("compile-bytecode", f"DIR={folder}")
    return compiled


def set_writable(root: Path, writable: bool) -> None:
    """Read-only as /opt and /var/task are (root ignores it; PYTHONDONTWRITEBYTECODE does not)."""
    for path in [root, *root.rglob("*")]:
        mode = path.stat().st_mode
        path.chmod(mode | 0o200 if writable else mode & ~0o222)

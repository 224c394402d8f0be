"""Makes a benchmark subprocess see the packages the deployed layer has, not the venv's.

The local venv has `cryptography` (a moto dependency), which PyJWT imports whenever it is
installed; layers/core/requirements.txt does not ship it (PyJWT without its `crypto`
extra). cold_import.py puts this folder first on PYTHONPATH, so its subprocesses import
what a Lambda cold start imports.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from importlib.machinery import ModuleSpec
from types import ModuleType

NOT_IN_LAYER = ("cryptography",)


class _NotInLayer:
    @staticmethod
    def find_spec(
        name: str, path: Sequence[str] | None = None, target: ModuleType | None = None
    ) -> ModuleSpec | None:
        if name.split(".", 1)[0] in NOT_IN_LAYER:
            raise ModuleNotFoundError(f"{name} is not in the deployed layer", name=name)
        return None


sys.meta_path.insert(0, _NotInLayer())

"""Load a Python file that is not on the import path (role scripts without .py, harness tools) as a module."""

from __future__ import annotations

import importlib.machinery
import importlib.util
import sys
from pathlib import Path


def load_script(path: Path, name: str):
    """The module in ``path`` (any file name), registered as ``name`` (dataclasses look it up)."""
    loader = importlib.machinery.SourceFileLoader(name, str(path))
    spec = importlib.util.spec_from_loader(name, loader)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    loader.exec_module(module)
    return module

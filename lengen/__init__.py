"""lengen: length generalization in decoder-only Transformers.

`import lengen` is cheap: the Python API (lengen/api.py) and its torch/Lightning imports load on
first use of a name below (PEP 562 module `__getattr__`).
"""

from __future__ import annotations

__version__ = "0.1.0"  # the one place the version is set (pyproject reads it; lengen --version)

# Public names -> the module that defines them, imported on first access.
_LAZY = {
    name: "lengen.api"
    for name in ("Results", "build_model", "evaluate", "generate", "task_data", "train", "trainer")
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value  # later accesses skip __getattr__
        return value
    raise AttributeError(f"module 'lengen' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))

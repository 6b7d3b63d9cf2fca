"""Shared fixtures: fake third-party distributions, declared by an entry_points.txt on sys.path."""

from __future__ import annotations

import importlib.util
import os
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from lengen.plugins import discover

# The tests run tiny models, for which one thread is several times faster than two competing ones;
# subprocesses (the `lengen` command) inherit the variable.
os.environ["OMP_NUM_THREADS"] = "1"
torch.set_num_threads(1)


def load_scale_ladder():
    """scripts/scale_ladder.py as the module `scale_ladder`, registered in sys.modules: it
    defines a Lightning callback, and jsonargparse imports every Callback subclass's module when
    a later test in the same process resolves `trainer.callbacks` (else: a warning)."""
    path = Path(__file__).resolve().parent.parent / "scripts" / "scale_ladder.py"
    spec = importlib.util.spec_from_file_location("scale_ladder", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["scale_ladder"] = module
    spec.loader.exec_module(module)
    return module


def save_random(model_class, config, folder) -> torch.nn.Module:
    """A transformers model with every tensor random (norm scales and biases included), saved to
    `folder` with `save_pretrained`; the import tests' reference."""
    torch.manual_seed(0)
    model = model_class(config).float().eval()
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if name.endswith("norm.weight"):
                parameter.uniform_(0.5, 1.5)
            else:
                parameter.normal_(0.0, 0.1)
    model.save_pretrained(folder)
    return model


def write_distribution(root: Path, name: str, entry_points: str, modules: dict[str, str]) -> Path:
    """Write an installed-looking distribution (a .dist-info folder and its modules) under root."""
    dist_info = root / f"{name.replace('-', '_')}-0.1.dist-info"
    dist_info.mkdir(parents=True)
    (dist_info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1\n")
    (dist_info / "entry_points.txt").write_text(textwrap.dedent(entry_points))
    for module, source in modules.items():
        (root / f"{module}.py").write_text(textwrap.dedent(source))
    return root


@pytest.fixture
def fresh_discovery():
    """Forget cached discovery before and after the test (tests change sys.path)."""
    discover.cache_clear()
    yield
    discover.cache_clear()

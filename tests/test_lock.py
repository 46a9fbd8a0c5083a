"""requirements.lock, the pip constraints file `make install` and CI use: CPU torch only, complete, installed."""

from __future__ import annotations

import re
import sys
from importlib import metadata
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LOCK = ROOT / "requirements.lock"


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def locked() -> dict[str, str]:
    pins = {}
    for line in LOCK.read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.startswith("#"):
            name, sep, version = line.partition("==")
            assert sep and version, f"{LOCK.name}: not a name==version pin: {line!r}"
            pins[canonical(name)] = version
    return pins


def test_lock_takes_the_cpu_torch_wheel_and_no_cuda_package():
    pins = locked()
    assert pins["torch"].endswith("+cpu")  # no CUDA index serves a +cpu version
    assert not [n for n in pins if n.startswith("nvidia-") or n == "triton"]


def test_lock_covers_every_declared_dependency():
    """A dependency added to pyproject.toml without `make lock` would install unpinned: refuse that."""
    pins = locked()
    requirements = metadata.requires("lora-recycle") or []
    names = {canonical(re.match(r"[A-Za-z0-9._-]+", r).group()) for r in requirements}  # extras' ones too
    assert {"torch", "typer", "pytest", "ray"} <= names
    missing = sorted(n for n in names if n not in pins)
    assert not missing, f"not in {LOCK.name} (run `make lock`): {missing}"


@pytest.mark.skipif(Path(sys.prefix).resolve() != (ROOT / ".venv").resolve(),
                    reason="checks the venv `make install` made, not this environment")
def test_make_install_installed_the_locked_versions():
    pins = locked()
    installed = {canonical(d.metadata["Name"]): d.version for d in metadata.distributions()}
    wrong = {n: (installed[n], v) for n, v in pins.items() if n in installed and installed[n] != v}
    assert not wrong, f"installed vs locked: {wrong}"
    assert not [n for n in pins if n not in installed]

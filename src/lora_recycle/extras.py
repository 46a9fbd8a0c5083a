"""Optional parts of the install (pyproject's extras) and the one-line error when a command needs a missing one.

The core (``pip install lora-recycle``) scans pools, selects, merges, exports and evaluates on your own model.
``[hub]`` adds what the offline mini-hub is built from (its task suite's data packages and the GGUF reader of
SmolLM2's conversion), ``[report]`` the figures' plotting library and ``[ray]`` the Ray executor. Which
packages an extra holds is read from the installed package's own metadata, so pyproject.toml stays the one list.
"""

from __future__ import annotations

from importlib import metadata

from lora_recycle.errors import UserError

DISTRIBUTION = "lora-recycle"


def extra_requirements(extra: str) -> list[str]:
    """The distribution names the installed package declares under ``extra`` (empty when not installed)."""
    from packaging.requirements import Requirement

    try:
        lines = metadata.requires(DISTRIBUTION) or []
    except metadata.PackageNotFoundError:  # run from a source tree without an install: nothing to check
        return []
    names = []
    for line in lines:
        requirement = Requirement(line)
        marker = requirement.marker
        if marker is not None and "extra" in str(marker) and marker.evaluate({"extra": extra}):
            names.append(requirement.name)
    return names


def missing_packages(extra: str) -> list[str]:
    """The packages of ``extra`` that are not installed."""
    missing = []
    for name in extra_requirements(extra):
        try:
            metadata.version(name)
        except metadata.PackageNotFoundError:
            missing.append(name)
    return missing


def require_extra(extra: str, needed_by: str) -> None:
    """Raise a one-line ``UserError`` naming ``extra`` when any of its packages is missing."""
    missing = missing_packages(extra)
    if missing:
        raise UserError(f"{needed_by} needs the [{extra}] extra ({', '.join(missing)} not installed): "
                        f"pip install 'lora-recycle[{extra}]'")

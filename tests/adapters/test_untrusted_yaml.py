"""Untrusted YAML: libyaml's fast path and the pure-Python loader refuse and accept the same documents."""

import pytest
import yaml

from lora_recycle.adapters import untrusted
from lora_recycle.adapters.untrusted import AdapterProblem, loads_yaml

PARSERS = ["libyaml", "python"]


@pytest.fixture(params=PARSERS)
def parser(request, monkeypatch):
    if request.param == "python":
        monkeypatch.setattr(untrusted, "_LIBYAML", None)
    elif untrusted._LIBYAML is None:
        pytest.skip("PyYAML without libyaml")
    return request.param


def nested(levels: int) -> str:
    return "x: " + "[" * levels + "1" + "]" * levels


def test_a_card_parses_to_the_same_data(parser):
    text = "license: mit\nbase_model: HuggingFaceTB/SmolLM2-135M-Instruct\ntags: [lora, peft]\nx: {a: [1, 2.5, null]}\n"
    assert loads_yaml(text, "README.md") == yaml.safe_load(text)


def test_aliases_are_refused(parser):
    with pytest.raises(AdapterProblem, match=r"README.md: YAML alias \*a \(aliases are not allowed\)") as refused:
        loads_yaml("a: &a [1, 2]\nb: *a\n", "README.md")
    assert refused.value.code == "bad_card"


def test_nesting_is_capped_at_max_depth(parser):
    # the mapping is level 0; x's value is the first list, so `levels` lists put the scalar at depth levels + 1
    assert loads_yaml(nested(3), "card", max_depth=5) == {"x": [[[1]]]}
    assert loads_yaml(nested(4), "card", max_depth=6)["x"] == [[[[1]]]]
    with pytest.raises(AdapterProblem, match="YAML nested deeper than 5 levels"):
        loads_yaml(nested(4), "card", max_depth=5)
    with pytest.raises(AdapterProblem, match="nested deeper than 32"):
        loads_yaml(nested(5000), "card")


def test_syntax_errors_and_several_documents_stay_yaml_errors(parser):
    with pytest.raises(yaml.YAMLError):
        loads_yaml("a: [1, 2\n", "card")
    with pytest.raises(yaml.YAMLError):
        loads_yaml("a: 1\n---\nb: 2\n", "card")

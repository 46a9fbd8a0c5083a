"""Merged adapters' model cards follow the Hub's adapter conventions."""

from __future__ import annotations

from lora_recycle.adapters.card import read_card_data, write_card
from lora_recycle.adapters.merge_card import MergeCardInfo, coefficient_summary, combined_license, merge_card

SOURCES = [{"id": "alice/sent-r8", "license": "apache-2.0"}, {"id": "bob/emoji-r16", "license": "mit"},
           {"id": "carol/iris", "license": "apache-2.0"}]
COEFFICIENTS = {"model.layers.0.self_attn.q_proj": {"alice/sent-r8": 0.5, "bob/emoji-r16": -0.25, "carol/iris": 1.0},
                "model.layers.1.self_attn.q_proj": {"alice/sent-r8": 0.25, "bob/emoji-r16": -0.25, "carol/iris": 1.0}}


def test_license_reflects_the_sources():
    assert combined_license(["apache-2.0", "Apache-2.0"]) == {"license": "apache-2.0"}
    assert combined_license(["mit", "apache-2.0", "mit"]) == {"license": "other", "license_name": "apache-2.0-and-mit"}
    assert combined_license(["mit", None]) == {"license": "other", "license_name": "mit-and-unknown"}
    assert combined_license([None]) == {"license": "other", "license_name": "unknown"}


def test_coefficient_summary():
    assert coefficient_summary(COEFFICIENTS, "carol/iris") == "1"
    assert coefficient_summary(COEFFICIENTS, "alice/sent-r8") == "mean 0.375 (min 0.25, max 0.5; 2 groups)"
    assert coefficient_summary(COEFFICIENTS, "nobody") == "-"


def test_card_front_matter_and_table(tmp_path):
    info = MergeCardInfo("HuggingFaceTB/SmolLM2-135M-Instruct", True, "ours", SOURCES, COEFFICIENTS, rank=32,
                         dtype="bfloat16", version="9.9")
    data, body = merge_card(info)
    write_card(tmp_path, data, body)
    card = read_card_data(tmp_path)
    assert card["base_model"] == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert card["library_name"] == "peft" and card["pipeline_tag"] == "text-generation"
    assert card["license"] == "other" and card["license_name"] == "apache-2.0-and-mit"
    assert "base_model:adapter:HuggingFaceTB/SmolLM2-135M-Instruct" in card["tags"] and "lora" in card["tags"]
    text = (tmp_path / "README.md").read_text()
    assert "| bob/emoji-r16 | mit | -0.25 |" in text
    assert "| alice/sent-r8 | apache-2.0 | mean 0.375 (min 0.25, max 0.5; 2 groups) |" in text
    assert "--max-lora-rank 32" in text and "bfloat16" in text and "exported exactly" in text


def test_card_of_a_local_base_names_no_hub_base(tmp_path):
    data, body = merge_card(MergeCardInfo("/data/models/x", False, "average", SOURCES[:1]))
    assert "base_model" not in data and not any(t.startswith("base_model:") for t in data["tags"])
    assert data["license"] == "apache-2.0" and "its Hub id was not known" in body


def test_card_describes_compression():
    compression = {"compressed": True, "max_error": 0.05, "max_relative_error": 0.0412, "mean_relative_error": 0.02}
    _, body = merge_card(MergeCardInfo("o/b", True, "ours", SOURCES, rank=64, compression=compression))
    assert "error budget 0.05" in body and "at most 0.0412 (mean 0.0200)" in body

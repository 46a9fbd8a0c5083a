"""Model cards: the YAML front matter of an adapter's README.md (license, base_model, ...)."""

from __future__ import annotations

from pathlib import Path

import yaml


def read_card_data(directory: Path) -> dict:
    """Return the card data (YAML front matter) of ``directory/README.md``; empty when absent or unreadable."""
    readme = Path(directory) / "README.md"
    if not readme.is_file():
        return {}
    text = readme.read_text(encoding="utf-8", errors="replace")
    if not text.startswith("---"):
        return {}
    end = text.find("\n---", 3)
    if end < 0:
        return {}
    try:
        data = yaml.safe_load(text[3:end])
    except yaml.YAMLError:
        return {}
    return data if isinstance(data, dict) else {}


def write_card(directory: Path, card_data: dict, body: str) -> None:
    """Write ``README.md`` with ``card_data`` as YAML front matter followed by the Markdown ``body``."""
    front = yaml.safe_dump(card_data, sort_keys=False, allow_unicode=True).strip()
    (Path(directory) / "README.md").write_text(f"---\n{front}\n---\n\n{body.rstrip()}\n", encoding="utf-8")

"""Model cards: the YAML front matter of an adapter's README.md (license, base_model, ...)."""

from __future__ import annotations

from pathlib import Path

import yaml

from lora_recycle.adapters.untrusted import MAX_CARD_BYTES, AdapterProblem, loads_yaml


def read_card_data(directory: Path, max_bytes: int = MAX_CARD_BYTES) -> dict:
    """Return the card data (YAML front matter) of ``directory/README.md``; empty when absent or not YAML.

    Only the first ``max_bytes`` are read; front matter that does not end within them, YAML aliases or
    deep nesting raise a ``bad_card`` AdapterProblem (a hostile card), a plain syntax error gives ``{}``.
    """
    readme = Path(directory) / "README.md"
    if not readme.is_file():
        return {}
    try:
        with open(readme, "rb") as handle:
            head = handle.read(max_bytes + 8)
    except OSError:
        return {}
    text = head.decode("utf-8", errors="replace").removeprefix("\ufeff")
    if not text.startswith("---"):
        return {}
    end = text.find("\n---", 3)
    if end < 0 or end > max_bytes:
        if len(head) > max_bytes:
            raise AdapterProblem("bad_card", f"{readme}: front matter longer than {max_bytes} bytes")
        return {}
    try:
        data = loads_yaml(text[3:end], str(readme))
    except yaml.YAMLError:
        return {}
    return data if isinstance(data, dict) else {}


def write_card(directory: Path, card_data: dict, body: str) -> None:
    """Write ``README.md`` with ``card_data`` as YAML front matter followed by the Markdown ``body``."""
    front = yaml.safe_dump(card_data, sort_keys=False, allow_unicode=True).strip()
    (Path(directory) / "README.md").write_text(f"---\n{front}\n---\n\n{body.rstrip()}\n", encoding="utf-8")

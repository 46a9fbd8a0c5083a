"""Text from third-party adapters (folder names, card fields) made safe to show or to write into Markdown.

A folder name or card field may hold ESC, BEL, newlines or bidi overrides: printed raw, they recolour or
clear a terminal, retitle its window or start a fake row; written raw, they break a Markdown table. Every
control or format character is shown as a Python-style escape (``\\x1b``, ``\\n``, ``\\u202e``) instead.
"""

from __future__ import annotations

import unicodedata

_HIDDEN = frozenset({"Cc", "Cf", "Zl", "Zp"})  # controls, format characters, line and paragraph separators


def printable(text: object) -> str:
    """``str(text)`` with every control or format character replaced by its escape (ESC -> ``\\x1b``)."""
    out = []
    for char in str(text):
        if unicodedata.category(char) in _HIDDEN:
            code = ord(char)
            out.append(repr(char)[1:-1] if code < 0x100 else f"\\u{code:04x}")
        else:
            out.append(char)
    return "".join(out)


def table_cell(text: object) -> str:
    """``text`` for one cell of a Markdown table: printable, with ``|`` escaped so the row keeps its columns."""
    return printable(text).replace("|", "\\|")

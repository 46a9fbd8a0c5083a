"""Progress bars on stderr, as Hugging Face tools draw them: shown by the long commands, off with ``--quiet``.

A library caller gets tqdm's own default (a bar only when stderr is a terminal). The commands that train,
merge, select or score call ``show_bars`` when their options are parsed, so a bar is drawn on stderr even
when it is piped to a log (tqdm alone draws nothing there, and minutes of training look like a hang);
``--quiet`` turns every bar off. Bars never touch stdout, where ``--json`` writes.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Sequence
from typing import Any

from tqdm.auto import tqdm

_shown: bool | None = None  # None: tqdm's default (a terminal only); True: always (a command); False: --quiet


def show_bars(shown: bool | None) -> None:
    """Draw bars always (True), never (False), or only on a terminal (None, the library default)."""
    global _shown
    _shown = shown


def quiet_option(quiet: bool) -> bool:
    """Callback of a command's ``--quiet`` flag: its bars are drawn unless the flag is given."""
    show_bars(not quiet)
    return quiet


def progress_bar(iterable: Iterable | None = None, **kwargs: Any) -> tqdm:
    """A tqdm bar on stderr under the current setting. Piped to a log, it is updated every few seconds (not 10x a
    second) and its last state is kept, since a log cannot erase a line as a terminal does."""
    piped = not sys.stderr.isatty()
    options = {"disable": None if _shown is None else not _shown, "mininterval": 3.0 if piped else 0.1,
               "dynamic_ncols": True, **kwargs}
    if piped:
        options["leave"] = True
    return tqdm(iterable, file=sys.stderr, **options)


def loss_postfix(history: Sequence[dict], best: float) -> dict[str, str]:
    """The latest training loss, the latest validation loss and the best so far, for a training bar."""
    postfix: dict[str, str] = {}
    for name, key in (("train", "train_loss"), ("val", "val_loss")):
        value = next((record[key] for record in reversed(history) if key in record), None)
        if value is not None:
            postfix[name] = f"{value:.3f}"
    if best == best and best != float("inf"):
        postfix["best"] = f"{best:.3f}"
    return postfix

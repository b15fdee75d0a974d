"""matplotlib for user text: every string sdrag draws in a figure is drawn as the characters themselves."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

# What every Text sdrag hands matplotlib is drawn with: the characters themselves. Prompts, style names and axis
# values are user text, and '$x^$' or '\frac{' would otherwise be parsed as mathtext (and raise when drawn), or
# be handed to LaTeX where a user set text.usetex.
PLAIN_TEXT = {"parse_math": False, "usetex": False}


@contextlib.contextmanager
def plain_text_figures() -> Iterator[None]:
    """Build figures with text.usetex off whatever the user's rcParams say: texts, ticks and formatters keep the
    setting they are made with, so the numbers matplotlib formats itself (axis and colorbar ticks) need no LaTeX
    either, even when the figure is drawn later under usetex. Pass PLAIN_TEXT to each text too (no mathtext)."""
    import matplotlib as mpl

    with mpl.rc_context({"text.usetex": False}):
        yield

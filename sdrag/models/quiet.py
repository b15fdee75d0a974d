"""Quiet model loading: the libraries' load-time chatter off, huggingface_hub's download bars on."""

from __future__ import annotations

import contextlib
import os
import warnings
from collections.abc import Iterator


@contextlib.contextmanager
def quiet_loading() -> Iterator[None]:
    """Silence load-time chatter of diffusers/transformers, but keep huggingface_hub's download progress bars.

    Also keeps transformers from asking the hub's conversion service to convert pickled weights it loaded.
    """
    from diffusers.utils import logging as dlog
    from huggingface_hub import utils as hf_utils
    from transformers.utils import logging as tlog

    levels = dlog.get_verbosity(), tlog.get_verbosity()
    hub_bars_off = hf_utils.are_progress_bars_disabled()
    conversion = os.environ.get("DISABLE_SAFETENSORS_CONVERSION")
    dlog.disable_progress_bar()
    tlog.disable_progress_bar()  # this also turns huggingface_hub's bars off: turned back on below
    if not hub_bars_off:
        hf_utils.enable_progress_bars()
    dlog.set_verbosity_error()
    tlog.set_verbosity_error()
    os.environ["DISABLE_SAFETENSORS_CONVERSION"] = "1"
    try:
        with warnings.catch_warnings():
            # diffusers still passes huggingface_hub an argument it has deprecated; nothing for a user to do.
            warnings.filterwarnings("ignore", message=".*local_dir_use_symlinks", category=UserWarning)
            yield
    finally:
        dlog.set_verbosity(levels[0])
        tlog.set_verbosity(levels[1])
        dlog.enable_progress_bar()
        tlog.enable_progress_bar()
        if hub_bars_off:
            hf_utils.disable_progress_bars()
        if conversion is None:
            os.environ.pop("DISABLE_SAFETENSORS_CONVERSION", None)
        else:
            os.environ["DISABLE_SAFETENSORS_CONVERSION"] = conversion

"""Where linearize keeps what it makes once and reuses: the embedded model's safetensors copy, the corpora."""

import os
from pathlib import Path


def cache_dir():
    """$LINEARIZE_CACHE, else $XDG_CACHE_HOME/linearize, else ~/.cache/linearize."""
    if os.environ.get("LINEARIZE_CACHE"):
        return Path(os.environ["LINEARIZE_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "linearize"

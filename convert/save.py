"""Writing a checkpoint folder atomically: everything goes to a temporary sibling folder, which is
renamed into place only when complete, so an interrupted run leaves the old folder (or none)."""

import os
import shutil
import tempfile
from pathlib import Path


def save_atomic(model, tokenizer, out, extra=None):
    """Save ``model`` (safetensors + modeling code) and ``tokenizer`` to ``out``; ``extra`` maps
    names inside the folder to existing files or folders to move in (training logs, reports)."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.tmp-"))
    try:
        model.save_pretrained(tmp)
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)
        for name, src in (extra or {}).items():
            if Path(src).exists():
                (tmp / name).parent.mkdir(parents=True, exist_ok=True)
                shutil.move(str(src), tmp / name)
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out

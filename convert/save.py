"""Writing a checkpoint folder atomically: everything goes to a temporary sibling folder, which is
renamed into place only when complete, so an interrupted run leaves the old folder (or none)."""

import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_folder(out):
    """Yields a temporary sibling of ``out`` to write into; on success it replaces ``out``, on any error
    it is removed and ``out`` is left as it was."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.tmp-"))
    try:
        yield tmp
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def save_atomic(model, tokenizer, out, extra=None):
    """Save ``model`` (safetensors + modeling code) and ``tokenizer`` to ``out``; ``extra`` maps
    names inside the folder to existing files or folders to move in (training logs, reports)."""
    with atomic_folder(out) as tmp:
        model.save_pretrained(tmp)
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)
        for name, src in (extra or {}).items():
            if Path(src).exists():
                (tmp / name).parent.mkdir(parents=True, exist_ok=True)
                shutil.move(str(src), tmp / name)
    return Path(out)

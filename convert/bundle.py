"""Write a checkpoint's modeling code as one flat folder of files.

transformers copies remote code as a flat folder and follows only same-folder relative imports, so
the shipped modules (the config, the model, and everything they import from linearize) are copied
with ``from linearize.a.b.c import x`` rewritten to ``from .b_c import x``.
"""

import importlib.util
import re
from pathlib import Path

ENTRY_MODULES = ("linearize.convert.configuration_linearized", "linearize.convert.modeling_linearized")
IMPORT = re.compile(r"^from (linearize(?:\.\w+)+) import ", re.MULTILINE)


def flat_name(module):
    """linearize.convert.lolcats -> lolcats; linearize.kernels.linear_attn.chunk -> linear_attn_chunk;
    linearize.errors -> errors."""
    return "_".join(module.split(".")[2:]) or module.split(".")[1]


def shipped_modules():
    """The entry modules and every linearize module they import, transitively: {module: source}."""
    sources, todo = {}, list(ENTRY_MODULES)
    while todo:
        module = todo.pop()
        if module in sources:
            continue
        sources[module] = Path(importlib.util.find_spec(module).origin).read_text()
        todo.extend(IMPORT.findall(sources[module]))
    return sources


def write_remote_code(folder):
    """Write the flattened modules into ``folder``; returns the file names written."""
    written = []
    for module, source in sorted(shipped_modules().items()):
        flat = IMPORT.sub(lambda m: f"from .{flat_name(m.group(1))} import ", source)
        path = Path(folder) / f"{flat_name(module)}.py"
        path.write_text(flat)
        written.append(path.name)
    return written

"""Fetch transformers' common model tests for the installed transformers into a cache outside the repo; print where.

    python scripts/fetch_transformers_tests.py

The wheel ships no tests and the repo copies none, so the top-level ``tests/*.py`` of the matching source
distribution on PyPI (``test_modeling_common.py``, ``test_configuration_common.py``, ...) are fetched like a
dependency, by pip, into ``${XDG_CACHE_HOME:-~/.cache}/linearize/transformers-tests/<version>/transformers_tests/``.
tests/convert/test_transformers_suite.py calls ``fetch()`` on first use; scripts/setup.sh runs this up front.
Standard library only: it runs before (and without) anything else the tests need.
"""

import importlib.metadata
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

PACKAGE = "transformers_tests"  # not `tests`: our own tests/ folder is on sys.path under pytest
MARKER = "test_modeling_common.py"  # present once an extraction completed (it is renamed into place whole)


class FetchError(RuntimeError):
    pass


def cache_root():
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "linearize" / "transformers-tests"


def fetch(version=None):
    """The folder holding transformers ``version``'s (default: the installed one) top-level tests, downloading its
    sdist on first use. Raises FetchError (one line) when pip cannot get it."""
    version = version or importlib.metadata.version("transformers")
    dest = cache_root() / version / PACKAGE
    if (dest / MARKER).is_file():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dest.parent) as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--no-binary", ":all:"]
        try:
            proc = subprocess.run(
                [*cmd, f"transformers=={version}", "-d", tmp], capture_output=True, text=True, timeout=600
            )
            stderr, failed = proc.stderr, proc.returncode
        except subprocess.TimeoutExpired:
            stderr, failed = "timed out after 600 s", True
        sdists = sorted(Path(tmp).glob("transformers-*.tar.gz"))
        if failed or not sdists:
            last = (stderr.strip().splitlines() or ["no sdist downloaded"])[-1]
            raise FetchError(f"cannot fetch transformers=={version}'s sdist for its common tests (pip: {last})")
        staged = Path(tmp) / PACKAGE
        staged.mkdir()
        with tarfile.open(sdists[0]) as tar:
            for member in tar.getmembers():
                parts = Path(member.name).parts  # transformers-<v>/tests/<file>.py: the top level only
                if member.isfile() and len(parts) == 3 and parts[1] == "tests" and parts[2].endswith(".py"):
                    (staged / parts[2]).write_bytes(tar.extractfile(member).read())
        if not (staged / MARKER).is_file():
            raise FetchError(f"transformers=={version}'s sdist has no tests/{MARKER}")
        # The sdist's tests/ has no __init__.py; test_configuration_common.py runs the package's (as
        # `direct_transformers_import(Path(__file__).parent)`), so it must exist. Empty: it does nothing.
        (staged / "__init__.py").write_text("")
        try:
            staged.rename(dest)  # whole or not at all: a run killed mid-way leaves no half folder
        except OSError:  # another process got there first
            if not (dest / MARKER).is_file():
                shutil.rmtree(dest, ignore_errors=True)
                staged.rename(dest)
    return dest


if __name__ == "__main__":
    try:
        print(fetch())
    except FetchError as e:
        sys.exit(str(e))

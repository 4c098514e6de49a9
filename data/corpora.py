"""Named out-of-domain corpora, fetched offline from Debian packages.

The default training corpus is Python's own documentation (English prose mixed with Python). A student
is judged on text of another kind (``QUALITY.md``): these corpora come from Debian packages, which
``apt-get download`` fetches from the distribution's package archive (a registry reachable here), so
they exist on a fresh machine without the Hugging Face Hub. Each is unpacked with ``dpkg-deb -x``,
turned into plain text and written as one ``.txt`` file per document into
``<cache>/corpora/<name>/`` (atomically: a temporary folder, then a rename), with a ``SOURCE`` file
(JSON) recording the packages and the versions found.

Use a corpus anywhere data is taken: ``--data corpus:gnu-manuals`` (see ``data.texts.load_rows``),
or its folder. Fetch all of them ahead of time with ``linearize corpora fetch``.
"""

import gzip
import json
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

from linearize.data.cache import cache_dir
from linearize.data.texts import DataError

# ---------------------------------------------------------------------------------------------------
# Text extraction, one function per source format. Each takes the root of the unpacked packages and
# returns [(document name, text)] in a fixed order.


def _read(path):
    data = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    return data.decode("utf-8", errors="replace")


def info_nodes(text, min_chars=200, skip=("Index", "GNU Free Documentation License", "Copying This Manual")):
    """[(node, text)] of a GNU Info file: one document per node, without the node header line, the
    tag table, index nodes, the license and nodes that are only a short menu."""
    docs = []
    for part in text.split("\x1f")[1:]:
        header, _, body = part.lstrip("\n").partition("\n")
        match = re.search(r"Node: ([^,\t]+)", header)
        if not match:  # "Tag Table:", "End Tag Table", "Indirect:"
            continue
        node = match.group(1).strip()
        if any(s in node for s in skip):
            continue
        body = body.strip("\n")
        if len(body) >= min_chars:
            docs.append((node, body + "\n"))
    return docs


def info_documents(root, files):
    """One document per Info node of each of ``files`` (paths relative to ``root``)."""
    docs = []
    for rel in files:
        stem = Path(rel).name.split(".")[0]
        docs += [(f"{stem}-{node}", text) for node, text in info_nodes(_read(root / rel))]
    return docs


def source_documents(root, patterns):
    """One document per file matched by ``patterns`` (globs relative to ``root``), sorted by path."""
    paths = sorted({p for pattern in patterns for p in root.glob(pattern) if p.is_file()})
    return [(p.name, _read(p)) for p in paths]


_ENTRY = re.compile(r"^   :(.+?):", re.M)


def jargon_documents(root, path, chunk_chars=20000):
    """The Jargon File as prose: its front matter and appendices one document per section, its
    glossary in documents of about ``chunk_chars`` characters (whole entries); the table of contents
    and the lists of headwords (index lines) are dropped."""
    text = _read(root / path)
    docs, title, paras, glossary, chunks = [], None, [], False, 0

    def flush():
        body = "\n\n".join(paras).strip("\n")
        if title and body.strip():
            docs.append((title, body + "\n"))

    for para in re.split(r"\n\s*\n", text):
        first = para.split("\n", 1)[0]
        if first and not first[0].isspace() and not first.startswith(("│", "├", "┌", "└")):  # a heading
            flush()
            glossary = first.strip() == "Glossary"
            title, paras = (None if glossary else re.sub(r"\W+", "-", first.strip()).strip("-")), []
            continue
        stripped = para.strip()
        if (
            "\n" not in stripped
            and len(stripped) <= 60
            and not stripped.startswith(":")
            and not stripped.endswith((".", "?", "!", '"', "”"))
        ):
            continue  # a headword in an index list, a table-of-contents line
        entry = _ENTRY.match(para)
        if glossary and entry and (title is None or sum(len(p) for p in paras) >= chunk_chars):
            flush()
            chunks += 1
            title, paras = f"glossary-{chunks:03d}-{re.sub(r'[^A-Za-z0-9]+', '_', entry.group(1))[:30]}", []
        if title is not None:
            paras.append(para)
    flush()
    return docs


# ---------------------------------------------------------------------------------------------------
# The registry. ``versions`` are the Debian 12 (bookworm) versions these were built from and measured
# with; ``fetch`` records the version actually downloaded in the corpus folder's SOURCE file.

CORPORA = {
    "gnu-manuals": {
        "what": "English technical prose: the GNU Coding Standards, the GNU maintainers' information and the "
        "Bash reference manual, one document per Info node (indexes and licenses dropped)",
        "packages": ("gnu-standards", "bash-doc"),
        "versions": {"gnu-standards": "2022.03.23-0.1", "bash-doc": "5.2.15-2"},
        "extract": lambda root: info_documents(
            root, ("usr/share/info/standards.info.gz", "usr/share/info/maintain.info.gz", "usr/share/info/bash.info.gz")
        ),
    },
    "c-code": {
        "what": "C source code with its comments: zlib's public headers (zlib.h, zconf.h) and its example "
        "programs, one document per file",
        "packages": ("zlib1g-dev",),
        "versions": {"zlib1g-dev": "1:1.2.13.dfsg-1"},
        "extract": lambda root: source_documents(
            root, ("usr/include/*.h", "usr/share/doc/zlib1g-dev/examples/*.c", "usr/share/doc/zlib1g-dev/examples/*.h")
        ),
    },
    "jargon": {
        "what": "informal English prose: the Jargon File 4.4.7 (hacker slang lexicon with essays and folklore, "
        "public domain), one document per section and per ~20k characters of glossary entries",
        "packages": ("jargon-text",),
        "versions": {"jargon-text": "4.4.7-4.1"},
        "extract": lambda root: jargon_documents(root, "usr/share/doc/jargon-text/jargon.txt.gz"),
    },
}


def _known():
    return ", ".join(CORPORA)


def corpora_dir():
    return cache_dir() / "corpora"


def _run(cmd, cwd=None):
    try:
        return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    except FileNotFoundError:
        raise DataError(
            f"{cmd[0]} not found: the named corpora are fetched from Debian packages with apt-get "
            "and dpkg-deb (Debian or Ubuntu); elsewhere pass a folder of .txt files"
        ) from None


def _download(package, dest):
    """Path of ``package``'s .deb, downloaded into ``dest`` with ``apt-get download`` (after one
    ``apt-get update`` if the package lists are missing)."""
    done = _run(["apt-get", "download", package], cwd=dest)
    if done.returncode != 0:
        _run(["apt-get", "update"])
        done = _run(["apt-get", "download", package], cwd=dest)
    debs = sorted(Path(dest).glob(f"{package}_*.deb"))
    if done.returncode != 0 or not debs:
        last = (done.stderr.strip().splitlines() or ["no .deb written"])[-1]
        raise DataError(f"cannot download Debian package {package!r} with apt-get: {last[:200]}")
    return debs[0]


def _unpack(deb, root):
    """Extract ``deb`` under ``root``; returns its version."""
    done = _run(["dpkg-deb", "-x", str(deb), str(root)])
    if done.returncode != 0:
        raise DataError(f"cannot unpack {Path(deb).name}: {(done.stderr.strip().splitlines() or ['?'])[-1][:200]}")
    return _run(["dpkg-deb", "-f", str(deb), "Version"]).stdout.strip()


def _filename(i, name):
    return f"{i:04d}-{re.sub(r'[^A-Za-z0-9._-]+', '_', name)[:80]}.txt"


def fetch(name, force=False):
    """Download, extract and write corpus ``name``; returns its folder. Already there: returned as is
    unless ``force``."""
    spec = _spec(name)
    target = corpora_dir() / name
    if (target / "SOURCE").exists() and not force:
        return target
    corpora_dir().mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=corpora_dir(), prefix=f".{name}-") as tmp:
        tmp = Path(tmp)
        root, out = tmp / "root", tmp / name
        root.mkdir()
        (tmp / "debs").mkdir()
        versions = {p: _unpack(_download(p, tmp / "debs"), root) for p in spec["packages"]}
        try:
            docs = spec["extract"](root)
        except (OSError, UnicodeError) as err:
            raise DataError(f"corpus {name!r}: the packages' files are not as expected ({err})") from None
        if not docs:
            raise DataError(f"corpus {name!r}: no documents found in {', '.join(spec['packages'])}")
        out.mkdir()
        for i, (doc, text) in enumerate(docs):
            (out / _filename(i, doc)).write_text(text, encoding="utf-8")
        source = {
            "name": name,
            "what": spec["what"],
            "packages": versions,
            "documents": len(docs),
            "characters": sum(len(t) for _, t in docs),
        }
        (out / "SOURCE").write_text(json.dumps(source, indent=2) + "\n")
        if target.exists():  # forced, or a folder left without SOURCE
            shutil.rmtree(target)
        os.replace(out, target)
    return target


def _spec(name):
    if name not in CORPORA:
        raise DataError(f"unknown corpus {name!r}: known corpora are {_known()}")
    return CORPORA[name]


def corpus_path(name):
    """The folder of corpus ``name`` (one .txt file per document), fetched on first use."""
    return fetch(name)


def source(name):
    """What the fetched corpus ``name`` is: its SOURCE record (packages with the versions found)."""
    return json.loads((corpus_path(name) / "SOURCE").read_text())

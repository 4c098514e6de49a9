"""Named out-of-domain corpora: extraction from Debian packages (small .deb files built here with
dpkg-deb; the apt download is replaced by a copy), the cache folder, ``corpus:NAME`` data specs."""

import gzip
import json
import shutil
import subprocess

import pytest

from linearize.data import corpora
from linearize.data.texts import DataError, documents

pytestmark = pytest.mark.skipif(shutil.which("dpkg-deb") is None, reason="needs dpkg-deb (Debian/Ubuntu)")

PROSE = (
    "The GNU Coding Standards were written by Richard Stallman and other GNU Project volunteers. "
    "Their purpose is to make the GNU system clean, consistent, and easy to install. "
)


def info_file(name, nodes):
    """A GNU Info file: a preamble, then one \\x1f-separated node per (node, body), and a tag table."""
    parts = [f"This is {name}, produced by makeinfo version 6.8.\n\nINFO-DIR-SECTION Test\n"]
    for node, body in nodes:
        parts.append(f"\x1f\nFile: {name},  Node: {node},  Next: x,  Up: Top\n\n{body}\n")
    parts.append("\x1f\nTag Table:\nNode: Top\x7f120\n\x1f\nEnd Tag Table\n")
    return "".join(parts)


def build_deb(tmp_path, package, version, files):
    """A .deb with ``files`` ({path: bytes}) built with dpkg-deb --build."""
    root = tmp_path / "build" / package
    (root / "DEBIAN").mkdir(parents=True)
    (root / "DEBIAN" / "control").write_text(
        f"Package: {package}\nVersion: {version}\nArchitecture: all\nMaintainer: Test <t@example.org>\n"
        f"Description: test package\n"
    )
    for rel, data in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    deb = tmp_path / "debs" / f"{package}_{version}_all.deb"
    deb.parent.mkdir(exist_ok=True)
    subprocess.run(["dpkg-deb", "--root-owner-group", "--build", str(root), str(deb)], check=True, capture_output=True)
    return deb


@pytest.fixture
def fake_archive(tmp_path, monkeypatch):
    """Packages gnu-standards, bash-doc and zlib1g-dev as small .debs; ``_download`` copies them."""
    monkeypatch.setenv("LINEARIZE_CACHE", str(tmp_path / "cache"))
    standards = info_file(
        "standards.info",
        [
            ("Top", "* Menu:\n\n* Preface::  About."),  # only a menu: too short, dropped
            ("Preface", "1 About the GNU Coding Standards\n*****\n\n" + PROSE * 3),
            ("Index", "* Menu:\n\n" + "* entry: Preface.   (line 6)\n" * 20),  # an index: dropped
        ],
    )
    maintain = info_file("maintain.info", [("Getting Help", "Getting help. " + PROSE * 2)])
    bash = info_file(
        "bash.info",
        [
            ("What is Bash?", "Bash is the shell, or command language interpreter. " + PROSE),
            ("GNU Free Documentation License", PROSE * 3),
        ],
    )  # the license: dropped
    c_source = (
        b"/* zpipe.c: example of proper use of zlib's inflate() and deflate() */\n#include <stdio.h>\n"
        b"int main(void) { return 0; }\n"
    )
    debs = {
        "gnu-standards": build_deb(
            tmp_path,
            "gnu-standards",
            "2022.03.23-0.1",
            {
                "usr/share/info/standards.info.gz": gzip.compress(standards.encode()),
                "usr/share/info/maintain.info.gz": gzip.compress(maintain.encode()),
            },
        ),
        "bash-doc": build_deb(
            tmp_path, "bash-doc", "5.2.15-2", {"usr/share/info/bash.info.gz": gzip.compress(bash.encode())}
        ),
        "zlib1g-dev": build_deb(
            tmp_path,
            "zlib1g-dev",
            "1:1.2.13.dfsg-1",
            {
                "usr/include/zlib.h": b"/* zlib.h -- interface of the 'zlib' general purpose compression library */\n",
                "usr/share/doc/zlib1g-dev/examples/zpipe.c": c_source,
                "usr/share/doc/zlib1g-dev/examples/README.examples": b"not a source file\n",
            },
        ),
    }
    downloads = []

    def download(package, dest):
        downloads.append(package)
        if package not in debs:
            raise DataError(f"cannot download Debian package {package!r} with apt-get: not in the test archive")
        return shutil.copy(debs[package], dest)

    monkeypatch.setattr(corpora, "_download", download)
    return downloads


def test_gnu_manuals_from_debs_one_document_per_info_node(fake_archive, tmp_path):
    docs = documents("corpus:gnu-manuals")
    folder = tmp_path / "cache" / "corpora" / "gnu-manuals"
    names = sorted(p.name for p in folder.glob("*.txt"))
    assert names == ["0000-standards-Preface.txt", "0001-maintain-Getting_Help.txt", "0002-bash-What_is_Bash_.txt"]
    assert docs[0] == "1 About the GNU Coding Standards\n*****\n\n" + PROSE * 3 + "\n"
    assert docs[2].startswith("Bash is the shell") and len(docs) == 3
    assert not any("File: " in d or "\x1f" in d or "Tag Table" in d for d in docs)
    source = json.loads((folder / "SOURCE").read_text())
    assert source["packages"] == {"gnu-standards": "2022.03.23-0.1", "bash-doc": "5.2.15-2"}
    assert source["documents"] == 3
    assert fake_archive == ["gnu-standards", "bash-doc"]
    # fetched once: later uses read the folder, and the folder path works as data too
    assert documents("corpus:gnu-manuals") == docs and fake_archive == ["gnu-standards", "bash-doc"]
    assert documents(str(folder)) == docs
    assert not [p for p in folder.parent.iterdir() if p.name.startswith(".")]  # no temporary folders left


def test_c_code_from_deb_one_document_per_source_file(fake_archive, tmp_path):
    docs = documents("corpus:c-code")
    names = sorted(p.name for p in (tmp_path / "cache" / "corpora" / "c-code").glob("*.txt"))
    assert names == ["0000-zlib.h.txt", "0001-zpipe.c.txt"]
    assert docs[1].startswith("/* zpipe.c") and "int main(void)" in docs[1]


def test_failed_fetch_leaves_nothing(fake_archive, tmp_path, monkeypatch):
    monkeypatch.setitem(
        corpora.CORPORA, "broken", dict(corpora.CORPORA["gnu-manuals"], packages=("gnu-standards", "missing-package"))
    )
    with pytest.raises(DataError, match="cannot download Debian package 'missing-package'"):
        documents("corpus:broken")
    assert list((tmp_path / "cache" / "corpora").iterdir()) == []


def test_unknown_corpus_names_the_known_ones(fake_archive):
    with pytest.raises(DataError) as err:
        documents("corpus:unknown")
    message = str(err.value)
    assert "unknown corpus 'unknown'" in message and "\n" not in message
    assert all(name in message for name in corpora.CORPORA)
    assert fake_archive == []


def test_jargon_extraction_keeps_prose_and_drops_index_lines(tmp_path):
    text = "\n\n".join(
        [
            "                                The Jargon File",
            "(version 4.4.7)",
            "   Table of Contents",
            "   Welcome to the Jargon File",
            "   I. Introduction",
            "Chapter 1. Hacker Slang and Hacker Culture",
            "   This document is a collection of slang terms used by various subcultures of computer hackers.\n"
            "   Though some technical material is included for background and flavor, it is not a technical\n"
            "   dictionary; what we describe here is the language hackers use among themselves for fun.",
            "Glossary",
            "   0",
            "   /dev/null",
            "   cruft",
            "   :/dev/null: /dev·nuhl/, n.",
            "   [from the Unix null device, used as a data sink] A notional black hole in any information space\n"
            "   being discussed, used, or referred to. A controversial posting, for example, might end with\n"
            "   flames to /dev/null. See {bit bucket}.",
            "   :cruft: /kruhft/",
            "   1. n. An unpleasant substance. The dust that gathers under your bed is cruft; the TMRC\n"
            "   Dictionary correctly noted that attacking it with a broom only produces more.",
        ]
    )
    (tmp_path / "j").mkdir()
    (tmp_path / "j" / "jargon.txt.gz").write_bytes(gzip.compress(text.encode()))
    docs = corpora.jargon_documents(tmp_path, "j/jargon.txt.gz", chunk_chars=200)
    assert [name for name, _ in docs] == [
        "Chapter-1-Hacker-Slang-and-Hacker-Culture",
        "glossary-001-_dev_null",
        "glossary-002-cruft",
    ]
    assert docs[0][1].startswith("   This document is a collection")
    assert docs[1][1].startswith("   :/dev/null:") and "   cruft" not in docs[1][1]
    assert docs[2][1].startswith("   :cruft:") and docs[2][1].endswith("only produces more.\n")

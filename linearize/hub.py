"""Publishing a converted checkpoint to the Hub through huggingface_hub: verify the folder, write its
model card, create the repo and upload the folder in one commit.

The token is whatever huggingface_hub finds (``HF_TOKEN``, ``huggingface-cli login``) or the one passed
in; it is handed to huggingface_hub only, never printed or written.
"""

import subprocess
import sys
import textwrap
from pathlib import Path

from linearize.errors import LinearizeError

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt")
# Training state stays local: resumable checkpoints hold optimizer pickles and are large.
IGNORE = ["training/*/checkpoints/**", ".*", "**/.*"]

LOAD_CHECK = textwrap.dedent("""
    import sys
    sys.modules["linearize"] = None  # load as a user without linearize would
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    folder = sys.argv[1]
    # A native export must load as the architecture transformers ships: no remote code allowed.
    model = AutoModelForCausalLM.from_pretrained(folder, trust_remote_code=sys.argv[2] == "remote")
    tok = AutoTokenizer.from_pretrained(folder)
    ids = tok("The capital of France is", return_tensors="pt")
    out = model.generate(**ids, max_new_tokens=4, do_sample=False)
    assert out.shape[1] == ids["input_ids"].shape[1] + 4
    assert torch.isfinite(model(out).logits).all()
    print("ok")
""")


class VerificationError(LinearizeError):
    """A folder that must not be pushed; the message says why."""


def files_to_upload(folder):
    """Paths (relative) that the upload would send, after the ignore patterns."""
    from fnmatch import fnmatch

    folder = Path(folder)
    rels = [p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()]
    return sorted(r for r in rels if not any(fnmatch(r, pat) for pat in IGNORE))


def verify(folder, timeout=600, remote_code=True):
    """Check that ``folder`` loads in a fresh process without linearize (with remote code, or for a native
    export without it), generates, and holds only safetensors weights. Returns the files to upload;
    raises VerificationError."""
    folder = Path(folder)
    if not (folder / "config.json").exists():
        raise VerificationError(f"{str(folder)!r} is not a checkpoint folder (no config.json)")
    files = files_to_upload(folder)
    pickles = [f for f in files if f.endswith(PICKLE_SUFFIXES)]
    if pickles:
        raise VerificationError(
            f"{str(folder)!r} holds pickled files ({', '.join(pickles[:3])}); only safetensors weights are pushed"
        )
    if not any(f.endswith(".safetensors") for f in files):
        raise VerificationError(f"{str(folder)!r} has no safetensors weights")
    proc = subprocess.run(
        [sys.executable, "-I", "-c", LOAD_CHECK, str(folder.resolve()), "remote" if remote_code else "native"],
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if proc.returncode != 0 or not proc.stdout.strip().endswith("ok"):
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise VerificationError(f"{str(folder)!r} does not load and generate without linearize: {last}")
    return files


def is_native(folder):
    """Whether ``folder`` holds a native export (an architecture transformers ships), not a linearize checkpoint."""
    from linearize.convert.load import converted_config

    return converted_config(folder) is None


def push_to_hub(
    folder,
    repo_id,
    private=False,
    revision=None,
    dry_run=False,
    token=None,
    commit_message="Upload linearized model",
    log=print,
    native=False,
):
    """Verify ``folder``, write its model card, then (unless ``dry_run``) create ``repo_id`` and upload the
    folder in one commit. ``native``: publish the checkpoint as the architecture transformers ships
    (``convert.export_native``): a linearize checkpoint is exported to a temporary folder first, a folder
    that already is a native export is pushed as it is; either must load without remote code.
    Returns {"files": [...], "url": ... or None}."""
    import tempfile

    if native and not is_native(folder):
        from linearize.convert.export_native import export_native

        with tempfile.TemporaryDirectory() as tmp:
            exported = export_native(folder, Path(tmp) / Path(folder).name)
            log(f"exported {folder} natively for the push")
            return push_to_hub(exported, repo_id, private, revision, dry_run, token, commit_message, log, native=True)
    from huggingface_hub import HfApi

    if native:  # export_native wrote its own card
        files = verify(folder, remote_code=False)
    else:
        from linearize.card import model_card

        model_card(folder, repo_id).save(Path(folder) / "README.md")
        files = verify(folder)
    if dry_run:
        log(
            f"dry run: {str(folder)!r} verified; would upload {len(files)} files to {repo_id}"
            + (f"@{revision}" if revision else "")
            + (" (private)" if private else "")
        )
        for f in files:
            log(f"  {f}")
        return {"files": files, "url": None}
    api = HfApi(token=token)
    api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
    if revision:
        api.create_branch(repo_id, branch=revision, exist_ok=True)
    info = api.upload_folder(
        folder_path=str(folder),
        repo_id=repo_id,
        revision=revision,
        commit_message=commit_message,
        ignore_patterns=IGNORE,
    )
    log(f"pushed {len(files)} files to {repo_id}: {info}")
    return {"files": files, "url": str(info)}

"""Uploading a checkpoint folder (an F2D2 pipeline or a flow-matching teacher) with its model card to the Hub.

``f2d2-push-to-hub FOLDER REPO_ID`` (or ``python -m f2d2_diffusers.hub``) checks the folder first: it must load
and carry its card, so that what lands on the Hub is what ``F2D2Pipeline.from_pretrained(REPO_ID)`` expects.
Training state (``checkpoint-N/``) and logs stay local.
"""

import argparse
import fnmatch
import os
import re
import sys
from pathlib import Path
from typing import List, Optional

#: ``owner/name``: the shape of a Hub repository id (a local path of that shape that exists wins).
HUB_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def is_hub_repo_id(name: str) -> bool:
    """True when ``name`` reads as a Hub repository id and is not an existing local path."""
    name = os.fspath(name)
    return bool(HUB_REPO_ID.match(name)) and not name.startswith((".", "/", "~")) and not os.path.exists(name)


#: Not uploaded: resumable training state (and leftovers of an interrupted save), logs, the cached teacher paths.
IGNORE_PATTERNS = ("checkpoint-*", "checkpoint-*/*", ".incomplete-*", ".incomplete-*/*", "logs/*", "*/logs/*", "trajectories/*")


def files_to_upload(folder: str) -> List[str]:
    """Relative paths under ``folder`` that an upload sends, sorted."""
    root = Path(folder)
    names = []
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        if path.is_file() and not any(fnmatch.fnmatch(rel, p) for p in IGNORE_PATTERNS):
            names.append(rel)
    return names


def check_checkpoint_folder(folder: str) -> str:
    """Check that ``folder`` is complete and loads; returns its kind, ``"pipeline"`` or ``"teacher"``.

    Raises ``FileNotFoundError`` / ``ValueError`` naming what is missing or broken.
    """
    root = Path(folder)
    if not root.is_dir():
        raise FileNotFoundError(f"no checkpoint folder at {folder}")
    if not (root / "README.md").is_file():
        raise ValueError(f"{folder} has no README.md model card; the training scripts write one")
    if (root / "model_index.json").is_file():
        from .pipelines import F2D2Pipeline

        for component in ("unet", "scheduler"):
            if not (root / component).is_dir():
                raise ValueError(f"{folder}/model_index.json names a {component!r} component but {component}/ is missing")
        try:
            F2D2Pipeline.from_pretrained(folder)
        except Exception as err:  # noqa: BLE001  (any load failure means the folder is not uploadable)
            raise ValueError(f"{folder} does not load as an F2D2Pipeline ({type(err).__name__}: {err})") from None
        return "pipeline"
    if (root / "unet" / "config.json").is_file():
        from .models import load_teacher

        try:
            load_teacher(folder)
        except Exception as err:  # noqa: BLE001
            raise ValueError(f"{folder} does not load as a flow-matching teacher ({type(err).__name__}: {err})") from None
        return "teacher"
    raise ValueError(f"{folder} holds neither model_index.json (an F2D2 pipeline) nor unet/config.json (a teacher)")


def push_checkpoint(
    folder: str, repo_id: str, token: Optional[str] = None, private: bool = False, commit_message: Optional[str] = None
) -> str:
    """Check ``folder``, create ``repo_id`` if needed and upload the folder (without training state); returns the repo id."""
    from huggingface_hub import create_repo, upload_folder

    kind = check_checkpoint_folder(folder)
    repo_id = create_repo(repo_id, exist_ok=True, private=private, token=token).repo_id
    upload_folder(
        repo_id=repo_id, folder_path=folder, token=token, ignore_patterns=list(IGNORE_PATTERNS),
        commit_message=commit_message or f"Upload F2D2 {kind} with f2d2-diffusers",
    )
    return repo_id


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="f2d2-push-to-hub", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", help="a folder written by training/train_f2d2.py or train_teacher.py")
    parser.add_argument("repo_id", help="the Hub model repository, e.g. your-name/f2d2-digits")
    parser.add_argument("--private", action="store_true", help="create the repository as private")
    parser.add_argument("--token", default=None, help="Hub token (default: the logged-in user's)")
    parser.add_argument("--dry_run", action="store_true", help="check the folder and list what would be uploaded")
    args = parser.parse_args(argv)
    try:
        kind = check_checkpoint_folder(args.folder)
        if args.dry_run:
            print(f"{args.folder}: a complete F2D2 {kind}; would upload to {args.repo_id}:")
            for name in files_to_upload(args.folder):
                print(f"  {name}")
            return 0
        repo_id = push_checkpoint(args.folder, args.repo_id, token=args.token, private=args.private)
    except (FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except Exception as err:  # noqa: BLE001  (network, auth: one line, the folder is untouched)
        print(f"error: upload to {args.repo_id} failed ({type(err).__name__}: {err})", file=sys.stderr)
        return 1
    print(f"uploaded {args.folder} to https://huggingface.co/{repo_id}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

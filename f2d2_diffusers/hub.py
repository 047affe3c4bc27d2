"""Uploading a checkpoint folder (an F2D2 pipeline or a flow-matching teacher) with its model card to the Hub.

``f2d2-push-to-hub FOLDER REPO_ID`` (or ``python -m f2d2_diffusers.hub``) checks the folder first: it must load
and carry its card. What lands on the Hub loads with ``DiffusionPipeline.from_pretrained(REPO_ID,
trust_remote_code=True)`` (teachers of images: without it) and with the package's classes (``F2D2Pipeline.from_pretrained(
REPO_ID)``): folders written before the diffusers-loading layout get it in the upload, and the card's snippets and
``model-index`` name REPO_ID. The local folder is not changed; training state (``checkpoint-N/``) and logs stay local.
"""

import argparse
import fnmatch
import json
import os
import re
import sys
from pathlib import Path
from typing import Dict, List, Optional, Union

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


def make_diffusers_loadable(folder: str) -> List[str]:
    """Make ``folder`` load with ``DiffusionPipeline.from_pretrained(folder, trust_remote_code=True)``, or without
    ``trust_remote_code`` where only stock diffusers classes are involved; returns the files written.

    An F2D2 pipeline gets ``pipeline.py`` and ``unet/``, ``scheduler/`` shims that import the installed package, named
    in ``model_index.json``; an image teacher (``UNet2DModel``) gets a ``model_index.json`` naming diffusers' stock
    ``DDPMPipeline``; a vector teacher one naming the package's ``FlowMatchingEulerPipeline``, with shims. Weights and
    configs are not touched, and running it again changes nothing (``f2d2_diffusers/pipelines/diffusers_loading.py``
    explains the layout). The training scripts write their folders this way.
    """
    from .pipelines.diffusers_loading import write_loadable_layout

    return write_loadable_layout(folder)


def folder_kind(folder: str) -> str:
    """``"pipeline"`` (an F2D2 pipeline) or ``"teacher"`` (a flow-matching teacher), from the folder's configs."""
    root = Path(folder)
    if (root / "model_index.json").is_file():
        from .pipelines.diffusers_loading import stock_pipeline_class

        index = json.loads((root / "model_index.json").read_text())
        return "teacher" if stock_pipeline_class(index) in TEACHER_PIPELINES else "pipeline"
    if (root / "unet" / "config.json").is_file():
        return "teacher"
    raise ValueError(f"{folder} holds neither model_index.json (a pipeline) nor unet/config.json (a teacher)")


#: Pipeline classes a teacher folder's ``model_index.json`` names (``make_diffusers_loadable``).
TEACHER_PIPELINES = ("DDPMPipeline", "FlowMatchingEulerPipeline")


def check_checkpoint_folder(folder: str) -> str:
    """Check that ``folder`` is complete and loads; returns its kind, ``"pipeline"`` or ``"teacher"``.

    Raises ``FileNotFoundError`` / ``ValueError`` naming what is missing or broken.
    """
    root = Path(folder)
    if not root.is_dir():
        raise FileNotFoundError(f"no checkpoint folder at {folder}")
    if not (root / "README.md").is_file():
        raise ValueError(f"{folder} has no README.md model card; the training scripts write one")
    kind = folder_kind(folder)
    if kind == "pipeline":
        from .pipelines import F2D2Pipeline

        for component in ("unet", "scheduler"):
            if not (root / component).is_dir():
                raise ValueError(f"{folder}/model_index.json names a {component!r} component but {component}/ is missing")
        try:
            F2D2Pipeline.from_pretrained(folder)
        except Exception as err:  # noqa: BLE001  (any load failure means the folder is not uploadable)
            raise ValueError(f"{folder} does not load as an F2D2Pipeline ({type(err).__name__}: {err})") from None
        return "pipeline"
    from .models import load_teacher

    try:
        load_teacher(folder)
    except Exception as err:  # noqa: BLE001
        raise ValueError(f"{folder} does not load as a flow-matching teacher ({type(err).__name__}: {err})") from None
    return "teacher"


def upload_contents(folder: str, repo_id: str, base_model: Optional[str] = None) -> Dict[str, Union[str, bytes]]:
    """What an upload of ``folder`` to ``repo_id`` sends: relative path -> local file path (``str``) or content
    (``bytes``, for the files written for the repository).

    The local folder is not changed. On top of :func:`files_to_upload`: the diffusers-loading layout
    (``model_index.json`` and the shims of :func:`make_diffusers_loadable`, for folders written before it), and the
    model card with its snippets and ``model-index`` naming ``repo_id`` (and ``base_model`` set, when given).
    """
    from .pipelines.diffusers_loading import MODEL_INDEX, loadable_layout, model_index_text
    from .training.model_card import retarget_card

    contents: Dict[str, Union[str, bytes]] = {name: os.path.join(folder, *name.split("/")) for name in files_to_upload(folder)}
    index, shims = loadable_layout(folder)
    contents[MODEL_INDEX] = model_index_text(index).encode()
    for name, text in shims.items():
        contents[name] = text.encode()
    card = Path(folder, "README.md").read_text(encoding="utf-8")
    contents["README.md"] = retarget_card(card, repo_id, base_model=base_model).encode()
    return dict(sorted(contents.items()))


def push_checkpoint(
    folder: str, repo_id: str, token: Optional[str] = None, private: bool = False, commit_message: Optional[str] = None,
    base_model: Optional[str] = None,
) -> str:
    """Check ``folder``, create ``repo_id`` if needed and upload the folder (without training state) in one commit,
    as :func:`upload_contents` gives it; returns the repo id."""
    from huggingface_hub import CommitOperationAdd, create_commit, create_repo

    kind = check_checkpoint_folder(folder)
    repo_id = create_repo(repo_id, exist_ok=True, private=private, token=token).repo_id
    contents = upload_contents(folder, repo_id, base_model=base_model)
    create_commit(
        repo_id=repo_id, token=token, commit_message=commit_message or f"Upload F2D2 {kind} with f2d2-diffusers",
        operations=[CommitOperationAdd(path_in_repo=name, path_or_fileobj=value) for name, value in contents.items()],
    )
    return repo_id


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="f2d2-push-to-hub", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", help="a folder written by training/train_f2d2.py or train_teacher.py")
    parser.add_argument("repo_id", help="the Hub model repository, e.g. your-name/f2d2-digits")
    parser.add_argument("--private", action="store_true", help="create the repository as private")
    parser.add_argument("--token", default=None, help="Hub token (default: the logged-in user's)")
    parser.add_argument("--base_model", default=None,
                        help="the teacher's Hub id, set as the card's base_model (when the student was distilled from a "
                             "local teacher folder)")
    parser.add_argument("--dry_run", action="store_true", help="check the folder and list what would be uploaded")
    args = parser.parse_args(argv)
    try:
        if args.base_model is not None and not HUB_REPO_ID.match(args.base_model):
            raise ValueError(f"--base_model must be a Hub id (owner/name), got {args.base_model!r}")
        kind = check_checkpoint_folder(args.folder)
        if args.dry_run:
            contents = upload_contents(args.folder, args.repo_id, base_model=args.base_model)
            print(f"{args.folder}: a complete F2D2 {kind}; would upload to {args.repo_id}:")
            for name, value in contents.items():
                local = Path(args.folder, name)
                same = isinstance(value, str) or (local.is_file() and local.read_bytes() == value)
                print(f"  {name}" + ("" if same else "  (written for the repository)"))
            return 0
        repo_id = push_checkpoint(args.folder, args.repo_id, token=args.token, private=args.private,
                                  base_model=args.base_model)
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

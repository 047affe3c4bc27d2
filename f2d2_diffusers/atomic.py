"""Crash-safe writes: a file or folder in the output folder appears complete or not at all.

Everything is first written under a hidden ``.incomplete-*`` name beside its destination, flushed to disk, then renamed
into place (``os.replace`` / ``os.rename`` are atomic within a file system). A process killed half-way leaves only
``.incomplete-*`` entries, which no reader takes for a result and the next run deletes
(:func:`remove_unfinished`).
"""

import contextlib
import logging
import os
import shutil
from typing import Iterator, List

#: Name prefix of everything not yet complete (hidden, so that ``checkpoint-*`` globs never see it).
STAGING_PREFIX = ".incomplete-"
#: What the final save writes last: diffusers treats a folder with ``model_index.json`` as a complete pipeline.
PIPELINE_INDEX = "model_index.json"

logger = logging.getLogger("f2d2_training")


def fsync_tree(path: str) -> None:
    """Flush ``path`` (a file, or a folder with everything under it) from the page cache to the disk."""
    if os.path.isdir(path):
        for root, dirs, files in os.walk(path):
            for name in files:
                _fsync(os.path.join(root, name))
            for name in dirs:
                _fsync(os.path.join(root, name))
    _fsync(path)


def _fsync(path: str) -> None:
    # Folders are opened read-only to flush their entries (the renames); Windows cannot open a folder at all.
    try:
        fd = os.open(path, os.O_RDONLY)
    except (IsADirectoryError, PermissionError):
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some file systems refuse to fsync folders; the data itself was flushed
    finally:
        os.close(fd)


def write_text_atomically(path: str, text: str) -> None:
    """Write ``path`` so that it holds either its old content or all of ``text``, never a part."""
    folder, name = os.path.split(os.path.abspath(path))
    staging = os.path.join(folder, f"{STAGING_PREFIX}{name}")
    with open(staging, "w", newline="", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(staging, path)
    _fsync(folder)


def discard(path: str) -> None:
    """Delete ``path``: renamed to a staging name first, so that a kill mid-deletion leaves no half folder."""
    if not os.path.lexists(path):
        return
    folder, name = os.path.split(path)
    if not name.startswith(STAGING_PREFIX):
        trash = os.path.join(folder, f"{STAGING_PREFIX}removed-{name}")
        discard(trash)
        os.rename(path, trash)
        path = trash
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path)
    else:
        os.remove(path)


def replace_folder(staging: str, target: str) -> None:
    """Move the complete folder ``staging`` to ``target``, replacing an existing ``target`` (deleted after the move)."""
    folder, name = os.path.split(target)
    old = os.path.join(folder, f"{STAGING_PREFIX}replaced-{name}")
    if os.path.lexists(target):
        discard(old)
        os.rename(target, old)
    os.rename(staging, target)
    _fsync(folder)
    discard(old)


@contextlib.contextmanager
def staged_output(output_dir: str) -> Iterator[str]:
    """Yield a staging folder to save into; on success move each of its entries into ``output_dir``.

    Folders are renamed into place whole and ``model_index.json`` comes last, so a kill leaves the previous content
    or none, never a half-written model that looks complete. Other entries of ``output_dir`` (checkpoints, logs) stay.
    """
    os.makedirs(output_dir, exist_ok=True)
    staging = os.path.join(output_dir, f"{STAGING_PREFIX}output")
    discard(staging)
    os.makedirs(staging)
    try:
        yield staging
    except BaseException:
        discard(staging)
        raise
    fsync_tree(staging)
    for name in sorted(os.listdir(staging), key=lambda name: (name == PIPELINE_INDEX, name)):
        source, target = os.path.join(staging, name), os.path.join(output_dir, name)
        if os.path.isdir(source):
            replace_folder(source, target)
        else:
            os.replace(source, target)
    _fsync(output_dir)
    discard(staging)


def remove_unfinished(output_dir: str) -> List[str]:
    """Delete the ``.incomplete-*`` entries an interrupted run left in ``output_dir``; returns their names."""
    if not os.path.isdir(output_dir):
        return []
    names = sorted(name for name in os.listdir(output_dir) if name.startswith(STAGING_PREFIX))
    if names:
        logger.warning(f"removing what an interrupted run left unfinished in {output_dir}: {', '.join(names)}")
    for name in names:
        discard(os.path.join(output_dir, name))
    return names

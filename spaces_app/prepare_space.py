"""Assemble a folder ready to push as a Hugging Face Space.

    python spaces_app/prepare_space.py /tmp/f2d2-space
    hf auth login                                                       # once (the current Hugging Face CLI, `hf`)
    hf upload <user>/<space> /tmp/f2d2-space . --repo-type=space        # (or git push; weights go to LFS/Xet)

(``content.DEPLOY_COMMANDS``; ``hf`` comes with ``pip install -U huggingface_hub``.)

The folder gets ``app.py`` and the modules it imports, ``README.md`` (with the Space front matter),
``requirements.txt``, a copy of the ``f2d2_diffusers`` package (not on PyPI yet) and the final weights of the shipped
checkpoints that exist (``model_index.json``, ``unet/`` or an energy sampler's ``model/``, ``scheduler/``, ``README.md``,
the ``pipeline.py`` shim; no ``checkpoint-*`` training states, no logs), plus the Explain tab's benchmark plots where they exist. The app finds all of them next to
``app.py``: a Space runs ``python app.py`` in its folder, so the package copy there is imported like its modules.
"""

import argparse
import shutil
import sys
from pathlib import Path

from content import APP_DIR, DEPLOY_COMMANDS, EXPLAIN_PLOTS, REPO_ROOT

#: The app's modules (every module next to app.py but this script), its card and its requirements.
SPACE_FILES = tuple(sorted(p.name for p in APP_DIR.glob("*.py") if p.name != Path(__file__).name)) + (
    "README.md",
    "requirements.txt",
)
CHECKPOINTS = ("f2d2-digits", "fm-digits", "f2d2-checkerboard", "fm-checkerboard", "f2d2-meanflow-digits",
               "f2d2-meanflow-checkerboard", "sampler-gmm40", "sampler-funnel", "sampler-many-well-32",
               "sampler-breast-cancer")
CHECKPOINT_PARTS = ("model_index.json", "README.md", "pipeline.py", "unet", "model", "scheduler")
#: The weights' folder: ``unet/`` for the F2D2 models and teachers, ``model/`` for the energy samplers.
WEIGHT_FOLDERS = ("unet", "model")


def prepare(
    out: Path, checkpoints=CHECKPOINTS, checkpoint_root: Path = REPO_ROOT / "checkpoints", plot_root: Path = REPO_ROOT
) -> list:
    """Write the Space into ``out`` (created; must be empty or absent). Returns the checkpoints copied.

    ``checkpoint_root`` holds the ``checkpoints`` folders; ``plot_root`` the Explain tab's plots (at their paths in
    ``content.EXPLAIN_PLOTS``).
    """
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise SystemExit(f"{out} is not empty; give a new or empty folder")
    out.mkdir(parents=True, exist_ok=True)
    for name in SPACE_FILES:
        shutil.copy2(APP_DIR / name, out / name)
    shutil.copytree(
        REPO_ROOT / "f2d2_diffusers", out / "f2d2_diffusers", ignore=shutil.ignore_patterns("__pycache__", "*.pyc")
    )
    for relative, _ in EXPLAIN_PLOTS:  # where the benchmarks have written them
        if (Path(plot_root) / relative).is_file():
            (out / relative).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(Path(plot_root) / relative, out / relative)
    copied = []
    for name in checkpoints:
        source = Path(checkpoint_root) / name
        if not any((source / folder).is_dir() for folder in WEIGHT_FOLDERS):
            print(f"skipping {name}: no trained weights at {source}", file=sys.stderr)
            continue
        for part in CHECKPOINT_PARTS:
            path = source / part
            if path.is_dir():
                shutil.copytree(path, out / "checkpoints" / name / part)
            elif path.is_file():
                (out / "checkpoints" / name).mkdir(parents=True, exist_ok=True)
                shutil.copy2(path, out / "checkpoints" / name / part)
        copied.append(name)
    return copied


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="new or empty folder to write the Space into")
    parser.add_argument("--checkpoints", nargs="*", default=list(CHECKPOINTS), help="checkpoint folders to include")
    args = parser.parse_args(argv)
    copied = prepare(args.out, args.checkpoints)
    print(f"Space written to {args.out} with checkpoints: {', '.join(copied) or 'none'}")
    upload = DEPLOY_COMMANDS.splitlines()[-1].replace("/tmp/f2d2-space", str(args.out))
    print(f"Upload it with the Hugging Face CLI (`hf auth login` first):\n    {upload}")


if __name__ == "__main__":
    main()

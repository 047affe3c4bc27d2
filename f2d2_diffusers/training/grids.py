"""The grids a shortcut student is trained on (``docs/method.md`` 5.7): ``--grid_shift`` (both directions) and
``--likelihood_grid_shift`` (the encoding steps alone), and where a run that leaves them out takes them from."""

import json
import os
from typing import Optional, Tuple

from ..flow_map import check_shift
from .checkpointing import MANIFEST_NAME
from .cli import TrainingError

#: Checkpoint-manifest setting -> scheduler config entry.
_MANIFEST_TO_SCHEDULER = {"grid_shift": "shift", "likelihood_grid_shift": "likelihood_shift"}
#: What a student or checkpoint saved before grids could be shifted was trained on (``recorded_grid_shifts`` form).
UNIFORM_GRIDS = {"shift": 1.0, "likelihood_shift": None}


def recorded_grid_shifts(path: str) -> Optional[dict]:
    """``{"shift": ..., "likelihood_shift": ...}`` recorded with the student at ``path``, or ``None`` where nothing
    records them (a Hub id, or a bare model folder saved before grids could be shifted: the uniform grids).

    Looked for in a saved pipeline's ``scheduler/scheduler_config.json``, in the pipeline folder above a bare
    ``unet/`` folder, and in a training checkpoint's manifest (``checkpoint-N``). An unreadable record is a
    ``TrainingError``.
    """
    path = os.path.normpath(str(path))
    candidates = [os.path.join(path, "scheduler", "scheduler_config.json")]
    if os.path.basename(path) in ("unet", "unet_ema"):
        candidates.append(os.path.join(os.path.dirname(path), "scheduler", "scheduler_config.json"))
    for config_path in candidates:
        if os.path.isfile(config_path):
            config = _read_json(config_path)
            return {"shift": config.get("shift", 1.0), "likelihood_shift": config.get("likelihood_shift")}
    for folder in (path, os.path.dirname(path)):
        manifest = os.path.join(folder, MANIFEST_NAME)
        if os.path.isfile(manifest):
            settings = _read_json(manifest).get("settings") or {}
            if "grid_shift" in settings:
                return {_MANIFEST_TO_SCHEDULER[k]: v for k, v in settings.items() if k in _MANIFEST_TO_SCHEDULER}
    return None


#: The encoding steps' grid of a shortcut run that starts from nothing recorded and sets no grid flag
#: (``docs/method.md`` 5.7): its 2-step likelihood midpoint is ``sigma = 1/4``. Chosen on digits, where it beats the
#: uniform grid by more than the spread of two training seeds, and checked on new 2-D and 5-D data
#: (``benchmarks/results/ablations_digits.md``, ``benchmarks/results/new_data.json``).
DEFAULT_LIKELIHOOD_GRID_SHIFT = 1.0 / 3.0


def default_likelihood_grid_shift(objective: str, trajectory: bool, encodes: bool = True) -> float:
    """The likelihood grid shift a fresh run gets when no flag or record sets one: ``DEFAULT_LIKELIHOOD_GRID_SHIFT``
    for the shortcut objective training encoding steps; 1 (uniform) for a sampling-only run (``encodes=False``,
    ``--directions forward``: no encoding step is trained) and where only uniform grids can be trained
    (:func:`grid_shift_conflict`)."""
    if encodes and grid_shift_conflict(1.0, DEFAULT_LIKELIHOOD_GRID_SHIFT, objective, trajectory) is None:
        return DEFAULT_LIKELIHOOD_GRID_SHIFT
    return 1.0


def resolve_grid_shifts(grid_shift: Optional[float], likelihood_grid_shift: Optional[float],
                        recorded: Optional[dict], default_likelihood_shift: float = 1.0) -> Tuple[float, float]:
    """``(grid_shift, likelihood_grid_shift)`` of a run. Each flag given wins; a flag left out takes the value
    ``recorded`` with the starting student (:func:`recorded_grid_shifts`), whose steps are on those grids; else
    ``grid_shift`` is 1 (the uniform grids) and ``likelihood_grid_shift`` is ``grid_shift`` where either is given or
    recorded, ``default_likelihood_shift`` (:func:`default_likelihood_grid_shift`) where neither is."""
    given_or_recorded = grid_shift is not None or recorded is not None
    recorded = recorded or {}
    if grid_shift is None:
        grid_shift = recorded.get("shift")
    grid_shift = 1.0 if grid_shift is None else check_shift(grid_shift, "grid_shift")
    if likelihood_grid_shift is None:
        likelihood_grid_shift = recorded.get("likelihood_shift")
    if likelihood_grid_shift is None:
        likelihood_grid_shift = grid_shift if given_or_recorded else default_likelihood_shift
    return grid_shift, check_shift(likelihood_grid_shift, "likelihood_grid_shift")


def resolve_run_grids(grid_shift: Optional[float], likelihood_grid_shift: Optional[float], recorded: Optional[dict],
                      objective: str, trajectory: bool, encodes: bool = True) -> Tuple[float, float]:
    """The grids a training run trains (:func:`resolve_grid_shifts` with the objective's default likelihood grid,
    :func:`default_likelihood_grid_shift`); a ``TrainingError`` where the objective cannot train them
    (:func:`grid_shift_conflict`). ``train_f2d2.py`` and ``benchmarks/ablate_digits.py`` both resolve through it."""
    shifts = resolve_grid_shifts(grid_shift, likelihood_grid_shift, recorded,
                                 default_likelihood_grid_shift(objective, trajectory, encodes))
    conflict = grid_shift_conflict(*shifts, objective, trajectory)
    if conflict:
        raise TrainingError(conflict)
    return shifts


def trained_scheduler(grid_shift: float, likelihood_grid_shift: float):
    """The ``F2D2Scheduler`` whose grids a run with these shifts trains, saved with its pipeline: ``likelihood_shift``
    is recorded only where it differs from ``shift``."""
    from ..schedulers import F2D2Scheduler

    likelihood_shift = None if likelihood_grid_shift == grid_shift else likelihood_grid_shift
    return F2D2Scheduler(shift=grid_shift, likelihood_shift=likelihood_shift)


def grid_shift_conflict(grid_shift: float, likelihood_grid_shift: float, objective: str,
                        trajectory: bool) -> Optional[str]:
    """Why these grids cannot be trained with this objective (``None`` if they can): only the shortcut objective's
    dyadic steps follow a shifted grid; MeanFlow-F2D2 and the trajectory loss train uniform or continuous steps."""
    if grid_shift == 1.0 and likelihood_grid_shift == 1.0:
        return None
    what = ("MeanFlow-F2D2 trains its own step distribution" if objective != "shortcut"
            else "the trajectory loss supervises the uniform grids' segments" if trajectory else None)
    if what is None:
        return None
    return (f"grid shift {grid_shift} / likelihood grid shift {likelihood_grid_shift} (given, or recorded with the "
            f"starting student): only the shortcut objective's dyadic steps follow a shifted grid, and {what}. Pass "
            "--grid_shift 1 --likelihood_grid_shift 1 to train on the uniform grids (a shift can still be set at "
            "inference, F2D2Scheduler(shift=...))")


def check_grid_shift_flags(args, objective: str, trajectory: bool) -> Optional[str]:
    """Parse-time check of ``args.grid_shift`` / ``args.likelihood_grid_shift`` as given (``None``: left out, 1 for
    now): the message of the first problem, or ``None``."""
    try:
        grid_shift = check_shift(args.grid_shift, "--grid_shift", allow_none=True)
        likelihood_grid_shift = check_shift(args.likelihood_grid_shift, "--likelihood_grid_shift", allow_none=True)
    except ValueError as err:
        return str(err)
    grid_shift = 1.0 if grid_shift is None else grid_shift
    return grid_shift_conflict(grid_shift, grid_shift if likelihood_grid_shift is None else likelihood_grid_shift,
                               objective, trajectory)


def _read_json(path: str) -> dict:
    try:
        with open(path) as f:
            value = json.load(f)
    except (OSError, ValueError) as err:
        raise TrainingError(f"cannot read the grid recorded in {path}: {err}") from None
    if not isinstance(value, dict):
        raise TrainingError(f"cannot read the grid recorded in {path}: not a JSON object")
    return value

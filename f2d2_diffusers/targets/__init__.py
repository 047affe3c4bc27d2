"""Unnormalised target densities for the energy samplers (``docs/method.md`` section 7).

``load_target("gmm40")`` builds a built-in by name (:data:`TARGETS`); ``load_target("path/to/file.py:ClassName")``
imports a user's :class:`EnergyTarget` subclass from a file and builds it with no arguments. :func:`validate_target`
checks any target before training.
"""

import importlib.util
import os
import sys
from typing import Callable, Dict

from .base import EnergyTarget, validate_target
from .bayesian import REFERENCE_LOG_Z, BayesianLogisticRegressionTarget, BreastCancerTarget, load_breast_cancer_design
from .builtin import (
    GMM40_SEED, EightGaussiansTarget, FunnelTarget, GaussianMixtureTarget, GaussianTarget, GMM40Target, GMMGridTarget,
    ManyWell32Target, ManyWellTarget,
)

#: Built-in targets by name (``-`` and ``_`` are interchangeable on the command line).
TARGETS: Dict[str, Callable[[], EnergyTarget]] = {
    "gmm40": GMM40Target,
    "funnel": FunnelTarget,
    "many_well_32": ManyWell32Target,
    "many_well_554": ManyWellTarget,
    "breast_cancer": BreastCancerTarget,
    "gmm_grid": GMMGridTarget,
    "eight_gaussians": EightGaussiansTarget,
}


def _load_from_file(spec: str) -> EnergyTarget:
    path, _, class_name = spec.rpartition(":")
    if not path or not class_name:
        raise ValueError(f"a user target is given as path/to/file.py:ClassName, got {spec!r}")
    if not os.path.isfile(path):
        raise ValueError(f"target file {path!r} does not exist (from {spec!r})")
    module_name = "f2d2_user_target_" + os.path.splitext(os.path.basename(path))[0].replace("-", "_")
    module_spec = importlib.util.spec_from_file_location(module_name, path)
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[module_name] = module
    try:
        module_spec.loader.exec_module(module)
    except Exception as err:  # noqa: BLE001  (the user's file; say which)
        sys.modules.pop(module_name, None)
        raise ValueError(f"cannot import target file {path!r}: {type(err).__name__}: {err}") from None
    cls = getattr(module, class_name, None)
    if cls is None:
        raise ValueError(f"{path!r} defines no {class_name!r}")
    if not (isinstance(cls, type) and issubclass(cls, EnergyTarget)):
        raise ValueError(f"{spec!r} is not a subclass of f2d2_diffusers.targets.EnergyTarget")
    try:
        target = cls()
    except Exception as err:  # noqa: BLE001
        raise ValueError(f"cannot build {spec!r} with no arguments: {type(err).__name__}: {err}") from None
    target.name = spec
    return target


def load_target(name_or_spec) -> EnergyTarget:
    """A target from a built-in name (``"gmm40"``, ``"funnel"``, ...), a ``"file.py:Class"`` spec, or a target
    (returned as is). Unknown names raise a ``ValueError`` listing the built-ins."""
    if isinstance(name_or_spec, EnergyTarget):
        return name_or_spec
    if not isinstance(name_or_spec, str):
        raise ValueError(f"a target is a name or 'file.py:Class', got {type(name_or_spec).__name__}")
    if ".py:" in name_or_spec:
        return _load_from_file(name_or_spec)
    key = name_or_spec.strip().lower().replace("-", "_")
    if key not in TARGETS:
        raise ValueError(f"unknown target {name_or_spec!r}; built-ins: {', '.join(TARGETS)}, or path/to/file.py:ClassName")
    return TARGETS[key]()


__all__ = [
    "BayesianLogisticRegressionTarget", "BreastCancerTarget", "EightGaussiansTarget", "EnergyTarget", "FunnelTarget",
    "GMM40Target", "GMM40_SEED", "GMMGridTarget", "GaussianMixtureTarget", "GaussianTarget", "ManyWell32Target",
    "ManyWellTarget", "REFERENCE_LOG_Z", "TARGETS", "load_breast_cancer_design", "load_target", "validate_target",
]

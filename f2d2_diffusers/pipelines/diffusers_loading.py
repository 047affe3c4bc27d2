"""Folders that load like any diffusers pipeline, through diffusers' custom-pipeline mechanism.

diffusers resolves ``model_index.json`` in two ways, and this package's classes fit neither without help:

- ``DiffusionPipeline.from_pretrained(folder_or_repo)`` looks a plain ``_class_name`` up in the ``diffusers``
  module, where ``F2D2Pipeline`` is not (``AttributeError``). A ``_class_name`` list ``[file, class]`` instead names
  a module file at the repository's top, loaded with ``trust_remote_code=True``
  (``pipeline_loading_utils._resolve_custom_pipeline_and_cls``). Components named by a full module path
  (``["f2d2_diffusers.models.unet_f2d2", ...]``, what ``save_pretrained`` writes for third-party classes) resolve only
  from modules already imported, and on the Hub path ``DiffusionPipeline.download`` refuses them outright
  (``_get_custom_components_and_folders``: "... does not exist ... and is not a module in 'diffusers/pipelines'"),
  even for ``F2D2Pipeline.from_pretrained(repo_id)``. A component named ``[file, class]`` with ``<component>/<file>.py``
  in the repository passes, loaded as remote code too.
- The package's own classes (``F2D2Pipeline.from_pretrained``) need no remote code at all.

So a loadable folder carries *shims*: ``pipeline.py`` at the top and one ``<component>/<module>.py`` per package
component, each a single import from the installed ``f2d2-diffusers`` by module path (no model code; the package's
code runs, at its installed version), and ``model_index.json`` names them. ``trust_remote_code=True`` runs only those
imports. The package's classes read the same folder as if the shims were not there (:class:`PackageLoadingMixin`), so
``F2D2Pipeline.from_pretrained`` keeps working without ``trust_remote_code``, locally and from the Hub.

Why shims and not self-contained code: the pipeline, models, scheduler, dequantisation and flow-map step span a dozen
modules; copying them into every checkpoint would fork the code the package tests, and the shims' failure mode (the
package is missing) is one clear ``ImportError``.
"""

import contextvars
import json
import os
from typing import Dict, List, Optional, Tuple

from ..atomic import write_text_atomically

#: diffusers' file name for a repository's custom pipeline (``CUSTOM_PIPELINE_FILE_NAME``); ``model_index.json`` names
#: it as ``"_class_name": ["pipeline", "<class>"]``.
PIPELINE_MODULE = "pipeline"
MODEL_INDEX = "model_index.json"

#: The package's loadable classes and the module that defines each (the tests check these against the classes).
PACKAGE_CLASSES: Dict[str, str] = {
    "F2D2Pipeline": "f2d2_diffusers.pipelines.pipeline_f2d2",
    "F2D2LikelihoodPipeline": "f2d2_diffusers.pipelines.pipeline_f2d2_likelihood",
    "FlowMatchingEulerPipeline": "f2d2_diffusers.pipelines.pipeline_flow_matching",
    "F2D2UNet2DModel": "f2d2_diffusers.models.unet_f2d2",
    "F2D2MLPModel": "f2d2_diffusers.models.mlp_f2d2",
    "FlowMatchingMLPModel": "f2d2_diffusers.models.mlp_flow_matching",
    "F2D2Scheduler": "f2d2_diffusers.schedulers.scheduling_f2d2",
    "EnergySamplerPipeline": "f2d2_diffusers.pipelines.pipeline_energy_sampler",
    "EnergySamplerMLPModel": "f2d2_diffusers.models.mlp_sampler",
}

#: Shown when a shim runs without the package installed.
MISSING_PACKAGE_MESSAGE = (
    "This checkpoint's {what} comes from the f2d2-diffusers package, which is not installed. It is not on PyPI: "
    "install it from a checkout of its source (`pip install ./f2d2-diffusers`, which also brings diffusers; see the "
    "package README's set-up section), then load again with "
    "`DiffusionPipeline.from_pretrained(..., trust_remote_code=True)` or `from f2d2_diffusers import {name}; "
    "{name}.from_pretrained(...)`."
)

_SHIM = '''"""diffusers remote-code entry point of this checkpoint, written by f2d2-diffusers: {role}.

It holds no model code. It imports `{name}` from the installed f2d2-diffusers package by module path, so what runs
is that package's code at its installed version; `trust_remote_code=True` runs only this import. Without
`trust_remote_code`, load with the package's class: `from f2d2_diffusers import {loader}`,
`{loader}.from_pretrained(<this folder or repo>)`.
"""

try:
    from {module} import {name}
except ImportError as err:  # the package is missing: say how to get it
    raise ImportError({message!r}) from err

__all__ = ["{name}"]
'''

# True while a package class runs diffusers' ``download`` (the Hub path); see ``package_model_index``.
_DOWNLOADING = contextvars.ContextVar("f2d2_diffusers_downloading", default=False)


def _component_entries(index: dict):
    """``(name, library, class_name)`` for every component entry of a ``model_index.json`` dict."""
    for key, value in index.items():
        if not key.startswith("_") and isinstance(value, (list, tuple)) and len(value) == 2:
            yield key, value[0], value[1]


def shim_module(class_name: str) -> str:
    """The shim's module name (its file without ``.py``) for a package class: the defining module's last part."""
    return PACKAGE_CLASSES[class_name].rsplit(".", 1)[1]


def package_model_index(index: dict, downloading: bool = False) -> dict:
    """``index`` (a ``model_index.json`` dict) as the package's own classes read it, without remote code.

    ``_class_name`` ``[file, class]`` becomes ``class``, and each package component ``[file, class]`` (or the module
    path form) becomes ``[module path, class]``, which diffusers resolves from the imported package. While diffusers'
    ``download`` reads it (``downloading``), package components become ``[None, None]`` instead: the Hub path then
    fetches their folders like any other and leaves the class to the loading step.
    """
    if not isinstance(index, dict):
        return index
    index = dict(index)
    name = index.get("_class_name")
    if isinstance(name, (list, tuple)) and len(name) == 2 and name[1] in PACKAGE_CLASSES:
        index["_class_name"] = name[1]
    for key, library, class_name in _component_entries(index):
        if class_name in PACKAGE_CLASSES and library != "diffusers":
            index[key] = [None, None] if downloading else [PACKAGE_CLASSES[class_name], class_name]
    return index


class PackageLoadingMixin:
    """For the package's pipeline classes: read folders written with shims as if the shims were not there.

    ``from_pretrained`` then never takes diffusers' custom-code branch (which needs ``trust_remote_code``): the class
    it was called on loads, with components from the installed package. It goes first in the bases, before
    ``DiffusionPipeline``.
    """

    @classmethod
    def download(cls, *args, **kwargs):
        token = _DOWNLOADING.set(True)
        try:
            return super().download(*args, **kwargs)
        finally:
            _DOWNLOADING.reset(token)

    @classmethod
    def _dict_from_json_file(cls, json_file):
        return package_model_index(super()._dict_from_json_file(json_file), downloading=_DOWNLOADING.get())


def shim_source(class_name: str, role: str, loader: str) -> str:
    """Text of the shim file that imports ``class_name`` from the package."""
    what = "pipeline" if role == "pipeline" else f"{role} component"
    return _SHIM.format(
        role=f"the {role} class" if role == "pipeline" else f"the `{role}` component's class", name=class_name,
        module=PACKAGE_CLASSES[class_name], loader=loader,
        message=MISSING_PACKAGE_MESSAGE.format(what=f"{what} class {class_name}", name=loader),
    )


def remote_code_layout(index: dict) -> Tuple[dict, Dict[str, str]]:
    """``(model_index, files)``: ``index`` with shims named, and the shim files (relative path -> text).

    Components of stock diffusers classes stay as they are; a pipeline whose class is stock (``DDPMPipeline``) gets no
    ``pipeline.py``. Applied to an index that already names shims, it gives the same result (idempotent).
    """
    index = package_model_index(index)  # one starting point, whatever form the folder had
    name = index.get("_class_name")
    if not isinstance(name, str):
        raise ValueError(f"model_index.json has an unexpected _class_name {name!r}")
    files: Dict[str, str] = {}
    loader = name if name in PACKAGE_CLASSES else None
    if loader:
        index["_class_name"] = [PIPELINE_MODULE, name]
        files[f"{PIPELINE_MODULE}.py"] = shim_source(name, "pipeline", loader)
    for key, library, class_name in list(_component_entries(index)):
        if class_name in PACKAGE_CLASSES and library != "diffusers":
            module = shim_module(class_name)
            index[key] = [module, class_name]
            files[f"{key}/{module}.py"] = shim_source(class_name, key, loader or class_name)
    return index, files


def model_index_text(index: dict) -> str:
    """``index`` as diffusers writes ``model_index.json`` (sorted keys, two-space indent, final newline)."""
    return json.dumps(index, indent=2, sort_keys=True) + "\n"


def teacher_model_index(unet_class: str, scheduler_class: str = "FlowMatchEulerDiscreteScheduler") -> dict:
    """``model_index.json`` of a flow-matching teacher folder (``unet/`` + ``scheduler/``).

    A ``UNet2DModel`` teacher is a stock ``DDPMPipeline``: its loop (``unet(x, t).sample`` then
    ``scheduler.step(...).prev_sample`` over ``scheduler.timesteps``) is exactly Euler in diffusers' flow-matching
    convention when the scheduler is ``FlowMatchEulerDiscreteScheduler``, so diffusers alone samples it. A
    ``FlowMatchingMLPModel`` (vectors) is the package's class, so the folder names the package's
    ``FlowMatchingEulerPipeline`` (remote-code shims are added by :func:`remote_code_layout`).
    """
    import diffusers

    if unet_class == "UNet2DModel":
        pipeline, unet = "DDPMPipeline", ["diffusers", "UNet2DModel"]
    elif unet_class == "FlowMatchingMLPModel":
        pipeline, unet = "FlowMatchingEulerPipeline", [PACKAGE_CLASSES[unet_class], unet_class]
    else:
        raise ValueError(f"a teacher's unet must be a UNet2DModel or a FlowMatchingMLPModel, got {unet_class!r}")
    return {"_class_name": pipeline, "_diffusers_version": diffusers.__version__,
            "scheduler": ["diffusers", scheduler_class], "unet": unet}


def _read_json(path: str) -> dict:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def loadable_layout(folder: str) -> Tuple[dict, Dict[str, str]]:
    """``(model_index, shim files)`` that make ``folder`` load with ``DiffusionPipeline.from_pretrained``.

    ``folder`` is an F2D2 pipeline (``model_index.json``) or a teacher written by ``train_teacher.py`` (``unet/`` and
    ``scheduler/``, with or without ``model_index.json``).
    """
    index_path = os.path.join(folder, MODEL_INDEX)
    if os.path.isfile(index_path):
        index = _read_json(index_path)
    else:
        unet_config = os.path.join(folder, "unet", "config.json")
        if not os.path.isfile(unet_config):
            raise FileNotFoundError(f"{folder} holds neither {MODEL_INDEX} nor unet/config.json")
        scheduler_config = os.path.join(folder, "scheduler", "scheduler_config.json")
        scheduler = _read_json(scheduler_config).get("_class_name") if os.path.isfile(scheduler_config) else None
        index = teacher_model_index(_read_json(unet_config).get("_class_name"),
                                    scheduler or "FlowMatchEulerDiscreteScheduler")
    return remote_code_layout(index)


def write_loadable_layout(folder: str) -> List[str]:
    """Write the shims and ``model_index.json`` of :func:`loadable_layout` into ``folder``; returns what it wrote.

    Weights and configs are not touched; ``model_index.json`` is written last. Running it again changes nothing.
    """
    index, files = loadable_layout(folder)
    written = []
    for rel, text in sorted(files.items()):
        path = os.path.join(folder, *rel.split("/"))
        if not os.path.isdir(os.path.dirname(path)):
            raise FileNotFoundError(f"{folder}/{os.path.dirname(rel)}/ is missing")
        write_text_atomically(path, text)
        written.append(rel)
    write_text_atomically(os.path.join(folder, MODEL_INDEX), model_index_text(index))
    return written + [MODEL_INDEX]


def stock_pipeline_class(index: dict) -> Optional[str]:
    """The pipeline class a ``model_index.json`` names, in plain form (``"F2D2Pipeline"``, ``"DDPMPipeline"``)."""
    name = package_model_index(index).get("_class_name")
    return name if isinstance(name, str) else None

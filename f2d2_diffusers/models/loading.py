"""Loading a flow-matching teacher saved by ``training/train_teacher.py`` (or any compatible folder / Hub repo)."""

import os
from typing import Optional, Union

from diffusers import UNet2DModel

from ..hub import is_hub_repo_id
from .mlp_flow_matching import FlowMatchingMLPModel

#: Teacher classes by the ``_class_name`` in their ``config.json``.
TEACHER_CLASSES = {"UNet2DModel": UNet2DModel, "FlowMatchingMLPModel": FlowMatchingMLPModel}
STUDENT_CLASS_NAMES = ("F2D2UNet2DModel", "F2D2MLPModel")


def _teacher_subfolder(path_or_repo: str) -> Optional[str]:
    """``"unet"`` for a saved teacher/pipeline folder, ``None`` for a bare model folder; Hub ids use ``unet/``."""
    if os.path.isdir(path_or_repo):
        if os.path.isfile(os.path.join(path_or_repo, "unet", "config.json")):
            return "unet"
        if os.path.isfile(os.path.join(path_or_repo, "config.json")):
            return None
        raise FileNotFoundError(
            f"{path_or_repo} holds no unet/config.json or config.json: it is not a saved teacher "
            "(train_teacher.py writes unet/ and scheduler/)"
        )
    if os.path.exists(path_or_repo):
        raise ValueError(f"{path_or_repo} is a file; give the folder that holds the teacher")
    if not is_hub_repo_id(path_or_repo):
        raise FileNotFoundError(f"no teacher folder at {path_or_repo}")
    return "unet"


def load_teacher(path_or_repo: Union[str, os.PathLike], **kwargs) -> Union[UNet2DModel, FlowMatchingMLPModel]:
    """A frozen teacher in eval mode: a ``UNet2DModel`` (images) or a ``FlowMatchingMLPModel`` (vectors).

    ``path_or_repo`` is a folder written by ``train_teacher.py`` (the model in ``unet/``), a bare model folder
    (``config.json`` at its top) or a Hub repo id (model in ``unet/``). ``kwargs`` go to ``from_pretrained``.

    Raises ``FileNotFoundError`` when nothing is there and ``ValueError`` when it holds something else than a
    flow-matching teacher (e.g. an F2D2 student).
    """
    path_or_repo = os.fspath(path_or_repo)
    subfolder = _teacher_subfolder(path_or_repo)
    config = UNet2DModel.load_config(path_or_repo, subfolder=subfolder, **kwargs)
    class_name = config.get("_class_name")
    where = f"{path_or_repo}/{subfolder}" if subfolder else path_or_repo
    if class_name in STUDENT_CLASS_NAMES:
        raise ValueError(f"{where} holds an F2D2 student ({class_name}), not a flow-matching teacher")
    if class_name not in TEACHER_CLASSES:
        raise ValueError(
            f"{where} holds a {class_name or 'model of unknown class'}; the teacher must be a UNet2DModel (images) "
            "or a FlowMatchingMLPModel (vectors)"
        )
    if class_name == "UNet2DModel" and config.get("time_embedding_type", "positional") != "positional":
        raise ValueError(
            f"{where}: the teacher uses time_embedding_type={config['time_embedding_type']!r}; F2D2 needs 'positional'"
        )
    try:
        teacher = TEACHER_CLASSES[class_name].from_pretrained(path_or_repo, subfolder=subfolder, **kwargs)
    except (OSError, ValueError, RuntimeError) as err:
        raise OSError(f"cannot load the {class_name} in {where} ({type(err).__name__}: {err})") from None
    return teacher.requires_grad_(False).eval()



def load_flow_map(path_or_repo: Union[str, os.PathLike], **kwargs):
    """A trainable F2D2 student (``F2D2UNet2DModel`` or ``F2D2MLPModel``) from a saved pipeline or model folder.

    Same layouts as :func:`load_teacher` (``unet/`` or a bare model folder, or a Hub id); raises ``ValueError`` when
    the folder holds a teacher or anything else than a joint flow map.
    """
    from .mlp_f2d2 import F2D2MLPModel
    from .unet_f2d2 import F2D2UNet2DModel

    path_or_repo = os.fspath(path_or_repo)
    subfolder = _teacher_subfolder(path_or_repo)
    config = UNet2DModel.load_config(path_or_repo, subfolder=subfolder, **kwargs)
    class_name = config.get("_class_name")
    where = f"{path_or_repo}/{subfolder}" if subfolder else path_or_repo
    classes = {"F2D2UNet2DModel": F2D2UNet2DModel, "F2D2MLPModel": F2D2MLPModel}
    if class_name not in classes:
        raise ValueError(f"{where} holds a {class_name or 'model of unknown class'}, not an F2D2 joint flow map {sorted(classes)}")
    try:
        return classes[class_name].from_pretrained(path_or_repo, subfolder=subfolder, **kwargs)
    except (OSError, ValueError, RuntimeError) as err:
        raise OSError(f"cannot load the {class_name} in {where} ({type(err).__name__}: {err})") from None

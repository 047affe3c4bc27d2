"""The app's gradio pieces shared by its tabs: error handling, and components whose input errors name the field."""

import functools
import logging
from typing import Callable

import gradio as gr
import torch

from errors import InputError, ModelUnavailable

logger = logging.getLogger("f2d2_space")


def user_errors(fn: Callable) -> Callable:
    """Turn any exception into a ``gr.Error`` with a readable message; the server keeps serving."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except gr.Error:
            raise
        except (InputError, ModelUnavailable) as err:
            raise gr.Error(str(err), print_exception=False) from None
        except torch.OutOfMemoryError:
            raise gr.Error("Out of memory: try a smaller batch or fewer samples (Sample tab: fewer teacher steps).", print_exception=False) from None
        except Exception as err:  # noqa: BLE001 - never take the app down
            logger.exception("unexpected error in %s", fn.__name__)
            raise gr.Error(f"Something went wrong ({type(err).__name__}: {err}). The app is still running.") from None

    return wrapper


# Components are patched per instance rather than subclassed: gradio writes a ``.pyi`` stub next to the source file
# of every component subclass it sees.


def _checked_image(**kwargs) -> gr.Image:
    """``gr.Image`` that answers an unreadable upload (a non-image file) with a clear ``gr.Error``."""
    component = gr.Image(**kwargs)
    preprocess = component.preprocess

    def checked(payload):
        try:
            return preprocess(payload)
        except gr.Error:
            raise
        except Exception as err:  # noqa: BLE001 - whatever the decoder raises, the upload is not a readable image
            raise gr.Error(
                f"Could not read the uploaded file as an image ({type(err).__name__}); upload a PNG, JPEG, WebP or BMP.",
                print_exception=False,
            ) from None

    component.preprocess = checked
    return component


def _labelled(component):
    """``component`` whose input errors (e.g. gradio's own bounds check on API calls) name the field.

    API calls may send anything: a numeric string is read as its number, and a value that is not a number (text,
    ``None``, NaN) is answered with a ``gr.Error`` naming the field, where gradio's own check fails with a bare
    ``TypeError``.
    """
    preprocess = component.preprocess

    def labelled(payload):
        if isinstance(payload, str):
            try:
                payload = float(payload.strip())
            except ValueError:
                pass
        try:
            return preprocess(payload)
        except gr.Error as err:
            raise gr.Error(f"{component.label}: {err.message}", print_exception=False) from None
        except (TypeError, ValueError):
            raise gr.Error(f"{component.label}: expected a number, got {payload!r}.", print_exception=False) from None

    component.preprocess = labelled
    return component


def Slider(*args, **kwargs) -> gr.Slider:  # noqa: N802 - stands in for gr.Slider
    return _labelled(gr.Slider(*args, **kwargs))


def Number(*args, **kwargs) -> gr.Number:  # noqa: N802 - stands in for gr.Number
    return _labelled(gr.Number(*args, **kwargs))



def ModelDropdown(registry, label: str = "Model", **kwargs) -> gr.Dropdown:  # noqa: N802 - stands in for gr.Dropdown
    """The list of ``registry``'s models (or samplers: names, never paths); an API call with an earlier name of one
    is read as its name, and one with an unknown name is answered with an error naming the field and the choices."""
    component = gr.Dropdown(registry.names, label=label, **kwargs)
    preprocess = component.preprocess

    def checked(payload):
        payload = registry.canonical(payload)
        if isinstance(payload, str) and payload not in registry.names:
            raise gr.Error(
                f"{label}: unknown {label.lower()} {payload!r}; choose one of: {', '.join(registry.names)}.",
                print_exception=False,
            )
        return preprocess(payload)

    component.preprocess = checked
    return component

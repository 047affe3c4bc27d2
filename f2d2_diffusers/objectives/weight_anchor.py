"""A pull of the student's weights toward the teacher's (L2-SP; ``docs/method.md`` section 5.6).

A student warm-started from its teacher computes the teacher's velocity before training; distillation then moves
every shared weight. The penalty ``sum (theta - theta_teacher)^2`` over the weights both networks have keeps the
student near the function the teacher learnt, whose behaviour away from the training data is the reference's.
"""

from typing import Dict

import torch


def anchor_weights(student: torch.nn.Module, teacher: torch.nn.Module, strict: bool = True) -> Dict[str, torch.Tensor]:
    """The teacher's parameters that ``student`` shares (same name and shape), detached.

    ``strict``: every teacher parameter must have its counterpart, as in a student built by ``from_teacher``; a
    student whose layers were renamed or resized (e.g. deepened) is refused rather than anchored in part, since
    matching by name would then pull some layers toward the wrong teacher weights. Raises ``ValueError``.
    """
    student_params = dict(student.named_parameters())
    anchor, unmatched = {}, []
    for name, param in teacher.named_parameters():
        if name in student_params and student_params[name].shape == param.shape:
            anchor[name] = param.detach()
        else:
            unmatched.append(name)
    if not anchor or (strict and unmatched):
        raise ValueError(
            f"{type(student).__name__} lacks {len(unmatched)} of the {len(unmatched) + len(anchor)} parameters of "
            f"{type(teacher).__name__} (same name and shape), e.g. {unmatched[0]!r}: the weight anchor needs a student "
            "built from this teacher (F2D2UNet2DModel.from_teacher / F2D2MLPModel.from_teacher)"
        )
    return anchor


def weight_anchor_penalty(student: torch.nn.Module, anchor: Dict[str, torch.Tensor]) -> torch.Tensor:
    """``sum over anchored parameters of |theta - theta_anchor|^2``: a scalar with gradient into ``student``."""
    if not anchor:
        raise ValueError("the weight anchor is empty")
    params = dict(student.named_parameters())
    total = None
    for name, reference in anchor.items():
        param = params.get(name)
        if param is None or param.shape != reference.shape:
            found = "missing" if param is None else f"of shape {tuple(param.shape)}"
            raise ValueError(f"anchored parameter {name!r} (shape {tuple(reference.shape)}) is {found} in the student")
        term = (param - reference.to(device=param.device, dtype=param.dtype)).pow(2).sum()
        total = term if total is None else total + term
    return total


def anchor_norm(anchor: Dict[str, torch.Tensor]) -> float:
    """``|theta_anchor|`` (L2 over all anchored weights): the scale for a relative distance to the teacher."""
    return sum(float(reference.double().pow(2).sum()) for reference in anchor.values()) ** 0.5

"""A pull of the student's weights toward the teacher's (L2-SP; ``docs/method.md`` section 5.5).

A student warm-started from its teacher computes the teacher's velocity at ``h = 0``; distillation then moves every
shared weight. The penalty ``sum (theta - theta_teacher)^2`` over the weights both networks have keeps the student
near the function the teacher learnt, whose behaviour away from the training data is the reference's.
"""

from typing import Dict

import torch


def anchor_weights(student: torch.nn.Module, teacher: torch.nn.Module) -> Dict[str, torch.Tensor]:
    """Detached copies of the teacher's parameters that ``student`` shares (same name, same shape).

    Raises ``ValueError`` when none are shared: the student was not built from this teacher.
    """
    teacher_params = dict(teacher.named_parameters())
    anchor = {
        name: teacher_params[name].detach().clone()
        for name, param in student.named_parameters()
        if name in teacher_params and teacher_params[name].shape == param.shape
    }
    if not anchor:
        raise ValueError(
            f"{type(student).__name__} shares no parameter (name and shape) with {type(teacher).__name__}: the weight "
            "anchor needs a student built from this teacher (F2D2UNet2DModel.from_teacher / F2D2MLPModel.from_teacher)"
        )
    return anchor


def weight_anchor_penalty(student: torch.nn.Module, anchor: Dict[str, torch.Tensor]) -> torch.Tensor:
    """``sum over anchored parameters of |theta - theta_anchor|^2`` (a scalar with gradient into ``student``)."""
    params = dict(student.named_parameters())
    missing = [name for name in anchor if name not in params]
    if missing:
        raise ValueError(f"the student lacks {len(missing)} anchored parameter(s), e.g. {missing[0]!r}")
    total = None
    for name, reference in anchor.items():
        param = params[name]
        term = (param - reference.to(device=param.device, dtype=param.dtype)).pow(2).sum()
        total = term if total is None else total + term
    return total

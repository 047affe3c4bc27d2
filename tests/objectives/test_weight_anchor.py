"""``anchor_weights`` / ``weight_anchor_penalty``: the L2-SP pull toward the teacher's weights (method 5.6)."""

import pytest
import torch

from f2d2_diffusers import F2D2MLPModel, FlowMatchingMLPModel
from f2d2_diffusers.objectives import anchor_weights, weight_anchor_penalty


@pytest.fixture
def teacher_and_student():
    torch.manual_seed(0)
    teacher = FlowMatchingMLPModel(sample_size=2, hidden_dim=16, num_layers=2, time_embed_dim=8)
    return teacher, F2D2MLPModel.from_teacher(teacher)


def test_a_student_fresh_from_its_teacher_has_no_penalty(teacher_and_student):
    teacher, student = teacher_and_student
    anchor = anchor_weights(student, teacher)
    assert set(anchor) == {name for name, _ in teacher.named_parameters()}  # the trunk; head and step embedding free
    assert not any(name.startswith(("step_embedding.", "divergence_")) for name in anchor)
    assert weight_anchor_penalty(student, anchor).item() == 0.0


def test_the_penalty_is_the_squared_distance_and_its_gradient_pulls_back(teacher_and_student):
    teacher, student = teacher_and_student
    anchor = anchor_weights(student, teacher)
    name, param = next((n, p) for n, p in student.named_parameters() if n in anchor)
    with torch.no_grad():
        param.add_(0.5)
    penalty = weight_anchor_penalty(student, anchor)
    assert penalty.item() == pytest.approx(0.25 * param.numel(), rel=1e-6)
    penalty.backward()
    torch.testing.assert_close(param.grad, torch.full_like(param, 1.0))  # 2 * (theta - theta_teacher)
    # The anchor is a copy: moving the teacher afterwards changes nothing.
    with torch.no_grad():
        dict(teacher.named_parameters())[name].add_(1.0)
    assert weight_anchor_penalty(student, anchor).item() == pytest.approx(penalty.item())


def test_an_unrelated_student_is_refused(teacher_and_student):
    teacher, _ = teacher_and_student
    other = torch.nn.Linear(3, 3)
    with pytest.raises(ValueError, match="shares no parameter"):
        anchor_weights(other, teacher)
    anchor = anchor_weights(F2D2MLPModel.from_teacher(teacher), teacher)
    with pytest.raises(ValueError, match="lacks"):
        weight_anchor_penalty(other, anchor)

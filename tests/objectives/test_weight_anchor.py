"""``anchor_weights`` / ``weight_anchor_penalty``: the L2-SP pull toward the teacher's weights (method 5.6)."""

import pytest
import torch

from f2d2_diffusers import F2D2MLPModel, FlowMatchingMLPModel, F2D2UNet2DModel
from f2d2_diffusers.models.deepen import deepen_unet
from f2d2_diffusers.objectives import anchor_norm, anchor_weights, shortcut_f2d2_loss, weight_anchor_penalty


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
    expected = sum(p.pow(2).sum() for p in teacher.parameters()).sqrt().item()
    assert anchor_norm(anchor) == pytest.approx(expected, rel=1e-6)


def test_the_penalty_is_the_squared_distance_and_its_gradient_pulls_back(teacher_and_student):
    teacher, student = teacher_and_student
    anchor = anchor_weights(student, teacher)
    param = next(p for n, p in student.named_parameters() if n in anchor)
    with torch.no_grad():
        param.add_(0.5)
    penalty = weight_anchor_penalty(student, anchor)
    assert penalty.item() == pytest.approx(0.25 * param.numel(), rel=1e-6)
    penalty.backward()
    torch.testing.assert_close(param.grad, torch.full_like(param, 1.0))  # 2 * (theta - theta_teacher)


def distil(teacher, weight, steps=30):
    """``steps`` Adam steps of Shortcut-F2D2 on Gaussian data plus ``weight`` x the penalty; the final penalty."""
    torch.manual_seed(1)
    student = F2D2MLPModel.from_teacher(teacher)
    anchor = anchor_weights(student, teacher)
    optimizer = torch.optim.Adam(student.parameters(), lr=1e-2)
    generator = torch.Generator().manual_seed(0)
    for _ in range(steps):
        batch = torch.randn(32, 2, generator=generator)
        loss = shortcut_f2d2_loss(student, batch, teacher=teacher, target_model=student, generator=generator,
                                  divergence="exact").loss
        loss = loss + weight * weight_anchor_penalty(student, anchor)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return weight_anchor_penalty(student, anchor).item()


def test_the_anchor_keeps_a_distilled_student_nearer_its_teacher(teacher_and_student):
    teacher, _ = teacher_and_student
    free, anchored = distil(teacher, 0.0), distil(teacher, 1.0)
    assert free > 0.0 and anchored < 0.5 * free


def test_students_not_built_from_the_teacher_are_refused(teacher_and_student):
    teacher, _ = teacher_and_student
    with pytest.raises(ValueError, match=r"lacks (\d+) of the \1 parameters"):
        anchor_weights(torch.nn.Linear(3, 3), teacher)
    wider = F2D2MLPModel(sample_size=2, hidden_dim=32, num_layers=2, time_embed_dim=8)
    with pytest.raises(ValueError, match="same name and shape"):
        anchor_weights(wider, teacher)
    assert anchor_weights(wider, teacher, strict=False)  # the layers whose shapes agree
    anchor = anchor_weights(F2D2MLPModel.from_teacher(teacher), teacher)
    with pytest.raises(ValueError, match="is missing in the student"):
        weight_anchor_penalty(torch.nn.Linear(3, 3), anchor)
    with pytest.raises(ValueError, match="is of shape"):
        weight_anchor_penalty(wider, anchor)


def test_a_deepened_student_is_refused_rather_than_anchored_to_the_wrong_layers():
    from diffusers import UNet2DModel

    torch.manual_seed(0)
    teacher = UNet2DModel(sample_size=8, in_channels=1, out_channels=1, block_out_channels=(8, 16), layers_per_block=1,
                          norm_num_groups=4, down_block_types=("DownBlock2D", "DownBlock2D"),
                          up_block_types=("UpBlock2D", "UpBlock2D"))
    student = F2D2UNet2DModel.from_teacher(teacher)
    assert weight_anchor_penalty(student, anchor_weights(student, teacher)).item() == 0.0
    # Deepening renumbers the up blocks' resnets: a name match would pull new layers toward old weights.
    with pytest.raises(ValueError, match="lacks"):
        anchor_weights(deepen_unet(student, 2), teacher)

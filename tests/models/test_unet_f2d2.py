import ast
import hashlib
import inspect
import json
import textwrap

import diffusers

import pytest
import torch
from diffusers import UNet2DModel
from diffusers.models.attention_processor import Attention

from testing_utils import randomise_new_layers, tiny_unet_config
from f2d2_diffusers import F2D2ModelOutput, F2D2UNet2DModel
from f2d2_diffusers.models.attention import ForwardADAttnProcessor
from f2d2_diffusers.models.utils import copy_teacher_weights


_PLAIN_BLOCKS = dict(down_block_types=("DownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "UpBlock2D"))

#: UNet2DModel configurations whose forward F2D2UNet2DModel.forward must reproduce (only the positional time
#: embedding is supported, see test_bad_inputs_and_configs_are_rejected).
UNET_CONFIGS = {
    "attention_blocks": {},
    "no_attention": dict(_PLAIN_BLOCKS, add_attention=False),
    "class_embedding_table": dict(num_class_embeds=10),
    "timestep_class_embedding": dict(class_embed_type="timestep"),
    "identity_class_embedding": dict(class_embed_type="identity"),
    "centred_input_scale_shift": dict(center_input_sample=True, resnet_time_scale_shift="scale_shift"),
    # Skip blocks carry a second, RGB-only path (skip_sample) through the network; their attention needs 32 groups.
    "skip_blocks": dict(
        in_channels=3, out_channels=3, block_out_channels=(32, 64), norm_num_groups=8,
        down_block_types=("SkipDownBlock2D", "AttnSkipDownBlock2D"), up_block_types=("AttnSkipUpBlock2D", "SkipUpBlock2D"),
    ),
    "resnet_resampling_no_mid_block": dict(
        down_block_types=("ResnetDownsampleBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "ResnetUpsampleBlock2D"),
        downsample_type="resnet", upsample_type="resnet", mid_block_type=None, flip_sin_to_cos=False, freq_shift=1,
        time_embedding_dim=24,
    ),
}


def _class_labels(config):
    if config.get("num_class_embeds"):
        return torch.tensor([0, 3, 9])
    if config.get("class_embed_type") == "timestep":
        return torch.tensor([1.0, 250.0, 800.0])
    if config.get("class_embed_type") == "identity":
        return torch.randn(3, 4 * config.get("block_out_channels", (8,))[0], generator=torch.Generator().manual_seed(2))
    return None


@pytest.mark.parametrize("name", list(UNET_CONFIGS))
def test_forward_reproduces_unet2dmodel_when_the_new_layers_are_zero(name):
    """F2D2UNet2DModel.forward is adapted from UNet2DModel.forward: with the step embedding at zero (as
    from_teacher leaves it) its velocity must equal the teacher's, for every step and configuration. A change to
    UNet2DModel.forward in diffusers that the copy does not follow fails here."""
    torch.manual_seed(0)
    config = tiny_unet_config(**UNET_CONFIGS[name])
    teacher = UNet2DModel(**config).eval()
    student = F2D2UNet2DModel.from_teacher(teacher).eval()
    assert not any(p.is_meta for p in student.parameters())
    # The student's attention returns a contiguous tensor (for forward-mode AD), which moves the next group norm's
    # float32 rounding by ~1e-6 on some CPUs (AVX2): give the teacher the same processor, so that the comparison
    # stays exact and tests the copied forward alone.
    for module in teacher.modules():
        if isinstance(module, Attention):
            module.set_processor(ForwardADAttnProcessor())
    x = torch.randn(3, config["in_channels"], 8, 8, generator=torch.Generator().manual_seed(1))
    t = torch.tensor([10.5, 500.25, 990.0])  # fractional: UNet2DModel keeps float tensors as they are
    labels = _class_labels(config)
    with torch.no_grad():
        expected = teacher(x, t, class_labels=labels).sample
        assert expected.abs().mean() > 1e-2
        for step in (0.0, -250.0, 1000.0):
            out = student(x, t, step, class_labels=labels)
            torch.testing.assert_close(out.sample, expected, rtol=0, atol=1e-6)
            torch.testing.assert_close(out.divergence, torch.zeros(3))
        # A live divergence head changes the divergence only, never the velocity.
        randomise_new_layers(student)
        student.step_embedding.linear_2.weight.zero_()
        student.step_embedding.linear_2.bias.zero_()
        out = student(x, t, -250.0, class_labels=labels)
        torch.testing.assert_close(out.sample, expected, rtol=0, atol=1e-6)
        assert out.divergence.abs().min() > 0
        if labels is not None:
            # The class input is really used by both models (same change in each).
            other = teacher(x, t, class_labels=labels.flip(0)).sample
            assert not torch.allclose(other, expected)
            torch.testing.assert_close(student(x, t, -250.0, class_labels=labels.flip(0)).sample, other, rtol=0, atol=1e-6)


def _normalised_source(function) -> str:
    """``function``'s code without docstring, annotations, comments or formatting (``ast.unparse``)."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(function)))
    node = tree.body[0]
    if node.body and isinstance(node.body[0], ast.Expr) and isinstance(getattr(node.body[0], "value", None), ast.Constant):
        node.body = node.body[1:]
    node.returns, node.decorator_list = None, []
    for arg in ast.walk(node.args):
        if isinstance(arg, ast.arg):
            arg.annotation = None
    return ast.unparse(node)


#: sha256 of ``_normalised_source(UNet2DModel.forward)`` for the diffusers version F2D2UNet2DModel.forward was
#: adapted from (0.42.1; see the comment above F2D2UNet2DModel.forward).
UNET2D_FORWARD_FINGERPRINT = "ac1a5fe67cc05a859e104f7687664770f827c901495ed25676bdb4e7a8e3f7c0"


def test_unet2dmodel_forward_is_the_version_f2d2_forward_was_adapted_from():
    fingerprint = hashlib.sha256(_normalised_source(UNet2DModel.forward).encode()).hexdigest()
    assert fingerprint == UNET2D_FORWARD_FINGERPRINT, (
        f"diffusers {diffusers.__version__} changed UNet2DModel.forward (fingerprint {fingerprint}). "
        "F2D2UNet2DModel.forward is a copy of it plus the step embedding and divergence head: compare the two, port "
        "the change, update the version in the comment above F2D2UNet2DModel.forward and this fingerprint."
    )
    # Every argument of the parent's forward is still accepted, under the same name.
    parent = list(inspect.signature(UNet2DModel.forward).parameters)
    ours = list(inspect.signature(F2D2UNet2DModel.forward).parameters)
    assert [p for p in parent if p not in ours] == []


@pytest.mark.parametrize("size", [8, 16])
def test_outputs_shapes_and_divergence_scale(tiny_f2d2_unet, size):
    """The head predicts the divergence per dimension; forward returns it times d = C*H*W."""
    raw = []
    hook = tiny_f2d2_unet.divergence_out.register_forward_hook(lambda module, args, output: raw.append(output))
    x = torch.randn(2, 1, size, size)
    t, step = torch.tensor([100.0, 900.0]), torch.tensor([-100.0, 50.0])
    with torch.no_grad():
        out = tiny_f2d2_unet(x, t, step)
        velocity, divergence = tiny_f2d2_unet(x, t, step, return_dict=False)
    hook.remove()
    assert isinstance(out, F2D2ModelOutput)
    assert out.sample.shape == x.shape and out.divergence.shape == (2,)
    torch.testing.assert_close(out.divergence, raw[0].squeeze(-1) * size * size)
    assert raw[0].abs().min() > 0
    torch.testing.assert_close(velocity, out.sample)
    torch.testing.assert_close(divergence, out.divergence)


def test_fractional_timesteps_and_steps_matter(tiny_f2d2_unet):
    x = torch.randn(1, 1, 8, 8)
    with torch.no_grad():
        a = tiny_f2d2_unet(x, 0.4, 0.0).sample
        b = tiny_f2d2_unet(x, 0.0, 0.0).sample
        c = tiny_f2d2_unet(x, 0.4, -0.6).divergence
        d = tiny_f2d2_unet(x, 0.4, 0.6).divergence
    assert not torch.allclose(a, b)
    assert not torch.allclose(c, d)


def test_save_load_round_trip_keeps_config_and_outputs(tiny_f2d2_unet, tmp_path):
    tiny_f2d2_unet.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["_class_name"] == "F2D2UNet2DModel"
    assert config["divergence_head_resolution"] == 8 and config["block_out_channels"] == [8, 16]
    assert (tmp_path / "diffusion_pytorch_model.safetensors").exists()
    loaded = F2D2UNet2DModel.from_pretrained(tmp_path).eval()
    x = torch.randn(2, 1, 8, 8)
    with torch.no_grad():
        a, b = tiny_f2d2_unet(x, 300.0, -300.0), loaded(x, 300.0, -300.0)
    torch.testing.assert_close(a.sample, b.sample)
    torch.testing.assert_close(a.divergence, b.divergence)


def test_bad_inputs_and_configs_are_rejected(tiny_f2d2_unet):
    with pytest.raises(ValueError, match="shape"):
        tiny_f2d2_unet(torch.randn(2, 3, 8, 8), 1.0, 0.0)
    with pytest.raises(ValueError, match="one value per sample"):
        tiny_f2d2_unet(torch.randn(2, 1, 8, 8), torch.ones(3), 0.0)
    for time_embedding_type in ("fourier", "learned"):
        with pytest.raises(ValueError, match="positional"):
            F2D2UNet2DModel(**tiny_unet_config(time_embedding_type=time_embedding_type, num_train_timesteps=1000))
    with pytest.raises(ValueError, match="teacher and student"):
        copy_teacher_weights(F2D2UNet2DModel(**tiny_unet_config()), torch.nn.Linear(2, 2), ("step_embedding.",))


def test_jvp_through_a_unet_without_attention_matches_finite_differences():
    torch.manual_seed(0)
    config = tiny_unet_config(
        down_block_types=("DownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "UpBlock2D"), add_attention=False
    )
    model = randomise_new_layers(F2D2UNet2DModel(**config)).double().eval()
    x, tangent = torch.randn(2, 1, 8, 8, dtype=torch.float64), torch.randn(2, 1, 8, 8, dtype=torch.float64)
    t = torch.tensor([200.0, 700.0], dtype=torch.float64)

    def u(z, s):
        return model(z, s, -100.0).sample

    # diffusers' sinusoidal projection runs in float32, so the time direction needs a larger difference step.
    ones, zeros = torch.ones(2, dtype=torch.float64), torch.zeros(2, dtype=torch.float64)
    for (dx, dt), eps, tol in [((tangent, zeros), 1e-6, 1e-6), ((0 * tangent, ones), 0.05, 1e-3)]:
        _, jvp = torch.func.jvp(u, (x, t), (dx, dt))
        fd = (u(x + eps * dx, t + eps * dt) - u(x - eps * dx, t - eps * dt)) / (2 * eps)
        torch.testing.assert_close(jvp, fd, rtol=tol, atol=tol)


def test_from_teacher_ignores_extra_saved_config_entries(tmp_path):
    """An EMA-saved teacher's config carries EMA state (decay, ...); the student takes only model arguments."""
    torch.manual_seed(0)
    teacher = UNet2DModel(**tiny_unet_config())
    teacher.register_to_config(decay=0.999, optimization_step=10)
    student = F2D2UNet2DModel.from_teacher(teacher)
    assert "decay" not in student.config and student.config.block_out_channels == (8, 16)


def test_from_teacher_drops_the_teachers_dropout():
    """Dropout regularised the teacher's training; the student copies its eval-mode function without it."""
    torch.manual_seed(0)
    teacher = UNet2DModel(**tiny_unet_config(dropout=0.3)).eval()
    student = F2D2UNet2DModel.from_teacher(teacher)
    assert student.config.dropout == 0.0 and F2D2UNet2DModel.from_teacher(teacher, dropout=0.1).config.dropout == 0.1
    x = torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    t = torch.tensor([10.0, 700.0])
    with torch.no_grad():
        # In training mode too the student is deterministic, and equal to the teacher in eval mode.
        torch.testing.assert_close(student.train()(x, t).sample, teacher(x, t).sample)


def test_the_forward_ad_attention_processor_changes_nothing_but_rounding():
    import copy

    torch.manual_seed(0)
    config = tiny_unet_config(**UNET_CONFIGS["skip_blocks"])
    default = UNet2DModel(**config).eval()
    patched = copy.deepcopy(default)
    for module in patched.modules():
        if isinstance(module, Attention):
            module.set_processor(ForwardADAttnProcessor())
    x = torch.randn(3, config["in_channels"], 8, 8, generator=torch.Generator().manual_seed(1))
    t = torch.tensor([10.5, 500.25, 990.0])
    with torch.no_grad():
        torch.testing.assert_close(patched(x, t).sample, default(x, t).sample, rtol=1e-5, atol=1e-5)


def test_step_embedding_scale_rescales_the_step_input(tmp_path):
    torch.manual_seed(0)
    base = randomise_new_layers(F2D2UNet2DModel(**tiny_unet_config())).eval()
    scaled = F2D2UNet2DModel(**{**base.config, "step_embedding_scale": 0.25}).eval()
    scaled.load_state_dict(base.state_dict())
    x = torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(scaled(x, 400.0, 800.0).sample, base(x, 400.0, 200.0).sample)
    scaled.save_pretrained(tmp_path)
    assert F2D2UNet2DModel.from_pretrained(tmp_path).config.step_embedding_scale == 0.25

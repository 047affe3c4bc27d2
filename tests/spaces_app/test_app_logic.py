"""The Space's logic without a server: input conversion, parsing, the registries and the three actions."""

import numpy as np
import PIL.Image
import pytest
import torch
from space_helpers import (
    APP_DIR, DIGITS, MISSING, NO_TEACHER, POINTS, SAMPLER_2D, SAMPLER_4D, SAMPLER_MISSING, SAMPLER_NO_EXACT,
    require_demo_dependencies, tiny_points_pipeline, tiny_points_teacher, tiny_registry, tiny_sampler_registry,
)

from f2d2_diffusers.data import load_digits_levels

require_demo_dependencies()

from actions import DemoActions  # noqa: E402
from content import EXPLAIN_PLOTS, MAX_IMAGE_BATCH, MAX_POINTS  # noqa: E402
from errors import InputError, ModelUnavailable  # noqa: E402
from inputs import example_digit, example_points, load_points_file, parse_points, prepare_image  # noqa: E402
from registry import ModelRegistry, ModelSpec, default_registry  # noqa: E402
from render import explain_plots  # noqa: E402
from sampler_actions import SamplerActions, _log_z_line, true_log_z  # noqa: E402
from sampler_registry import SAMPLER_NAMES, SamplerRegistry, SamplerSpec  # noqa: E402
from ui import build_demo, user_errors  # noqa: E402


@pytest.fixture(scope="module")
def actions(tmp_path_factory):
    return DemoActions(tiny_registry(tmp_path_factory.mktemp("registry")))


@pytest.fixture(scope="module")
def sampler_actions(tmp_path_factory):
    return SamplerActions(tiny_sampler_registry(tmp_path_factory.mktemp("samplers")))


# -- image conversion ------------------------------------------------------------------------------------------


def test_prepare_image_keeps_an_8x8_digit_exactly():
    levels = load_digits_levels("test")[5, 0].numpy().astype(np.int64)
    image = PIL.Image.fromarray(np.rint(levels * 255 / 16).astype(np.uint8), mode="L")
    converted, notes = prepare_image(image, (1, 8, 8), 17)
    assert converted.shape == (8, 8, 1)
    np.testing.assert_array_equal(converted[..., 0], levels)
    text = " ".join(notes)
    assert "Inverted" not in text and "Resized" not in text and "Cropped" not in text
    assert "17 levels" in text


def test_prepare_image_inverts_resizes_and_greys_a_dark_on_light_drawing():
    levels = load_digits_levels("test")[0, 0].numpy().astype(np.float64)
    dark_on_light = PIL.Image.fromarray((255 - levels * 255 / 16).round().astype(np.uint8), mode="L")
    rgb = dark_on_light.resize((200, 200), PIL.Image.Resampling.NEAREST).convert("RGB")
    converted, notes = prepare_image(rgb, (1, 8, 8), 17)
    text = " ".join(notes)
    assert "Read a 200x200 RGB image" in text
    assert "Converted to one grey channel" in text and "Inverted" in text and "Resized from" in text and "to 8x8" in text
    assert converted.min() >= 0 and converted.max() <= 16 and converted.dtype == np.int64
    # Background dark, strokes light again; the digit fills its frame, so it is not cropped and comes back exactly.
    assert "Cropped" not in text
    np.testing.assert_array_equal(converted[..., 0], levels)


def test_prepare_image_crops_a_small_drawing():
    canvas = PIL.Image.new("L", (256, 256), 255)
    canvas.paste(0, (100, 60, 140, 140))  # a dark bar, 40x80 px, in a big white canvas
    converted, notes = prepare_image(canvas, (1, 8, 8), 17)
    text = " ".join(notes)
    assert "Cropped to the strokes" in text and "Resized from 92x92 to 8x8" in text
    assert converted[..., 0].max() == 16 and converted[0].max() < 16  # the bar now fills most of the height
    assert converted[3:5, 3:5, 0].min() == 16


def test_prepare_image_reports_real_colour():
    image = PIL.Image.new("RGB", (16, 16), (0, 0, 0))
    image.paste((200, 30, 30), (4, 4, 12, 12))
    _, notes = prepare_image(image, (1, 8, 8), 17)
    assert "Converted colour to greyscale." in notes


def test_prepare_image_fills_transparency_against_the_strokes():
    rgba = np.zeros((64, 64, 4), dtype=np.uint8)
    rgba[16:48, 28:36] = (0, 0, 0, 255)  # a black stroke on a transparent background
    converted, notes = prepare_image(PIL.Image.fromarray(rgba, mode="RGBA"), (1, 8, 8), 17)
    text = " ".join(notes)
    assert "Filled transparent areas with white" in text and "Inverted" in text
    assert converted.max() == 16 and converted[0, 0, 0] == 0


def test_prepare_image_rgb_model_keeps_colour():
    image = PIL.Image.new("RGB", (32, 32), (255, 0, 0))
    converted, notes = prepare_image(image, (3, 8, 8), 256)
    assert converted.shape == (8, 8, 3)
    assert tuple(converted[0, 0]) == (255, 0, 0)
    assert not any("Inverted" in n for n in notes)


# -- points -----------------------------------------------------------------------------------------------------


def test_parse_points_header_comments_and_separators():
    points, notes = parse_points("x, y\n# a comment\n1, 2\n\n3.5 -4\n5;6e-1\n", 2)
    np.testing.assert_allclose(points, [[1, 2], [3.5, -4], [5, 0.6]])
    assert "Skipped a header line" in " ".join(notes)


@pytest.mark.parametrize(
    "text, message",
    [
        ("1, nan", "NaN or infinite"),
        ("1, inf", "NaN or infinite"),
        ("1, two", "'two' is not a number"),
        ("1, 2\n3, x", "Line 2: 'x' is not a number"),
        ("1, 2, 3", "has 3 value"),
        ("   \n# only a comment", "No points found"),
    ],
)
def test_parse_points_rejects_bad_input(text, message):
    with pytest.raises(InputError, match=message):
        parse_points(text, 2)


def test_parse_points_limits_the_count():
    text = "\n".join("0, 0" for _ in range(MAX_POINTS + 1))
    with pytest.raises(InputError, match="Too many points"):
        parse_points(text, 2)


def test_load_points_file_npy_and_csv(tmp_path):
    np.save(tmp_path / "p.npy", np.array([[0.0, 1.0], [2.0, 3.0]]))
    points, _ = load_points_file(tmp_path / "p.npy", 2)
    assert points.shape == (2, 2)
    (tmp_path / "p.csv").write_text("a,b\n1,2\n")
    points, notes = load_points_file(tmp_path / "p.csv", 2)
    assert points.tolist() == [[1.0, 2.0]]
    np.save(tmp_path / "bad.npy", np.array([[np.nan, 1.0]]))
    with pytest.raises(InputError, match="NaN"):
        load_points_file(tmp_path / "bad.npy", 2)
    (tmp_path / "p.json").write_text("[]")
    with pytest.raises(InputError, match="Unsupported file type"):
        load_points_file(tmp_path / "p.json", 2)


# -- registry ---------------------------------------------------------------------------------------------------


def test_registry_is_lazy_and_caches(tmp_path):
    calls = []

    def factory():
        calls.append(1)
        return tiny_points_pipeline()

    registry = ModelRegistry([ModelSpec("m", pipeline_factory=factory)])
    assert calls == []
    assert registry.pipeline("m") is registry.pipeline("m")
    assert registry.likelihood_pipeline("m").unet is registry.pipeline("m").unet
    assert calls == [1]
    with pytest.raises(InputError, match="Unknown model"):
        registry.pipeline("nope")
    with pytest.raises(ModelUnavailable, match="no teacher configured"):
        registry.teacher("m")


def test_missing_checkpoint_has_a_clear_message(tmp_path):
    (tmp_path / "half-trained" / "logs").mkdir(parents=True)
    registry = ModelRegistry(
        [
            ModelSpec("gone", source=str(tmp_path / "gone"), missing_hint="Train it."),
            ModelSpec("half", source=str(tmp_path / "half-trained")),
        ]
    )
    with pytest.raises(ModelUnavailable, match=r"'gone' checkpoint is not available: no folder at .*gone\. Train it\."):
        registry.pipeline("gone")
    with pytest.raises(ModelUnavailable, match="has no model_index.json"):
        registry.pipeline("half")
    assert "missing" in registry.status("gone")


def test_default_registry_loads_an_extra_model_from_the_environment(tmp_path, monkeypatch):
    """F2D2_EXTRA_MODEL / F2D2_EXTRA_TEACHER go through the real from_pretrained loading, offline."""
    tiny_points_pipeline().save_pretrained(tmp_path / "f2d2")
    tiny_points_teacher().save_pretrained(tmp_path / "teacher" / "unet")
    monkeypatch.setenv("F2D2_EXTRA_MODEL", str(tmp_path / "f2d2"))
    monkeypatch.setenv("F2D2_EXTRA_TEACHER", str(tmp_path / "teacher"))
    monkeypatch.setenv("F2D2_EXTRA_MODEL_NAME", "my model")
    monkeypatch.setenv("F2D2_DIGITS_MODEL", str(tmp_path / "no-digits"))
    registry = default_registry()
    assert registry.names[-1] == "my model" and len(registry.names) == 5  # 2 Shortcut-F2D2, 2 MeanFlow-F2D2, the extra
    assert "ready" in registry.status("my model")
    assert "missing" in registry.status(registry.names[0])
    actions = DemoActions(registry)
    table, summary, preview, details = actions.likelihood("my model", points="0.5, -0.5\n1, 1", reference=True)
    assert [row[0] for row in table["data"]][:4] == ["F2D2, 1 step", "F2D2, 2 steps", "F2D2, 4 steps", "F2D2, 8 steps"]
    assert details["reference"]["nfe"] > 8 and "dopri5" in details["reference"]["method"]
    with pytest.raises(ModelUnavailable, match="not available"):
        actions.sample(registry.names[0])


# -- actions ----------------------------------------------------------------------------------------------------


def test_sample_digits_gives_a_log_prob_per_sample(actions):
    grid, table, summary, details, teacher = actions.sample(DIGITS, 2, 7, 6, 3)
    assert isinstance(grid, PIL.Image.Image) and isinstance(teacher, PIL.Image.Image)
    assert details["nfe"] == 2 and len(details["log_prob"]) == 6 and len(table["data"]) == 6
    assert all(np.isfinite(details["log_prob"]))
    assert details["teacher"]["nfe"] == 3
    assert "2 network call(s)" in summary and "Teacher: **3 Euler steps" in summary
    # The same seed gives the same samples and values.
    assert actions.sample(DIGITS, 2, 7, 6, 0)[3]["log_prob"] == details["log_prob"]


def test_sample_vectors_and_limits(actions):
    grid, table, summary, details, teacher = actions.sample(POINTS, 1, 0, 300, 0)
    assert teacher is None and details["nfe"] == 1 and len(table["data"]) == 300
    assert table["headers"] == ["sample", "x1", "x2", "log p (nats)", "bits/dim"]
    assert "continuous density" in summary
    with pytest.raises(InputError, match="too large for images"):
        actions.sample(DIGITS, 1, 0, MAX_IMAGE_BATCH + 1, 0)
    with pytest.raises(InputError, match="Sampling steps must be from 1 to 8"):
        actions.sample(DIGITS, 9, 0, 1, 0)
    with pytest.raises(InputError, match="whole number"):
        actions.sample(DIGITS, 1.5, 0, 1, 0)
    # No teacher: sampling still works, and says why there is no comparison.
    *_, summary, details, teacher = actions.sample(NO_TEACHER, 1, 0, 4, 5)
    assert teacher is None and details["teacher"] is None and "no teacher configured" in summary


def test_sample_with_self_guidance_counts_its_network_passes(actions):
    plain = actions.sample(DIGITS, 2, 3, 4, 0)[3]
    assert plain["nfe"] == 2 and plain["ml_guidance_scale"] == 0 and plain["ml_guidance_steps"] == 0
    # 0 (the default) is off: the same samples as without the argument.
    assert actions.sample(DIGITS, 2, 3, 4, 0, 0, 3)[3]["log_prob"] == plain["log_prob"]
    grid, table, summary, details, _ = actions.sample(DIGITS, 2, 3, 4, 0, 0.2, 2)
    assert details["nfe"] == 2 + 2 * 2 and details["ml_guidance_scale"] == 0.2 and details["ml_guidance_steps"] == 2
    assert "in **6 network call(s)**" in summary and "2 sampling call(s) plus 4 for 2 self-guidance step(s)" in summary
    assert details["log_prob"] != plain["log_prob"]  # the guided noise gives other samples
    # Vector models too; the teacher starts from the unguided noise and says so.
    *_, summary, details, teacher = actions.sample(POINTS, 1, 0, 8, 2, 0.5, 1)
    assert details["nfe"] == 3 and teacher is not None and "before self-guidance" in summary


def test_sample_rescoring_encodes_the_returned_samples(actions):
    plain = actions.sample(DIGITS, 2, 3, 4, 0)
    assert plain[3]["log_prob_steps"] == 0 and "free: it belongs to the path" in plain[2]
    _, table, summary, details, _ = actions.sample(DIGITS, 2, 3, 4, 0, 0, 1, 2)
    assert details["nfe"] == 4 and details["log_prob_steps"] == 2 and len(table["data"]) == 4
    assert "plus 2 to re-score the samples" in summary and "encoding each returned sample in 2" in summary
    assert details["log_prob"] != plain[3]["log_prob"]  # the same samples, scored where they are
    with pytest.raises(InputError, match="Re-scoring steps must be from 0 to 8"):
        actions.sample(DIGITS, 2, 3, 4, 0, 0, 1, 9)


@pytest.mark.parametrize(
    "scale, steps, message",
    [
        (1.5, 1, "Self-guidance scale must be from 0 to 1, got 1.5"),
        (-0.1, 1, "Self-guidance scale must be from 0 to 1"),
        ("strong", 1, "Self-guidance scale must be a number from 0 to 1, got 'strong'"),
        (float("nan"), 1, "Self-guidance scale must be a number from 0 to 1, got nan"),
        (0.2, 5, "Guidance steps must be from 1 to 4, got 5"),
        (0.2, 0, "Guidance steps must be from 1 to 4, got 0"),
    ],
)
def test_sample_rejects_bad_guidance(actions, scale, steps, message):
    with pytest.raises(InputError, match=message):
        actions.sample(DIGITS, 1, 0, 2, 0, scale, steps)


# -- energy sampler ---------------------------------------------------------------------------------------------


def test_energy_sampler_2d_draws_the_samples_over_the_density(sampler_actions):
    figure, summary, details = sampler_actions.energy_sampler(SAMPLER_2D, 2, 64, 5)
    assert isinstance(figure, PIL.Image.Image) and figure.size[0] > 300
    assert details["nfe"] == 2 and details["num_samples"] == 64 and details["dimensions"] == 2
    assert details["plot"] == "log-density" and details["exact_samples_shown"] is False
    assert details["true_log_Z"] == 0.0 and details["true_log_Z_kind"] == "exact"
    assert details["abs_error"] == pytest.approx(abs(details["log_Z"]), abs=1e-3)
    assert 1 <= details["ess"] <= 64 and np.isfinite(details["elbo"])
    assert "in **2 network call(s)** per sample" in summary and "true log Z 0.0000" in summary
    assert "Effective sample size" in summary and "ELBO" in summary and "log-density" in summary
    # The same seed gives the same estimate.
    assert sampler_actions.energy_sampler(SAMPLER_2D, 2, 64, 5)[2]["log_Z"] == details["log_Z"]


def test_energy_sampler_higher_d_shows_two_coordinates_beside_exact_samples(sampler_actions):
    _, summary, details = sampler_actions.energy_sampler(SAMPLER_4D, 1, 32, 0)
    assert details["plot"] == "first two coordinates" and details["exact_samples_shown"] is True
    assert "beside exact samples of the target" in summary
    # No exact sampler: the figure says so, and the stored reference value (with its standard error) stands in.
    _, summary, details = sampler_actions.energy_sampler(SAMPLER_NO_EXACT, 1, 32, 0)
    assert details["exact_samples_shown"] is False and "no exact sampler" in summary
    assert details["true_log_Z"] == -14.0 and details["true_log_Z_kind"] == "reference estimate"
    assert details["true_log_Z_standard_error"] == 0.05 and "reference log Z -14.0000 ± 0.0500" in summary


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        (dict(num_samples=0), InputError, "Number of samples must be from 1 to 4000, got 0"),
        (dict(num_samples=4001), InputError, "Number of samples must be from 1 to 4000"),
        (dict(num_samples=2.5), InputError, "Number of samples must be a whole number"),
        (dict(num_steps=17), InputError, "Sampling steps must be from 1 to 16"),
        (dict(seed=-1), InputError, "Seed must be from 0"),
        (dict(sampler="no such sampler"), InputError, "Unknown sampler 'no such sampler'; choose one of: tiny sampler"),
        (dict(sampler=SAMPLER_MISSING), ModelUnavailable, r"'missing sampler checkpoint' checkpoint is not available: "
                                                          r"no folder at .*no-such-sampler\. Train it first\."),
    ],
)
def test_energy_sampler_bad_input(sampler_actions, kwargs, error, message):
    arguments = dict(sampler=SAMPLER_2D, num_steps=1, num_samples=8, seed=0)
    arguments.update(kwargs)
    with pytest.raises(error, match=message):
        sampler_actions.energy_sampler(**arguments)


def test_sampler_registry_is_lazy_and_caches(tmp_path):
    from space_helpers import tiny_sampler_pipeline

    from f2d2_diffusers.targets import GMMGridTarget

    calls = []

    def factory():
        calls.append(1)
        return tiny_sampler_pipeline(GMMGridTarget())

    registry = SamplerRegistry([SamplerSpec("s", pipeline_factory=factory), SamplerSpec("gone", source=str(tmp_path / "x"))])
    assert calls == [] and registry.first_available() == "s"
    assert registry.pipeline("s") is registry.pipeline("s") and calls == [1]
    assert "missing" in registry.status("gone") and str(tmp_path) not in registry.status_markdown()


def test_true_log_z_kinds():
    from f2d2_diffusers.targets import BreastCancerTarget, FunnelTarget, GaussianTarget

    assert true_log_z(FunnelTarget()) == (0.0, None, "exact")
    assert true_log_z(BreastCancerTarget()) == (-55.2258, 0.0033, "reference estimate")
    target = GaussianTarget([0.0, 0.0], [1.0, 1.0])
    target.log_Z = None
    assert true_log_z(target) == (None, None, "unknown")
    assert "true log Z is not known" in _log_z_line(1.0, None, None, "unknown", None)


def test_likelihood_same_point_for_every_method(actions, digit_png):
    table, summary, preview, details = actions.likelihood(DIGITS, image=PIL.Image.open(digit_png), seed=3, reference=True)
    assert [r["nfe"] for r in details["results"]] == [1, 2, 4, 8]
    assert details["dimensions"] == 64 and details["num_levels"] == 17
    ref = details["reference"]
    assert ref is not None and table["data"][-1][0].startswith("Teacher ODE")
    for row, result in zip(table["data"], details["results"]):
        assert row[5] == pytest.approx(result["bits_per_dim"] - ref["bits_per_dim"], abs=1e-3)
    assert preview.size[0] >= 8
    # A second identical request reuses the cached reference.
    assert actions.likelihood(DIGITS, image=PIL.Image.open(digit_png), seed=3, reference=True)[3]["reference"]["cached"] is True


def test_likelihood_matches_the_pipeline_called_directly(actions, digit_png):
    """The app's numbers are the library's: dequantise with the seed, then F2D2LikelihoodPipeline."""
    from f2d2_diffusers import dequantize

    registry = actions.registry
    image = PIL.Image.open(digit_png)
    details = actions.likelihood(DIGITS, image=image, reference=False, seed=11)[3]
    levels, _ = prepare_image(image, (1, 8, 8), 17)
    x = dequantize(torch.from_numpy(levels).permute(2, 0, 1)[None], 17, torch.Generator().manual_seed(11))
    direct = registry.likelihood_pipeline(DIGITS)(x, num_inference_steps=4, dequantize=False)
    assert details["results"][2]["bits_per_dim"] == pytest.approx(float(direct.bits_per_dim[0]), abs=1e-4)
    assert details["reference"] is None


def test_likelihood_input_choice_and_errors(actions):
    sketch = {"background": None, "layers": [], "composite": PIL.Image.new("RGB", (64, 64), "white")}
    with pytest.raises(InputError, match="No image"):
        actions.likelihood(DIGITS, image=None, sketch=sketch)  # a blank sketch is no input
    drawn = PIL.Image.new("RGB", (64, 64), "white")
    drawn.paste((0, 0, 0), (28, 8, 36, 56))
    details = actions.likelihood(DIGITS, sketch={"composite": drawn}, reference=False)[3]
    assert details["input_notes"][0] == "Input: the drawing." and any("Inverted" in n for n in details["input_notes"])
    with pytest.raises(InputError, match="No points"):
        actions.likelihood(POINTS, points="  ")
    with pytest.raises(ModelUnavailable, match="not available"):
        actions.likelihood(MISSING, points="1, 2")
    details = actions.likelihood(NO_TEACHER, points="1, 2", reference=True)[3]
    assert details["reference"] is None


def test_user_errors_turns_exceptions_into_gradio_errors():
    import gradio as gr

    @user_errors
    def boom(kind):
        raise {"input": InputError("bad input"), "other": RuntimeError("oops")}[kind]

    with pytest.raises(gr.Error, match="bad input"):
        boom("input")
    with pytest.raises(gr.Error, match="RuntimeError: oops.*still running"):
        boom("other")


def test_explain_plots_present_and_absent(tmp_path):
    items, status = explain_plots(roots=(tmp_path,))
    assert items == [] and "not there yet" in status and "No plot yet" in status
    target = tmp_path / EXPLAIN_PLOTS[0][0]
    target.parent.mkdir(parents=True)
    PIL.Image.new("RGB", (40, 30), "red").save(target)
    items, status = explain_plots(roots=(tmp_path,))
    assert len(items) == 1 and items[0][0].size == (40, 30)
    assert EXPLAIN_PLOTS[1][0] in status


def test_prepare_space_writes_a_deployable_folder(tmp_path):
    import prepare_space

    plot_root = tmp_path / "repo"
    for relative, _ in EXPLAIN_PLOTS:
        (plot_root / relative).parent.mkdir(parents=True, exist_ok=True)
        PIL.Image.new("RGB", (4, 4)).save(plot_root / relative)
    root = tmp_path / "checkpoints"
    (root / "f2d2-x" / "unet").mkdir(parents=True)
    (root / "f2d2-x" / "unet" / "config.json").write_text("{}")
    (root / "f2d2-x" / "model_index.json").write_text("{}")
    (root / "f2d2-x" / "checkpoint-100").mkdir()
    (root / "f2d2-x" / "logs").mkdir()
    (root / "only-logs" / "logs").mkdir(parents=True)
    # An energy sampler keeps its weights in model/, with the pipeline.py shim at the top.
    (root / "sampler-x" / "model").mkdir(parents=True)
    (root / "sampler-x" / "model" / "config.json").write_text("{}")
    (root / "sampler-x" / "model_index.json").write_text("{}")
    (root / "sampler-x" / "pipeline.py").write_text("")
    (root / "sampler-x" / "logs").mkdir()
    out = tmp_path / "space"
    copied = prepare_space.prepare(out, ["f2d2-x", "only-logs", "sampler-x"], checkpoint_root=root, plot_root=plot_root)
    assert copied == ["f2d2-x", "sampler-x"]
    for name in ("model_index.json", "pipeline.py", "model/config.json"):
        assert (out / "checkpoints" / "sampler-x" / name).is_file(), name
    assert not (out / "checkpoints" / "sampler-x" / "logs").exists()
    # The shipped samplers are in the Space by default.
    assert set(SAMPLER_NAMES) <= set(prepare_space.CHECKPOINTS)
    for name in ("app.py", "README.md", "requirements.txt", "f2d2_diffusers/__init__.py",
                 "checkpoints/f2d2-x/model_index.json", "checkpoints/f2d2-x/unet/config.json"):
        assert (out / name).is_file(), name
    # Every module of the app, and every plot the Explain tab lists, goes with it; the assembly script does not.
    for module in ("content.py", "errors.py", "registry.py", "inputs.py", "render.py", "actions.py", "ui.py",
                   "components.py", "sampler_registry.py", "sampler_actions.py", "sampler_tab.py"):
        assert (out / module).is_file(), module
    assert not (out / "prepare_space.py").exists()
    for relative, _ in EXPLAIN_PLOTS:
        assert (out / relative).is_file(), relative
    assert not (out / "checkpoints" / "f2d2-x" / "checkpoint-100").exists()
    assert not (out / "checkpoints" / "f2d2-x" / "logs").exists()
    front_matter = (out / "README.md").read_text().split("---")[1]
    assert "sdk: gradio" in front_matter and "app_file: app.py" in front_matter
    with pytest.raises(SystemExit, match="not empty"):
        prepare_space.prepare(out, [])


def test_building_the_demo_writes_nothing_next_to_the_app(tmp_path):
    """gradio writes a .pyi stub next to the source of any component subclass; the app must not define one."""
    build_demo(tiny_registry(tmp_path))
    assert not (APP_DIR / "app.pyi").exists()
    assert not list(APP_DIR.glob("*.pyi"))  # nor next to any of its modules


def test_examples_and_default_model(tmp_path):
    digit = example_digit()
    assert digit.size == (256, 256) and digit.mode == "L"
    points, _ = parse_points(example_points(5), 2)
    assert points.shape == (5, 2)
    registry = ModelRegistry(
        [ModelSpec("gone", source=str(tmp_path / "gone")), ModelSpec("here", pipeline_factory=tiny_points_pipeline)]
    )
    assert registry.first_available() == "here"


# -- bad and edge inputs ----------------------------------------------------------------------------------------


def test_prepare_image_reads_a_16_bit_digit_like_its_8_bit_version():
    """16-bit PNGs were clipped to 8 bits (a 16-bit digit scored 6.0 bits/dim against 2.8 in 8 bits)."""
    import io

    levels = load_digits_levels("test")[5, 0].numpy().astype(np.int64)
    pixels = np.rint(levels * 255 / 16).astype(np.uint16)
    png = io.BytesIO()
    PIL.Image.fromarray(pixels * 257).save(png, format="PNG")
    converted, notes = prepare_image(PIL.Image.open(io.BytesIO(png.getvalue())), (1, 8, 8), 17)
    np.testing.assert_array_equal(converted[..., 0], levels)
    assert "Scaled its 16-bit grey values 0-65535 to 8 bits (0-255)." in notes


@pytest.mark.parametrize("mode, dtype", [("I", np.int32), ("F", np.float32)])
def test_prepare_image_refuses_images_without_a_fixed_range(mode, dtype):
    image = PIL.Image.fromarray(np.full((8, 8), 100, dtype=dtype))
    assert image.mode == mode
    with pytest.raises(InputError, match=f"mode {mode}.*save it as an 8- or 16-bit PNG"):
        prepare_image(image, (1, 8, 8), 17)


def test_points_far_out_are_an_error_not_null(actions):
    """Points at 1e30 gave NaN log-likelihoods, which the Space showed as null."""
    with pytest.raises(InputError, match="Cannot score this input: the network's output is NaN or infinite on it.*far outside"):
        actions.likelihood(POINTS, points="1e30, 1e30", reference=False)


def test_number_fields_answer_text_with_a_message_naming_the_field(tmp_path):
    """``/sample`` with a non-numeric step count failed in gradio's own check with a bare TypeError."""
    import gradio as gr

    demo = build_demo(tiny_registry(tmp_path))
    sample = next(fn for fn in demo.fns.values() if fn.api_name == "sample")
    steps, seed = sample.inputs[1], sample.inputs[2]
    with pytest.raises(gr.Error, match=r"Sampling steps \(network calls\): expected a number, got 'two'"):
        steps.preprocess("two")
    with pytest.raises(gr.Error, match=r"Sampling steps \(network calls\): expected a number, got None"):
        steps.preprocess(None)
    with pytest.raises(gr.Error, match="Seed: expected a number"):
        seed.preprocess([1])
    assert steps.preprocess("3") == 3 and seed.preprocess(" 7 ") == 7
    with pytest.raises(gr.Error, match="Sampling steps .*greater than maximum"):
        steps.preprocess("99")

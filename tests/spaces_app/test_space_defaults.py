"""The Space's defaults for a first visit: fast (no reference ODE unless asked), readable before the first run, with
ready-made examples from embedded data, model names (not paths), and a deploy command for the current ``hf`` CLI."""

import inspect
import os
import socket
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
from space_helpers import (
    APP_DIR, DIGITS, POINTS, SAMPLER_2D, require_demo_dependencies, tiny_registry, tiny_sampler_registry,
)

require_demo_dependencies()

import content  # noqa: E402
from actions import DemoActions  # noqa: E402
from inputs import EXAMPLE_IMAGES, parse_points  # noqa: E402
from registry import CHECKERBOARD_MODEL_NAME, DIGITS_MODEL_NAME, MEANFLOW_MODEL_NAMES, default_registry  # noqa: E402
from sampler_actions import SamplerActions  # noqa: E402
from sampler_registry import SAMPLER_NAMES, default_sampler_registry  # noqa: E402
from sampler_tab import sampler_examples  # noqa: E402
from ui import build_demo, likelihood_examples, sample_examples  # noqa: E402

from f2d2_diffusers.data import DIGITS_NUM_LEVELS, load_digits_levels  # noqa: E402

REPO_ROOT = APP_DIR.parent
#: The removed Hugging Face CLI script, spelled so that this file does not contain it.
OLD_CLI = "huggingface" + "-cli"


def components(demo, kind=None):
    """``{elem_id or label: props}`` of the demo's components (of ``kind``, e.g. ``"dataset"``), from its config."""
    found = {}
    for c in demo.get_config_file()["components"]:
        if kind is None or c["type"] == kind:
            props = c["props"]
            key = props.get("elem_id") or props.get("label")
            if key is None:  # unnamed (e.g. plain text): not looked up
                continue
            assert key not in found, f"two {kind} components named {key!r}"
            found[key] = props
    return found


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    folder = tmp_path_factory.mktemp("registry")
    return build_demo(tiny_registry(folder), tiny_sampler_registry(folder))


@pytest.fixture
def no_network(monkeypatch):
    """Any attempt to open a network connection fails the test."""

    def refuse(*args, **kwargs):
        raise AssertionError(f"network access attempted: {args!r}")

    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)


# -- the reference ODE is opt-in -------------------------------------------------------------------------------


def test_reference_ode_is_off_by_default_and_says_it_is_slow(demo, tmp_path):
    checkbox = components(demo, "checkbox")["likelihood-reference"]
    assert checkbox["value"] is False
    assert "slow" in checkbox["label"].lower() and "reference ODE" in checkbox["label"]
    # The API default (what a client gets without passing `reference`) and the action's default are the same.
    likelihood = next(fn for fn in demo.fns.values() if fn.api_name == "likelihood")
    assert inspect.signature(likelihood.fn).parameters["reference"].default is False
    assert inspect.signature(DemoActions.likelihood).parameters["reference"].default is False
    # Without it, no teacher solve runs, and the summary says how to get it.
    actions = DemoActions(tiny_registry(tmp_path))
    table, summary, _, details = actions.likelihood(POINTS, points="0.5, -1\n1, 1")
    assert details["reference"] is None and not any(row[0].startswith("Teacher") for row in table["data"])
    assert "Also run the teacher's reference ODE" in summary


# -- model names, not paths ------------------------------------------------------------------------------------


def test_model_choices_are_names_mapped_to_existing_checkpoints(monkeypatch):
    for variable in ("F2D2_DIGITS_MODEL", "F2D2_DIGITS_TEACHER", "F2D2_CHECKERBOARD_MODEL",
                     "F2D2_CHECKERBOARD_TEACHER", "F2D2_EXTRA_MODEL"):
        monkeypatch.delenv(variable, raising=False)
    registry = default_registry()
    meanflow = [name for name, _, _ in MEANFLOW_MODEL_NAMES.values()]
    assert registry.names == [DIGITS_MODEL_NAME, CHECKERBOARD_MODEL_NAME, *meanflow]
    demo = build_demo(registry)  # lazy: builds without loading a model
    dropdowns = components(demo, "dropdown")
    assert set(dropdowns) == {"sample-model", "likelihood-model", "sampler-model"}
    dropdowns.pop("sampler-model")  # the energy samplers: see the next test
    for props in dropdowns.values():
        shown = [label for label, _ in props["choices"]]
        values = [value for _, value in props["choices"]]
        assert shown == values == registry.names
        for name in shown:
            assert "/" not in name and os.sep not in name and "checkpoints" not in name
            assert not Path(name).exists()
    # Each name maps to a shipped checkpoint folder (and its teacher) inside the repository.
    for name, folder, teacher in ((DIGITS_MODEL_NAME, "f2d2-digits", "fm-digits"),
                                  (CHECKERBOARD_MODEL_NAME, "f2d2-checkerboard", "fm-checkerboard"),
                                  *((name, folder, teacher) for folder, (name, teacher, _) in MEANFLOW_MODEL_NAMES.items())):
        assert name.startswith(folder + " (")
        spec = registry.spec(name)
        assert Path(spec.source).resolve() == (REPO_ROOT / "checkpoints" / folder).resolve()
        assert (Path(spec.source) / "model_index.json").is_file()
        assert (Path(spec.teacher_source) / "unet").is_dir()
        assert Path(spec.teacher_source).name == teacher
    # The model list in the UI shows no path either; the earlier names still resolve (old API clients).
    status = registry.status_markdown()
    assert "checkpoints/" not in status and str(REPO_ROOT) not in status
    assert registry.spec("digits (8x8, 17 grey levels)").name == DIGITS_MODEL_NAME
    assert registry.spec("checkerboard (2-D points)").name == CHECKERBOARD_MODEL_NAME


def test_sampler_choices_are_names_mapped_to_the_shipped_sampler_checkpoints():
    registry = default_sampler_registry()
    assert registry.names == [name for name, _ in SAMPLER_NAMES.values()]
    props = components(build_demo(sampler_registry=registry), "dropdown")["sampler-model"]
    assert [label for label, _ in props["choices"]] == [value for _, value in props["choices"]] == registry.names
    assert props["value"] == registry.names[0] and props["label"] == "Sampler"
    for folder, (name, steps) in SAMPLER_NAMES.items():
        assert name.startswith(folder + " (") and "-D)" in name and "/" not in name and os.sep not in name
        source = Path(registry.spec(name).source)
        assert source.resolve() == (REPO_ROOT / "checkpoints" / folder).resolve()
        assert (source / "model_index.json").is_file() and (source / "model").is_dir()
        assert registry.status(name) == "ready" and 1 <= steps <= content.MAX_SAMPLER_STEPS
    assert "checkpoints/" not in registry.status_markdown()


def test_an_extra_model_is_named_by_its_folder_not_its_path(monkeypatch, tmp_path):
    monkeypatch.setenv("F2D2_EXTRA_MODEL", str(tmp_path / "runs" / "f2d2-mnist"))
    monkeypatch.delenv("F2D2_EXTRA_MODEL_NAME", raising=False)
    name = default_registry().names[-1]
    assert name == "f2d2-mnist (F2D2, custom)" and str(tmp_path) not in name


# -- examples --------------------------------------------------------------------------------------------------


def test_every_tab_has_examples_from_embedded_data(demo, tmp_path, no_network):
    datasets = components(demo, "dataset")
    assert {"sample-examples", "likelihood-image-examples", "likelihood-point-examples", "sampler-examples"} <= set(datasets)
    dropdowns = components(demo, "dropdown")
    choices = {value for _, value in dropdowns["likelihood-model"]["choices"]}
    sampler_choices = {value for _, value in dropdowns["sampler-model"]["choices"]}
    for key, props in datasets.items():
        assert props["samples"] and len(props["sample_labels"]) == len(props["samples"])
        # every example names a listed model (or sampler)
        assert all(row[0] in (sampler_choices if key == "sampler-examples" else choices) for row in props["samples"])
    # Sample examples: whole settings rows for an image and a 2-D model, and one with self-guidance where measured.
    rows, labels = sample_examples(tiny_registry(tmp_path))
    assert {row[0] for row in rows} == {DIGITS, POINTS} and all(len(row) == 8 for row in rows)
    assert [row[5:7] for row in rows].count([0.2, 1]) == 1 and "self-guidance" in labels[-1]
    assert [row[7] for row in rows].count(2) == 1 and "re-scored" in labels[[row[7] for row in rows].index(2)]
    # Energy sampler examples: one per sampler, at its example steps.
    rows, labels = sampler_examples(tiny_sampler_registry(tmp_path))
    assert rows[0] == [SAMPLER_2D, 2, 2000, 0] and labels[0].endswith("2000 samples in 2 steps")
    # Likelihood examples, made without the network: digits from scikit-learn's bundled test split, 2-D toy points.
    image_rows, image_labels, point_rows, _ = likelihood_examples(tiny_registry(tmp_path), tmp_path / "examples")
    assert [Path(path).name for _, path in image_rows] == [name for name, _, _ in EXAMPLE_IMAGES]
    test_digit = load_digits_levels("test")[3, 0].numpy()
    first = np.asarray(PIL.Image.open(image_rows[0][1]).resize((8, 8), PIL.Image.Resampling.NEAREST), dtype=np.float64)
    np.testing.assert_array_equal(np.rint(first * (DIGITS_NUM_LEVELS - 1) / 255), test_digit)
    for _, text in point_rows:
        assert parse_points(text, 2)[0].shape == (12, 2)
    # In the app, the image examples are served from files gradio may read.
    served = datasets["likelihood-image-examples"]["samples"]
    assert all(Path(row[1]["path"]).is_file() for row in served)


def test_examples_run(tmp_path):
    """Each kind of example gives a result with the tiny models (what a click then the button does)."""
    registry = tiny_registry(tmp_path)
    actions = DemoActions(registry)
    rows = sample_examples(registry)[0]
    model, steps, seed, batch, teacher, scale, guidance_steps, rescore = rows[0]
    assert actions.sample(model, steps, seed, batch, teacher, scale, guidance_steps, rescore)[3]["nfe"] == steps
    model, steps, seed, batch, teacher, scale, guidance_steps, rescore = rows[-1]  # the self-guided one
    assert actions.sample(model, steps, seed, 2, teacher, scale, guidance_steps, rescore)[3]["nfe"] == steps + 2 * guidance_steps
    model, steps, seed, batch, teacher, scale, guidance_steps, rescore = next(row for row in rows if row[7])
    assert actions.sample(model, steps, seed, 2, teacher, scale, guidance_steps, rescore)[3]["nfe"] == steps + rescore
    sampler, steps, _, seed = sampler_examples(tiny_sampler_registry(tmp_path))[0][0]
    assert SamplerActions(tiny_sampler_registry(tmp_path)).energy_sampler(sampler, steps, 16, seed)[2]["nfe"] == steps
    image_rows, _, point_rows, _ = likelihood_examples(registry, tmp_path / "examples")
    for model, path in image_rows:
        details = actions.likelihood(model, image=PIL.Image.open(path))[3]
        assert len(details["results"]) == 4
    for model, text in point_rows:
        assert actions.likelihood(model, points=text)[3]["num_inputs"] == 12


# -- empty states ----------------------------------------------------------------------------------------------


def test_panels_explain_themselves_before_the_first_run(demo):
    markdown = components(demo, "markdown")
    sample, likelihood = markdown["sample-summary"]["value"], markdown["likelihood-summary"]["value"]
    assert sample == content.SAMPLE_EMPTY_TEXT and "**Generate**" in sample and "table" in sample
    assert likelihood == content.LIKELIHOOD_EMPTY_TEXT and "**Compute likelihood**" in likelihood
    assert "table" in likelihood
    # The browser test waits for these words in the summaries after a run: the empty text must not contain them.
    assert "network call" not in sample and "result" not in likelihood.lower()
    sampler = markdown["sampler-summary"]["value"]
    assert sampler == content.SAMPLER_EMPTY_TEXT and "**Generate**" in sampler and "log Z" in sampler
    assert "network call" not in sampler
    # No placeholder headers: the tables (and the pictures) appear with the first result.
    tables = components(demo, "dataframe")
    assert tables["sample-table"]["visible"] is False and tables["likelihood-table"]["visible"] is False
    hidden_images = [p for p in components(demo, "image").values() if p.get("visible") is False]
    assert {p["label"] for p in hidden_images} >= {
        "F2D2 samples, each with its log p (nats)", "What the model scored", "Samples over the target density"}


# -- self-guidance is off unless asked for ---------------------------------------------------------------------


def test_self_guidance_is_off_by_default_and_says_where_it_helps(demo):
    sliders = {props["label"]: props for props in components(demo, "slider").values()}
    scale, steps = sliders["Self-guidance scale"], sliders["Guidance steps"]
    assert scale["value"] == 0 and (scale["minimum"], scale["maximum"]) == (0, 1)
    assert steps["value"] == 1 and (steps["minimum"], steps["maximum"]) == (1, 4)
    assert "MeanFlow digits" in scale["info"] and "0.2" in scale["info"] and "checkerboard" in scale["info"]
    # The API defaults are the same, last in /sample, so that positional callers keep working.
    sample = next(fn for fn in demo.fns.values() if fn.api_name == "sample")
    parameters = list(inspect.signature(sample.fn).parameters.values())
    assert [(p.name, p.default) for p in parameters[-3:]] == [("ml_guidance_scale", 0.0), ("ml_guidance_steps", 1),
                                                             ("log_prob_steps", 0)]
    assert inspect.signature(DemoActions.sample).parameters["ml_guidance_scale"].default == 0


# -- deployment ------------------------------------------------------------------------------------------------


def test_deploy_command_uses_the_hf_cli(tmp_path, capsys):
    import prepare_space

    assert "hf upload <user>/<space-name> /tmp/f2d2-space . --repo-type=space" in content.DEPLOY_COMMANDS
    assert "hf auth login" in content.DEPLOY_COMMANDS
    assert "hf upload" in prepare_space.__doc__ and OLD_CLI not in prepare_space.__doc__
    readme = (APP_DIR / "README.md").read_text()
    for line in content.DEPLOY_COMMANDS.splitlines():
        assert line in readme
    prepare_space.main([str(tmp_path / "space"), "--checkpoints"])
    out = capsys.readouterr().out
    assert f"hf upload <user>/<space-name> {tmp_path / 'space'} . --repo-type=space" in out


def test_no_mention_of_the_removed_cli_anywhere_in_the_repository():
    skip_dirs = {".git", ".venv", "venv", "outputs", "node_modules", "__pycache__", ".pytest_cache", "wandb"}
    suffixes = {".py", ".md", ".txt", ".toml", ".cfg", ".ini", ".yaml", ".yml", ".json", ".sh", ".ipynb", ".jinja"}
    offenders = []
    for root, dirs, files in os.walk(REPO_ROOT):
        dirs[:] = [d for d in dirs if d not in skip_dirs and not d.startswith(".incomplete")]
        for name in files:
            path = Path(root) / name
            if path.suffix not in suffixes or path.stat().st_size > 5_000_000:
                continue
            try:
                text = path.read_text(errors="ignore")
            except OSError:
                continue
            if OLD_CLI in text:
                offenders.append(str(path.relative_to(REPO_ROOT)))
    assert not offenders, f"{OLD_CLI} (removed; use `hf`) is mentioned in: {offenders}"

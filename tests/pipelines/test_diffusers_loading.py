"""Folders load like any diffusers model: ``DiffusionPipeline.from_pretrained(folder_or_repo, trust_remote_code=True)``
through the shims of ``make_diffusers_loadable`` (locally, and from a Hub cache the way an online download leaves it),
while the package's classes keep loading them without remote code; teachers are stock ``DDPMPipeline`` folders (images)
or ``FlowMatchingEulerPipeline`` ones (vectors).

diffusers writes the remote code it runs into ``HF_MODULES_CACHE`` (under ``HF_HOME``), so the ``DiffusionPipeline``
loads run in a subprocess with a temporary ``HF_HOME``.
"""

import ast
import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from diffusers import FlowMatchEulerDiscreteScheduler, UNet2DModel

import f2d2_diffusers
from f2d2_diffusers import (
    F2D2LikelihoodPipeline, F2D2MLPModel, F2D2Pipeline, F2D2Scheduler, FlowMatchingEulerPipeline, FlowMatchingMLPModel,
    load_teacher, teacher_euler_sample,
)
from f2d2_diffusers.hub import files_to_upload, make_diffusers_loadable, upload_contents
from f2d2_diffusers.pipelines import diffusers_loading
from f2d2_diffusers.pipelines.diffusers_loading import MISSING_PACKAGE_MESSAGE, PACKAGE_CLASSES, shim_source

from testing_utils import randomise_new_layers, tiny_unet_config

REPO = Path(__file__).resolve().parents[2]
COMMIT = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture
def mlp_pipeline_folder(tmp_path):
    torch.manual_seed(0)
    unet = randomise_new_layers(F2D2MLPModel(sample_size=2, hidden_dim=16, num_layers=1, time_embed_dim=8))
    folder = tmp_path / "f2d2-tiny"
    F2D2Pipeline(unet=unet, scheduler=F2D2Scheduler(), num_levels=None).save_pretrained(folder)
    return folder


@pytest.fixture
def image_teacher_folder(tmp_path):
    torch.manual_seed(0)
    folder = tmp_path / "fm-tiny-images"
    UNet2DModel(**tiny_unet_config()).save_pretrained(folder / "unet")
    FlowMatchEulerDiscreteScheduler().save_pretrained(folder / "scheduler")
    return folder


@pytest.fixture
def vector_teacher_folder(tmp_path):
    torch.manual_seed(0)
    folder = tmp_path / "fm-tiny-vectors"
    FlowMatchingMLPModel(sample_size=2, hidden_dim=16, num_layers=1, time_embed_dim=8).save_pretrained(folder / "unet")
    FlowMatchEulerDiscreteScheduler().save_pretrained(folder / "scheduler")
    return folder


def read_index(folder):
    return json.loads((Path(folder) / "model_index.json").read_text())


def test_package_classes_name_their_modules():
    for name, module in PACKAGE_CLASSES.items():
        assert getattr(f2d2_diffusers, name).__module__ == module


def test_layout_of_a_pipeline_folder_is_idempotent_and_keeps_weights(mlp_pipeline_folder):
    weights = (mlp_pipeline_folder / "unet" / "diffusion_pytorch_model.safetensors").read_bytes()
    written = make_diffusers_loadable(str(mlp_pipeline_folder))
    assert written == ["pipeline.py", "scheduler/scheduling_f2d2.py", "unet/mlp_f2d2.py", "model_index.json"]
    index = read_index(mlp_pipeline_folder)
    assert index["_class_name"] == ["pipeline", "F2D2Pipeline"]
    assert index["unet"] == ["mlp_f2d2", "F2D2MLPModel"] and index["scheduler"] == ["scheduling_f2d2", "F2D2Scheduler"]
    assert index["num_levels"] is None
    snapshot = {p: (mlp_pipeline_folder / p).read_bytes() for p in files_to_upload(str(mlp_pipeline_folder))}
    make_diffusers_loadable(str(mlp_pipeline_folder))
    assert {p: (mlp_pipeline_folder / p).read_bytes() for p in files_to_upload(str(mlp_pipeline_folder))} == snapshot
    assert snapshot["unet/diffusion_pytorch_model.safetensors"] == weights
    # The shims are imports from the installed package, nothing else.
    shim = (mlp_pipeline_folder / "pipeline.py").read_text()
    assert "from f2d2_diffusers.pipelines.pipeline_f2d2 import F2D2Pipeline" in shim
    tree = ast.parse(shim)
    assert not [node for node in ast.walk(tree) if isinstance(node, (ast.ClassDef, ast.FunctionDef))]


def test_package_classes_load_shimmed_folders_without_remote_code(mlp_pipeline_folder):
    before = F2D2Pipeline.from_pretrained(mlp_pipeline_folder)
    make_diffusers_loadable(str(mlp_pipeline_folder))
    for cls in (F2D2Pipeline, F2D2LikelihoodPipeline):
        pipe = cls.from_pretrained(mlp_pipeline_folder)  # no trust_remote_code: the shims are not run
        assert type(pipe) is cls and type(pipe.unet) is F2D2MLPModel and type(pipe.scheduler) is F2D2Scheduler
    for a, b in zip(before.unet.parameters(), pipe.unet.parameters()):
        torch.testing.assert_close(a, b)
    # Saving again writes diffusers' plain form; the package reads both.
    pipe.save_pretrained(mlp_pipeline_folder / "again")
    assert read_index(mlp_pipeline_folder / "again")["_class_name"] == "F2D2LikelihoodPipeline"


def test_shim_without_the_package_says_how_to_install_it():
    source = shim_source("F2D2Pipeline", "pipeline", "F2D2Pipeline")
    real_import = __import__

    def no_package(name, *args, **kwargs):
        if name.startswith("f2d2_diffusers"):
            raise ModuleNotFoundError(f"No module named {name!r}")
        return real_import(name, *args, **kwargs)

    namespace = {"__builtins__": {**__builtins__, "__import__": no_package} if isinstance(__builtins__, dict)
                 else {**vars(__builtins__), "__import__": no_package}}
    with pytest.raises(ImportError) as info:
        exec(compile(source, "pipeline.py", "exec"), namespace)
    message = str(info.value)
    assert message == MISSING_PACKAGE_MESSAGE.format(what="pipeline class F2D2Pipeline", name="F2D2Pipeline")
    assert "not on PyPI" in message and "pip install ./f2d2-diffusers" in message and "trust_remote_code=True" in message
    assert isinstance(info.value.__cause__, ModuleNotFoundError)


def test_teacher_folders_get_a_model_index_and_keep_loading(image_teacher_folder, vector_teacher_folder):
    for folder in (image_teacher_folder, vector_teacher_folder):
        old = load_teacher(folder)
        make_diffusers_loadable(str(folder))
        new = load_teacher(folder)  # f2d2_diffusers.load_teacher: old (no model_index.json) and new folders
        assert type(new) is type(old)
    assert read_index(image_teacher_folder) == {
        "_class_name": "DDPMPipeline", "_diffusers_version": read_index(image_teacher_folder)["_diffusers_version"],
        "scheduler": ["diffusers", "FlowMatchEulerDiscreteScheduler"], "unet": ["diffusers", "UNet2DModel"],
    }
    assert not (image_teacher_folder / "pipeline.py").exists()  # stock diffusers: no remote code
    index = read_index(vector_teacher_folder)
    assert index["_class_name"] == ["pipeline", "FlowMatchingEulerPipeline"]
    assert index["unet"] == ["mlp_flow_matching", "FlowMatchingMLPModel"]
    assert (vector_teacher_folder / "unet" / "mlp_flow_matching.py").is_file()


def test_flow_matching_euler_pipeline_is_the_teachers_euler_sampler(vector_teacher_folder):
    make_diffusers_loadable(str(vector_teacher_folder))
    pipe = FlowMatchingEulerPipeline.from_pretrained(vector_teacher_folder)
    pipe.set_progress_bar_config(disable=True)
    assert type(pipe.unet) is FlowMatchingMLPModel and type(pipe.scheduler) is FlowMatchEulerDiscreteScheduler
    noise = torch.randn(5, 2, generator=torch.Generator().manual_seed(0))
    out = pipe(num_inference_steps=7, latents=noise, output_type="pt").images
    torch.testing.assert_close(out, teacher_euler_sample(pipe.unet, noise, 7, pipe.scheduler))
    drawn = pipe(batch_size=3, num_inference_steps=2, generator=torch.Generator().manual_seed(0)).images
    assert drawn.shape == (3, 2)
    with pytest.raises(ValueError, match="'pil' needs image samples"):
        pipe(batch_size=1, output_type="pil")


def _hub_cache(cache: Path, repo_id: str, contents: dict) -> None:
    """A Hub cache as a download leaves it: snapshot files, ``refs/main`` and the tree listing ``trees/<commit>.json``
    (from which diffusers' offline path takes the repository's file list, as it would from the Hub online)."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    entries = {}
    for name, value in contents.items():
        data = Path(value).read_bytes() if isinstance(value, str) else value
        target = repo / "snapshots" / COMMIT / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
        entries[name] = {"size": len(data), "blob_id": hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()}
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(COMMIT)
    (repo / "trees").mkdir(exist_ok=True)
    (repo / "trees" / f"{COMMIT}.json").write_text(json.dumps({"format_version": 1, "files": entries}))


SCRIPT = r'''
import json, sys, torch
from diffusers import DiffusionPipeline
import f2d2_diffusers  # noqa: F401  (not needed by the loads below; imported to compare with the package's classes)
from f2d2_diffusers import F2D2Pipeline
cases, results = json.loads(sys.argv[1]), {}
if len(sys.argv) > 2:
    # diffusers asks the Hub for the commit hash of remote code (dynamic_modules_utils.get_cached_module_file calls
    # model_info) even when the files are cached, so offline it fails; here that one call answers with the cached commit.
    import types
    import diffusers.utils.dynamic_modules_utils as dynamic_modules_utils
    dynamic_modules_utils.model_info = lambda *args, **kwargs: types.SimpleNamespace(sha=sys.argv[2])
for name, (source, cls, kwargs) in cases.items():
    try:
        if cls == "DiffusionPipeline":
            pipe = DiffusionPipeline.from_pretrained(source, **kwargs)
        else:
            pipe = getattr(f2d2_diffusers, cls).from_pretrained(source, **kwargs)
    except Exception as err:
        results[name] = {"error": f"{type(err).__name__}: {err}"}
        continue
    pipe.set_progress_bar_config(disable=True)
    result = {"pipeline": type(pipe).__name__, "unet": type(pipe.unet).__name__, "scheduler": type(pipe.scheduler).__name__}
    if isinstance(pipe, F2D2Pipeline):
        out = pipe(batch_size=2, num_inference_steps=2, generator=torch.Generator().manual_seed(0), output_type="pt")
        result["log_prob"] = out.log_prob.tolist()
    else:
        out = pipe(batch_size=2, num_inference_steps=3, generator=torch.Generator().manual_seed(0), output_type="np")
        result["sample_sum"] = float(out.images.sum())
    results[name] = result
print("RESULTS " + json.dumps(results))
'''


def run_loads(tmp_path, cases, cache=None, stub_commit_lookup=False):
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path / "hf-home"), OMP_NUM_THREADS="1")
    args = [json.dumps(cases)]
    if cache is not None:
        env["HF_HUB_CACHE"] = str(cache)
    if stub_commit_lookup:
        args.append(COMMIT)
    proc = subprocess.run([sys.executable, "-c", SCRIPT, *args], env=env, capture_output=True, text=True,
                          timeout=600, cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    line = next(line for line in proc.stdout.splitlines() if line.startswith("RESULTS "))
    return json.loads(line[len("RESULTS "):])


@pytest.mark.slow
def test_diffusion_pipeline_loads_local_folders_and_hub_repos(tmp_path, mlp_pipeline_folder, image_teacher_folder,
                                                             vector_teacher_folder):
    old_layout = tmp_path / "old-layout"
    shutil.copytree(mlp_pipeline_folder, old_layout)  # as save_pretrained writes it: no shims
    for folder in (mlp_pipeline_folder, image_teacher_folder, vector_teacher_folder):
        make_diffusers_loadable(str(folder))
        (folder / "README.md").write_text("---\nlibrary_name: diffusers\n---\n# tiny\n")
    (old_layout / "README.md").write_text("---\nlibrary_name: diffusers\n---\n# tiny\n")
    cache = tmp_path / "hub-cache"
    for repo_id, folder in (("someone/f2d2-tiny", mlp_pipeline_folder), ("someone/fm-images", image_teacher_folder),
                            ("someone/fm-vectors", vector_teacher_folder), ("someone/old-layout", old_layout)):
        # What f2d2-push-to-hub uploads (an old-layout folder gets its shims in the upload).
        contents = upload_contents(str(folder), repo_id) if repo_id != "someone/old-layout" else {
            name: str(folder / name) for name in files_to_upload(str(folder))}
        _hub_cache(cache, repo_id, contents)
    trust = {"trust_remote_code": True}
    cases = {
        "local": (str(mlp_pipeline_folder), "DiffusionPipeline", trust),
        "local, no trust": (str(mlp_pipeline_folder), "DiffusionPipeline", {}),
        "local, package class": (str(mlp_pipeline_folder), "F2D2Pipeline", {}),
        "hub": ("someone/f2d2-tiny", "DiffusionPipeline", trust),
        "hub, no trust": ("someone/f2d2-tiny", "DiffusionPipeline", {}),
        "hub, package class": ("someone/f2d2-tiny", "F2D2Pipeline", {}),
        "hub, old layout, package class": ("someone/old-layout", "F2D2Pipeline", {}),
        "image teacher": (str(image_teacher_folder), "DiffusionPipeline", {}),
        "image teacher, hub": ("someone/fm-images", "DiffusionPipeline", {}),
        "vector teacher": (str(vector_teacher_folder), "DiffusionPipeline", trust),
        "vector teacher, hub": ("someone/fm-vectors", "DiffusionPipeline", trust),
        "vector teacher, package class": ("someone/fm-vectors", "FlowMatchingEulerPipeline", {}),
    }
    # The package's classes need nothing from the network; only diffusers' remote-code path gets its commit lookup stubbed.
    package = {name: case for name, case in cases.items() if case[1] != "DiffusionPipeline"}
    results = run_loads(tmp_path, package, cache)
    results.update(run_loads(tmp_path, {k: v for k, v in cases.items() if k not in package}, cache, stub_commit_lookup=True))
    f2d2 = {"pipeline": "F2D2Pipeline", "unet": "F2D2MLPModel", "scheduler": "F2D2Scheduler"}
    reference = results["local, package class"]["log_prob"]
    for name in ("local", "hub", "hub, package class", "hub, old layout, package class"):
        assert {k: results[name].get(k) for k in f2d2} == f2d2, (name, results[name])
        assert results[name]["log_prob"] == pytest.approx(reference, abs=1e-6)
    for name in ("local, no trust", "hub, no trust"):  # diffusers' own message says what to do
        assert "Pass `trust_remote_code=True` to allow loading remote code modules." in results[name]["error"]
    assert results["image teacher"]["pipeline"] == results["image teacher, hub"]["pipeline"] == "DDPMPipeline"
    assert results["image teacher"]["scheduler"] == "FlowMatchEulerDiscreteScheduler"
    for name in ("vector teacher", "vector teacher, hub", "vector teacher, package class"):
        assert results[name]["pipeline"] == "FlowMatchingEulerPipeline" and results[name]["unet"] == "FlowMatchingMLPModel"
    assert results["vector teacher"]["sample_sum"] == pytest.approx(results["vector teacher, hub"]["sample_sum"])


def test_ddpm_pipeline_samples_an_image_teacher_by_euler(image_teacher_folder):
    """diffusers' stock DDPMPipeline with the teacher's FlowMatchEulerDiscreteScheduler is Euler on the velocity."""
    from diffusers import DDPMPipeline

    make_diffusers_loadable(str(image_teacher_folder))
    pipe = DDPMPipeline.from_pretrained(image_teacher_folder)
    pipe.set_progress_bar_config(disable=True)
    assert type(pipe.scheduler) is FlowMatchEulerDiscreteScheduler
    images = pipe(batch_size=2, num_inference_steps=4, generator=torch.Generator().manual_seed(0), output_type="np").images
    x = torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    scheduler = FlowMatchEulerDiscreteScheduler.from_config(pipe.scheduler.config)
    scheduler.set_timesteps(4)
    with torch.no_grad():
        for t, sigma, sigma_next in zip(scheduler.timesteps, scheduler.sigmas[:-1], scheduler.sigmas[1:]):
            x = x + (sigma_next - sigma) * pipe.unet(x, t).sample  # Euler: x += h v(x, sigma)
    expected = ((x / 2 + 0.5).clamp(0, 1)).permute(0, 2, 3, 1).numpy()
    torch.testing.assert_close(torch.from_numpy(images), torch.from_numpy(expected), atol=1e-5, rtol=1e-5)


def test_the_shipped_folders_are_written_with_the_layout():
    for name in ("f2d2-digits", "f2d2-checkerboard"):
        index = read_index(REPO / "checkpoints" / name)
        assert index["_class_name"] == ["pipeline", "F2D2Pipeline"] and (REPO / "checkpoints" / name / "pipeline.py").is_file()
        for component in ("unet", "scheduler"):
            module, cls = index[component]
            assert (REPO / "checkpoints" / name / component / f"{module}.py").is_file() and cls in PACKAGE_CLASSES
    assert read_index(REPO / "checkpoints" / "fm-digits")["_class_name"] == "DDPMPipeline"
    assert read_index(REPO / "checkpoints" / "fm-checkerboard")["_class_name"] == ["pipeline", "FlowMatchingEulerPipeline"]
    # and the layout is what make_diffusers_loadable writes today
    for name in ("f2d2-digits", "f2d2-checkerboard", "fm-digits", "fm-checkerboard"):
        index, files = diffusers_loading.loadable_layout(str(REPO / "checkpoints" / name))
        assert read_index(REPO / "checkpoints" / name) == index
        for rel, text in files.items():
            assert (REPO / "checkpoints" / name / rel).read_text() == text


@pytest.mark.slow
def test_shipped_folders_load_with_diffusion_pipeline(tmp_path):
    trust = {"trust_remote_code": True}
    cases = {
        "f2d2-digits": ("checkpoints/f2d2-digits", "DiffusionPipeline", trust),
        "f2d2-digits, package": ("checkpoints/f2d2-digits", "F2D2Pipeline", {}),
        "f2d2-checkerboard": ("checkpoints/f2d2-checkerboard", "DiffusionPipeline", trust),
        "f2d2-checkerboard, package": ("checkpoints/f2d2-checkerboard", "F2D2Pipeline", {}),
        "fm-digits": ("checkpoints/fm-digits", "DiffusionPipeline", {}),
        "fm-checkerboard": ("checkpoints/fm-checkerboard", "DiffusionPipeline", trust),
    }
    results = run_loads(tmp_path, cases)
    for name in ("f2d2-digits", "f2d2-checkerboard"):
        assert results[name]["pipeline"] == "F2D2Pipeline", results[name]
        assert results[name]["log_prob"] == pytest.approx(results[f"{name}, package"]["log_prob"], abs=1e-6)
    assert results["fm-digits"]["pipeline"] == "DDPMPipeline" and results["fm-digits"]["unet"] == "UNet2DModel"
    assert results["fm-checkerboard"]["pipeline"] == "FlowMatchingEulerPipeline"

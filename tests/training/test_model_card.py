"""The model card template (model_card.md) as the training scripts fill it in, and its calibration section."""

from pathlib import Path
from types import SimpleNamespace

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def model_card():
    from f2d2_diffusers.training import model_card

    return model_card


ROWS = [
    dict(evaluation="reference", steps=None, nfe=200, value=3.1, error=0.0, abs_error=0.0, seconds=12.5),
    dict(evaluation="bidirectional", steps=2, nfe=2, value=3.12, error=0.02, abs_error=0.04, seconds=0.01),
]


def render(model_card, folder, **overrides):
    data = SimpleNamespace(kind="image", description="scikit-learn 8x8 digits, train split (1500 images, 17 grey levels)",
                           sample_shape=(1, 8, 8), num_levels=17, card_datasets=["sklearn-digits"])
    result = SimpleNamespace(global_step=100, last_logs={"loss": 0.5}, batch_description="64 x 1 x 1 = 64",
                             seconds=90.0, device_description="1 process(es) on cpu")
    kwargs = dict(is_f2d2=True, title="F2D2 joint flow map", summary="A map.", data=data, result=result,
                  command="accelerate launch training/train_f2d2.py --dataset digits", usage="pipe = ...",
                  calibration=model_card.calibration_markdown(ROWS, "bits/dim", "Measured on 2 digits."))
    kwargs.update(overrides)
    Path(folder).mkdir(parents=True, exist_ok=True)
    return Path(model_card.render_model_card(str(folder), **kwargs))


def test_card_has_hub_metadata_conventions_and_calibration(model_card, tmp_path):
    from huggingface_hub import ModelCard

    usage = model_card.f2d2_usage(tmp_path.name, "image", 17)
    path = render(model_card, tmp_path, base_model="someone/fm-digits", extra_tags=["f2d2"], usage=usage)
    card = ModelCard.load(path)
    assert card.data.library_name == "diffusers" and card.data.pipeline_tag == "unconditional-image-generation"
    assert card.data.base_model == "someone/fm-digits"
    # Hub ids or nothing: scikit-learn's digits are not a Hub dataset, bits/dim has no Hub metric id.
    assert card.data.datasets is None and card.data.metrics is None
    assert {"f2d2", "flow-matching", "unconditional-image-generation"} <= set(card.data.tags)
    text = card.text
    repo_id = tmp_path.name  # the placeholder: the output folder's name
    assert f'DiffusionPipeline.from_pretrained("{repo_id}", trust_remote_code=True)' in text
    assert text.index("DiffusionPipeline.from_pretrained") < text.index("F2D2Pipeline.from_pretrained")
    assert "pip install ./f2d2-diffusers" in text and "not on PyPI" in text
    assert "`L = 17` grey levels" in text and "d log 2 - d log L" in text and "`d` = 64" in text
    assert "| F2D2 bidirectional | 2 | 2 | 3.1200 | +0.0200 | 0.0400 | 0.01 |" in text
    assert "Wall time: 1.5 minutes (1 process(es) on cpu)." in text and "2512.02636" in text
    assert "base_model: not set" not in text


def test_model_index_is_the_calibration_table_in_the_hubs_format(model_card, tmp_path):
    from huggingface_hub import ModelCard, metadata_load
    from huggingface_hub.repocard_data import eval_results_to_model_index, model_index_to_eval_results

    path = render(model_card, tmp_path, extra_tags=["f2d2"], repo_id="someone/f2d2-digits")
    meta = metadata_load(path)
    name, results = model_index_to_eval_results(meta["model-index"])
    assert name == "someone/f2d2-digits"
    assert eval_results_to_model_index(name, results) == meta["model-index"]  # a lossless round trip
    by_name = {r.metric_name: r for r in results}
    assert by_name["bits/dim, 2 steps"].metric_value == 3.12 and by_name["bits/dim, 2 steps"].metric_type == "bits_per_dim"
    assert by_name["bits/dim error vs teacher ODE, 2 steps"].metric_value == 0.02
    assert by_name["bits/dim, teacher ODE (dopri5, 200 calls)"].metric_value == 3.1
    for r in results:
        assert r.task_type == "unconditional-image-generation" and r.dataset_name == "scikit-learn 8x8 digits"
    assert ModelCard.load(path).data.eval_results == results
    # No table, no model-index.
    path = render(model_card, tmp_path, extra_tags=["f2d2"], calibration="Not measured.")
    assert "model-index" not in metadata_load(path)


def test_local_teacher_base_model_is_omitted_with_a_note_or_taken_from_its_card(model_card, tmp_path):
    from huggingface_hub import ModelCard

    path = render(model_card, tmp_path / "student", base_model_note="the teacher was the local folder `fm-x`")
    (tmp_path / "student").mkdir(exist_ok=True)
    card = ModelCard.load(path)
    assert card.data.base_model is None
    assert "<!-- base_model: not set, the teacher was the local folder `fm-x`." in card.text
    # A local teacher whose card was written for a Hub id (--hub_model_id) gives that id.
    teacher = tmp_path / "fm-x"
    teacher.mkdir()
    (teacher / "README.md").write_text("---\nlibrary_name: diffusers\n---\n<!-- f2d2-diffusers repo_id: someone/fm-x -->\n")
    assert model_card.hub_base_model(str(teacher)) == "someone/fm-x"
    (teacher / "README.md").write_text("<!-- f2d2-diffusers repo_id: fm-x -->\n")  # a placeholder is not a Hub id
    assert model_card.hub_base_model(str(teacher)) is None


def test_no_absolute_local_paths_in_the_card(model_card, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "runs" / "f2d2-abs"
    out.mkdir(parents=True)
    command = (f"accelerate launch training/train_f2d2.py --teacher_model_name_or_path /elsewhere/fm-digits "
               f"--output_dir {out} --train_data_file=/data/points.npy")
    path = render(model_card, out, command=command, usage=model_card.f2d2_usage(model_card.card_repo_id(str(out)), "image", 17))
    text = path.read_text()
    assert str(tmp_path) not in text and "/elsewhere" not in text and "/data/" not in text
    assert "--output_dir runs/f2d2-abs" in text and "--teacher_model_name_or_path .../fm-digits" in text
    assert "--train_data_file=.../points.npy" in text and 'from_pretrained("f2d2-abs"' in text


def test_retarget_card_names_the_repository(model_card, tmp_path):
    from huggingface_hub import ModelCard

    path = render(model_card, tmp_path / "f2d2-digits", extra_tags=["f2d2"], repo_id="f2d2-digits",
                  usage=model_card.f2d2_usage("f2d2-digits", "image", 17), base_model_note="no teacher")
    text = model_card.retarget_card(path.read_text(), "someone/f2d2-digits", base_model="someone/fm-digits")
    assert '"f2d2-digits"' not in text and text.count('"someone/f2d2-digits"') == 3  # the intro and both loaders
    card = ModelCard(text)
    assert card.data.model_name == "someone/f2d2-digits" and card.data.base_model == "someone/fm-digits"
    assert "base_model: not set" not in text
    with pytest.raises(ValueError, match="Hub id"):
        model_card.retarget_card(path.read_text(), "someone/x", base_model="../fm-digits")


def test_teacher_card_for_vectors_has_no_image_tags(model_card, tmp_path):
    from huggingface_hub import ModelCard

    data = SimpleNamespace(kind="vector", description="2-D toy 'checkerboard' (100 points)", sample_shape=(2,),
                           num_levels=None, card_datasets=[])
    path = render(model_card, tmp_path, is_f2d2=False, data=data, calibration="The teacher is the reference.")
    card = ModelCard.load(path)
    assert card.data.pipeline_tag == "other" and "unconditional-image-generation" not in card.data.tags
    assert "trust_remote_code=True" in card.text and "continuous vectors, used as given" in card.text
    assert "model-index" not in card.data.to_dict()


def test_update_calibration_replaces_only_that_section(model_card, tmp_path):
    from huggingface_hub import ModelCard

    path = render(model_card, tmp_path, extra_tags=["f2d2"])
    before = path.read_text()
    rows = [dict(r, value=r["value"] + 1.0) for r in ROWS]
    model_card.update_calibration(str(tmp_path), model_card.calibration_markdown(rows, "bits/dim", "Measured again."))
    after = path.read_text()
    assert "Measured again." in after and "Measured on 2 digits." not in after
    start = before.index(model_card.CALIBRATION_START)
    end = before.index(model_card.CALIBRATION_END)
    body = before.index("<!-- Generated")
    assert after.endswith(before[end:]) and before[body:start] in after  # only the table and model-index change
    values = {r.metric_name: r.metric_value for r in ModelCard.load(path).data.eval_results}
    assert values["bits/dim, 2 steps"] == 4.12
    model_card.update_calibration(str(tmp_path), "New table.")
    assert "model-index" not in path.read_text().split("---")[1]
    path.write_text("# a card without the section\n")
    with pytest.raises(ValueError, match="no calibration section"):
        model_card.update_calibration(str(tmp_path), "x")
    with pytest.raises(FileNotFoundError):
        model_card.update_calibration(str(tmp_path / "nowhere"), "x")


def test_only_hub_ids_become_base_model(model_card, tmp_path):
    assert model_card.hub_base_model("someone/fm-digits") == "someone/fm-digits"
    assert model_card.hub_base_model(str(tmp_path)) is None
    assert model_card.hub_base_model("checkpoints/fm-digits-that-is-a-local-path/unet") is None
    assert model_card.hub_base_model(None) is None


SHIPPED = ["f2d2-digits", "f2d2-checkerboard", "fm-digits", "fm-checkerboard"]


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_cards_are_hub_valid_and_keep_their_measured_tables(model_card, name):
    from huggingface_hub import ModelCard, metadata_load
    from huggingface_hub.repocard_data import model_index_to_eval_results

    path = REPO / "checkpoints" / name / "README.md"
    card = ModelCard.load(path)
    meta = metadata_load(path)
    assert meta["library_name"] == "diffusers" and meta["pipeline_tag"] in ("unconditional-image-generation", "other")
    assert "metrics" not in meta and "datasets" not in meta  # no Hub ids exist for them
    assert "base_model" not in meta  # the teachers are local folders: said in a comment
    text = card.text
    assert f"<!-- f2d2-diffusers repo_id: {name} -->" in text and f'from_pretrained("{name}"' in text
    assert "/work/" not in path.read_text() and "/tmp/" not in path.read_text()
    if name.startswith("f2d2"):
        assert "<!-- base_model: not set, the teacher was the local folder `checkpoints/fm-" in text
        rows, unit = model_card.parse_calibration_markdown(text)
        assert len(rows) == 9 and rows[0]["evaluation"] == "reference"  # benchmarks/calibration.py's full measurement
        repo, results = model_index_to_eval_results(meta["model-index"])
        assert repo == name
        values = {r.metric_name: r.metric_value for r in results}
        steps2 = next(r for r in rows if r["evaluation"] == "bidirectional" and r["steps"] == 2)
        shown = "bits/dim" if unit == "bits/dim" else "NLL (nats)"
        assert values[f"{shown}, 2 steps"] == steps2["value"] and values[f"{shown} error vs teacher ODE, 2 steps"] == steps2["error"]
    else:
        assert "model-index" not in meta


def test_refresh_keeps_the_card_it_was_given(model_card, tmp_path):
    import shutil

    folder = tmp_path / "f2d2-digits"
    shutil.copytree(REPO / "checkpoints" / "f2d2-digits", folder, ignore=shutil.ignore_patterns("*.safetensors", "logs"))
    before = (folder / "README.md").read_text()
    model_card.refresh_model_card(str(folder))
    assert (folder / "README.md").read_text() == before  # the shipped card is what the template gives today


def test_template_is_the_repository_model_card_and_benchmarks_import_works():
    # benchmarks/calibration.py --update_card imports exactly this.
    from f2d2_diffusers.training.model_card import TEMPLATE_PATH, calibration_markdown, update_calibration

    assert TEMPLATE_PATH == REPO / "model_card.md" and TEMPLATE_PATH.is_file()
    assert callable(calibration_markdown) and callable(update_calibration)

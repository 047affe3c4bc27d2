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
    return Path(model_card.render_model_card(str(folder), **kwargs))


def test_card_has_hub_metadata_conventions_and_calibration(model_card, tmp_path):
    from huggingface_hub import ModelCard

    path = render(model_card, tmp_path, base_model="someone/fm-digits", extra_tags=["f2d2"])
    card = ModelCard.load(path)
    assert card.data.library_name == "diffusers" and card.data.pipeline_tag == "unconditional-image-generation"
    assert card.data.base_model == "someone/fm-digits" and card.data.datasets == ["sklearn-digits"]
    assert {"f2d2", "flow-matching", "unconditional-image-generation"} <= set(card.data.tags)
    assert card.data.metrics == ["bits-per-dim"]
    text = card.text
    assert "import them explicitly" in text  # the Hub's DiffusionPipeline snippet cannot find third-party classes
    assert "`L = 17` grey levels" in text and "d log 2 - d log L" in text and "`d` = 64" in text
    assert "| F2D2 bidirectional | 2 | 2 | 3.1200 | +0.0200 | 0.0400 | 0.01 |" in text
    assert "Wall time: 1.5 minutes (1 process(es) on cpu)." in text and "2512.02636" in text


def test_teacher_card_for_vectors_has_no_image_tags(model_card, tmp_path):
    from huggingface_hub import ModelCard

    data = SimpleNamespace(kind="vector", description="2-D toy 'checkerboard' (100 points)", sample_shape=(2,),
                           num_levels=None, card_datasets=[])
    path = render(model_card, tmp_path, is_f2d2=False, data=data, calibration="The teacher is the reference.")
    card = ModelCard.load(path)
    assert card.data.pipeline_tag is None and "unconditional-image-generation" not in card.data.tags
    assert "diffusers alone\nsamples it" in card.text and "continuous vectors, used as given" in card.text


def test_update_calibration_replaces_only_that_section(model_card, tmp_path):
    path = render(model_card, tmp_path)
    before = path.read_text()
    model_card.update_calibration(str(tmp_path), "New table.")
    after = path.read_text()
    assert "New table." in after and "Measured on 2 digits." not in after
    start = before.index(model_card.CALIBRATION_START)
    end = before.index(model_card.CALIBRATION_END)
    assert after.startswith(before[:start]) and after.endswith(before[end:])
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


def test_template_is_the_repository_model_card_and_benchmarks_import_works():
    # benchmarks/calibration.py --update_card imports exactly this.
    from f2d2_diffusers.training.model_card import TEMPLATE_PATH, calibration_markdown, update_calibration

    assert TEMPLATE_PATH == REPO / "model_card.md" and TEMPLATE_PATH.is_file()
    assert callable(calibration_markdown) and callable(update_calibration)

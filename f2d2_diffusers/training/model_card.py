"""Model cards: the repository's ``model_card.md`` template filled in by the training scripts.

The card's calibration section sits between two markers so that a later, fuller measurement
(``benchmarks/calibration.py --update_card``) can replace it without touching the rest.
"""

import math
import os
from pathlib import Path
from typing import Optional, Sequence

from ..hub import is_hub_repo_id
from .atomic import write_text_atomically

#: The template at the root of the checkout (``f2d2_diffusers/training/`` is two levels below it).
TEMPLATE_PATH = Path(__file__).resolve().parents[2] / "model_card.md"
CALIBRATION_START, CALIBRATION_END = "<!-- calibration:start -->", "<!-- calibration:end -->"

TIME_CONVENTION = (
    "diffusers' flow-matching convention: `sigma = 0` is data, `sigma = 1` is noise, "
    "`x_sigma = (1 - sigma) * x_data + sigma * eps`, and the model receives `timestep = 1000 * sigma` "
    "(the velocity is `dx/dsigma`, so sampling integrates from `sigma = 1` down to `sigma = 0`)."
)


def hub_base_model(teacher: Optional[str]) -> Optional[str]:
    """The teacher as the card's ``base_model``: only a Hub id qualifies, not a local folder."""
    if teacher and is_hub_repo_id(teacher):
        return teacher
    return None


def render_model_card(
    output_dir: str, *, is_f2d2: bool, title: str, summary: str, data, result, command: str, usage: str,
    details: Sequence[str] = (), base_model: Optional[str] = None, calibration: str = "", extra_tags: Sequence[str] = (),
) -> str:
    """Write ``output_dir/README.md`` from the template; returns its path.

    ``data`` is the run's ``TrainingData`` (description, sample shape, grey levels, Hub datasets), ``result`` its
    ``TrainingResult``; ``calibration`` is the markdown of the calibration section.
    """
    from huggingface_hub import ModelCard, ModelCardData

    is_image = data.kind == "image"
    tags = ["diffusers", "diffusers-training", "pytorch", "flow-matching", *extra_tags]
    if is_image:
        tags.insert(2, "unconditional-image-generation")
    metrics = (["bits-per-dim"] if data.num_levels else ["nll"]) if is_f2d2 else None
    card_data = ModelCardData(
        library_name="diffusers", license="apache-2.0", pipeline_tag="unconditional-image-generation" if is_image else None,
        tags=tags, datasets=list(data.card_datasets) or None, base_model=base_model, metrics=metrics,
    )
    loss = result.last_logs.get("loss")
    shape = f"`{tuple(data.sample_shape)}`"
    training_details = [
        f"Data: {data.description}.",
        f"Sample shape: {shape}" + (f"; images in [-1, 1], uniformly dequantised with {data.num_levels} grey levels."
                                    if is_image else "; continuous vectors, used as given."),
        f"Optimisation steps: {result.global_step}" + (f" (final training loss {loss:.4g})." if loss is not None else "."),
        *([f"Batch size: {result.batch_description}."] if result.batch_description else []),
        *([f"Wall time: {result.seconds / 60:.1f} minutes ({result.device_description})."] if result.seconds else []),
        *details,
    ]
    card = ModelCard.from_template(
        card_data, template_path=str(TEMPLATE_PATH), title=title, summary=summary, usage=usage.strip(),
        is_f2d2=is_f2d2, time_convention=TIME_CONVENTION, num_levels=data.num_levels,
        num_dims=math.prod(data.sample_shape), training_details=training_details, command=command,
        calibration=calibration.strip() or "Not measured.", data_short=data.description.split(" (")[0],
    )
    path = os.path.join(output_dir, "README.md")
    write_text_atomically(path, str(card))  # as card.save, but never a half-written card
    return path


def calibration_markdown(rows: Sequence[dict], unit: str, description: str) -> str:
    """A calibration table (rows of :func:`f2d2_diffusers.likelihood_calibration`) with one line saying what was measured."""
    value = "bits/dim" if unit == "bits/dim" else "NLL (nats)"
    lines = [
        description, "",
        f"| evaluation | steps | network calls | {value} | mean error | per-sample MAE | seconds |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        name = "teacher ODE (reference)" if r["evaluation"] == "reference" else f"F2D2 {r['evaluation']}"
        seconds = "" if r.get("seconds") is None else f"{r['seconds']:.2f}"
        lines.append(f"| {name} | {r['steps'] or '-'} | {r['nfe']} | {r['value']:.4f} | {r['error']:+.4f} | "
                     f"{r['abs_error']:.4f} | {seconds} |")
    lines += ["", f"Errors are F2D2 minus the reference, per sample, in {unit}. `bidirectional` = the encoding steps "
              "(`h > 0`) this package trains; `paper` = the sampling map stepped backwards from the data end, as the "
              "F2D2 paper evaluates."]
    return "\n".join(lines)


def update_calibration(folder: str, markdown: str) -> str:
    """Replace the calibration section of ``folder/README.md``; the rest of the card stays as it is."""
    path = os.path.join(folder, "README.md")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no model card at {path}")
    text = Path(path).read_text()
    start, end = text.find(CALIBRATION_START), text.find(CALIBRATION_END)
    if start < 0 or end < start:
        raise ValueError(f"{path} has no calibration section ({CALIBRATION_START} ... {CALIBRATION_END})")
    text = text[: start + len(CALIBRATION_START)] + "\n" + markdown.strip() + "\n" + text[end:]
    write_text_atomically(path, text)
    return path

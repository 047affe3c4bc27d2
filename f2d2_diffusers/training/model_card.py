"""Model cards: the repository's ``model_card.md`` template filled in by the training scripts.

What the Hub reads from a card's front matter, as this module writes it (validated in the tests with
``huggingface_hub``'s own parsers):

- ``library_name: diffusers``, ``license``, ``tags`` and ``pipeline_tag`` (``unconditional-image-generation`` for
  images, ``other`` for vectors, the tag the Hub uses for models outside its task list);
- ``datasets``: Hub dataset ids only (a ``--dataset_name`` run); the embedded data (scikit-learn's digits, 2-D toys)
  are not Hub datasets, so they are named in the card body and in ``model-index`` but not listed;
- ``metrics`` is left out: bits/dim and NLL have no Hub metric id; the numbers are in ``model-index``;
- ``base_model``: the teacher's Hub id when it is known (the teacher was given as a Hub id, or its local card was
  written for one, ``--hub_model_id``); else it is omitted, with a comment in the body, and
  ``f2d2-push-to-hub ... --base_model`` adds it at upload;
- ``model-index``: the calibration table's numbers (F2D2 bits/dim or NLL at each step count, their mean error against
  the teacher's ODE, and the reference), derived from the table itself, so that both always agree.

Usage snippets name the Hub id the folder is meant for: at training time ``--hub_model_id`` or else the output
folder's name (a placeholder, never a local path), recorded in the card as ``<!-- f2d2-diffusers repo_id: ... -->``;
``f2d2-push-to-hub`` rewrites it to the real repository (:func:`retarget_card`).

The card's calibration section sits between two markers so that a later, fuller measurement
(``benchmarks/calibration.py --update_card``) can replace it without touching the rest (:func:`update_calibration`,
which also refreshes ``model-index``); :func:`refresh_model_card` re-renders an existing folder's card with the current
template, keeping its measured table.
"""

import json
import math
import os
import re
import shlex
from pathlib import Path
from types import SimpleNamespace
from typing import Optional, Sequence

from ..hub import HUB_REPO_ID, is_hub_repo_id
from ..atomic import write_text_atomically

#: The template at the root of the checkout (``f2d2_diffusers/training/`` is two levels below it).
TEMPLATE_PATH = Path(__file__).resolve().parents[2] / "model_card.md"
CALIBRATION_START, CALIBRATION_END = "<!-- calibration:start -->", "<!-- calibration:end -->"
#: Records the Hub id the card's snippets name, for ``f2d2-push-to-hub`` to rewrite.
REPO_ID_MARKER = re.compile(r"<!-- f2d2-diffusers repo_id: (\S+) -->")
#: Where the card says why it has no ``base_model``; ``f2d2-push-to-hub --base_model`` removes it.
BASE_MODEL_NOTE = re.compile(r"<!-- base_model: .*? -->\n?", re.S)

#: ``card_datasets`` entries that are names, not Hub dataset ids (the embedded data).
NOT_HUB_DATASETS = {"sklearn-digits"}

TIME_CONVENTION = (
    "diffusers' flow-matching convention: `sigma = 0` is data, `sigma = 1` is noise, "
    "`x_sigma = (1 - sigma) * x_data + sigma * eps`, and the model receives `timestep = 1000 * sigma` "
    "(the velocity is `dx/dsigma`, so sampling integrates from `sigma = 1` down to `sigma = 0`)."
)
#: How to get the package: honest for a package that is not on PyPI.
INSTALL = (
    "The `f2d2-diffusers` package is not on PyPI: install it from a checkout of its source with "
    "`pip install ./f2d2-diffusers` (it brings `diffusers`; the package README's set-up section has the details)."
)


# --- names and paths --------------------------------------------------------------------------------------------


def card_repo_id(output_dir: str, hub_model_id: Optional[str] = None) -> str:
    """The Hub id a folder's card names: ``hub_model_id`` if given, else the folder's name (a placeholder that
    ``f2d2-push-to-hub`` replaces; never a path)."""
    return hub_model_id or Path(output_dir).resolve().name


def card_repo_id_of(folder: str) -> Optional[str]:
    """The Hub id recorded in ``folder``'s card, or ``None``."""
    path = os.path.join(folder, "README.md")
    if not os.path.isfile(path):
        return None
    match = REPO_ID_MARKER.search(Path(path).read_text(encoding="utf-8"))
    return match.group(1) if match else None


def hub_base_model(teacher: Optional[str]) -> Optional[str]:
    """The teacher as the card's ``base_model``: a Hub id, or the Hub id a local teacher folder's card was written
    for (``--hub_model_id``); a local folder without one gives ``None``."""
    if not teacher:
        return None
    if is_hub_repo_id(teacher):
        return teacher
    if os.path.isdir(teacher):
        recorded = card_repo_id_of(teacher)
        if recorded and HUB_REPO_ID.match(recorded):
            return recorded
    return None


def portable_path(path: str) -> str:
    """``path`` without the local machine in it: relative to the working directory when under it, else
    ``.../<name>``; relative paths and Hub ids are kept."""
    if not os.path.isabs(os.path.expanduser(path)):
        return path
    full = os.path.abspath(os.path.expanduser(path))
    try:
        rel = os.path.relpath(full, os.getcwd())
    except ValueError:  # another drive
        rel = None
    if rel is not None and not rel.startswith(".."):
        return rel
    return f".../{os.path.basename(full.rstrip(os.sep))}"


def portable_command(command: str) -> str:
    """``command`` with every absolute path (``/x``, ``--flag=/x``) made portable (:func:`portable_path`)."""
    try:
        tokens = shlex.split(command)
    except ValueError:
        return command
    out = []
    for token in tokens:
        flag, eq, value = token.partition("=")
        if eq and flag.startswith("-"):
            out.append(f"{flag}={portable_path(value)}")
        else:
            out.append(portable_path(token))
    return shlex.join(out)


# --- usage snippets -----------------------------------------------------------------------------------------------


def f2d2_usage(repo_id: str, kind: str, num_levels: Optional[int]) -> str:
    """The F2D2 card's code: diffusers' own loader first, then the package's classes."""
    output_type = "pil" if kind == "image" else "np"
    if kind == "vector":
        score, dequantize = "float vectors of shape (batch, d)", ", dequantize=False"
    else:
        score = f"integer grey levels 0..{num_levels - 1}, channels-first tensors or channels-last arrays, or PIL images"
        dequantize = ""
    return f'''
import torch
from diffusers import DiffusionPipeline

# diffusers' loader: the repository's pipeline.py (remote code) imports the installed f2d2-diffusers
pipe = DiffusionPipeline.from_pretrained("{repo_id}", trust_remote_code=True)
out = pipe(batch_size=8, num_inference_steps=2, generator=torch.Generator().manual_seed(0), output_type="{output_type}")
out.images, out.log_prob, out.bits_per_dim  # samples and their log-density from the same 2 network calls
# that free log-density follows the path the map was trained on; log_prob_steps=2 instead encodes each returned
# (model-space) sample in 2 more calls, out.nfe == 4 (docs/method.md 6.2 of f2d2-diffusers):
out = pipe(batch_size=8, num_inference_steps=2, log_prob_steps=2, generator=torch.Generator().manual_seed(0), output_type="{output_type}")

# the same without remote code, and the likelihood pipeline on the same weights
from f2d2_diffusers import F2D2LikelihoodPipeline, F2D2Pipeline

pipe = F2D2Pipeline.from_pretrained("{repo_id}")
likelihood = F2D2LikelihoodPipeline.from_pipe(pipe)
# score data ({score}) in a few network calls:
# likelihood(data, num_inference_steps=2{dequantize}).bits_per_dim
'''


def teacher_usage(repo_id: str, kind: str, sample_shape: Sequence[int]) -> str:
    """The teacher card's code: a stock ``DDPMPipeline`` (images) or the package's ``FlowMatchingEulerPipeline``."""
    if kind == "image":
        code = f'''
import torch
from diffusers import DiffusionPipeline

# a stock DDPMPipeline with a FlowMatchEulerDiscreteScheduler: Euler steps of the velocity, no extra code
pipe = DiffusionPipeline.from_pretrained("{repo_id}")
images = pipe(batch_size=16, num_inference_steps=50, generator=torch.Generator().manual_seed(0)).images
'''
    else:
        code = f'''
import torch
from diffusers import DiffusionPipeline

# f2d2-diffusers' FlowMatchingEulerPipeline, through the repository's pipeline.py (remote code)
pipe = DiffusionPipeline.from_pretrained("{repo_id}", trust_remote_code=True)
x = pipe(batch_size=1000, num_inference_steps=100, generator=torch.Generator().manual_seed(0)).images  # ({", ".join(["1000", *map(str, sample_shape)])}) array

# the same without remote code
from f2d2_diffusers import FlowMatchingEulerPipeline

pipe = FlowMatchingEulerPipeline.from_pretrained("{repo_id}")
'''
    return code + f'''
# Distil it into a few-step joint flow map (sampling + log-likelihood) with f2d2-diffusers' training script:
# accelerate launch training/train_f2d2.py --teacher_model_name_or_path "{repo_id}" ...
'''


# --- calibration table <-> model-index ---------------------------------------------------------------------------


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


_ROW = re.compile(r"^\| (teacher ODE \(reference\)|F2D2 (\w+)) \| (-|\d+) \| (\d+) \| ([-+\d.eE]+) \| ([-+\d.eE]+) \| "
                  r"([-+\d.eE]+) \| ([-+\d.eE]*) \|$")


def parse_calibration_markdown(markdown: str):
    """``(rows, unit)`` read back from :func:`calibration_markdown`'s table; ``([], None)`` when there is none."""
    unit = "bits/dim" if "| bits/dim |" in markdown else ("nats" if "| NLL (nats) |" in markdown else None)
    rows = []
    for line in markdown.splitlines():
        m = _ROW.match(line.strip())
        if m:
            rows.append(dict(
                evaluation="reference" if m.group(2) is None else m.group(2),
                steps=None if m.group(3) == "-" else int(m.group(3)), nfe=int(m.group(4)), value=float(m.group(5)),
                error=float(m.group(6)), abs_error=float(m.group(7)),
                seconds=float(m.group(8)) if m.group(8) else None,
            ))
    return (rows, unit) if rows and unit else ([], None)


def calibration_eval_results(markdown: str, *, task_type: str, dataset_type: str, dataset_name: str):
    """``huggingface_hub.EvalResult``s for ``model-index`` from the calibration table in ``markdown``.

    Per step count of the default (``bidirectional``) evaluation: the few-step value and its mean error against the
    teacher's ODE, plus the reference itself; the ``paper`` rows stay in the table only.
    """
    from huggingface_hub import EvalResult

    rows, unit = parse_calibration_markdown(markdown)
    if not rows:
        return []
    split = "test" if re.search(r"\btest\b", markdown.split("\n|", 1)[0]) else None
    metric = "bits_per_dim" if unit == "bits/dim" else "nll"
    shown = "bits/dim" if unit == "bits/dim" else "NLL (nats)"
    task_name = "Few-step likelihood (F2D2)"
    common = dict(task_type=task_type, task_name=task_name, dataset_type=dataset_type, dataset_name=dataset_name,
                  dataset_split=split)
    results = []
    for r in rows:
        if r["evaluation"] == "bidirectional":
            steps = f"{r['steps']} step{'s' if r['steps'] != 1 else ''}"
            results.append(EvalResult(metric_type=metric, metric_value=round(r["value"], 4),
                                      metric_name=f"{shown}, {steps}", metric_config=f"{r['steps']}-step", **common))
            results.append(EvalResult(metric_type=f"{metric}_error", metric_value=round(r["error"], 4),
                                      metric_name=f"{shown} error vs teacher ODE, {steps}",
                                      metric_config=f"{r['steps']}-step", **common))
        elif r["evaluation"] == "reference":
            results.append(EvalResult(metric_type=metric, metric_value=round(r["value"], 4),
                                      metric_name=f"{shown}, teacher ODE (dopri5, {r['nfe']} calls)",
                                      metric_config="teacher-ode", **common))
    return results


def _eval_dataset(datasets: Sequence[str], data_name: str):
    """``(dataset_type, dataset_name)`` for ``model-index``: the Hub id when the data came from the Hub, else a name."""
    hub = [d for d in datasets if d not in NOT_HUB_DATASETS]
    if hub:
        return hub[0], hub[0]
    quoted = re.search(r"'([^']+)'", data_name)  # "2-D toy 'checkerboard'"
    slug = datasets[0] if datasets else (quoted.group(1) if quoted else re.sub(r"[^a-z0-9]+", "-", data_name.lower()).strip("-"))
    return slug, data_name


# --- rendering ----------------------------------------------------------------------------------------------------


def _card_data(*, is_f2d2: bool, kind: str, repo_id: str, datasets: Sequence[str], data_name: str, calibration: str,
               base_model: Optional[str], tags: Sequence[str], eval_dataset=None):
    from huggingface_hub import ModelCardData

    is_image = kind == "image"
    task = "unconditional-image-generation" if is_image else "other"
    eval_results = []
    if is_f2d2:
        dataset_type, dataset_name = eval_dataset or _eval_dataset(datasets, data_name)
        eval_results = calibration_eval_results(calibration, task_type=task, dataset_type=dataset_type,
                                                dataset_name=dataset_name)
    return ModelCardData(
        library_name="diffusers", license="apache-2.0", pipeline_tag=task, tags=list(tags),
        datasets=[d for d in datasets if d not in NOT_HUB_DATASETS] or None, base_model=base_model,
        model_name=repo_id if eval_results else None, eval_results=eval_results or None,
    )


def _write_card(output_dir: str, card_data, **context) -> str:
    from huggingface_hub import ModelCard

    card = ModelCard.from_template(card_data, template_path=str(TEMPLATE_PATH), time_convention=TIME_CONVENTION,
                                   install=INSTALL, **context)
    path = os.path.join(output_dir, "README.md")
    write_text_atomically(path, str(card))  # as card.save, but never a half-written card
    return path


def render_model_card(
    output_dir: str, *, is_f2d2: bool, title: str, summary: str, data, result, command: str, usage: str,
    details: Sequence[str] = (), base_model: Optional[str] = None, calibration: str = "", extra_tags: Sequence[str] = (),
    repo_id: Optional[str] = None, base_model_note: Optional[str] = None,
) -> str:
    """Write ``output_dir/README.md`` from the template; returns its path.

    ``data`` is the run's ``TrainingData`` (description, sample shape, grey levels, Hub datasets), ``result`` its
    ``TrainingResult``; ``calibration`` is the markdown of the calibration section (its table also becomes
    ``model-index``). ``repo_id`` is the Hub id the usage names (default: the folder's name, see :func:`card_repo_id`);
    ``base_model_note`` says in the body why there is no ``base_model``.
    """
    is_image = data.kind == "image"
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
    facts = SimpleNamespace(kind=data.kind, sample_shape=tuple(data.sample_shape), num_levels=data.num_levels,
                            datasets=list(data.card_datasets), data_name=_data_name(data.description))
    return _render(output_dir, is_f2d2=is_f2d2, title=title, summary=summary, facts=facts, command=command, usage=usage,
                   training_details=training_details, base_model=base_model, calibration=calibration,
                   extra_tags=extra_tags, repo_id=repo_id or card_repo_id(output_dir), base_model_note=base_model_note)


def _data_name(description: str) -> str:
    return description.split(" (")[0].split(", train split")[0]


def _render(output_dir, *, is_f2d2, title, summary, facts, command, usage, training_details, base_model, calibration,
            extra_tags, repo_id, base_model_note) -> str:
    is_image = facts.kind == "image"
    tags = ["diffusers", "diffusers-training", "pytorch", "flow-matching", *extra_tags]
    if is_image:
        tags.insert(2, "unconditional-image-generation")
    calibration = calibration.strip() or "Not measured."
    card_data = _card_data(is_f2d2=is_f2d2, kind=facts.kind, repo_id=repo_id, datasets=facts.datasets,
                           data_name=facts.data_name, calibration=calibration, base_model=base_model, tags=tags,
                           eval_dataset=getattr(facts, "eval_dataset", None))
    if is_f2d2 and not base_model and base_model_note is None:
        base_model_note = "the teacher's Hub id is not known"
    return _write_card(
        output_dir, card_data, title=title, summary=summary, usage=usage.strip(), is_f2d2=is_f2d2, is_image=is_image,
        num_levels=facts.num_levels, num_dims=math.prod(facts.sample_shape), training_details=training_details,
        command=portable_command(command), calibration=calibration, data_short=facts.data_name, repo_id=repo_id,
        base_model_note=None if base_model else base_model_note,
    )


# --- editing written cards ----------------------------------------------------------------------------------------


def _folder_facts(folder: str) -> SimpleNamespace:
    """What a card needs to know about a saved folder, from its configs."""
    def load(*parts):
        path = os.path.join(folder, *parts)
        return json.loads(Path(path).read_text()) if os.path.isfile(path) else {}

    unet = load("unet", "config.json")
    index = load("model_index.json")
    if "in_channels" in unet:
        size = unet["sample_size"]
        size = tuple(size) if isinstance(size, (list, tuple)) else (size, size)
        kind, shape = "image", (unet["in_channels"], *size)
    else:
        kind, shape = "vector", (unet.get("sample_size"),)
    return SimpleNamespace(kind=kind, sample_shape=shape, unet_class=unet.get("_class_name"),
                           is_f2d2=unet.get("_class_name") in ("F2D2UNet2DModel", "F2D2MLPModel"),
                           num_levels=index.get("num_levels"))


def refresh_model_card(folder: str, repo_id: Optional[str] = None) -> str:
    """Re-render ``folder``'s card (written by an older template) with the current one; returns its path.

    Kept from the old card: title, summary, the training details and command, and the calibration section (the
    measured table); rebuilt: front matter (with ``model-index`` from the table), usage snippets (for ``repo_id``,
    default: the recorded one, else the folder's name), conventions. No retraining, no new measurement.
    """
    from huggingface_hub import ModelCard

    path = os.path.join(folder, "README.md")
    old = ModelCard.load(path)
    text = old.text
    facts = _folder_facts(folder)
    title = re.search(r"^# (.+)$", text, re.M).group(1).strip()
    summary = text.split(f"# {title}", 1)[1].split("\n## ", 1)[0].strip()
    training = text.split("\n## Training\n", 1)[1].split("\n## ", 1)[0]
    details = [line[2:] for line in training.split("Training command:")[0].splitlines() if line.startswith("- ")]
    command = re.search(r"```bash\n(.*?)\n```", training, re.S).group(1).strip()
    start, end = text.find(CALIBRATION_START), text.find(CALIBRATION_END)
    calibration = text[start + len(CALIBRATION_START): end].strip() if 0 <= start < end else ""
    data_line = next((d for d in details if d.startswith("Data: ")), "Data: unknown.")
    description = data_line[len("Data: "):].rstrip(".")
    if facts.num_levels is None and facts.kind == "image":  # teachers record the grey levels in the card only
        levels = re.search(r"with (\d+) grey levels", training)
        facts.num_levels = int(levels.group(1)) if levels else None
    facts.datasets = list(old.data.datasets or [])
    old_results = old.data.eval_results or []
    facts.eval_dataset = (old_results[0].dataset_type, old_results[0].dataset_name) if old_results else None
    facts.data_name = _data_name(description)
    repo_id = repo_id or card_repo_id_of(folder) or card_repo_id(folder)
    teacher = next((d[len("Teacher: "):].rstrip(".") for d in details if d.startswith("Teacher: ")), None)
    # A teacher named in the old card counts only as a folder here (whose card may record its Hub id): its text alone
    # could be a path that merely looks like ``owner/name``.
    base_model = old.data.base_model or (hub_base_model(teacher) if teacher and os.path.isdir(teacher) else None)
    if facts.is_f2d2:
        usage = f2d2_usage(repo_id, facts.kind, facts.num_levels)
        extra_tags = [t for t in ("few-step", "likelihood", "f2d2") if t in (old.data.tags or [])]
    else:
        usage = teacher_usage(repo_id, facts.kind, facts.sample_shape)
        extra_tags = []
    note = None if base_model else (f"the teacher was the local folder `{portable_path(teacher)}`" if teacher else None)
    return _render(folder, is_f2d2=facts.is_f2d2, title=title, summary=summary, facts=facts, command=command,
                   usage=usage, training_details=details, base_model=base_model, calibration=calibration,
                   extra_tags=extra_tags, repo_id=repo_id, base_model_note=note)


def _set_eval_results(text: str) -> str:
    """``text`` (a whole card) with ``model-index`` rebuilt from its calibration table."""
    from huggingface_hub import ModelCard

    card = ModelCard(text)
    if not card.data.get("library_name") or "f2d2" not in (card.data.tags or []):
        return text  # a teacher's card, or not one of ours: no model-index
    start, end = text.find(CALIBRATION_START), text.find(CALIBRATION_END)
    calibration = text[start + len(CALIBRATION_START): end]
    old = card.data.eval_results or []
    task = card.data.pipeline_tag or "other"
    dataset_type, dataset_name = ((old[0].dataset_type, old[0].dataset_name) if old else
                                  _eval_dataset(card.data.datasets or [], "training data"))
    results = calibration_eval_results(calibration, task_type=task, dataset_type=dataset_type, dataset_name=dataset_name)
    name = card.data.model_name or (REPO_ID_MARKER.search(text).group(1) if REPO_ID_MARKER.search(text) else "model")
    card.data.eval_results = results or None
    card.data.model_name = name if results else None
    return str(card)


def update_calibration(folder: str, markdown: str) -> str:
    """Replace the calibration section of ``folder/README.md`` and the ``model-index`` derived from it; the rest of
    the card stays as it is."""
    path = os.path.join(folder, "README.md")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no model card at {path}")
    text = Path(path).read_text()
    start, end = text.find(CALIBRATION_START), text.find(CALIBRATION_END)
    if start < 0 or end < start:
        raise ValueError(f"{path} has no calibration section ({CALIBRATION_START} ... {CALIBRATION_END})")
    text = text[: start + len(CALIBRATION_START)] + "\n" + markdown.strip() + "\n" + text[end:]
    write_text_atomically(path, _set_eval_results(text))
    return path


def retarget_card(text: str, repo_id: str, base_model: Optional[str] = None) -> str:
    """The card ``text`` for the Hub repository ``repo_id``: its snippets and ``model-index`` name ``repo_id``
    instead of the recorded placeholder, and ``base_model`` (when given) is set. ``f2d2-push-to-hub`` uploads this."""
    from huggingface_hub import ModelCard

    match = REPO_ID_MARKER.search(text)
    if match and match.group(1) != repo_id:
        old = match.group(1)
        text = text.replace(f'"{old}"', f'"{repo_id}"').replace(match.group(0), f"<!-- f2d2-diffusers repo_id: {repo_id} -->")
    if not base_model and "\nmodel-index:" not in text:
        return text  # nothing in the front matter names the repository
    card = ModelCard(text)
    if card.data.eval_results:
        card.data.model_name = repo_id
    if base_model:
        if not HUB_REPO_ID.match(base_model):
            raise ValueError(f"base_model must be a Hub id (owner/name), got {base_model!r}")
        card.data.base_model = base_model
        card.text = BASE_MODEL_NOTE.sub("", card.text)
    return str(card)

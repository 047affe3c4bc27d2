"""The gradio app: the Sample, Likelihood, Energy sampler and Explain tabs, and the three public endpoints.

The components and the error handling the tabs share are in ``components``; the Energy sampler tab in
``sampler_tab``.
"""

import os
import tempfile
from pathlib import Path
from typing import Optional

import gradio as gr

from actions import DemoActions
from components import ModelDropdown, Number, Slider, _checked_image, user_errors
from content import (
    GUIDANCE_INFO, INTRO_TEXT, LIKELIHOOD_EMPTY_TEXT, MAX_GUIDANCE_SCALE, MAX_GUIDANCE_STEPS, MAX_IMAGE_BATCH,
    MAX_SAMPLE_STEPS, MAX_SEED, MAX_TEACHER_STEPS, MAX_VECTOR_BATCH, METHOD_TEXT, REFERENCE_DEFAULT, REFERENCE_LABEL,
    RESCORE_INFO, SAMPLE_EMPTY_TEXT,
)
from inputs import example_digit, example_point_sets, example_points, write_example_images
from registry import ModelRegistry, default_registry
from render import explain_plots
from sampler_registry import SamplerRegistry, default_sampler_registry
from sampler_tab import build_sampler_tab

#: Where the example images are written (once per process): gradio serves files from the temporary folder.
EXAMPLES_DIR = Path(tempfile.gettempdir()) / "f2d2-space-examples"


def sample_examples(registry: ModelRegistry):
    """The Sample tab's ready-made settings: ``(rows of [model, steps, seed, batch, teacher steps, guidance scale,
    guidance steps, re-scoring steps], labels)``; a guided row for each model with a ``guidance_example`` scale."""
    image, points = registry.first_of_kind("image"), registry.first_of_kind("points")
    rows, labels = [], []
    if image:
        rows += [[image, 1, 0, 16, 0, 0, 1, 0], [image, 4, 0, 16, 100, 0, 1, 0], [image, 2, 0, 16, 0, 0, 1, 2]]
        labels += ["digits: 16 samples in 1 step", "digits: 4 steps, beside the teacher's 100 Euler steps",
                   "digits: 2 steps, each sample re-scored in 2 more calls"]
    if points:
        rows += [[points, 2, 0, 1000, 0, 0, 1, 0], [points, 1, 1, 1000, 100, 0, 1, 0]]
        labels += ["2-D: 1000 points in 2 steps", "2-D: 1 step, beside the teacher's 100 Euler steps"]
    for name in registry.names:
        scale = registry.spec(name).guidance_example
        if scale:
            rows.append([name, 2, 0, 16, 0, scale, 1, 0])
            labels.append(f"{name.split(' (')[0]}: 2 steps after one self-guidance step of {scale:g}")
    return rows, labels


def likelihood_examples(registry: ModelRegistry, folder: Path = EXAMPLES_DIR):
    """The Likelihood tab's inputs from embedded data: ``(image rows [model, path], labels, point rows
    [model, text], labels)``; empty for a kind of model the registry does not have."""
    image, points = registry.first_of_kind("image"), registry.first_of_kind("points")
    image_rows, image_labels, point_rows, point_labels = [], [], [], []
    if image:
        for path, label in write_example_images(folder):
            image_rows.append([image, path])
            image_labels.append(label)
    if points:
        for label, text in example_point_sets():
            point_rows.append([points, text])
            point_labels.append(label)
    return image_rows, image_labels, point_rows, point_labels


def build_demo(registry: Optional[ModelRegistry] = None, sampler_registry: Optional[SamplerRegistry] = None) -> gr.Blocks:
    """The Blocks app. ``registry``: the models (default: :func:`registry.default_registry`); ``sampler_registry``:
    the energy samplers (default: :func:`sampler_registry.default_sampler_registry`)."""
    registry = registry or default_registry()
    samplers = sampler_registry or default_sampler_registry()
    actions = DemoActions(registry)
    names = registry.names  # the models' names; the registry maps each to its checkpoint
    default_model = registry.first_available()
    vector_default = registry.first_of_kind("points") or next(
        (n for n in names if "checkerboard" in n or "2-D" in n), names[0]
    )

    # The parameter names and defaults of these two are the public API of /sample and /likelihood (new parameters
    # go last, with defaults, so that positional callers keep working).
    @user_errors
    def sample(
        model: str, num_steps: int = 1, seed: int = 0, batch_size: int = 16, teacher_steps: int = 0,
        ml_guidance_scale: float = 0.0, ml_guidance_steps: int = 1, log_prob_steps: int = 0,
    ):
        return actions.sample(model, num_steps, seed, batch_size, teacher_steps, ml_guidance_scale, ml_guidance_steps,
                              log_prob_steps)

    @user_errors
    def likelihood(
        model: str, image=None, sketch=None, points: str = "", points_file=None, reference: bool = REFERENCE_DEFAULT,
        seed: int = 0,
    ):
        return actions.likelihood(model, image, sketch, points, points_file, reference, seed)

    with gr.Blocks(title="F2D2: few-step sampling and likelihood") as demo:
        gr.Markdown(INTRO_TEXT)
        status = gr.Markdown(_status(registry, samplers))
        with gr.Tabs():
            with gr.Tab("Sample", id="sample"):
                with gr.Row():
                    with gr.Column(scale=1, min_width=260):
                        s_model = ModelDropdown(registry, value=default_model, elem_id="sample-model")
                        s_steps = Slider(1, MAX_SAMPLE_STEPS, value=2, step=1, label="Sampling steps (network calls)")
                        s_seed = Number(value=0, precision=0, minimum=0, maximum=MAX_SEED, label="Seed")
                        s_batch = Number(
                            value=16, precision=0, minimum=1, maximum=MAX_VECTOR_BATCH, label="Batch size",
                            info=f"images: up to {MAX_IMAGE_BATCH}; 2-D points: up to {MAX_VECTOR_BATCH}",
                        )
                        s_teacher = Slider(
                            0, MAX_TEACHER_STEPS, value=0, step=1, label="Teacher Euler steps (0 = no comparison)",
                        )
                        s_guidance = Slider(
                            0, MAX_GUIDANCE_SCALE, value=0, step=0.05, label="Self-guidance scale", info=GUIDANCE_INFO,
                            elem_id="sample-guidance",
                        )
                        s_guidance_steps = Slider(1, MAX_GUIDANCE_STEPS, value=1, step=1, label="Guidance steps")
                        s_rescore = Slider(
                            0, MAX_SAMPLE_STEPS, value=0, step=1, label="Re-scoring steps (log p of each sample)",
                            info=RESCORE_INFO, elem_id="sample-rescore",
                        )
                        s_go = gr.Button("Generate", variant="primary", elem_id="sample-generate")
                        s_inputs = [s_model, s_steps, s_seed, s_batch, s_teacher, s_guidance, s_guidance_steps,
                                    s_rescore]
                        rows, labels = sample_examples(registry)
                        if rows:
                            gr.Examples(
                                rows, s_inputs, example_labels=labels,
                                label="Examples: click one, then Generate", cache_examples=False,
                                api_visibility="private", elem_id="sample-examples",
                            )
                    with gr.Column(scale=2):
                        # Before the first run the panel says what will appear; the grid and table show after it.
                        s_summary = gr.Markdown(SAMPLE_EMPTY_TEXT, elem_id="sample-summary")
                        s_grid = gr.Image(
                            label="F2D2 samples, each with its log p (nats)", type="pil", format="png", visible=False
                        )
                        s_teacher_image = gr.Image(
                            label="Teacher samples (same noise)", type="pil", format="png", visible=False
                        )
                        s_table = gr.Dataframe(
                            label="Log-likelihood of every sample", interactive=False, max_height=300,
                            elem_id="sample-table", visible=False,
                        )
                        with gr.Accordion("Raw values (JSON)", open=False):
                            s_details = gr.JSON(label="Details")
                s_go.click(
                    sample,
                    s_inputs,
                    [s_grid, s_table, s_summary, s_details, s_teacher_image],
                    api_name="sample",
                    api_description="Few-step samples with the log-likelihood of each (and the teacher's Euler samples); "
                    "optional maximum-likelihood self-guidance of the noise, and optional re-scoring of each sample by "
                    "encoding it (log_prob_steps more calls).",
                    concurrency_limit=1,
                    concurrency_id="compute",
                ).success(  # show the results (and the teacher's panel only with a comparison); UI only, same API
                    lambda details: (
                        gr.Image(visible=True), gr.Dataframe(visible=True),
                        gr.Image(visible=bool(details and details.get("teacher"))),
                    ),
                    s_details,
                    [s_grid, s_table, s_teacher_image],
                    api_visibility="private",
                    queue=False,
                )

            with gr.Tab("Likelihood", id="likelihood"):
                with gr.Row():
                    with gr.Column(scale=1, min_width=300):
                        l_model = ModelDropdown(registry, value=default_model, elem_id="likelihood-model")
                        gr.Markdown(
                            "Image models use the uploaded image if there is one, otherwise the drawing. "
                            "2-D models use the uploaded file if there is one, otherwise the pasted points."
                        )
                        with gr.Tabs():
                            with gr.Tab("Upload image"):
                                l_image = _checked_image(
                                    label="Image (any size; converted for the model)", type="pil", image_mode=None,
                                    height=280, elem_id="likelihood-image",
                                )
                                l_example = gr.Button("Use an example digit", size="sm")
                            with gr.Tab("Draw"):
                                l_sketch = gr.Sketchpad(
                                    label="Draw a digit", type="pil", image_mode="RGB", canvas_size=(256, 256),
                                    brush=gr.Brush(colors=["#000000"], color_mode="fixed", default_size=20),
                                )
                            with gr.Tab("2-D points"):
                                l_points = gr.Textbox(
                                    value="", label="Points (CSV: one point per line)", lines=6, placeholder="x1, x2\n0.5, -1.2\n1.5, 2.0",
                                    elem_id="likelihood-points",
                                )
                                l_points_file = gr.File(label="…or a .csv / .npy file", file_types=[".csv", ".npy", ".txt"], height=120)
                                l_example_points = gr.Button("Use example checkerboard points", size="sm")
                        # Off by default: the reference solve takes minutes on a small CPU, F2D2 under a second.
                        l_reference = gr.Checkbox(
                            value=REFERENCE_DEFAULT, label=REFERENCE_LABEL, elem_id="likelihood-reference"
                        )
                        l_seed = Number(value=0, precision=0, minimum=0, maximum=MAX_SEED, label="Dequantisation seed")
                        l_go = gr.Button("Compute likelihood", variant="primary")
                        image_rows, image_labels, point_rows, point_labels = likelihood_examples(registry)
                        if image_rows:
                            gr.Examples(
                                image_rows, [l_model, l_image], example_labels=image_labels,
                                label="Example images: click one, then Compute likelihood", cache_examples=False,
                                api_visibility="private", elem_id="likelihood-image-examples",
                            )
                        if point_rows:
                            gr.Examples(
                                point_rows, [l_model, l_points], example_labels=point_labels,
                                label="Example 2-D points: click one, then Compute likelihood", cache_examples=False,
                                api_visibility="private", elem_id="likelihood-point-examples",
                            )
                    with gr.Column(scale=2):
                        # Before the first run the panel says what will appear; the table and preview show after it.
                        l_table = gr.Dataframe(
                            label="Bits per dimension by method", interactive=False, elem_id="likelihood-table",
                            column_widths=["29%", "13%", "11%", "14%", "11%", "22%"], wrap=True, visible=False,
                        )
                        l_summary = gr.Markdown(LIKELIHOOD_EMPTY_TEXT, elem_id="likelihood-summary")
                        l_preview = gr.Image(label="What the model scored", type="pil", format="png", visible=False)
                        with gr.Accordion("Raw values (JSON)", open=False):
                            l_details = gr.JSON(label="Details")
                l_go.click(
                    likelihood,
                    [l_model, l_image, l_sketch, l_points, l_points_file, l_reference, l_seed],
                    [l_table, l_summary, l_preview, l_details],
                    api_name="likelihood",
                    api_description="Bits/dim of an image, a drawing or 2-D points at 1, 2, 4, 8 steps, beside the teacher's ODE.",
                    concurrency_limit=1,
                    concurrency_id="compute",
                ).success(
                    lambda: (gr.Dataframe(visible=True), gr.Image(visible=True)),
                    None,
                    [l_table, l_preview],
                    api_visibility="private",
                    queue=False,
                )
                l_example.click(
                    user_errors(example_digit), None, l_image, api_visibility="private", queue=False
                )
                l_example_points.click(
                    lambda: (example_points(), vector_default), None, [l_points, l_model], api_visibility="private", queue=False
                )

            build_sampler_tab(samplers)

            with gr.Tab("Explain", id="explain"):
                gr.Markdown(METHOD_TEXT)
                e_status = gr.Markdown()
                # The plots are wide (two panels each): shown one at a time, whole, with thumbnails to switch, rather
                # than cropped to square grid tiles.
                e_gallery = gr.Gallery(label="Benchmark figures (click a thumbnail to switch)", preview=True, height=520,
                                       object_fit="contain", format="png")
                e_refresh = gr.Button("Refresh plots", size="sm")

        def refresh():
            items, text = explain_plots()
            return gr.Gallery(value=items, visible=bool(items)), text, _status(registry, samplers)

        e_refresh.click(refresh, None, [e_gallery, e_status, status], api_visibility="private", queue=False)
        demo.load(refresh, None, [e_gallery, e_status, status], api_visibility="private", queue=False)
    demo.queue(max_size=int(os.environ.get("F2D2_QUEUE_SIZE", "16")), default_concurrency_limit=1)
    return demo


def _status(registry: ModelRegistry, samplers: SamplerRegistry) -> str:
    """The status line at the top: whether each model and sampler can be loaded."""
    return registry.status_markdown() + "\n\n" + samplers.status_markdown()

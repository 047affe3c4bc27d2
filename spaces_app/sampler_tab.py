"""The Energy sampler tab (issue 13): samples of a built-in target over its density, with the log Z estimate, and
the public ``/energy_sampler`` endpoint."""

import gradio as gr

from components import ModelDropdown, Number, Slider, user_errors
from content import MAX_SAMPLER_SAMPLES, MAX_SAMPLER_STEPS, MAX_SEED, SAMPLER_EMPTY_TEXT, SAMPLER_INTRO_TEXT
from sampler_actions import SamplerActions
from sampler_registry import SamplerRegistry

#: Samples per request by default, and in the examples (the model cards' evaluation size).
DEFAULT_SAMPLES = 2000


def sampler_examples(registry: SamplerRegistry):
    """The tab's ready-made settings: ``(rows of [sampler, steps, samples, seed], labels)``, one per sampler at its
    ``example_steps``."""
    rows, labels = [], []
    for name in registry.names:
        steps = registry.spec(name).example_steps
        rows.append([name, steps, DEFAULT_SAMPLES, 0])
        labels.append(f"{name.split(' (')[0]}: {DEFAULT_SAMPLES} samples in {steps} step{'s' if steps > 1 else ''}")
    return rows, labels


def build_sampler_tab(registry: SamplerRegistry) -> None:
    """Add the tab to the enclosing ``gr.Tabs``, with its ``/energy_sampler`` endpoint."""
    actions = SamplerActions(registry)

    # The parameter names and defaults are the public API of /energy_sampler.
    @user_errors
    def energy_sampler(sampler: str, num_steps: int = 1, num_samples: int = DEFAULT_SAMPLES, seed: int = 0):
        return actions.energy_sampler(sampler, num_steps, num_samples, seed)

    with gr.Tab("Energy sampler", id="energy-sampler"):
        gr.Markdown(SAMPLER_INTRO_TEXT)
        with gr.Row():
            with gr.Column(scale=1, min_width=260):
                e_sampler = ModelDropdown(registry, label="Sampler", value=registry.first_available(),
                                          elem_id="sampler-model")
                e_steps = Slider(1, MAX_SAMPLER_STEPS, value=1, step=1, label="Sampling steps (network calls per sample)")
                e_samples = Number(value=DEFAULT_SAMPLES, precision=0, minimum=1, maximum=MAX_SAMPLER_SAMPLES,
                                   label="Number of samples", info=f"1 to {MAX_SAMPLER_SAMPLES}")
                e_seed = Number(value=0, precision=0, minimum=0, maximum=MAX_SEED, label="Seed")
                e_go = gr.Button("Generate", variant="primary", elem_id="sampler-generate")
                inputs = [e_sampler, e_steps, e_samples, e_seed]
                rows, labels = sampler_examples(registry)
                gr.Examples(
                    rows, inputs, example_labels=labels, label="Examples: click one, then Generate",
                    cache_examples=False, api_visibility="private", elem_id="sampler-examples",
                )
            with gr.Column(scale=2):
                # Before the first run the panel says what will appear; the figure shows after it.
                e_summary = gr.Markdown(SAMPLER_EMPTY_TEXT, elem_id="sampler-summary")
                e_figure = gr.Image(label="Samples over the target density", type="pil", format="png",
                                    visible=False, elem_id="sampler-figure")
                with gr.Accordion("Raw values (JSON)", open=False):
                    e_details = gr.JSON(label="Details")
        e_go.click(
            energy_sampler,
            inputs,
            [e_figure, e_summary, e_details],
            api_name="energy_sampler",
            api_description="Samples of an energy sampler's target in 1-16 network calls, with the log Z estimate "
            "beside the true value, the ESS and the ELBO.",
            concurrency_limit=1,
            concurrency_id="compute",
        ).success(
            lambda: gr.Image(visible=True), None, e_figure, api_visibility="private", queue=False,
        )

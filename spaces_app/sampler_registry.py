"""The Energy sampler tab's samplers: a registry of named choices, loaded on first use and cached.

The sibling of :mod:`registry` for ``EnergySamplerPipeline`` checkpoints; ``ui.build_demo(sampler_registry=...)``
takes any, so tests inject tiny random-weight samplers through ``SamplerSpec(pipeline_factory=...)``. A sampler
remembers its target (``model_index.json``), so a name is all the API needs.
"""

from dataclasses import dataclass
from typing import Callable, Optional, Tuple

from f2d2_diffusers import EnergySamplerPipeline

from registry import NamedRegistry, _device, _load_pipeline, _shipped


@dataclass
class SamplerSpec:
    """One sampler choice.

    Args:
        name: the label in the UI's sampler list (a name, never a path), also the ``sampler`` value of
            ``/energy_sampler``.
        source: folder or Hub id of a saved ``EnergySamplerPipeline`` (ignored when ``pipeline_factory`` is given).
        pipeline_factory: builds the pipeline directly (tests inject tiny samplers here).
        missing_hint: appended to the message when the checkpoint is missing (how to get it).
        example_steps: network calls per sample of the tab's example for this sampler (the best row of its model
            card's evaluation).
        aliases: other names the API accepts for this sampler.
    """

    name: str
    source: Optional[str] = None
    pipeline_factory: Optional[Callable[[], EnergySamplerPipeline]] = None
    missing_hint: str = ""
    example_steps: int = 1
    aliases: Tuple[str, ...] = ()


class SamplerRegistry(NamedRegistry):
    """Sampler choices, loaded on first use and cached (thread-safe)."""

    noun = "sampler"

    def pipeline(self, name: str) -> EnergySamplerPipeline:
        spec = self.spec(name)

        def build():
            pipe = spec.pipeline_factory() if spec.pipeline_factory is not None else _load_pipeline(
                spec, EnergySamplerPipeline, noun=self.noun)
            pipe = pipe.to(_device())
            pipe.model.eval()
            pipe.set_progress_bar_config(disable=True)
            return pipe

        return self._cached((spec.name, "pipeline"), build)

    def status_markdown(self) -> str:
        return "\n".join(["**Energy samplers**"] + [f"- `{name}`: {self.status(name)}" for name in self._specs])


#: The shipped samplers: checkpoint folder -> (name in the UI and the API, example steps). The example steps are
#: each model card's lowest log Z error among 1, 2, 4 and 8 steps.
SAMPLER_NAMES = {
    "sampler-gmm40": ("sampler-gmm40 (GMM-40, 2-D)", 2),
    "sampler-funnel": ("sampler-funnel (Neal's funnel, 10-D)", 2),
    "sampler-many-well-32": ("sampler-many-well-32 (Many-Well, 32-D)", 4),
    "sampler-breast-cancer": ("sampler-breast-cancer (Bayesian logistic regression, 31-D)", 4),
}


def default_sampler_registry() -> SamplerRegistry:
    """The shipped energy samplers (``checkpoints/sampler-*``)."""
    return SamplerRegistry([
        SamplerSpec(name=name, source=_shipped(folder), example_steps=steps,
                    missing_hint="Train it with training/train_sampler.py (see README.md).")
        for folder, (name, steps) in SAMPLER_NAMES.items()
    ])

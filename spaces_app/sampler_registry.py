"""The Energy sampler tab's samplers: a registry of named choices, loaded on first use and cached.

The sibling of :mod:`registry` for ``EnergySamplerPipeline`` checkpoints; ``ui.build_demo(sampler_registry=...)``
takes any, so tests inject tiny random-weight samplers through ``SamplerSpec(pipeline_factory=...)``. A sampler
remembers its target (``model_index.json``), so a name is all the API needs.
"""

import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

from f2d2_diffusers import EnergySamplerPipeline
from f2d2_diffusers.hub import is_hub_repo_id

from errors import InputError
from registry import _device, _load_pipeline, _shipped


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


class SamplerRegistry:
    """Sampler choices, loaded on first use and cached (thread-safe)."""

    def __init__(self, specs: Sequence[SamplerSpec]):
        if not specs:
            raise ValueError("a sampler registry needs at least one sampler")
        self._specs: "OrderedDict[str, SamplerSpec]" = OrderedDict((s.name, s) for s in specs)
        self._aliases: Dict[str, str] = {alias: s.name for s in specs for alias in s.aliases if alias not in self._specs}
        self._cache: Dict[str, EnergySamplerPipeline] = {}
        self._lock = threading.RLock()

    @property
    def names(self) -> List[str]:
        """The samplers' names, as the UI lists them."""
        return list(self._specs)

    def spec(self, name: str) -> SamplerSpec:
        name = self._aliases.get(name, name)
        if name not in self._specs:
            raise InputError(f"Unknown sampler {name!r}; choose one of: {', '.join(self._specs)}.")
        return self._specs[name]

    def canonical(self, name):
        """The sampler's name for ``name`` (itself, or the name an alias stands for); anything else unchanged."""
        return self._aliases.get(name, name) if isinstance(name, str) else name

    def pipeline(self, name: str) -> EnergySamplerPipeline:
        spec = self.spec(name)
        with self._lock:
            if spec.name not in self._cache:
                pipe = spec.pipeline_factory() if spec.pipeline_factory is not None else _load_pipeline(
                    spec, EnergySamplerPipeline)
                pipe = pipe.to(_device())
                pipe.model.eval()
                pipe.set_progress_bar_config(disable=True)
                self._cache[spec.name] = pipe
            return self._cache[spec.name]

    def status(self, name: str) -> str:
        """One line on whether the sampler can be loaded, without loading it (no local path: the UI shows names)."""
        spec = self.spec(name)
        if spec.pipeline_factory is not None:
            return "ready"
        if spec.name in self._cache:
            return "loaded"
        if not spec.source:
            return "not configured"
        if not is_hub_repo_id(spec.source):
            if (Path(spec.source).expanduser() / "model_index.json").is_file():
                return "ready"
            return "**missing**: its checkpoint is not there yet (using it says where it was looked for)"
        return f"on the Hub as `{spec.source}` (loaded on first use)"

    def first_available(self) -> str:
        """The first sampler whose checkpoint is there (or that is injected / on the Hub), else the first one."""
        return next((n for n in self._specs if not self.status(n).startswith(("**missing**", "not configured"))), self.names[0])

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

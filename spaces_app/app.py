"""F2D2 demo: few-step sampling and log-likelihoods with joint flow maps (a Hugging Face Space).

Run it with ``python spaces_app/app.py`` (port from ``GRADIO_SERVER_PORT``, host from ``GRADIO_SERVER_NAME``, as
gradio reads them). Three public API endpoints, usable from ``gradio_client``:

- ``/sample``: ``model, num_steps, seed, batch_size, teacher_steps, ml_guidance_scale, ml_guidance_steps`` -> grid
  image, per-sample table, summary, details JSON, teacher grid image. ``ml_guidance_scale`` (maximum-likelihood
  self-guidance of the noise) defaults to 0, off.
- ``/likelihood``: ``model, image, sketch, points, points_file, reference, seed`` -> results table, summary, preview
  image, details JSON. ``reference`` (the teacher's slow dopri5 solve) is off unless asked for.
- ``/energy_sampler``: ``sampler, num_steps, num_samples, seed`` -> figure (the samples over the target's density, or
  their first two coordinates beside exact target samples), summary (log Z estimate, true value, error, ESS, ELBO),
  details JSON.

``model`` is a model's name as the UI lists it (``f2d2-digits (F2D2, 8x8 digits)``, ...), and ``sampler`` a sampler's
(``sampler-gmm40 (GMM-40, 2-D)``, ...), never a path: the registries map names to checkpoints. Deploying: see ``prepare_space.py`` (``hf upload ... --repo-type=space``).

The app lives in the modules next to this file: ``content`` (texts, limits, the Explain tab's plots), ``registry``
(the models, loaded lazily on first use and cached) and ``sampler_registry`` (the energy samplers, likewise),
``inputs`` (checking and converting user input), ``render`` (pictures), ``actions`` (the work of ``/sample`` and
``/likelihood``) and ``sampler_actions`` (of ``/energy_sampler``), ``components`` (shared gradio pieces and error
handling), ``sampler_tab`` (the Energy sampler tab) and ``ui`` (the gradio app). They are imported as top-level
modules, as a Space runs ``python app.py`` in its folder; ``f2d2_diffusers`` comes from an install in a checkout
(``pip install -e ".[demo]"``) and from the copy ``prepare_space.py`` puts next to this file in a Space.

Environment variables (the models are those of :func:`registry.default_registry`; the samplers, those of
:func:`sampler_registry.default_sampler_registry`, are the shipped ``checkpoints/sampler-*``):

- ``F2D2_DIGITS_MODEL`` / ``F2D2_DIGITS_TEACHER``: override the digits checkpoint and its teacher (folder or Hub id);
  default ``checkpoints/f2d2-digits`` and ``checkpoints/fm-digits`` next to this file or in the repository root.
- ``F2D2_CHECKERBOARD_MODEL`` / ``F2D2_CHECKERBOARD_TEACHER``: the same for the 2-D checkerboard.
- ``F2D2_EXTRA_MODEL`` (folder or Hub id of a saved ``F2D2Pipeline``), ``F2D2_EXTRA_TEACHER`` (its teacher, optional)
  and ``F2D2_EXTRA_MODEL_NAME`` (the label shown).
- ``F2D2_DEVICE`` (default ``cuda`` when available, else ``cpu``), ``F2D2_TORCH_THREADS``.
- ``F2D2_QUEUE_SIZE``: requests waiting at most (default 16).
- ``F2D2_SPACE_NO_DEMO=1``: importing this module builds no ``demo`` (``None``).

Nothing here touches the network unless a Hub id is configured; with ``HF_HUB_OFFLINE=1`` Hub ids resolve from the
local cache only.
"""

import logging
import os
import sys

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
# On a busy CPU (measured on a 2-core machine running other jobs) OpenMP's default busy-waiting made each
# small network call take ~0.5 s instead of ~3 ms with 2 threads; passive waiting avoids it. Only effective when
# this module is the first to import torch (``python app.py``), so only then is it set.
if "torch" not in sys.modules:
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402

from content import MAX_UPLOAD_MB  # noqa: E402
from ui import build_demo  # noqa: E402

if os.environ.get("F2D2_TORCH_THREADS"):
    torch.set_num_threads(int(os.environ["F2D2_TORCH_THREADS"]))

#: Built on import, as gradio's ``gradio app.py`` reload mode looks for a module-level ``demo``.
demo = build_demo() if os.environ.get("F2D2_SPACE_NO_DEMO") != "1" else None

if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    (demo or build_demo()).launch(max_file_size=f"{MAX_UPLOAD_MB}mb")

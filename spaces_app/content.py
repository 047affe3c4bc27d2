"""What the Space shows and allows: its texts, request limits, the Explain tab's plots and where files are looked up.

Imports nothing beyond the standard library: ``prepare_space.py`` reads the plot list from here without gradio.
"""

from pathlib import Path

#: The folder of ``app.py``: a deployed Space keeps its checkpoints and plots here.
APP_DIR = Path(__file__).resolve().parent
#: The repository root when the app runs from a source checkout.
REPO_ROOT = APP_DIR.parent

# Request limits: each bounds the work (or memory) one request can ask of a small shared CPU.
MAX_SAMPLE_STEPS = 8
LIKELIHOOD_STEPS = (1, 2, 4, 8)
MAX_IMAGE_BATCH = 64
MAX_VECTOR_BATCH = 2000
MAX_TEACHER_STEPS = 200
MAX_POINTS = 2000
MAX_UPLOAD_PIXELS = 4096 * 4096
#: Largest upload, in MB (gradio's own limit, and that of a points file).
MAX_UPLOAD_MB = 10
MAX_SEED = 2**32 - 1
#: Maximum-likelihood self-guidance on the Sample tab: its scale (noise standard deviations per step) and steps.
MAX_GUIDANCE_SCALE = 1.0
MAX_GUIDANCE_STEPS = 4
#: The Energy sampler tab: network calls per sample, and samples per request.
MAX_SAMPLER_STEPS = 16
MAX_SAMPLER_SAMPLES = 4000

#: The Explain tab's plots, ``(path relative to the repository root or APP_DIR, caption)``; a caption names its
#: data set before ``": "`` and the script that writes the plot in its final parentheses.
EXPLAIN_PLOTS = (
    ("benchmarks/results/calibration_digits.png", "Digits: error against network calls, and per segment (benchmarks/calibration.py)"),
    ("benchmarks/results/calibration_checkerboard.png", "Checkerboard: error against network calls, and per segment (benchmarks/calibration.py)"),
    ("benchmarks/results/likelihood_digits.png", "Digits: error against wall time, F2D2 and the ODE solvers people use (benchmarks/bench_likelihood.py)"),
    ("benchmarks/results/ood_digits.png", "Digits: out-of-distribution detection by likelihood, F2D2 against the teacher's ODE (benchmarks/bench_ood.py)"),
)

#: The Likelihood tab's opt-in for the teacher's reference solve (off by default: it is the slow part).
REFERENCE_LABEL = (
    "Also run the teacher's reference ODE (slow: dopri5 with exact divergence, a hundred or more network calls; "
    "minutes per digit on a small CPU, where F2D2 takes well under a second)"
)
REFERENCE_DEFAULT = False

#: The Sample tab's re-scoring control: the log-likelihood of each returned sample from encoding it (README.md).
RESCORE_INFO = (
    "0 = log p from the sampling calls themselves (free; it belongs to the path the model was trained to follow, not "
    "to the sample it returned). k = encode each returned (unclipped) sample with k likelihood steps, k more network "
    "calls. Measured for f2d2-digits at 2 steps: free +0.62, re-scored +0.14 bits/dim too optimistic (README)."
)

#: The Sample tab's self-guidance controls: what they do and where they were measured to help (README.md).
GUIDANCE_INFO = (
    "Moves the starting noise up the one-step map's log-likelihood before sampling; each guidance step costs one "
    "forward and one backward pass. 0 = off. Calibrated for the MeanFlow digits model (scale 0.2, 1 step took its "
    "2-step samples from FD 37.2 to 21.4); on the checkerboard no scale helped."
)

#: What the output panels say before the first run: what will appear, and which button fills them.
SAMPLE_EMPTY_TEXT = (
    "**No samples yet.** Press **Generate** (or pick an example below, then Generate): the samples appear here as "
    "a grid (a scatter plot for 2-D models), each with its log-likelihood, and a table lists every sample's "
    "log p and bits/dim."
)
LIKELIHOOD_EMPTY_TEXT = (
    "**Nothing scored yet.** Upload an image, draw a digit or paste 2-D points (or pick an example below), then "
    "press **Compute likelihood**: a table of bits/dim at 1, 2, 4 and 8 F2D2 steps appears here, with the input "
    "as the model saw it and every conversion step."
)
SAMPLER_EMPTY_TEXT = (
    "**No samples yet.** Pick a sampler (or an example below) and press **Generate**: its samples appear here over "
    "the target's density, with the log Z estimate beside the true value, the effective sample size and the ELBO."
)
SAMPLER_INTRO_TEXT = (
    "An energy sampler draws from a density known only up to its normaliser, `rho(x) = Z p(x)`: each network call "
    "moves prior draws towards the target, and the same calls give every sample an importance weight, hence an "
    "estimate of `log Z`."
)

#: How to put the folder ``prepare_space.py`` writes on the Hub, with the current Hugging Face CLI (``hf``).
DEPLOY_COMMANDS = (
    "python spaces_app/prepare_space.py /tmp/f2d2-space     # app, README, requirements, the package, weights, plots\n"
    "hf auth login                                          # once; a token with write access\n"
    "hf upload <user>/<space-name> /tmp/f2d2-space . --repo-type=space"
)

INTRO_TEXT = (
    "# F2D2: few-step sampling *and* log-likelihood\n"
    "One distilled network gives samples and their log-likelihood in 1–8 network calls, and scores your "
    "own inputs in as few; a flow-matching teacher needs hundreds of calls for the same likelihood."
)

METHOD_TEXT = """
### How F2D2 works

A flow-matching model turns noise into data by following a learned velocity field, and the exact log-likelihood
of a point comes from adding up the divergence of that field along the same path, which normally costs hundreds
of network calls, each with many backward passes for the divergence. F2D2 distils such a teacher into one network
with two heads: for a point, a noise level σ and a step h, one head gives the *average velocity* over the step
(the point jumps to `x + h·u`) and the other the *average divergence* (the log-density changes by `−h·D`). A few
such jumps from noise to data draw a sample and give a log-likelihood at no extra cost (one that belongs to the
teacher's path from that noise, so it is too optimistic where the sample lands off it: re-scoring encodes the sample
itself in a few more calls); the same jumps run
from data to noise (h > 0) score an input you give it. The reference number is the teacher's own likelihood from
an adaptive ODE solve (dopri5 with the exact divergence): the closer F2D2's bits/dim at 1–8 calls comes to it,
the better the distillation.

- Convention (diffusers): σ = 0 is data, σ = 1 is noise, `x_σ = (1 − σ)·x + σ·ε`.
- Images are grey levels `k ∈ {0..L−1}` (L = 17 for the 8×8 digits), dequantised to `z = 2(k + u)/L − 1`;
  bits/dim = `−(log p(z) + d·log 2 − d·log L) / (d·ln 2)`. Lower is better.
- For 2-D points the data are continuous, so bits/dim is that of the density itself and can be negative.
"""

"""EnergySamplerPipeline: the deterministic-flow log Z pinned on a Gaussian target whose flow is affine."""

import math

import pytest
import torch
from diffusers import ModelMixin
from diffusers.configuration_utils import ConfigMixin, register_to_config

from f2d2_diffusers import EnergySamplerMLPModel, EnergySamplerPipeline, EnergySamplerPipelineOutput, F2D2Scheduler
from f2d2_diffusers.models import F2D2ModelOutput
from f2d2_diffusers.sampler_sde import VPCosineSchedule
from f2d2_diffusers.targets import GaussianTarget


class AffineGaussianMap(ModelMixin, ConfigMixin):
    """The exact joint map from ``N(0, prior_scale^2 I)`` (``sigma = 1``) to ``N(mean, std^2 I)`` (``sigma = 0``)
    through the marginals ``N((1 - sigma) mean, a(sigma)^2 I)``, ``a = (1 - sigma) std + sigma prior_scale``: every step
    is affine, ``X = m(s + h) + a(s + h) / a(s) (x - m(s))``, with log-volume change ``A = d log(a(s + h) / a(s))``,
    returned as ``u = (X - x) / h`` and ``D = A / h`` (times ``volume_factor``, 1 for the true map)."""

    is_flow_map = True

    @register_to_config
    def __init__(self, mean=(0.0,), std=1.0, prior_scale=1.0, volume_factor=1.0):
        super().__init__()
        self.register_buffer("center", torch.tensor(mean, dtype=torch.float64))

    @property
    def noise_schedule(self):
        return VPCosineSchedule(prior_scale=self.config.prior_scale)

    def _a(self, s):
        return (1 - s) * self.config.std + s * self.config.prior_scale

    def forward(self, sample, timestep, step=0.0, score=None, return_dict=True, divergence="auto"):
        assert callable(score)  # the pipeline hands the target's score over
        s = torch.as_tensor(timestep, dtype=sample.dtype).expand(sample.shape[0]) / 1000
        h = torch.as_tensor(step, dtype=sample.dtype).expand(sample.shape[0]) / 1000
        m0, m1 = (1 - s)[:, None] * self.center, (1 - s - h)[:, None] * self.center
        ratio = self._a(s + h) / self._a(s)
        x_next = m1 + ratio[:, None] * (sample - m0)
        u = (x_next - sample) / h[:, None]
        D = sample.shape[1] * torch.log(ratio) / h * self.config.volume_factor
        return F2D2ModelOutput(sample=u, divergence=D)


def gaussian_case(volume_factor=1.0):
    mean, std, prior, log_z = (1.5, -2.0, 0.5), 0.7, 2.0, 3.25
    target = GaussianTarget(mean, [std] * 3, log_Z=log_z)
    model = AffineGaussianMap(mean=mean, std=std, prior_scale=prior, volume_factor=volume_factor)
    pipe = EnergySamplerPipeline(model=model, scheduler=F2D2Scheduler(), target=target)
    pipe.set_progress_bar_config(disable=True)
    return pipe, target


@pytest.mark.parametrize("num_steps", [1, 2, 4])
def test_exact_map_gives_the_true_log_z_and_full_ess(num_steps):
    pipe, target = gaussian_case()
    out = pipe(batch_size=512, num_inference_steps=num_steps, generator=torch.Generator().manual_seed(0))
    assert isinstance(out, EnergySamplerPipelineOutput) and out.nfe == num_steps
    assert abs(out.log_Z - target.log_Z) < 1e-4
    assert abs(out.elbo - target.log_Z) < 1e-4
    assert out.ess == pytest.approx(512, rel=1e-6)
    # and the samples are the target's: the affine map of the prior draws
    assert out.samples.shape == (512, 3)
    torch.testing.assert_close(out.samples.mean(0), target.mean.double(), atol=0.1, rtol=0)


def test_the_sign_of_the_volume_term_matters():
    pipe, target = gaussian_case(volume_factor=-1.0)
    out = pipe(batch_size=256, num_inference_steps=1, generator=torch.Generator().manual_seed(0))
    # the true log-volume change is 3 log(0.7 / 2) < 0 (a contraction); flipping it adds twice its size
    assert abs(out.log_Z - target.log_Z) > 1.0
    assert out.elbo == pytest.approx(target.log_Z + 2 * 3 * math.log(2.0 / 0.7), abs=1e-4)
    pipe, target = gaussian_case(volume_factor=0.0)
    assert abs(pipe(batch_size=64, num_inference_steps=2).log_Z - target.log_Z) > 1.0


def test_reverse_estimate_converges_to_the_true_log_z():
    pipe, target = gaussian_case()
    # Exact target samples run back through the paper's approximate inverse step (queried at the point it leaves):
    # first-order in the step, so the EUBO-side estimate converges to log Z as the grid refines.
    errors = []
    for steps in (4, 16, 64, 256):
        out = pipe.reverse_estimate(batch_size=256, num_inference_steps=steps, generator=torch.Generator().manual_seed(1))
        errors.append(abs(out.log_Z - target.log_Z))
        assert out.nfe == steps and out.samples.shape == (256, 3)
    assert errors == sorted(errors, reverse=True) and errors[-1] < 0.03  # 0.69, 0.23, 0.062, 0.016: O(1/K)


def test_tuple_output_and_bad_arguments():
    pipe, target = gaussian_case()
    samples, log_w, log_z, elbo, ess, nfe = pipe(batch_size=8, num_inference_steps=2, return_dict=False)
    assert log_w.shape == (8,) and nfe == 2 and abs(log_z - target.log_Z) < 1e-4
    with pytest.raises(ValueError, match="volume"):
        pipe(batch_size=2, volume="bogus")
    with pytest.raises(ValueError, match="batch_size"):
        pipe(batch_size=0)
    with pytest.raises(ValueError, match="needs a target"):
        EnergySamplerPipeline(model=pipe.model, scheduler=F2D2Scheduler())
    with pytest.raises(ValueError, match="3-D"):
        EnergySamplerPipeline(model=EnergySamplerMLPModel(sample_size=2), scheduler=F2D2Scheduler(), target=target)
    # A clip of 0 (or below) would put every prior draw on one point and give a finite, wrong log Z.
    for clip in (0.0, -1.0, float("nan")):
        with pytest.raises(ValueError, match="prior_clip"):
            pipe(batch_size=4, prior_clip=clip)
    with pytest.raises(ValueError, match="prior_clip"):
        pipe.euler_maruyama(batch_size=4, prior_clip=0.0)
    for latents, match in [(torch.zeros(4, 2), "shape"), (torch.zeros(4, 3, dtype=torch.long), "floating-point"),
                           (torch.full((4, 3), float("nan")), "NaN")]:
        with pytest.raises(ValueError, match=match):
            pipe(latents=latents)
    with pytest.raises(ValueError, match="batch_size"):
        pipe(batch_size=3, latents=torch.zeros(4, 3))


def test_non_finite_weights_are_refused_not_averaged():
    from f2d2_diffusers.pipelines.pipeline_energy_sampler import importance_summary

    with pytest.raises(ValueError, match="NaN or \\+inf"):
        importance_summary(torch.tensor([0.0, float("nan"), 1.0]))
    log_z, _, ess = importance_summary(torch.tensor([0.0, float("-inf")]))  # a sample outside the support: weight 0
    assert abs(log_z - math.log(0.5)) < 1e-12 and abs(ess - 1.0) < 1e-12


def tiny_sampler(target="gmm40"):
    torch.manual_seed(0)
    model = EnergySamplerMLPModel(sample_size=2, hidden_dim=16, num_fourier=8, prior_scale=40.0)
    pipe = EnergySamplerPipeline(model=model, scheduler=F2D2Scheduler(), target=target)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def test_mlp_sampler_runs_all_estimators_and_volumes():
    pipe = tiny_sampler()
    g = torch.Generator().manual_seed(0)
    for volume in ("auto", "exact", "hutchinson", "logdet"):
        out = pipe(batch_size=16, num_inference_steps=2, generator=g, volume=volume)
        assert out.samples.shape == (16, 2) and math.isfinite(out.log_Z) and 1 <= out.ess <= 16 + 1e-6
    em = pipe.euler_maruyama(batch_size=16, num_inference_steps=4, generator=g)
    assert em.nfe == 4 and math.isfinite(em.elbo)
    rev = pipe.reverse_estimate(batch_size=16, num_inference_steps=2, generator=g)
    assert rev.samples.shape == (16, 2) and math.isfinite(rev.log_Z)


def test_save_and_load_remember_the_target(tmp_path):
    from diffusers import DiffusionPipeline

    from f2d2_diffusers.hub import make_diffusers_loadable

    pipe = tiny_sampler("gmm40")
    pipe.save_pretrained(tmp_path)
    make_diffusers_loadable(str(tmp_path))
    loaded = EnergySamplerPipeline.from_pretrained(tmp_path)
    assert loaded.target.name == "gmm40" and loaded.config.target == "gmm40"
    g = lambda: torch.Generator().manual_seed(3)  # noqa: E731
    a = pipe(batch_size=4, num_inference_steps=2, generator=g())
    b = loaded(batch_size=4, num_inference_steps=2, generator=g())
    torch.testing.assert_close(a.samples, b.samples)
    remote = DiffusionPipeline.from_pretrained(tmp_path, trust_remote_code=True)
    assert type(remote).__name__ == "EnergySamplerPipeline"
    # the recorded target can be overridden at load time
    assert EnergySamplerPipeline.from_pretrained(tmp_path, target="gmm_grid").target.name == "gmm_grid"


@pytest.mark.parametrize("folder, target", [("sampler-gmm40", "gmm40"), ("sampler-funnel", "funnel"),
                                            ("sampler-breast-cancer", "breast_cancer"),
                                            ("sampler-many-well-32", "many_well_32")])
def test_shipped_samplers_load_and_sample(folder, target):
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "checkpoints" / folder
    pipe = EnergySamplerPipeline.from_pretrained(path)
    pipe.set_progress_bar_config(disable=True)
    assert pipe.target.name == target and (path / "pipeline.py").is_file() and (path / "README.md").is_file()
    assert not any(p.name.startswith("checkpoint-") for p in path.iterdir())
    out = pipe(batch_size=8, num_inference_steps=1, generator=torch.Generator().manual_seed(0))
    assert out.samples.shape == (8, pipe.target.dim) and math.isfinite(out.log_Z)

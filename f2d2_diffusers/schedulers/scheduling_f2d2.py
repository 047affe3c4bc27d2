"""``F2D2Scheduler``: few-step grids for a joint flow map, in both directions."""

from dataclasses import dataclass
from typing import List, Optional, Tuple, Union

import torch
from diffusers import SchedulerMixin  # noqa: F401  (diffusers finds the loading class by name here)
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.utils import BaseOutput

try:  # diffusers' flow-map scheduler: F2D2Scheduler is one, with the log-density and likelihood grids on top
    from diffusers import FlowMapEulerDiscreteScheduler as _FlowMapBase
except ImportError:  # a diffusers that does not ship it
    _FlowMapBase = SchedulerMixin

from ..dequantization import check_finite
from ..flow_map import TIMESTEP_SCALE, check_shift, flow_map_step, interpolant, shift_sigmas

DIRECTIONS = ("sample", "likelihood")


@dataclass
class F2D2SchedulerOutput(BaseOutput):
    """
    Args:
        prev_sample (`torch.Tensor`): ``X = x + h * u``, the sample at the next grid point.
        delta_log_prob (`torch.Tensor` of shape `(batch,)`): ``log p_{sigma+h}(X) - log p_sigma(x) = -h * D`` (nats).
    """

    prev_sample: torch.Tensor
    delta_log_prob: torch.Tensor


class F2D2Scheduler(_FlowMapBase, ConfigMixin):
    r"""
    Grid and update rule of a joint flow map: a subclass of diffusers' `FlowMapEulerDiscreteScheduler` (same config,
    same sampling grid, same `step(model_output, timestep, sample, r_timestep=None, return_dict=True)`), which adds
    likelihood grids and the log-density increment (`schedulers/interop.py`).

    ``sigma = 0`` is data and ``sigma = 1`` noise; ``timesteps = num_train_timesteps * sigma``. After
    ``set_timesteps(N, direction=...)``:

    - ``direction="sample"``: ``sigmas = [1, 1 - 1/N, ..., 0]`` (noise to data, steps ``h < 0``);
    - ``direction="likelihood"``: ``sigmas = [0, 1/N, ..., 1]`` (data to noise, steps ``h > 0``).

    ``timesteps`` (length ``N``) are the model's ``timestep`` inputs and ``step_sizes`` (length ``N``) its signed
    ``step`` inputs, both on the ``num_train_timesteps`` scale. :meth:`step` moves the sample with the average
    velocity and returns the log-density increment ``-h * D`` from the average divergence.

    Parameters:
        num_train_timesteps (`int`, defaults to 1000): scale of ``timesteps`` (1000 in diffusers' flow matching).
        shift (`float`, defaults to 1.0): ``sigma -> shift * sigma / (1 + (shift - 1) * sigma)`` applied to the grid;
            ``shift < 1`` packs grid points toward the data end. A map trained with ``grid_shift`` (the shortcut
            objective's, ``train_f2d2.py --grid_shift``) is saved with the same ``shift``, so its grids are the
            trained ones.
        likelihood_shift (`float`, *optional*): the shift of the ``"likelihood"`` grids alone, when they differ from
            the sampling grids (a map trained with ``--likelihood_grid_shift``: short encoding steps next to the data,
            the sampling steps of ``shift``); ``None`` (default) uses ``shift`` in both directions.
    """

    _compatibles = ["FlowMapEulerDiscreteScheduler"]
    order = 1
    init_noise_sigma = 1.0

    @register_to_config
    def __init__(self, num_train_timesteps: int = 1000, shift: float = 1.0, likelihood_shift: Optional[float] = None):
        if num_train_timesteps != TIMESTEP_SCALE:
            raise ValueError(
                f"F2D2 models are conditioned on 1000 * sigma; num_train_timesteps={num_train_timesteps} is not supported"
            )
        check_shift(shift, "shift")
        check_shift(likelihood_shift, "likelihood_shift", allow_none=True)
        self.sigmas: Optional[torch.Tensor] = None
        self.timesteps: Optional[torch.Tensor] = None
        self.step_sizes: Optional[torch.Tensor] = None
        self.direction = "sample"
        self.num_inference_steps: Optional[int] = None
        self._step_index: Optional[int] = None
        self._begin_index: Optional[int] = None
        self.set_timesteps(1)

    @property
    def step_index(self) -> Optional[int]:
        """Index of the next step, ``None`` before the first :meth:`step` after :meth:`set_timesteps`."""
        return self._step_index

    @property
    def begin_index(self) -> Optional[int]:
        return self._begin_index

    def set_begin_index(self, begin_index: int = 0):
        self._begin_index = begin_index

    def __len__(self) -> int:
        return self.config.num_train_timesteps

    def scale_model_input(self, sample: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        """Identity; flow maps take the sample unscaled."""
        return sample

    def scale_noise(self, sample: torch.Tensor, timestep: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """The interpolant ``(1 - sigma) * sample + sigma * noise`` at ``sigma = timestep / num_train_timesteps``."""
        sigma = torch.as_tensor(timestep, device=sample.device, dtype=sample.dtype) / self.config.num_train_timesteps
        return interpolant(sample, noise, sigma)

    def shift_for(self, direction: str) -> float:
        """The grid shift of ``direction`` (``"sample"`` or ``"likelihood"``): ``likelihood_shift`` where set for the
        likelihood grids, else ``shift``."""
        if direction not in DIRECTIONS:
            raise ValueError(f"direction must be one of {DIRECTIONS}, got {direction!r}")
        likelihood_shift = self.config.get("likelihood_shift")
        if direction == "likelihood" and likelihood_shift is not None:
            return float(likelihood_shift)
        return float(self.config.shift)

    def set_timesteps(
        self,
        num_inference_steps: Optional[int] = None,
        device: Union[str, torch.device, None] = None,
        sigmas: Optional[List[float]] = None,
        direction: str = "sample",
    ) -> None:
        """Build the grid.

        Args:
            num_inference_steps (`int`): number of steps ``N`` (network calls) on the uniform grid.
            device: where ``sigmas``, ``timesteps`` and ``step_sizes`` live.
            sigmas (`List[float]`, *optional*): a custom grid in [0, 1], strictly decreasing from 1 to 0 for
                ``"sample"`` and increasing from 0 to 1 for ``"likelihood"``: the ``N(0, I)`` prior holds at
                ``sigma = 1`` only, so the grid must reach it. Give all ``N + 1`` points, or ``N`` starting points and
                the end point (0 for sampling, 1 for likelihood) is appended. The direction's shift
                (:meth:`shift_for`) is applied to it as to the default (it keeps 0 and 1 in place).
            direction (`str`): ``"sample"`` (noise to data) or ``"likelihood"`` (data to noise).
        """
        if direction not in DIRECTIONS:
            raise ValueError(f"direction must be one of {DIRECTIONS}, got {direction!r}")
        start, end = (1.0, 0.0) if direction == "sample" else (0.0, 1.0)
        if num_inference_steps is not None or sigmas is None:
            if isinstance(num_inference_steps, bool) or not isinstance(num_inference_steps, int) or num_inference_steps < 1:
                raise ValueError(f"num_inference_steps must be a positive integer, got {num_inference_steps!r}")
        if sigmas is not None:
            try:
                grid = torch.as_tensor(sigmas, dtype=torch.float64)
            except (TypeError, ValueError, RuntimeError):
                raise ValueError(f"sigmas must be a list of numbers, got {sigmas!r}") from None
            if grid.ndim > 1 or grid.numel() == 0 or not torch.isfinite(grid).all():
                raise ValueError(f"sigmas must be a non-empty list of finite numbers, got {sigmas!r}")
            grid = grid.flatten().cpu()
            if grid[-1] != end:
                grid = torch.cat([grid, grid.new_tensor([end])])
            if num_inference_steps is not None and num_inference_steps != grid.numel() - 1:
                raise ValueError(f"num_inference_steps={num_inference_steps!r} does not match {grid.numel() - 1} steps in sigmas")
            if grid.min() < 0 or grid.max() > 1:
                raise ValueError(f"sigmas must lie in [0, 1], got {grid.tolist()}")
            diffs = grid.diff() * (1 if direction == "likelihood" else -1)
            if grid.numel() < 2 or not (diffs > 0).all():
                order = "increasing" if direction == "likelihood" else "decreasing"
                raise ValueError(f"sigmas must be strictly {order} for direction={direction!r}, got {grid.tolist()}")
            if grid[0] != start:
                raise ValueError(
                    f"sigmas for direction={direction!r} must start at {start:g} and end at {end:g}: the N(0, I) prior "
                    f"holds at sigma = 1 only, so a grid that stops short of it gives a wrong log-density; got {grid.tolist()}"
                )
        else:
            grid = torch.linspace(start, end, num_inference_steps + 1, dtype=torch.float64)
        grid = shift_sigmas(grid, self.shift_for(direction))

        dtype = torch.float32 if torch.device(device or "cpu").type in ("mps", "npu") else torch.float64
        self.direction = direction
        self.num_inference_steps = grid.numel() - 1
        self.sigmas = grid.to(device=device, dtype=dtype)
        self.timesteps = self.sigmas[:-1] * self.config.num_train_timesteps
        self.step_sizes = self.sigmas.diff() * self.config.num_train_timesteps
        self._step_index = None
        self._begin_index = None

    def index_for_timestep(self, timestep: Union[float, torch.Tensor]) -> Optional[int]:
        """Index of ``timestep`` on the current grid, or ``None`` when it is off the grid (or differs per sample)."""
        return self._index_of(self._timestep_values(timestep, "timestep"))

    def _index_of(self, values: torch.Tensor) -> Optional[int]:
        if (values != values[0]).any():
            return None
        diffs = (self.timesteps.double().cpu() - values[0]).abs()
        idx = int(diffs.argmin())
        return idx if diffs[idx] <= 1e-3 else None

    def _timestep_values(self, timestep, name: str, batch: Optional[int] = None) -> torch.Tensor:
        """``timestep`` (a number, or a tensor with one value or one per sample) as a flat float64 CPU tensor, each
        value in ``[0, num_train_timesteps]``."""
        try:
            values = torch.as_tensor(timestep, dtype=torch.float64).flatten().cpu()
        except (TypeError, ValueError, RuntimeError):
            raise ValueError(f"{name} must be a number or a tensor of numbers, got {timestep!r}") from None
        scale = self.config.num_train_timesteps
        if values.numel() == 0 or not torch.isfinite(values).all():
            raise ValueError(f"{name} must be finite numbers, got {timestep!r}")
        if batch is not None and values.numel() not in (1, batch):
            raise ValueError(f"{name} must be one number or one per sample ({batch}), got {values.numel()} values")
        if values.min() < 0 or values.max() > scale:
            raise ValueError(f"{name} must lie in [0, {scale}] (num_train_timesteps * sigma), got {values.tolist()}")
        return values

    def step(
        self,
        model_output,
        timestep: Union[float, torch.Tensor],
        sample: torch.Tensor,
        r_timestep: Optional[Union[float, torch.Tensor]] = None,
        return_dict: bool = True,
        *,
        divergence: Optional[torch.Tensor] = None,
    ) -> Union[F2D2SchedulerOutput, Tuple[torch.Tensor, torch.Tensor]]:
        """Move ``sample`` from ``timestep`` to ``r_timestep`` (default: the next grid point).

        Args:
            model_output: an ``F2D2ModelOutput`` (average velocity and divergence), or the average velocity
                tensor with ``divergence`` given separately.
            timestep: the start, ``num_train_timesteps * sigma`` in ``[0, num_train_timesteps]``: one value on the
                grid, or (with ``r_timestep``) any value, or one per sample.
            sample: ``x`` at ``sigma``, shape ``(batch, *dims)``.
            divergence (keyword-only, so that the positional arguments are those of diffusers'
                ``FlowMapEulerDiscreteScheduler.step``): average divergence ``D`` per sample, full scale, when
                ``model_output`` is a tensor.
            r_timestep: the end, for any-step use off the grid (one value, or one per sample).

        Returns:
            ``F2D2SchedulerOutput(prev_sample, delta_log_prob)`` or the tuple ``(prev_sample, delta_log_prob)``.
            NaN or infinite inputs, or a step that overflows, raise a ``ValueError`` naming the argument.
        """
        if self.sigmas is None:
            raise ValueError("`set_timesteps` has not been called.")
        if isinstance(model_output, torch.Tensor):
            velocity = model_output
            if divergence is None:
                raise ValueError("step needs the average divergence: pass an F2D2ModelOutput or `divergence=`")
        elif hasattr(model_output, "sample") and hasattr(model_output, "divergence"):
            velocity = model_output.sample
            divergence = model_output.divergence if divergence is None else divergence
        else:
            raise TypeError(
                f"model_output must be an F2D2ModelOutput or the average velocity tensor, got {type(model_output).__name__}"
            )
        for name, value in (("sample", sample), ("model_output", velocity), ("divergence", divergence)):
            if not isinstance(value, torch.Tensor) or not value.is_floating_point():
                raise TypeError(f"{name} must be a floating-point torch.Tensor, got {getattr(value, 'dtype', type(value).__name__)}")
        if sample.ndim < 1:
            raise ValueError("sample must have shape (batch, *dims), got a 0-d tensor")
        if velocity.shape != sample.shape:
            raise ValueError(f"model_output shape {tuple(velocity.shape)} does not match sample shape {tuple(sample.shape)}")
        if divergence.shape != (sample.shape[0],):
            raise ValueError(f"divergence must have shape ({sample.shape[0]},), got {tuple(divergence.shape)}")
        check_finite(sample, "sample")
        check_finite(velocity, "model_output (average velocity)")
        check_finite(divergence, "divergence")

        scale = self.config.num_train_timesteps
        start = self._timestep_values(timestep, "timestep", sample.shape[0])
        t_idx = self._index_of(start)
        if self._step_index is None:
            self._step_index = self._begin_index if self._begin_index is not None else (t_idx or 0)
        sigma = self.sigmas[t_idx] if t_idx is not None else (start / scale).reshape(() if start.numel() == 1 else -1)
        if r_timestep is None:
            if t_idx is None:
                raise ValueError(f"timestep {start.tolist()} is not on the grid; pass `r_timestep`")
            sigma_next = self.sigmas[t_idx + 1]
        else:
            end = self._timestep_values(r_timestep, "r_timestep", sample.shape[0]) / scale
            sigma_next = end.reshape(() if end.numel() == 1 else -1)
        h = (sigma_next.double().cpu() - sigma.double().cpu()).to(device=sample.device, dtype=sample.dtype)
        prev_sample, delta_log_prob = flow_map_step(sample, velocity, divergence, h.flatten() if h.ndim else h)
        check_finite(prev_sample, "prev_sample (the step overflowed)")
        check_finite(delta_log_prob, "delta_log_prob (the step overflowed)")
        self._step_index += 1
        if not return_dict:
            return (prev_sample, delta_log_prob)
        return F2D2SchedulerOutput(prev_sample=prev_sample, delta_log_prob=delta_log_prob)

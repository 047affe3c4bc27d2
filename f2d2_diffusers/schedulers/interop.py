"""diffusers' ``FlowMapEulerDiscreteScheduler`` in the F2D2 pipelines.

``F2D2Scheduler`` subclasses diffusers' ``FlowMapEulerDiscreteScheduler`` (where the installed diffusers has it): the
same config (``num_train_timesteps``, ``shift``), the same sampling grid ``sigma_k = shift(1 - k/N)`` ending at 0, and
the same ``step(model_output, timestep, sample, r_timestep=None, return_dict=True)`` (``prev_sample = x + h u``);
it adds ``direction="likelihood"`` grids and the log-density increment ``delta_log_prob = -h D`` (from the model's
divergence, given as ``model_output.divergence`` or ``divergence=``).

The pipelines accept either. diffusers' scheduler has no log-density and no data-to-noise grid, so for each call the
pipeline works on an ``F2D2Scheduler`` built from its config (:func:`as_f2d2_scheduler`): the same grid, hence the
same samples, and the log-density from the model's divergence head as always.
"""

import copy

from .scheduling_f2d2 import F2D2Scheduler

try:
    from diffusers import FlowMapEulerDiscreteScheduler
except ImportError:  # a diffusers without it: the pipelines take F2D2Scheduler only
    FlowMapEulerDiscreteScheduler = None

#: What the F2D2 pipelines take as ``scheduler``.
FLOW_MAP_SCHEDULERS = (F2D2Scheduler,) + ((FlowMapEulerDiscreteScheduler,) if FlowMapEulerDiscreteScheduler else ())


def as_f2d2_scheduler(scheduler) -> F2D2Scheduler:
    """A private ``F2D2Scheduler`` for one pipeline call: a copy of an ``F2D2Scheduler``, or one with the config of a
    diffusers ``FlowMapEulerDiscreteScheduler`` (same ``num_train_timesteps`` and ``shift``, so the same grids)."""
    if isinstance(scheduler, F2D2Scheduler):
        return copy.deepcopy(scheduler)
    if FlowMapEulerDiscreteScheduler is not None and isinstance(scheduler, FlowMapEulerDiscreteScheduler):
        # A likelihood_shift kept in its config (loaded from an F2D2 checkpoint's scheduler folder) is kept too.
        return F2D2Scheduler(num_train_timesteps=scheduler.config.num_train_timesteps, shift=scheduler.config.shift,
                             likelihood_shift=scheduler.config.get("likelihood_shift"))
    accepted = " or ".join(c.__name__ for c in FLOW_MAP_SCHEDULERS)
    raise TypeError(
        f"F2D2 pipelines step with an {accepted}, got {type(scheduler).__name__}. A flow map needs its step size "
        "(`step = 1000 * h`); samplers of instantaneous velocities (FlowMatchEulerDiscreteScheduler) are for teachers."
    )

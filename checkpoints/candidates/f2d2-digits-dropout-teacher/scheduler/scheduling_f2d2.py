"""diffusers remote-code entry point of this checkpoint, written by f2d2-diffusers: the `scheduler` component's class.

It holds no model code. It imports `F2D2Scheduler` from the installed f2d2-diffusers package by module path, so what runs
is that package's code at its installed version; `trust_remote_code=True` runs only this import. Without
`trust_remote_code`, load with the package's class: `from f2d2_diffusers import F2D2Pipeline`,
`F2D2Pipeline.from_pretrained(<this folder or repo>)`.
"""

try:
    from f2d2_diffusers.schedulers.scheduling_f2d2 import F2D2Scheduler
except ImportError as err:  # the package is missing: say how to get it
    raise ImportError("This checkpoint's scheduler component class F2D2Scheduler comes from the f2d2-diffusers package, which is not installed. It is not on PyPI: install it from a checkout of its source (`pip install ./f2d2-diffusers`, which also brings diffusers; see the package README's set-up section), then load again with `DiffusionPipeline.from_pretrained(..., trust_remote_code=True)` or `from f2d2_diffusers import F2D2Pipeline; F2D2Pipeline.from_pretrained(...)`.") from err

__all__ = ["F2D2Scheduler"]

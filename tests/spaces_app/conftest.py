"""Fixtures for the Space tests: tiny models (and energy samplers) in its registries, an input digit, and a live
server."""

import os

import pytest
from space_helpers import ARTIFACTS, require_demo_dependencies, tiny_registry, tiny_sampler_registry

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")


@pytest.fixture(scope="session")
def artifacts_dir():
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS


@pytest.fixture(scope="session")
def digit_png(tmp_path_factory):
    """A test-split scikit-learn digit as a 96x96 dark-on-light PNG (so the app must invert and resize it)."""
    import numpy as np
    import PIL.Image

    from f2d2_diffusers.data import load_digits_levels

    levels = load_digits_levels("test")[0, 0].numpy().astype(np.float64)
    image = PIL.Image.fromarray((255 - levels * 255 / 16).round().astype(np.uint8), mode="L")
    path = tmp_path_factory.mktemp("inputs") / "digit.png"
    image.resize((96, 96), PIL.Image.Resampling.NEAREST).save(path)
    return path


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """The app with tiny models, served on 127.0.0.1 for one test module; yields its URL."""
    require_demo_dependencies()
    from ui import build_demo

    folder = tmp_path_factory.mktemp("registry")
    demo = build_demo(tiny_registry(folder), tiny_sampler_registry(folder))
    _, url, _ = demo.launch(server_name="127.0.0.1", server_port=None, prevent_thread_lock=True, quiet=True)
    try:
        yield url
    finally:
        demo.close()

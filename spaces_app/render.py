"""Pictures the Space shows: captioned image grids, 2-D scatter plots, the converted input and the benchmark plots."""

import io
import math
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

import numpy as np
import PIL.Image
import PIL.ImageDraw
import PIL.ImageFont

from content import APP_DIR, EXPLAIN_PLOTS, REPO_ROOT

#: Axis limits of a 2-D plot: ``((x_min, x_max), (y_min, y_max))``.
Limits = Tuple[Tuple[float, float], Tuple[float, float]]


def _font(size: int):
    try:
        return PIL.ImageFont.load_default(size=size)
    except TypeError:  # Pillow without FreeType
        return PIL.ImageFont.load_default()


def render_image_grid(images: np.ndarray, captions: Optional[Sequence[str]] = None, tile: int = 80) -> PIL.Image.Image:
    """``images`` ``(B, H, W, C)`` in [0, 1] as one grid image, each tile upscaled (nearest) to ``tile`` pixels
    and captioned."""
    count = images.shape[0]
    columns = min(8, max(1, math.ceil(math.sqrt(count))))
    rows = math.ceil(count / columns)
    caption_height = 18 if captions else 0
    pad = 6
    grid = PIL.Image.new("RGB", (columns * (tile + pad) + pad, rows * (tile + pad + caption_height) + pad), "white")
    draw = PIL.ImageDraw.Draw(grid)
    font = _font(11)
    for i in range(count):
        array = (np.clip(images[i], 0, 1) * 255).round().astype(np.uint8)
        tile_image = PIL.Image.fromarray(array[..., 0] if array.shape[-1] == 1 else array).convert("RGB")
        tile_image = tile_image.resize((tile, tile), PIL.Image.Resampling.NEAREST)
        x = pad + (i % columns) * (tile + pad)
        y = pad + (i // columns) * (tile + pad + caption_height)
        grid.paste(tile_image, (x, y))
        if captions:
            draw.text((x + tile / 2, y + tile + 2), captions[i], fill="black", font=font, anchor="ma")
    return grid


def render_levels(levels: np.ndarray, num_levels: int, tile: int = 160) -> PIL.Image.Image:
    """The converted input (integer levels ``(H, W, C)``) as the model sees it, upscaled."""
    array = levels.astype(np.float64) / (num_levels - 1)
    return render_image_grid(array[None], None, tile=tile)


def _figure_to_image(fig) -> PIL.Image.Image:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    buffer = io.BytesIO()
    FigureCanvasAgg(fig).print_png(buffer)
    buffer.seek(0)
    return PIL.Image.open(buffer).convert("RGB")


def render_scatter(
    points: np.ndarray,
    values: Optional[np.ndarray],
    title: str,
    colour_label: str = "log p (nats)",
    limits: Optional[Limits] = None,
) -> PIL.Image.Image:
    """Points ``(N, d)`` (their first two coordinates) as a scatter image, coloured by ``values`` ``(N,)`` when given.

    ``limits``: shared axes between plots (see :func:`shared_limits`); default: fitted to the points.
    """
    # matplotlib is imported here, not at module level: only 2-D models need it, and it is slow to import.
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5, 4.4), dpi=100)
    ax = fig.add_subplot(1, 1, 1)
    xs = points[:, 0]
    ys = points[:, 1] if points.shape[1] > 1 else np.zeros_like(xs)
    size = 18 if len(points) <= 200 else 6
    if values is not None:
        mappable = ax.scatter(xs, ys, c=values, s=size, cmap="viridis", linewidths=0)
        fig.colorbar(mappable, ax=ax, label=colour_label)
    else:
        ax.scatter(xs, ys, s=size, color="tab:grey", linewidths=0)
    if limits is not None:
        ax.set_xlim(*limits[0])
        ax.set_ylim(*limits[1])
        ax.set_aspect("equal", adjustable="box")
    else:
        ax.set_aspect("equal", adjustable="datalim")
    ax.set_title(title, fontsize=10)
    ax.set_xlabel("x₁")
    ax.set_ylabel("x₂" if points.shape[1] > 1 else "")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return _figure_to_image(fig)


def shared_limits(*point_sets: np.ndarray, quantile: float = 0.0, margin: float = 0.05) -> Limits:
    """Axis limits covering the first two coordinates of every set of points ``(N, d)``, with a ``margin`` (share of
    the span) on each side; ``quantile > 0`` leaves out the outermost ``quantile`` of each coordinate, so that one
    far-flung sample does not shrink the rest to a dot."""
    stacked = np.concatenate([p[:, :2] for p in point_sets])
    if stacked.shape[1] == 1:
        stacked = np.concatenate([stacked, np.zeros_like(stacked)], axis=1)
    low, high = np.quantile(stacked, quantile, axis=0), np.quantile(stacked, 1 - quantile, axis=0)
    pad = margin * np.maximum(high - low, 1e-3)
    return tuple((float(a), float(b)) for a, b in zip(low - pad, high + pad))


#: The density panel's colour range: nats below the log-density's maximum on the plotted grid.
DENSITY_RANGE = 20.0


def _outside(points: np.ndarray, limits: Limits) -> int:
    """How many of ``points`` ``(N, d)`` fall outside ``limits`` in their first two coordinates."""
    (x0, x1), (y0, y1) = limits
    xs, ys = points[:, 0], points[:, 1]
    return int(((xs < x0) | (xs > x1) | (ys < y0) | (ys > y1)).sum())


def render_energy_samples(
    samples: np.ndarray, title: str, log_density=None, exact: Optional[np.ndarray] = None, grid_size: int = 200
) -> PIL.Image.Image:
    """An energy sampler's samples ``(N, d)``, ``d >= 2``, as a figure.

    2-D targets (``log_density`` given: ``(M, 2)`` array -> ``(M,)`` unnormalised log-density, nats): the samples over
    a heatmap and contours of the log-density on a ``grid_size``-square grid, its colours spanning
    :data:`DENSITY_RANGE` nats below the maximum; ``exact`` (exact target samples ``(M, 2)``), when given, only sets
    the axes, so that the whole target shows. Otherwise: the first two coordinates of the samples, beside those of
    ``exact`` ``(M, d)`` when given, on shared axes. ``title`` may hold several lines.
    """
    from matplotlib.figure import Figure

    sets = [samples] + ([exact] if exact is not None else [])
    limits = shared_limits(*sets, quantile=0.005, margin=0.08)
    size = 8 if len(samples) <= 500 else 4
    if log_density is not None and samples.shape[1] == 2:
        fig = Figure(figsize=(6.4, 5.4), dpi=100)
        ax = fig.add_subplot(1, 1, 1)
        xs, ys = np.linspace(*limits[0], grid_size), np.linspace(*limits[1], grid_size)
        grid = np.stack(np.meshgrid(xs, ys), axis=-1).reshape(-1, 2)
        values = np.asarray(log_density(grid), dtype=np.float64).reshape(grid_size, grid_size)
        top = float(np.nanmax(values))
        values = np.clip(values, top - DENSITY_RANGE, top)
        image = ax.imshow(values, origin="lower", extent=(*limits[0], *limits[1]), cmap="Blues", aspect="auto")
        ax.contour(xs, ys, values, levels=np.linspace(top - DENSITY_RANGE, top, 6)[1:-1], colors="white",
                   linewidths=0.6, linestyles="solid", alpha=0.8)
        fig.colorbar(image, ax=ax, label=f"target log-density, unnormalised (nats; floor {DENSITY_RANGE:g} below max)")
        ax.scatter(samples[:, 0], samples[:, 1], s=size, color="tab:red", alpha=0.7, linewidths=0, label="samples")
        ax.legend(loc="upper right", fontsize=8, markerscale=2, framealpha=0.8)
        axes = [(ax, samples)]
        ax.set_title(title, fontsize=10)
    else:
        panels = [(samples, "tab:red", "Sampler")] + ([(exact, "tab:blue", "Exact target samples")] if exact is not None else [])
        fig = Figure(figsize=(max(6.4, 5.2 * len(panels)), 5.2), dpi=100)
        axes = []
        for i, (points, colour, name) in enumerate(panels):
            ax = fig.add_subplot(1, len(panels), i + 1)
            ax.scatter(points[:, 0], points[:, 1], s=size, color=colour, alpha=0.6, linewidths=0)
            ax.set_title(f"{name}: {len(points)} points", fontsize=10)
            axes.append((ax, points))
        note = "" if exact is not None else " (no exact sampler for this target)"
        fig.suptitle(f"{title}\nfirst two coordinates (x₁, x₂) of the {samples.shape[1]}-D samples{note}", fontsize=10)
    for ax, points in axes:
        ax.set_xlim(*limits[0])
        ax.set_ylim(*limits[1])
        ax.set_xlabel("x₁")
        ax.set_ylabel("x₂")
        ax.grid(alpha=0.3)
        outside = _outside(points, limits)
        if outside:
            ax.text(0.01, 0.01, f"{outside} point(s) outside the axes", transform=ax.transAxes, fontsize=8,
                    color="dimgrey", va="bottom")
    fig.tight_layout()
    return _figure_to_image(fig)


def explain_plots(roots: Sequence[Path] = (REPO_ROOT, APP_DIR)) -> Tuple[List[Tuple[PIL.Image.Image, str]], str]:
    """``(gallery items, status markdown)`` for the benchmark plots of ``content.EXPLAIN_PLOTS`` that exist now.

    A plot is looked up under each of ``roots`` in turn; the status names the missing ones and the script to run.
    """
    items, missing = [], []
    for relative, caption in EXPLAIN_PLOTS:
        found = next((root / relative for root in roots if (root / relative).is_file()), None)
        if found is None:
            missing.append(f"- `{relative}`: not there yet ({caption.split(': ', 1)[0]}; run {caption.split('(')[-1].rstrip(')')}).")
            continue
        try:
            with PIL.Image.open(found) as image:
                items.append((image.convert("RGB"), caption))
        except Exception as err:  # noqa: BLE001 - a broken plot file is reported, the tab still renders
            missing.append(f"- `{relative}`: could not be read ({type(err).__name__}).")
    if missing:
        status = "**Benchmark plots**\n\n" + "\n".join(missing)
        if not items:
            status += "\n\nNo plot yet: they appear here once the benchmarks have been run (press Refresh)."
    else:
        status = "**Benchmark plots**: all found."
    return items, status

"""``benchmarks/likelihood_grids.py``: its grids use only trained steps, and its figure comes from the JSON alone."""

import json
import math

from benchmarks import likelihood_grids


def test_every_step_of_both_grid_families_is_a_trained_dyadic_step():
    grids = [likelihood_grids.uniform_grid(n) for n in likelihood_grids.UNIFORM_CALLS]
    grids += [likelihood_grids.geometric_grid(n) for n in likelihood_grids.GEOMETRIC_CALLS]
    for grid in grids:
        assert grid[0] == 0.0 and grid[-1] == 1.0
        for start, end in zip(grid[:-1], grid[1:]):
            size = end - start
            level = -math.log2(size)
            assert level == round(level) and 0 <= level <= 6, grid  # |h| = 2^-k, k <= max_level
            assert (start / size) == round(start / size), grid  # the start is a multiple of |h|
    assert likelihood_grids.geometric_grid(5) == [0.0, 0.0625, 0.125, 0.25, 0.5, 1.0]
    assert likelihood_grids.geometric_grid(2) == likelihood_grids.uniform_grid(2)


def test_the_committed_report_redraws_and_has_both_families_for_each_split(tmp_path):
    source = f"{likelihood_grids.PATHS.results_dir}/likelihood_grids_digits.json"
    report = json.loads(open(source).read())
    assert set(report["splits"]) == {"test", "train"}
    for rows in report["students"].values():
        for split in report["splits"]:
            assert [int(n) for n in rows[split]["uniform"]] == list(likelihood_grids.UNIFORM_CALLS)
            assert [int(n) for n in rows[split]["geometric"]] == list(likelihood_grids.GEOMETRIC_CALLS)
            assert all(cell["calls"] == len(cell["sigmas"]) - 1 for cell in rows[split]["geometric"].values())
    path = tmp_path / "likelihood_grids_digits.json"
    path.write_text(json.dumps(report))
    likelihood_grids.main(likelihood_grids.parse_args(["--replot", str(path)]))
    assert (tmp_path / "likelihood_grids_digits.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

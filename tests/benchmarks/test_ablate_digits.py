"""``benchmarks/ablate_digits.py``'s table: every JSONL row, the error budget where measured, the hand-kept notes."""

import json

import pytest

from benchmarks import ablate_digits


def row(variant, budget=None):
    r = dict(variant=variant, init="f2d2-digits", steps=600, minutes=4.5,
             error={k: -0.1 * int(k) for k in ("1", "2", "4", "8")}, mae={k: 0.2 for k in ("1", "2", "4", "8")},
             state_error_1=[2.6], state_error_2=[1.3, 0.3], segment_state_error_8=[0.1] * 8)
    if budget:
        r["budget"] = budget
    return r


def test_the_table_has_every_row_its_budget_and_the_notes(tmp_path):
    stem = str(tmp_path / "ablations")
    (tmp_path / "ablations_notes.md").write_text("## What the rows say\n\n- a note\n")
    ablate_digits.write_row(stem, row("before the budget"))
    ablate_digits.write_row(stem, row("with it", {"1": dict(radial=3.9, spread=3.75, divergence=0.63)}))
    text = (tmp_path / "ablations.md").read_text()
    lines = [line for line in text.splitlines() if line.startswith("| before") or line.startswith("| with")]
    assert lines[0].endswith("| - |") and lines[1].endswith("| +3.90 / 3.75 / +0.63 |")
    assert "| -0.100 | -0.200 | -0.400 | -0.800 |" in lines[0]
    assert text.rstrip().endswith("- a note")
    # The notes can change without a run: --rewrite_table redraws the table from the rows.
    (tmp_path / "ablations_notes.md").write_text("- another note\n")
    ablate_digits.main(ablate_digits.parse_args(["--rewrite_table", "--results", stem]))
    assert (tmp_path / "ablations.md").read_text().rstrip().endswith("- another note")
    assert len([json.loads(x) for x in open(stem + ".jsonl")]) == 2


def test_level_weights_are_parsed_and_checked(capsys):
    args = ablate_digits.parse_args(["--variant", "v", "--level_weights", "3,3,1,1,1,1,1"])
    assert args.level_weights == [3.0, 3.0, 1.0, 1.0, 1.0, 1.0, 1.0]
    with pytest.raises(SystemExit):
        ablate_digits.parse_args(["--variant", "v", "--level_weights", "1,2"])
    assert "one weight per level 0..6" in capsys.readouterr().err


def test_a_shifted_row_without_reference_grid_points_gets_dashes(tmp_path):
    stem = str(tmp_path / "ablations")
    shifted = row("shifted")
    shifted.update(state_error_2=None, segment_state_error_8=None)
    ablate_digits.write_row(stem, shifted)
    line = next(x for x in (tmp_path / "ablations.md").read_text().splitlines() if x.startswith("| shifted"))
    assert "| 2.60 | - | - | - |" in line


def test_grid_shift_flags_are_checked(capsys):
    for bad, message in [(["--grid_shift", "0"], "must be a positive finite number"),
                         (["--grid_shift", "0.5", "--objective", "meanflow"], "only the shortcut objective's dyadic steps"),
                         (["--grid_shift", "0.5", "--trajectory_only"], "only the shortcut objective's dyadic steps"),
                         (["--likelihood_grid_shift", "0.5", "--trajectory_only"], "only the shortcut objective's dyadic steps")]:
        with pytest.raises(SystemExit):
            ablate_digits.parse_args(["--variant", "v", *bad])
        assert message in capsys.readouterr().err

"""The fuzz suite's report: how many cases ran and how each ended, printed at the end of the run (with or without
``-s``) and written to ``outputs/fuzz-report.json``."""

import json
import sys
from pathlib import Path

import pytest

REPORT = Path(__file__).resolve().parents[2] / "outputs" / "fuzz-report.json"


def pytest_collection_modifyitems(config, items):
    here = Path(__file__).resolve().parent
    for item in items:
        if here in Path(str(item.fspath)).resolve().parents:
            item.add_marker(pytest.mark.fuzz)


def pytest_terminal_summary(terminalreporter):
    # Imported here: the helpers need hypothesis, and the fuzz modules skip themselves without it.
    helpers = sys.modules.get("fuzz_helpers")
    outcomes = getattr(helpers, "OUTCOMES", None)
    if not outcomes:
        return
    totals = {}
    for counts in outcomes.values():
        for kind, n in counts.items():
            totals[kind] = totals.get(kind, 0) + n
    cases = sum(totals.values())
    report = {
        "cases": cases,
        "outcomes": dict(sorted(totals.items())),
        "targets": {target: dict(sorted(counts.items())) for target, counts in sorted(outcomes.items())},
        "max_examples_per_test": helpers.MAX_EXAMPLES,
        "example_messages": {target: messages for target, messages in sorted(helpers.MESSAGES.items())},
    }
    REPORT.parent.mkdir(parents=True, exist_ok=True)
    REPORT.write_text(json.dumps(report, indent=2) + "\n")
    terminalreporter.write_sep("-", "fuzz summary")
    for target, counts in report["targets"].items():
        terminalreporter.write_line(f"  {target}: " + ", ".join(f"{n} {kind}" for kind, n in counts.items()))
    summary = ", ".join(f"{n} {kind}" for kind, n in report["outcomes"].items())
    terminalreporter.write_line(f"fuzz: {cases} cases ({summary}); every one a finite result or a clear ValueError/TypeError")
    terminalreporter.write_line(f"fuzz report: {REPORT}")

#!/usr/bin/env python
"""A markdown "Results" section from the benchmark JSON files in benchmarks/results/.

Reads ``likelihood_*.json`` and ``scaling.json`` and, where present, ``calibration_*.json``, ``sampling_*.json`` and
``ood*.json`` (missing files are skipped), and prints the section, or with ``--readme README.md`` replaces the text
between ``<!-- results:start -->`` and ``<!-- results:end -->`` there (nothing else in the file changes).

    python benchmarks/write_results_md.py                      # to stdout
    python benchmarks/write_results_md.py --readme README.md   # in place, between the markers
"""

import argparse
import glob
import json
import math
import os
import sys
from pathlib import Path

from f2d2_diffusers.evaluation.reports import benchmark_paths

PATHS = benchmark_paths(Path(__file__).resolve().parents[1])
START, END = "<!-- results:start -->", "<!-- results:end -->"


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--results_dir", default=PATHS.results_dir)
    p.add_argument("--readme", default=None, help="file whose marked block to replace (default: print to stdout)")
    return p.parse_args(argv)


def _num(value, digits=4):
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value) or math.isinf(value):
            return str(value)
        if value != 0 and (abs(value) >= 1e4 or abs(value) < 10 ** -digits):
            return f"{value:.2e}"
        return f"{value:.{digits}f}"
    return str(value).replace("|", "/")


def _seconds(value):
    return "-" if value is None else (f"{value:.3f}" if value < 1 else f"{value:.1f}")


def _image(path, base):
    if not os.path.isfile(path):
        return []
    rel = os.path.relpath(path, base).replace(os.sep, "/")
    return [f"![{os.path.basename(path)}]({rel})", ""]


def _table(header, rows):
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines + [""]


def likelihood_section(report, png, base):
    unit = report.get("unit", "")
    rows = report.get("rows", [])
    targets = report.get("targets") or {}
    a = targets.get("a_100x_less_wall_time_at_equal_or_better_error", {}).get("results", {})
    best_peer = a.get("bidirectional", {}).get("mean_error", {}).get("best_peer")
    fixed = [r for r in rows if r.get("method") in ("euler", "midpoint") and not r.get("skipped")]
    longest = {m: max((r for r in fixed if r["method"] == m), key=lambda r: r["nfe"], default=None) for m in ("euler", "midpoint")}
    keep = []
    for r in rows:
        if r.get("method") in ("euler", "midpoint") and not r.get("skipped"):
            if not (r["nfe"] in (2, 4, 8) or r["name"] == best_peer or r is longest[r["method"]]):
                continue
        keep.append(r)
    partial = "" if report.get("complete", True) else ", stopped before the end: partial"
    out = [f"### Likelihood: {report.get('dataset')} ({report.get('num_points')} test points, {report.get('mode')} run{partial})", ""]
    body = []
    for r in keep:
        if r.get("skipped"):
            body.append([r["name"], "-", "-", "-", "-", "-", f"skipped: {r.get('reason')}"])
            continue
        subset = f" ({r['num_points']} points)" if r.get("num_points") != report.get("num_points") else ""
        body.append([r["name"] + subset, _num(r.get("nfe")), _seconds(r.get("seconds_full")), _num(r.get("value")),
                     _num(r.get("error"), 4), _num(r.get("abs_error"), 4), _num(r.get("time_ratio_vs_f2d2_2step"), 1) + "x"])
    out += _table(["method", "network calls", "seconds", f"mean ({unit})", "mean error", "per-sample MAE",
                   "time / F2D2 2-step"], body)
    b = targets.get("b_10x_lower_error_at_equal_network_calls", {}).get("results", {})
    for evaluation in ("bidirectional", "paper"):
        ta = a.get(evaluation, {}).get("mean_error")
        tb = b.get(evaluation, {}).get("mean_error")
        if ta is None or tb is None:
            continue
        if ta.get("best_peer") is None:
            line_a = ta.get("note", "no peer row reaches 2-step F2D2's error")
        else:
            line_a = (f"fastest peer at equal or better error: {ta['best_peer']} ({_num(ta['peer_error'])} vs "
                      f"{_num(ta['f2d2_error'])}), {_num(ta['speedup'], 1)}x the time of 2-step F2D2: "
                      f"{'met' if ta['met'] else 'not met'}")
        parts = [f"{k} calls {_num(v['ratio'], 2)}x" for k, v in tb.items() if isinstance(v, dict) and "ratio" in v]
        line_b = f"fixed-step error / F2D2 error at equal calls: {', '.join(parts)}: {'met' if tb.get('all_met') else 'not met'}"
        out.append(f"- F2D2 {evaluation}, target (a) 100x less time: {line_a}; target (b) 10x lower error: {line_b}.")
    out.append("")
    return out + _image(png, base)


def scaling_section(report, png, base):
    out = ["### Scaling: wall time and peak memory vs batch and image size", ""]
    out += [report.get("markdown_table", ""), ""]
    if report.get("memory_method"):
        out += [f"Memory: {report['memory_method']}.", ""]
    return out + _image(png, base)


def generic_section(title, report, png, base):
    """Any other benchmark JSON: its own markdown table if it has one, else its rows' scalar fields."""
    out = [f"### {title}", ""]
    if isinstance(report.get("markdown_table"), str):
        out += [report["markdown_table"], ""]
    elif isinstance(report.get("rows"), list) and report["rows"] and all(isinstance(r, dict) for r in report["rows"]):
        keys = []
        for r in report["rows"]:
            keys += [k for k, v in r.items() if k not in keys and (v is None or isinstance(v, (int, float, str, bool)))]
        keys = keys[:9]
        out += _table(keys, [[_num(r.get(k)) for k in keys] for r in report["rows"]])
    else:
        scalars = {k: v for k, v in report.items() if isinstance(v, (int, float, bool)) and not isinstance(v, str)}
        if scalars:
            out += _table(["quantity", "value"], [[k, _num(v)] for k, v in scalars.items()])
    return out + _image(png, base)


def sampling_section(title, report, png, base):
    """The generic rows table plus the 2-step-vs-teacher target line."""
    out = generic_section(title, report, png, base)
    target = report.get("target") or {}
    lines = []
    for score, t in target.items():
        if isinstance(t, dict) and "ratio" in t:
            verdict = "met" if t.get("within_20_percent") else "not met"
            lines.append(f"- 2-step F2D2 / 100-step teacher Euler on `{score}`: {t['ratio']:.3f} "
                         f"(target <= 1.2: {verdict}).")
    return out[:2] + lines + ([""] if lines else []) + out[2:]


def ood_section(title, report, png, base):
    """AUROC per method and OOD set, and whether 1-step F2D2 ranks two checkpoints like the reference does."""
    out = [f"### {title}", "", f"Score: {report.get('score')}; {report.get('convention')}.", ""]
    methods = report.get("methods") or []
    sets = [name for name in (report.get("sets") or {}) if name != report.get("in_distribution")]
    if methods and sets:
        rows = []
        for m in methods:
            label = f"{m.get('method')} {m.get('steps')} step{'s' if m.get('steps') != 1 else ''}" if m.get("steps") else m.get("method")
            rows.append([label, *[_num((m.get("auroc") or {}).get(name), 3) for name in sets], _seconds(m.get("seconds"))])
        out += _table(["method", *[f"AUROC {name}" for name in sets], "seconds"], rows)
    ranking = report.get("ranking") or {}
    if "agree" in ranking:
        out += [f"- Ranking two students by test likelihood: 1 step orders them {ranking.get('order_1_step')}, the "
                f"reference {ranking.get('order_reference')}: {'agree' if ranking['agree'] else 'disagree'}.", ""]
    elif ranking:
        out += [f"- Checkpoint ranking: {ranking.get('note', 'not run')}.", ""]
    return out + _image(png, base)


def build(results_dir, base):
    def load(path):
        try:
            with open(path) as f:
                return json.load(f)
        except (OSError, ValueError) as exc:
            print(f"warning: skipping {path}: {exc}", file=sys.stderr)
            return None

    lines = ["## Results", "",
             "Generated by `python benchmarks/write_results_md.py --readme README.md` from the JSON files in "
             "`benchmarks/results/` (each benchmark's JSON holds its settings and notes). Wall times are from one CPU "
             "thread on a shared machine; compare ratios within a run.", ""]
    header = len(lines)
    for path in sorted(glob.glob(os.path.join(results_dir, "likelihood_*.json"))):
        report = load(path)
        # bench_likelihood.py names its report after its dataset; other likelihood_* files (likelihood_gap.py) differ.
        if report and os.path.basename(path) == f"likelihood_{report.get('dataset')}.json":
            lines += likelihood_section(report, path[:-5] + ".png", base)
    path = os.path.join(results_dir, "scaling.json")
    if os.path.isfile(path) and (report := load(path)):
        lines += scaling_section(report, path[:-5] + ".png", base)
    sections = (("calibration_*.json", "Calibration", generic_section), ("sampling_*.json", "Sampling", sampling_section),
                ("ood*.json", "Out-of-distribution", ood_section))
    for pattern, title, section in sections:
        for path in sorted(glob.glob(os.path.join(results_dir, pattern))):
            report = load(path)
            if report:
                stem = os.path.basename(path)[:-5]
                suffix = stem.split("_", 1)[1] if "_" in stem else ""
                lines += section(f"{title}{': ' + suffix if suffix else ''}", report, path[:-5] + ".png", base)
    if len(lines) == header:
        lines += [f"No benchmark results in {os.path.relpath(results_dir, base)} yet.", ""]
    return "\n".join(lines).rstrip() + "\n"


def replace_between_markers(text, block):
    start, end = text.find(START), text.find(END)
    if start < 0 or end < 0 or end < start:
        raise SystemExit(f"error: the file has no {START} ... {END} markers (in that order)")
    return text[: start + len(START)] + "\n" + block + text[end:]


def main(args):
    if not os.path.isdir(args.results_dir):
        raise SystemExit(f"error: no results folder at {args.results_dir}")
    if args.readme is None:
        sys.stdout.write(build(args.results_dir, PATHS.repo_root))
        return
    if not os.path.isfile(args.readme):
        raise SystemExit(f"error: no file at {args.readme}")
    with open(args.readme) as f:
        text = f.read()
    new = replace_between_markers(text, build(args.results_dir, os.path.dirname(os.path.abspath(args.readme))))
    with open(args.readme, "w") as f:
        f.write(new)
    print(f"updated the results block in {args.readme}")


if __name__ == "__main__":
    main(parse_args())

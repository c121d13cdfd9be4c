"""The audit's outputs: summary.json (every number shown), results.csv and a self-contained report.html."""
from __future__ import annotations

import html
import time
from pathlib import Path
from typing import Any

import pandas as pd

from spurlab.audit.findings import (AuditFindings, AuditReport, DirectionsFindings, Figures, FixesFindings,
                                    UnitsFindings)
from spurlab.report.html import HtmlReport
from spurlab.report.plots import plot_group_accuracies
from spurlab.runs import default_out_dir, package_versions
from spurlab.utils import atomic_write_csv, atomic_write_json

SUMMARY_METRICS = ("worst_group_acc", "mean_group_acc", "average_acc", "accuracy")


def summary_dict(findings: AuditFindings, timings: dict[str, float] | None = None) -> dict[str, Any]:
    """Every number the report shows; ``timings`` (default: the record's) lets the writer add its own."""
    splits = findings.splits
    train = splits["train"]
    out: dict[str, Any] = {
        "dataset": findings.dataset, "dataset_params": findings.dataset_params, "seed": findings.seed,
        "device": findings.device, "model": findings.model_name, "model_source": findings.model_source,
        "model_description": findings.model_description, "features_from_cache": findings.features_from_cache,
        "epochs": findings.epochs, "quick": findings.quick,
        "groups": [{"group": g, "name": train.group_name(g),
                    **{split: int(ds.group_counts()[g]) if g < ds.n_groups else 0
                       for split, ds in splits.items()}} for g in range(train.n_groups)],
        "skipped_steps": findings.skipped_steps,
    }
    if findings.split_metrics:
        out["splits"] = findings.split_metrics
        out["train_test_gap"] = findings.train_test_gap
    if findings.verdict:
        out["verdict"] = findings.verdict
    if findings.directions is not None:
        d = findings.directions
        out["directions"] = {"fit_split": d.fit_split, "per_class": d.table.to_dict("records"),
                             "captions": d.captions, "skipped_classes": d.skipped,
                             "flag_minority_precision": d.flag_minority_precision,
                             "minority_recall": d.minority_recall, "error_auroc": d.error_auroc,
                             "cv_balanced_acc": d.cv_balanced_acc}
    if findings.units is not None:
        u = findings.units
        out["critical_units"] = {"target_group": u.target_group, "units": u.units.to_dict("records"),
                                 "delta_acc": u.deltas.to_dict("records"), "headline": u.headline}
    if findings.fixes is not None:
        f = findings.fixes
        out["methods"] = [{"method": row["method"], "n_seeds": int(row["n_seeds"]),
                           **{m: row[f"{m}_mean"] for m in SUMMARY_METRICS if f"{m}_mean" in row},
                           **{f"{m}_std": row[f"{m}_std"] for m in SUMMARY_METRICS if f"{m}_std" in row}}
                          for row in f.summary.to_dict("records")]
        out["method_runs"] = f.runs.to_dict("records")
        out["method_notes"] = f.notes
    out["timings_s"] = dict(findings.timings if timings is None else timings)
    out["versions"] = package_versions()
    return out


def results_frame(findings: AuditFindings) -> pd.DataFrame:
    return findings.group_table.melt(id_vars=["split", "group", "name"], value_vars=["accuracy", "count"],
                                     var_name="metric")


def write_report(findings: AuditFindings, out_dir: str | Path | None) -> AuditReport:
    out = Path(out_dir) if out_dir is not None else default_out_dir("audit")
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    atomic_write_csv(out / "results.csv", results_frame(findings))
    report = build_html(findings)
    timings = {**findings.timings, "report": time.perf_counter() - start}
    summary = summary_dict(findings, timings)
    report.write(out / "report.html", save_figures=True)
    atomic_write_json(out / "summary.json", summary)
    return AuditReport(out, summary, findings.group_table, findings.verdict_text)


def run_settings(findings: AuditFindings) -> list[str]:
    """What ran, in words: the preset only when training or fixes ran, with the numbers that ran."""
    trained = findings.model_name is not None and findings.model_source == "erm" and \
        "train" not in findings.skipped_steps
    parts = [f"{findings.epochs} epochs"] if trained else []
    if findings.fixes is not None:
        n_seeds = len(findings.seeds)
        parts.append(f"{len(findings.fixes.summary)} fixes × {n_seeds} seed{'s' if n_seeds != 1 else ''}")
    if not parts:
        return []
    mode = "custom settings" if findings.mode == "custom" else f"{findings.mode} mode"
    return [f"{mode}: {', '.join(parts)}"]


def build_html(findings: AuditFindings) -> HtmlReport:
    report = HtmlReport(f"spurlab audit: {findings.dataset}",
                        subtitle=" · ".join([findings.model_description, f"seed {findings.seed}",
                                             f"device {findings.device}", *run_settings(findings)]))
    report.heading("Verdict").raw(f'<p class="verdict">{html.escape(findings.verdict_text)}</p>')
    split_rows = [{"split": s, **{k: v for k, v in d.items() if k != "group_accuracy"}}
                  for s, d in findings.split_metrics.items()]
    report.table(pd.DataFrame(split_rows), caption="accuracy, worst-group, mean-group and train-weighted "
                 "accuracy (test group accuracies weighted by the training group shares)")
    for step, reason in findings.skipped_steps.items():
        report.text(f"Step '{step}' skipped: {reason}.", css_class="warn")
    _groups_section(report, findings)
    if findings.directions is not None:
        _directions_section(report, findings.directions)
    if findings.units is not None:
        _units_section(report, findings.units)
    if findings.fixes is not None:
        _fixes_section(report, findings.fixes)
    report.heading("Dataset")
    report.table(findings.splits.summary(), caption="examples per group and split")
    report.table(pd.DataFrame({"step": list(findings.timings), "seconds": list(findings.timings.values())}),
                 caption="time per step")
    return report


def _figures(report: HtmlReport, figures: Figures, name: str) -> None:
    if name in figures:
        fig, caption = figures[name]
        report.figure(name, fig, caption)


def _groups_section(report: HtmlReport, findings: AuditFindings) -> None:
    report.heading("Accuracy per group")
    report.figure("group_accuracy", plot_group_accuracies(findings.group_table),
                  "Per-group accuracy on every split; a large train-test gap on a small group is the signature "
                  "of memorized minority examples.")
    pivot = findings.group_table.pivot_table(index="name", columns="split", values="accuracy")
    report.table(pivot[[s for s in findings.splits if s in pivot.columns]].reset_index(),
                 caption="accuracy per group and split")


def _directions_section(report: HtmlReport, d: DirectionsFindings) -> None:
    report.heading("Failure directions")
    report.text(f"A linear SVM per class, fit on the {d.fit_split} split's embeddings to predict whether the "
                "model is right, points at the model's failure mode without using group labels; the table "
                "scores it on the test split.")
    cols = [c for c in ("name", "n", "n_errors", "cv_balanced_acc", "error_auroc", "flag_minority_precision",
                        "minority_recall", "minority_share_of_errors") if c in d.table.columns]
    report.table(d.table[cols], caption="per-class failure-direction metrics (test split)")
    if d.nothing_found:
        report.text(f"The failure directions found nothing: {d.nothing_found}. They point at no failure mode, "
                    "so they are not captioned.", css_class="warn")
        _figures(report, d.figures, "directions_histogram")
        return
    empty = d.class_nothing_found()
    rows = [{"class": c["name"], "failing end": ", ".join(e["caption"] for e in c["failure"]),
             "easy end": ", ".join(e["caption"] for e in c["easy"])}
            if str(c["name"]) not in empty else
            {"class": c["name"], "failing end": f"found nothing ({empty[str(c['name'])]})", "easy end": ""}
            for c in d.captions.values()]
    if rows:
        report.table(pd.DataFrame(rows), caption="what separates the failing end of each direction from its "
                     "easy end (attribute captions; a direction that found nothing is not captioned)")
    _figures(report, d.figures, "directions_histogram")
    _figures(report, d.figures, "directions_top_examples")


def _units_section(report: HtmlReport, u: UnitsFindings) -> None:
    report.heading("Critical units")
    target = f" and by their gradient on the worst minority group {u.target_group}" if u.target_group else ""
    report.text("Units (output channels / neurons) ranked by weight norm" + target + "; editing a few of them "
                "shows whether the minority is memorized by a small set of units.")
    sampled = [f"{split}: {used:,} of {total:,}" for split, (used, total) in u.sample_sizes.items() if used < total]
    if sampled:
        report.text("Scored on a seeded sample of each large split, every group kept (" + "; ".join(sampled)
                    + " examples): every intervention runs the whole network.")
    report.table(u.units[["selector", "rank", "layer", "index", "score"]], caption="the top critical units")
    _figures(report, u.figures, "units_delta")
    minority = set(u.deltas.loc[u.deltas["minority"], "name"])
    table = u.deltas.pivot_table(index=["selector", "mode", "k", "split"], columns="name", values="delta_acc")
    table.columns = [f"{name} Δacc{' (minority)' if name in minority else ''}" for name in table.columns]
    report.table(table.reset_index(), caption="accuracy change of every group (never averaged over groups, which "
                 "can move in opposite directions)")


def _fixes_section(report: HtmlReport, f: FixesFindings) -> None:
    report.heading("Fixes compared")
    report.text("Each robust training method is trained with the same model and budget over several seeds and "
                "selected on the validation split; test metrics are the mean over seeds with their standard "
                "deviation.")
    _figures(report, f.figures, "fixes")
    cols = ["method"] + [c for m in SUMMARY_METRICS for c in (f"{m}_mean", f"{m}_std") if c in f.summary]
    report.table(f.summary[cols + ["n_seeds"]], caption="test metrics per method (average_acc: test group "
                 "accuracies weighted by training group shares)")
    for note in f.notes:
        report.text(note, css_class="warn")

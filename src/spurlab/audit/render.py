"""The audit's outputs: summary.json (every number shown), results.csv and a self-contained report.html."""
from __future__ import annotations

import html
import time
from pathlib import Path
from typing import Any

import pandas as pd

from spurlab.report.html import HtmlReport
from spurlab.report.plots import plot_group_accuracies
from spurlab.runs import default_out_dir, package_versions
from spurlab.utils import atomic_write_csv, atomic_write_json

SUMMARY_METRICS = ("worst_group_acc", "mean_group_acc", "average_acc", "accuracy")


def summary_dict(audit) -> dict[str, Any]:
    train = audit.splits_["train"]
    out: dict[str, Any] = {
        "dataset": audit.dataset, "dataset_params": audit.splits_.params, "seed": audit.seed,
        "device": audit.device_, "model": getattr(audit, "model_name_", None), "epochs": audit.epochs_,
        "quick": audit.quick,
        "groups": [{"group": g, "name": train.group_name(g),
                    **{split: int(ds.group_counts()[g]) if g < ds.n_groups else 0
                       for split, ds in audit.splits_.items()}} for g in range(train.n_groups)],
        **audit.results_,
    }
    if getattr(audit, "directions_", None):
        d = audit.directions_
        out["directions"] = {"fit_split": d["fit_split"], "per_class": d["table"].to_dict("records"),
                             "captions": d.get("captions", {}), "skipped_classes": d["skipped"],
                             **{k: d[k] for k in ("flag_minority_precision", "minority_recall", "error_auroc",
                                                  "cv_balanced_acc")}}
    if getattr(audit, "units_", None):
        u = audit.units_
        out["critical_units"] = {"target_group": u["target_group"], "units": u["units"].to_dict("records"),
                                 "delta_acc": u["deltas"].to_dict("records"), "headline": u["headline"]}
    if getattr(audit, "fixes_", None):
        f = audit.fixes_
        out["methods"] = [{"method": row["method"], "n_seeds": int(row["n_seeds"]),
                           **{m: row[f"{m}_mean"] for m in SUMMARY_METRICS if f"{m}_mean" in row},
                           **{f"{m}_std": row[f"{m}_std"] for m in SUMMARY_METRICS if f"{m}_std" in row}}
                          for row in f["summary"].to_dict("records")]
        out["method_runs"] = f["runs"].to_dict("records")
        out["method_notes"] = f["notes"]
    out["timings_s"] = audit.timings_
    out["versions"] = package_versions()
    return out


def results_frame(audit) -> pd.DataFrame:
    long = audit.group_table_.melt(id_vars=["split", "group", "name"], value_vars=["accuracy", "count"],
                                   var_name="metric")
    return long


def write_report(audit, out_dir: str | Path | None):
    from spurlab.audit.core import AuditReport

    out = Path(out_dir) if out_dir is not None else default_out_dir("audit")
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    atomic_write_csv(out / "results.csv", results_frame(audit))
    report = build_html(audit)
    audit.timings_["report"] = time.perf_counter() - start
    summary = summary_dict(audit)
    report.write(out / "report.html", save_figures=True)
    atomic_write_json(out / "summary.json", summary)
    return AuditReport(out, summary, audit.group_table_, audit.verdict_)


def build_html(audit) -> HtmlReport:
    model = getattr(audit, "model_name_", None)
    source = f"model {model} (ERM)" if model else "embeddings and predictions from a file"
    report = HtmlReport(f"spurlab audit: {audit.dataset}",
                        subtitle=f"{source} · seed {audit.seed} · device {audit.device_} · "
                                 f"{'quick' if audit.quick else 'full'} mode")
    report.heading("Verdict").raw(f'<p class="verdict">{html.escape(audit.verdict_)}</p>')
    split_rows = [{"split": s, **{k: v for k, v in d.items() if k != "group_accuracy"}}
                  for s, d in audit.results_["splits"].items()]
    report.table(pd.DataFrame(split_rows), caption="accuracy, worst-group, mean-group and train-weighted "
                 "accuracy (test group accuracies weighted by the training group shares)")
    for step, reason in audit.results_["skipped_steps"].items():
        report.text(f"Step '{step}' skipped: {reason}.", css_class="warn")
    _groups_section(report, audit)
    if getattr(audit, "directions_", None):
        _directions_section(report, audit)
    if getattr(audit, "units_", None):
        _units_section(report, audit)
    if getattr(audit, "fixes_", None):
        _fixes_section(report, audit)
    report.heading("Dataset")
    report.table(audit.splits_.summary(), caption="examples per group and split")
    report.table(pd.DataFrame({"step": list(audit.timings_), "seconds": list(audit.timings_.values())}),
                 caption="time per step")
    return report


def _figure(report: HtmlReport, audit, name: str) -> None:
    if name in audit.figures_:
        fig, caption = audit.figures_[name]
        report.figure(name, fig, caption)


def _groups_section(report: HtmlReport, audit) -> None:
    report.heading("Accuracy per group")
    report.figure("group_accuracy", plot_group_accuracies(audit.group_table_),
                  "Per-group accuracy on every split; a large train-test gap on a small group is the signature "
                  "of memorized minority examples.")
    pivot = audit.group_table_.pivot_table(index="name", columns="split", values="accuracy")
    report.table(pivot[[s for s in audit.splits_ if s in pivot.columns]].reset_index(),
                 caption="accuracy per group and split")


def _directions_section(report: HtmlReport, audit) -> None:
    d = audit.directions_
    report.heading("Failure directions")
    report.text(f"A linear SVM per class, fit on the {d['fit_split']} split's embeddings to predict whether the "
                "model is right, points at the model's failure mode without using group labels; the table "
                "scores it on the test split.")
    cols = [c for c in ("name", "n", "n_errors", "cv_balanced_acc", "error_auroc", "flag_minority_precision",
                        "minority_recall", "minority_share_of_errors") if c in d["table"].columns]
    report.table(d["table"][cols], caption="per-class failure-direction metrics (test split)")
    captions = d.get("captions") or {}
    rows = [{"class": c["name"], "failing end": ", ".join(e["caption"] for e in c["failure"]),
             "easy end": ", ".join(e["caption"] for e in c["easy"])} for c in captions.values()]
    if rows:
        report.table(pd.DataFrame(rows), caption="what separates the failing end of each direction from its "
                     "easy end (attribute captions)")
    _figure(report, audit, "directions_histogram")
    _figure(report, audit, "directions_top_examples")


def _units_section(report: HtmlReport, audit) -> None:
    u = audit.units_
    report.heading("Critical units")
    target = f" and by their gradient on the worst minority group {u['target_group']}" if u["target_group"] else ""
    report.text("Units (output channels / neurons) ranked by weight norm" + target + "; editing a few of them "
                "shows whether the minority is memorized by a small set of units.")
    report.table(u["units"][["selector", "rank", "layer", "index", "score"]], caption="the top critical units")
    _figure(report, audit, "units_delta")
    head = u["deltas"]
    table = head.pivot_table(index=["selector", "mode", "k", "split"], columns="minority", values="delta_acc")
    table.columns = ["majority Δacc" if not c else "minority Δacc" for c in table.columns]
    report.table(table.reset_index(), caption="mean accuracy change of minority and majority groups")


def _fixes_section(report: HtmlReport, audit) -> None:
    f = audit.fixes_
    report.heading("Fixes compared")
    report.text("Each robust training method is trained with the same model and budget over several seeds and "
                "selected on the validation split; test metrics are the mean over seeds with their standard "
                "deviation.")
    _figure(report, audit, "fixes")
    cols = ["method"] + [c for m in SUMMARY_METRICS for c in (f"{m}_mean", f"{m}_std") if c in f["summary"]]
    report.table(f["summary"][cols + ["n_seeds"]], caption="test metrics per method (average_acc: test group "
                 "accuracies weighted by training group shares)")
    for note in f["notes"]:
        report.text(note, css_class="warn")

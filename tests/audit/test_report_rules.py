"""Reports that never mislead: the verdict's rules and the report layout rules, each on a small built case."""
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from spurlab.audit.core import Audit
from spurlab.audit.explain import _units_headline
from spurlab.audit.findings import AuditFindings, DirectionsFindings, UnitsFindings, nothing_found_reason
from spurlab.audit.render import _directions_section, _units_section, run_settings
from spurlab.audit.verdict import attribute_column, write_verdict
from spurlab.data.grouped import DatasetSplits, GroupedDataset
from spurlab.report.html import HtmlReport
from spurlab.sweep.collect import constant_columns, metric_figure, summary_paragraph

MINORITY = ("y=0,a=1", "y=1,a=0")


def tiny_splits(attr_names=("0", "1"), params=None) -> DatasetSplits:
    """Two classes x two attribute values; groups 1 and 2 (a != y) are the 10% minority."""
    rng = np.random.default_rng(0)
    y = np.repeat([0, 1], 50)
    a = y.copy()
    a[[0, 1, 2, 3, 4, 50, 51, 52, 53, 54]] = 1 - a[[0, 1, 2, 3, 4, 50, 51, 52, 53, 54]]
    parts = {s: GroupedDataset(x=rng.normal(size=(100, 3)), y=y, a=a, attr_names=attr_names)
             for s in ("train", "test")}
    return DatasetSplits(parts, name="tiny", params=params)


def group_table(splits: DatasetSplits, accuracies: dict[int, float]) -> pd.DataFrame:
    test = splits["test"]
    return pd.DataFrame([{"split": "test", "group": g, "name": test.group_name(g), "count": 1, "accuracy": acc}
                         for g, acc in accuracies.items()])


def findings(splits: DatasetSplits, **fields) -> AuditFindings:
    base = dict(dataset="tiny", dataset_params={}, splits=splits, seed=0, seeds=(0, 1), device="cpu", quick=True,
                epochs=15, mode="quick", model_name="mlp")
    return AuditFindings(**{**base, **fields})


def unit_deltas(rows: dict[str, float]) -> pd.DataFrame:
    """Train deltas of one edit (weight_norm, zero, k=1) for each named group."""
    return pd.DataFrame([{"selector": "weight_norm", "mode": "zero", "k": 1, "split": "train", "group": i,
                          "name": name, "minority": name in MINORITY, "delta_acc": delta}
                         for i, (name, delta) in enumerate(rows.items())])


def directions(error_auroc: float, recall: float | None = 0.6, per_class_auroc=(0.9, 0.9)) -> DirectionsFindings:
    table = pd.DataFrame([{"class": c, "name": str(c), "error_auroc": auc, "minority_recall": recall,
                           "flag_minority_precision": None if recall is None else 0.7}
                          for c, auc in enumerate(per_class_auroc)]
                         + [{"class": -1, "name": "mean", "error_auroc": error_auroc, "minority_recall": recall}])
    captions = {c: {"name": str(c), "failure": [{"caption": f"spurious = {1 - c}"}], "easy": []} for c in (0, 1)}
    return DirectionsFindings(fit_split="train", table=table, skipped={}, captions=captions,
                              flag_minority_precision=None if recall is None else 0.7, minority_recall=recall,
                              error_auroc=error_auroc)


# ------------------------------------------------------------------ the verdict never averages opposite moves
def test_units_headline_reports_the_group_that_moved_most_with_its_sign():
    deltas = unit_deltas({"y=0,a=0": 0.01, "y=1,a=1": -0.02, MINORITY[0]: 0.35, MINORITY[1]: -0.75})
    head = _units_headline(deltas)
    assert head["minority_group"] == MINORITY[1] and head["minority_train_delta"] == pytest.approx(-0.75)
    assert head["majority_group"] == "y=1,a=1" and head["majority_train_delta"] == pytest.approx(-0.02)


def test_verdict_names_the_most_moved_minority_group_not_the_average():
    splits = tiny_splits()
    head = _units_headline(unit_deltas({"y=0,a=0": 0.0, "y=1,a=1": 0.0, MINORITY[0]: 0.35, MINORITY[1]: -0.75}))
    units = UnitsFindings(target_group=None, units=pd.DataFrame(), deltas=pd.DataFrame(), headline=head)
    facts = write_verdict(findings(splits, group_table=group_table(splits, {0: .9, 1: .3, 2: .4, 3: .9}),
                                   units=units))
    assert "-75%" in facts["text"] and MINORITY[1] in facts["text"]
    assert "-20%" not in facts["text"]  # the mean of +35 and -75


def test_units_table_shows_every_group_not_a_mean():
    deltas = unit_deltas({"y=0,a=0": 0.0, "y=1,a=1": 0.0, MINORITY[0]: 0.35, MINORITY[1]: -0.75})
    units = UnitsFindings(target_group=None, units=pd.DataFrame(columns=["selector", "rank", "layer", "index",
                                                                         "score"]), deltas=deltas, headline={})
    report = HtmlReport("t")
    _units_section(report, units)
    page = report.render()
    assert "0.35" in page and "-0.75" in page and "-0.2<" not in page


# ------------------------------------------------------------------ failure directions that found nothing
@pytest.mark.parametrize("auroc, recall, found", [
    (0.5, 0.6, False), (0.42, 0.6, False), (0.9, 0.0, False), (float("nan"), 0.6, False), (0.9, 0.6, True),
    (0.9, None, True),
])
def test_nothing_found_rule(auroc, recall, found):
    assert (nothing_found_reason(auroc, recall) is None) == found


def test_verdict_says_found_nothing_at_chance_and_captions_nothing():
    splits = tiny_splits()
    facts = write_verdict(findings(splits, group_table=group_table(splits, {0: .9, 1: .3, 2: .4, 3: .9}),
                                   directions=directions(error_auroc=0.48)))
    assert "found nothing" in facts["text"] and "at or below chance" in facts["text"]
    assert "failing ends" not in facts["text"] and "direction_captions" not in facts


def test_verdict_says_found_nothing_when_flags_catch_no_minority():
    splits = tiny_splits()
    facts = write_verdict(findings(splits, group_table=group_table(splits, {0: .9, 1: .3, 2: .4, 3: .9}),
                                   directions=directions(error_auroc=0.8, recall=0.0)))
    assert "found nothing" in facts["text"] and "no minority" in facts["text"]
    assert "failing ends" not in facts["text"]


def test_a_class_whose_direction_is_at_chance_is_not_captioned():
    d = directions(error_auroc=0.7, per_class_auroc=(0.9, 0.45))
    assert d.failure_captions() == {"0": "spurious = 1"}
    report = HtmlReport("t")
    _directions_section(report, d)
    page = report.render()
    assert "spurious = 0" not in page and "found nothing" in page


def test_report_section_at_chance_has_no_captions():
    report = HtmlReport("t")
    _directions_section(report, directions(error_auroc=0.5))
    page = report.render()
    assert "found nothing" in page and "spurious = " not in page


# ------------------------------------------------------------------ naming and settings
def test_attribute_named_by_its_column():
    assert attribute_column(tiny_splits(("patch=red", "patch=green"))) == "patch"
    assert attribute_column(tiny_splits(("not Male", "Male"), params={"spurious": "Male"})) == "Male"
    assert attribute_column(tiny_splits()) == "spurious"  # the embeddings file's column
    splits = tiny_splits()
    facts = write_verdict(findings(splits, group_table=group_table(splits, {0: .9, 1: .3, 2: .4, 3: .9})))
    assert "'the attribute'" not in facts["text"] and "'spurious' (values 0, 1)" in facts["text"]


def test_mode_matches_what_ran():
    assert Audit(quick=True).mode_ == "quick" and Audit().mode_ == "full"
    assert Audit(quick=True, epochs=40).mode_ == "custom" and Audit(quick=True, seeds=1).mode_ == "custom"
    assert Audit(quick=False, epochs=15, seeds=2, methods=Audit(quick=True).methods_).mode_ == "quick"
    splits = tiny_splits()
    assert run_settings(findings(splits, model_name=None)) == []  # embeddings: nothing trained, no mode
    fixes = SimpleNamespace(summary=pd.DataFrame({"method": ["erm", "dfr"]}))
    assert run_settings(findings(splits, mode="custom", epochs=10, fixes=fixes, seeds=(0,))) == [
        "custom settings: 10 epochs, 2 fixes × 1 seed"]
    assert run_settings(findings(splits)) == ["quick mode: 15 epochs"]


# ------------------------------------------------------------------ sweeps
def sweep_summary() -> pd.DataFrame:
    return pd.DataFrame({"target": "study:x", "experiment": "e", "metric": "loss", "lr": 0.1,
                         "x": [1, 2, 3, 1, 2, 3], "model": ["a"] * 3 + ["b"] * 3, "n_seeds": 2, "n_values": 2,
                         "mean": [1.0, 2.0, 3.0] * 2, "std": 0.1, "ci95_low": 0.0, "ci95_high": 4.0,
                         "ci95_half": 0.5})


def test_sweep_summary_names_fixed_columns_once():
    summary = sweep_summary()
    assert constant_columns(summary) == {"target": "study:x", "experiment": "e", "lr": 0.1}
    status = SimpleNamespace(done=6, planned=6, failed=0, pending=0)
    text = summary_paragraph(summary, status)
    assert "Swept: x (3 values), model (2 values)" in text and "lr = 0.1" in text


def test_sweep_lines_on_top_of_each_other_stay_distinguishable():
    fig = metric_figure(sweep_summary(), "loss")
    lines = [ln for ln in fig.axes[0].get_lines() if len(ln.get_xdata()) == 3]
    assert len(lines) == 2
    assert len({(ln.get_marker(), ln.get_linestyle()) for ln in lines}) == 2
    ticks = fig.axes[0].get_xticks()
    visible = [t for t in ticks if 1 <= t <= 3]
    assert all(float(t).is_integer() for t in visible)  # an integer axis gets integer ticks


def test_study_subtitle_names_the_changed_settings():
    from spurlab.studies.study_base import StudyContext, get_study, run_label

    study = get_study("spurious-memorization")
    quick = study.default_config(True)
    assert run_label(study, StudyContext(config=dict(quick), quick=True)) == "quick run"
    changed = StudyContext(config={**quick, "d": 30, "n_test": 30}, quick=True)
    assert run_label(study, changed) == "quick run with 2 setting(s) changed (d, n_test)"


def test_a_large_gap_on_a_majority_group_is_not_called_within_the_threshold():
    splits = tiny_splits()  # groups 0 and 3 are the majority
    facts = write_verdict(findings(splits, group_table=group_table(splits, {0: 0.0, 1: 1.0, 2: 1.0, 3: 1.0})))
    assert not facts["relies_on_spurious"]
    assert "within" not in facts["text"] and "majority group" in facts["text"]


def test_directions_that_could_score_no_class_say_why_per_class():
    """A model that makes no errors leaves nothing to explain: the report says so, class by class."""
    table = pd.DataFrame({"skipped": ["too few examples to cross-validate (0 errors, 40 correct; need 2 of each)"] * 2})
    skipped = {0: "too few examples to cross-validate (0 errors, 40 correct; need 2 of each)",
               1: "too few examples to cross-validate (0 errors, 30 correct; need 2 of each)"}
    found = DirectionsFindings(fit_split="val", table=table, skipped=skipped, error_auroc=None).nothing_found
    assert found.startswith("no class could be scored")
    assert "class 0: too few examples to cross-validate (0 errors, 40 correct" in found and "class 1:" in found
    assert DirectionsFindings(fit_split="val", table=table, skipped={}, error_auroc=None).nothing_found == \
        "no error AUROC could be measured"

"""The audit's plain-language verdict, built from the numbers the steps measured."""
from __future__ import annotations

from typing import Any

from spurlab.audit.findings import AuditFindings, DirectionsFindings, FixesFindings, UnitsFindings
from spurlab.audit.fix import best_fix

GAP_THRESHOLD = 0.10  # worst group this far below the mean group counts as a failure
MOVED = 0.02  # an edit that moves no minority group this much changes nothing


def attribute_column(splits) -> str | None:
    """The spurious attribute's name as its column: the shared ``key`` of ``key=value`` value names, else the
    dataset's ``spurious`` parameter (e.g. a table's column), else ``spurious`` (the embeddings file's column)."""
    train = splits["train"]
    if train.a is None:
        return None
    keys = {name.split("=", 1)[0] for name in train.attr_names if "=" in name}
    if len(keys) == 1 and all("=" in name for name in train.attr_names):
        return keys.pop()
    given = (splits.params or {}).get("spurious")
    return given if isinstance(given, str) and given.strip() else "spurious"


def _attribute_label(splits) -> str:
    column = attribute_column(splits)
    if column is None:
        return "a spurious attribute"
    values = [name.split("=", 1)[1] if name.startswith(f"{column}=") else name
              for name in splits["train"].attr_names]
    return f"the spurious attribute '{column}' (values {', '.join(values)})"


def write_verdict(findings: AuditFindings) -> dict[str, Any]:
    splits, table = findings.splits, findings.group_table
    test = table[table["split"] == "test"]
    worst = test.loc[test["accuracy"].idxmin()]
    mean_acc = float(test["accuracy"].mean())
    train = splits["train"]
    minority = set(train.minority_groups()) if train.has_groups else set()
    large_gap = mean_acc - float(worst["accuracy"]) >= GAP_THRESHOLD
    relies = large_gap and int(worst["group"]) in minority
    attribute = _attribute_label(splits)
    best_majority = test[~test["group"].isin(minority)]["accuracy"].max() if minority else mean_acc
    n_train = int(train.group_counts()[int(worst["group"])])
    if relies:
        sentences = [f"The model relies on {attribute}: the minority group {worst['name']} ({n_train} training "
                     f"examples) is at {worst['accuracy']:.0%} test accuracy, against {best_majority:.0%} for "
                     f"the best majority group (mean group accuracy {mean_acc:.0%})."]
    elif large_gap:
        sentences = [f"The worst group {worst['name']} is at {worst['accuracy']:.0%} test accuracy, more than "
                     f"{GAP_THRESHOLD:.0%} below the mean group accuracy {mean_acc:.0%}, but it is a majority group "
                     f"of {attribute}: the gap is not the minority failure a spurious feature causes."]
    else:
        sentences = [f"No strong reliance on {attribute} was found: the worst group {worst['name']} is at "
                     f"{worst['accuracy']:.0%} test accuracy, within {GAP_THRESHOLD:.0%} of the mean group "
                     f"accuracy {mean_acc:.0%}."]
    facts: dict[str, Any] = {"relies_on_spurious": bool(relies), "attribute": attribute,
                             "worst_group": str(worst["name"]), "worst_group_acc": float(worst["accuracy"]),
                             "mean_group_acc": mean_acc}
    sentences += _directions_sentences(findings.directions, facts)
    sentences += _units_sentences(findings.units, facts)
    sentences += _fix_sentences(findings.fixes, len(findings.seeds), facts)
    facts["text"] = " ".join(sentences)
    return facts


def _directions_sentences(directions: DirectionsFindings | None, facts: dict[str, Any]) -> list[str]:
    if directions is None:
        return []
    if directions.nothing_found:
        facts["directions_found_nothing"] = directions.nothing_found
        return [f"Without group labels, the failure directions found nothing: {directions.nothing_found}."]
    out = []
    precision, recall = directions.flag_minority_precision, directions.minority_recall
    if precision is not None and recall is not None:
        out.append(f"Without group labels, the failure directions flag test examples that are {precision:.0%} "
                   f"minority and find {recall:.0%} of the minority (error AUROC "
                   f"{directions.error_auroc:.2f}).")
    else:
        out.append(f"Without group labels, the failure directions predict the model's errors with AUROC "
                   f"{directions.error_auroc:.2f}.")
    failing = [f"{name}: {caption}" for name, caption in directions.failure_captions().items()]
    if failing:
        facts["direction_captions"] = failing
        out.append("Their failing ends are described by " + "; ".join(failing) + ".")
    return out


def _units_sentences(units: UnitsFindings | None, facts: dict[str, Any]) -> list[str]:
    head = units.headline if units is not None else {}
    if not head:
        return []
    facts["critical_units"] = head
    if abs(head["minority_train_delta"]) < MOVED:
        return [f"Editing up to {head['k']} critical unit(s) moves no minority group's training accuracy by "
                f"{MOVED:.0%} or more: no few-unit memorization of the minority was found."]
    return [f"Editing the top {head['k']} critical unit(s) ({head['selector']}, {head['mode']}) changes the "
            f"training accuracy of minority group {head['minority_group']} by {head['minority_train_delta']:+.0%}, "
            f"against {head['majority_train_delta']:+.0%} for majority group {head['majority_group']} (on each "
            f"side, the group that moved most)."]


def _fix_sentences(fixes: FixesFindings | None, n_seeds: int, facts: dict[str, Any]) -> list[str]:
    if fixes is None:
        return []
    best = best_fix(fixes.summary)
    if best is None:
        return []
    facts["best_fix"] = best
    base = best["baseline_worst_group_acc"]
    against = f" (ERM: {base:.0%})" if base is not None else ""
    return [f"Best fix: {best['method']} lifts worst-group test accuracy to {best['worst_group_acc']:.0%} "
            f"± {best['worst_group_acc_std']:.0%} over {n_seeds} seeds{against}."]

"""Layout rules of the five studies' figures, measured on the drawn figures (small synthetic result frames):
integer data gets integer ticks, legends sit inside the figure without covering data or titles (readable font,
each entry once), titles in grids do not overlap, coinciding lines differ by marker or dash pattern, per-class
decision values keep per-class scales, and no saved figure is wider than the page (1280 px)."""
import io
import itertools

import matplotlib.image as mpimg
import numpy as np
import pandas as pd
import pytest

from spurlab.models.units import CriticalUnits
from spurlab.probes.unit_evidence import UnitSet
from spurlab.report.html import figure_png
from spurlab.report.plots import plt
from spurlab.studies.critical_neurons import neurons_figures
from spurlab.studies.failure_directions.directions_figures import add_figures as directions_figures
from spurlab.studies.feature_contamination.contamination_figures import add_figures as contamination_figures
from spurlab.studies.feature_contamination.contamination_figures import row_params
from spurlab.studies.spurious_memorization.memorization_figures import add_figures as memorization_figures
from spurlab.studies.study_base import StudyResult, get_study

PAGE_WIDTH = 1280
MIN_LEGEND_PT = 7


# ------------------------------------------------------------------ the measurements
def _data_lines(ax):
    return [ln for ln in ax.get_lines() if ln.get_visible() and ln.get_transform() == ax.transData
            and len(np.atleast_1d(ln.get_xdata())) >= 1]


def _is_integer(values) -> bool:
    values = np.asarray(values, dtype=float)
    values = values[np.isfinite(values)]
    return values.size > 0 and len(np.unique(values)) >= 2 and np.allclose(values, np.round(values))


def _overlap(a, b, pad: float = 0.5) -> bool:
    return a.x0 < b.x1 - pad and b.x0 < a.x1 - pad and a.y0 < b.y1 - pad and b.y0 < a.y1 - pad


def integer_tick_problems(ax) -> list[str]:
    problems = []
    lines = _data_lines(ax)
    for axis, get, limits in (("x", lambda ln: ln.get_xdata(), ax.get_xlim()),
                              ("y", lambda ln: ln.get_ydata(), ax.get_ylim())):
        data = [np.asarray(get(ln), dtype=float) for ln in lines if len(np.atleast_1d(get(ln)))]
        if not data or not _is_integer(np.concatenate(data)):
            continue
        low, high = sorted(limits)
        ticks = ax.get_xticks() if axis == "x" else ax.get_yticks()
        shown = [t for t in ticks if low - 1e-9 <= t <= high + 1e-9]
        if not all(float(t).is_integer() for t in shown):
            problems.append(f"{ax.get_title()!r}: integer {axis} data, ticks {shown}")
    return problems


def legend_problems(fig, renderer) -> list[str]:
    problems = []
    titles = [ax.title.get_window_extent(renderer) for ax in fig.axes if ax.get_title()]
    if fig._suptitle is not None:
        titles.append(fig._suptitle.get_window_extent(renderer))
    owned = [(ax.get_legend(), ax) for ax in fig.axes if ax.get_legend() is not None]
    for legend, ax in owned + [(legend, None) for legend in fig.legends]:
        box = legend.get_window_extent(renderer)
        labels = [t.get_text() for t in legend.get_texts()]
        if len(set(labels)) != len(labels):
            problems.append(f"legend repeats entries: {labels}")
        if min(t.get_fontsize() for t in legend.get_texts()) < MIN_LEGEND_PT:
            problems.append(f"legend font below {MIN_LEGEND_PT} pt: {labels[:2]}")
        if box.x0 < -1 or box.y0 < -1 or box.x1 > fig.bbox.x1 + 1 or box.y1 > fig.bbox.y1 + 1:
            problems.append(f"legend outside the figure: {labels[:2]}")
        if any(_overlap(box, t) for t in titles):
            problems.append(f"legend covers a title: {labels[:2]}")
        if ax is None:  # a figure legend: clear of every panel (its ticks, labels and title included)
            if any(_overlap(box, other.get_tightbbox(renderer)) for other in fig.axes if other.axison):
                problems.append(f"figure legend overlaps a panel: {labels[:2]}")
            continue
        for line in _data_lines(ax):
            points = line.get_transform().transform(np.column_stack([line.get_xdata(), line.get_ydata()]))
            inside = ((points[:, 0] > box.x0) & (points[:, 0] < box.x1) & (points[:, 1] > box.y0)
                      & (points[:, 1] < box.y1))
            if inside.any():
                problems.append(f"legend {labels[:2]} covers data of {line.get_label()!r}")
    return problems


def title_problems(fig, renderer) -> list[str]:
    axes = [ax for ax in fig.axes if ax.axison]
    titled = [(ax, ax.title.get_window_extent(renderer)) for ax in axes if ax.get_title()]
    problems = [f"titles overlap: {a.get_title()!r} / {b.get_title()!r}"
                for (a, ba), (b, bb) in itertools.combinations(titled, 2) if _overlap(ba, bb)]
    problems += [f"title {a.get_title()!r} overlaps the panel of {b.get_title()!r}"
                 for a, box in titled for b in axes if b is not a and _overlap(box, b.get_window_extent(renderer))]
    return problems


def coinciding_line_problems(ax) -> list[str]:
    lines = [ln for ln in _data_lines(ax) if len(ln.get_xdata()) >= 2]
    span = np.ptp(ax.get_ylim()) or 1.0
    problems = []
    for a, b in itertools.combinations(lines, 2):
        xa, xb = np.asarray(a.get_xdata(), float), np.asarray(b.get_xdata(), float)
        if xa.shape != xb.shape or not np.allclose(xa, xb):
            continue
        if np.allclose(a.get_ydata(), b.get_ydata(), atol=0.01 * span, rtol=0):
            if (a.get_marker(), a.get_linestyle()) == (b.get_marker(), b.get_linestyle()):
                problems.append(f"{ax.get_title()!r}: {a.get_label()!r} and {b.get_label()!r} coincide, same style")
    return problems


def saved_width(fig) -> int:
    return mpimg.imread(io.BytesIO(figure_png(fig))).shape[1]  # the report's own rendering; closes the figure


def layout_problems(fig) -> list[str]:
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    problems = legend_problems(fig, renderer) + title_problems(fig, renderer)
    for ax in fig.axes:
        if ax.axison:
            problems += integer_tick_problems(ax) + coinciding_line_problems(ax)
    width = saved_width(fig)
    if width > PAGE_WIDTH:
        problems.append(f"{width} px wide, above the page's {PAGE_WIDTH}")
    return problems


def check_figures(result: StudyResult, expected: set[str]) -> None:
    assert expected <= set(result.figures), sorted(result.figures)
    problems = {name: layout_problems(fig) for name, fig in result.figures.items()}
    assert not {name: p for name, p in problems.items() if p}, problems


# ------------------------------------------------------------------ synthetic results, one frame per study
def rows(experiment: str, metrics: dict, seeds=(0, 1), **params) -> list[dict]:
    return [{"experiment": experiment, "metric": m, "value": float(v) + 0.01 * s, "seed": s, **params}
            for m, v in metrics.items() for s in seeds]


def ood_frame() -> pd.DataFrame:
    out = []
    for n in (4, 16, 64, 256):
        out += rows("norm_growth", {"maxmargin_norm": 10 * (1 - 1 / np.sqrt(n))}, n=n)
    for n_min in (5, 20, 100, 500):
        out += rows("geometric", {"spurious_share": 1 / n_min, "minority_acc": min(1.0, n_min / 100),
                                  "majority_acc": 1.0}, n_min=n_min)
    for p in (0.5, 0.9):
        for step in (0, 1, 10, 100, 1000):
            out += rows("statistical", {"spurious_share": 0.1 * p, "theory_spurious_share": 0.2 * p}, p=p, step=step)
    for model in ("convnet", "mlp"):
        for n_min in (2, 10, 50):
            out += rows("images", {"ood_acc": 0.5}, n_min=n_min, dataset="binary-mnist", model=model,
                        mode="geometric")  # both models at 0.5: lines on top of each other
        for p in (0.5, 0.9, 0.99):
            out += rows("images", {"ood_acc": 1 - p / 2}, p=p, dataset="binary-mnist", model=model, mode="statistical")
        for n in (50, 200):
            out += rows("images", {"w_dist_from_init": np.log(n), "w_dist_equal_steps": np.log(n)}, n=n,
                        dataset="binary-mnist", model=model, mode="norm")
    return pd.DataFrame(out)


def test_ood_failure_modes_figures_keep_the_layout_rules():
    result = StudyResult()
    get_study("ood-failure-modes")._add_figures(result, ood_frame(), {"margin": 0.1, "stat_hd_D": 1000,
                                                                      "stat_hd_margin": 0.1})
    check_figures(result, {"norm_growth", "geometric", "statistical", "images"})


def evidence_frame(modes, minority) -> pd.DataFrame:
    out = []
    for split, mode, unit_set, k, group in itertools.product(("train", "test"), modes,
                                                            ("weight_norm", "group_gradient:g1"), (1, 2, 3), range(4)):
        delta = -0.05 * k if group in minority else 0.0  # both unit sets identical: coinciding lines
        out.append({"split": split, "mode": mode, "unit_set": unit_set, "k": k, "group": group, "delta": delta,
                    "sigma": 0.1 if mode.startswith("random") else np.nan, "rewind_epochs": 1})
    frame = pd.DataFrame(out)
    frame.attrs["base"] = pd.DataFrame([{"group": g, "split": s, "acc": 0.9} for g in range(4)
                                        for s in ("train", "test")])
    return frame


def test_critical_neurons_figures_keep_the_layout_rules():
    modes, minority = ["zero", "random_init", "random_noise", "rewind", "zero_weights"], [1, 2]
    evidence = evidence_frame(modes, minority)
    units = CriticalUnits(layers=["body.0"] * 6, indices=np.arange(6), scores=np.linspace(1, 0.5, 6))
    curves = pd.DataFrame([{"method": m, "epoch": e, "seed": s, **{f"test_g{g}": 0.6 + 0.01 * e for g in range(4)}}
                           for m in ("erm", "ce_term_only") for e in range(4) for s in (0, 1)])
    result = StudyResult()
    names = ["g0", "g1", "g2", "g3"]
    result.add_figure("delta_vs_k", neurons_figures.delta_vs_k(evidence, minority, modes, [0.1]))
    plain = pd.DataFrame(evidence)  # without attrs, which concat cannot compare
    plain.attrs = {}
    spread = pd.concat([plain.assign(sigma=sigma) for sigma in (0.01, 0.1, 1.0)])
    result.add_figure("delta_vs_sigma", neurons_figures.delta_vs_sigma(spread, minority))
    result.add_figure("top_units", neurons_figures.top_units([UnitSet("weight_norm", units)]))
    result.add_figure("framework_curves", neurons_figures.framework_curves(curves, names))
    result.add_figure("group_gap", neurons_figures.group_gap(evidence, names))
    check_figures(result, {"delta_vs_k", "delta_vs_sigma", "top_units", "framework_curves", "group_gap"})


def test_failure_directions_figures_keep_the_layout_rules():
    out = []
    for corr in (0.9, 0.97):
        for embedder in ("own", "efficientnet-lite0"):  # identical numbers: coinciding lines
            out += rows("directions", {"flag_minority_precision": 0.7, "minority_share_of_errors": 0.6,
                                       "minority_recall": 0.5, "error_auroc": 0.8}, embedder=embedder,
                        intervention=None, correlation=corr)
        for intervention in ("erm", "confidence", "svm_soft"):
            out += rows("upweighting", {"worst_group_acc": 0.4, "train_worst_group_acc": 0.9}, embedder="none",
                        intervention=intervention, correlation=corr)
    rng = np.random.default_rng(0)
    histograms = {"own": {"0..4": {"majority": rng.normal(1, 0.1, 200), "minority": rng.normal(-1, 0.1, 10)},
                          "5..9": {"majority": rng.normal(100, 5, 200), "minority": rng.normal(-90, 5, 10)}}}
    result = StudyResult()
    directions_figures(result, pd.DataFrame(out), histograms, 0.97)
    histogram_axes = [ax for ax in result.figures["decision_values_own"].axes if ax.axison]
    assert len(histogram_axes) == 2
    a, b = histogram_axes
    assert not a.get_shared_x_axes().joined(a, b) and not a.get_shared_y_axes().joined(a, b)
    assert b.get_xlim()[1] > 50 > a.get_xlim()[1]  # each class on its own scale
    check_figures(result, {"worst_group_accuracy", "flags", "decision_values_own"})


def test_feature_contamination_figures_keep_the_layout_rules():
    result = StudyResult()
    activations = ("relu", "identity", "sigmoid", "tanh")
    for act in activations:
        for step in range(0, 2001, 250):
            asymmetry = 0.8 if act == "relu" else 1.0  # identity, sigmoid and tanh on top of each other
            for metric, value in {"id_loss": 1 / (1 + step), "ood_loss": 0.5, "core_norm": 0.4, "bg_norm": 0.2,
                                  "activation_asymmetry": asymmetry}.items():
                result.add("dynamics", metric, value, 0, **row_params(activation=act, step=step))
        for metric, value in {"bg_norm_init": 0.2, "bg_norm": 0.3}.items():
            result.add("activations", metric, value, 0, **row_params(activation=act))
        for scale in (1, 2, 4, 8):
            result.add("shift", "ood_acc", 1.0 if act != "relu" else 0.5, 0,
                       **row_params(activation=act, shift_scale=scale))
    for role in ("teacher", "student"):
        for metric in ("id_acc", "ood_acc", "bg_probe_acc", "bg_variance_share"):
            result.add("distillation", metric, 0.5, 0, **row_params(role=role))
    contamination_figures(result)
    check_figures(result, {"id_vs_ood_loss", "core_vs_bg_norm", "activation_asymmetry", "ood_acc_vs_shift",
                           "distillation_table"})


def memorization_frame() -> pd.DataFrame:
    out = []
    for model, activations in (("rf", ("phi2", "phi4")), ("ntk", ("h0+h1", "h0+h3"))):
        for activation, alpha, n in itertools.product(activations, (0.25, 0.5), (10, 100, 1000)):
            setting = dict(model=model, activation=activation, alpha=alpha, N=n, k=100, d=100)
            out += rows("synthetic", {"spurious_acc": 1.0 if n < 1000 else 0.8, "test_acc": 0.5 + n / 4000,
                                      "feature_alignment": alpha / 2, "loo_error": 0.5, "memorization_cov": 0.1,
                                      "gamma_low_n": alpha / 2, "gamma_high_n": alpha / 3}, **setting)
            out += rows("alignment", {"feature_alignment": alpha / 2, "gamma_low_n": alpha / 2,
                                      "gamma_high_n": alpha / 3}, **setting)
            out += rows("images", {"spurious_acc": 0.9, "test_acc": 0.7}, dataset="mnist-1v7", frame_width=10,
                        **{**setting, "alpha": 0.66})
    return pd.DataFrame(out)


def test_spurious_memorization_figures_keep_the_layout_rules():
    result = StudyResult()
    memorization_figures(result, memorization_frame())
    check_figures(result, {"synthetic_accuracy_vs_n", "memorization_vs_alignment_x_loo", "image_accuracy_vs_n",
                           "alignment_vs_alpha", "alignment_vs_n_over_d"})


def test_sweep_figures_with_many_panels_wrap_instead_of_widening_the_page():
    from spurlab.sweep.collect import metric_figure

    summary = pd.DataFrame([{"target": "study:x", "experiment": f"e{e}", "metric": "loss", "n": n, "model": model,
                             "n_seeds": 2, "n_values": 2, "mean": 1.0, "std": 0.1, "ci95_low": 0.9, "ci95_high": 1.1,
                             "ci95_half": 0.1} for e in range(5) for n in (10, 100, 1000) for model in ("a", "b")])
    fig = metric_figure(summary, "loss")
    assert len([ax for ax in fig.axes if ax.axison]) == 5
    assert layout_problems(fig) == []


def test_image_grid_titles_do_not_overlap():
    from spurlab.report.direction_plots import plot_image_grid

    images = np.random.default_rng(0).random((16, 8, 8, 3))
    titles = [f"#{i} decision -0.{i:02d}\ny=1 a=0 wrong" for i in range(16)]
    fig = plot_image_grid(images, titles, "top-ranked failure examples")
    assert layout_problems(fig) == []


# ------------------------------------------------------------------ the measurements themselves can fail
def test_the_checks_catch_what_they_look_for():
    fig, ax = plt.subplots(figsize=(20, 3))
    ax.plot([1, 2, 3], [0.5, 0.5, 0.5], label="a")
    ax.plot([1, 2, 3], [0.5, 0.5, 0.5], label="a")
    ax.xaxis.set_ticks([1, 1.5, 2, 2.5, 3])
    ax.set_title("t")
    ax.legend(loc="center", fontsize=5)
    problems = " | ".join(layout_problems(fig))
    for expected in ("integer x data", "repeats entries", "font below", "covers data", "coincide", "px wide"):
        assert expected in problems, (expected, problems)

    fig, axes = plt.subplots(1, 2, figsize=(4, 2))
    for ax in axes:
        ax.set_title("a title far too long for a panel this narrow")
    axes[1].plot([0.5, 1.5], [0.5, 1.5], label="x")
    axes[1].legend(loc="upper left", bbox_to_anchor=(1.5, 1.0))
    problems = " | ".join(layout_problems(fig))
    for expected in ("titles overlap", "legend outside the figure"):
        assert expected in problems, (expected, problems)


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")

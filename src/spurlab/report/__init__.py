"""Self-contained HTML reports and the plots in them."""
from spurlab.report.html import HtmlReport, figure_png
from spurlab.report.plots import plot_group_accuracies

__all__ = ["HtmlReport", "figure_png", "plot_group_accuracies"]

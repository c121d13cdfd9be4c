"""``spurlab models``: the models registry (what ``--model`` accepts)."""
from __future__ import annotations

from rich.table import Table

from spurlab.cli._console import console


def models() -> None:
    """List the registered models, their options, and the other forms --model takes."""
    from spurlab.models.model_registry import MODELS, PREFIX_EXTRAS

    table = Table(title="spurlab models (--model NAME; options with --set)")
    for col in ("name", "inputs", "pretrained", "options (defaults)", "what it is"):
        table.add_column(col)
    table.add_row("auto", "any", "no", "-", "lenet for images of at least 12 px, cnn for smaller ones, mlp for vectors")
    for entry in MODELS.entries().values():
        options = ", ".join(f"{k}={v}" for k, v in entry.options().items()) or "-"
        table.add_row(entry.name, entry.inputs, "yes" if entry.pretrained_default else "no", options, entry.summary)
    for prefix, extra in PREFIX_EXTRAS.items():
        table.add_row(f"{prefix}:<name>", "images", "pretrained=true", "-", f"any {prefix} network (pip install "
                      f"'{extra}'), its classifier replaced by a new linear head")
    console.print(table)
    console.print("Also: a TorchScript file (torch.jit.save; your trained model, audited as it is) or "
                  "pkg.module:factory (a callable (input_shape, n_classes) -> nn.Module). Every model takes "
                  "--set freeze=backbone (train the head only, on cached features) and feature_layer=NAME.")

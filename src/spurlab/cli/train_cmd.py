"""``spurlab train``: fit one training method on one dataset."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.markup import escape
from rich.table import Table

from spurlab.cli._console import console, fail, frame_table
from spurlab.errors import SpurlabError
from spurlab.runs import check_out_dir
from spurlab.train.methods.method_names import METHODS


def _methods_table():

    from spurlab.train.methods import method_registry

    table = Table(title="spurlab training methods")
    for col in ("name", "group labels", "what it does", "hyper-parameters (defaults)"):
        table.add_column(col)
    for cls in method_registry().values():
        needs = ", ".join(cls().group_label_needs()) or "none"
        hps = ", ".join(f"{k}={v.default}" for k, v in cls.extra_space.items()) or "-"
        table.add_row(*map(escape, (cls.name, needs, cls.summary, hps)))
    return table


def train(method: str = typer.Option(..., "--method", help="A training method, or 'list'."),
          dataset: str = typer.Option("spurious-digits", "--dataset", help="A registered dataset."),
          out: Optional[Path] = typer.Option(None, "--out", help="Output folder (default runs/train-METHOD-TIME)."),
          model: str = typer.Option("auto", "--model", help="A registered model (list: spurlab models), "
                                    "torchvision:<arch>, timm:<name>, a TorchScript file (the starting point) or "
                                    "pkg.module:factory; --set freeze=backbone, pretrained=, feature_layer=, "
                                    "model.KEY="),
          epochs: int = typer.Option(20, "--epochs"),
          selection: str = typer.Option("auto", "--selection",
                                        help="worst_group, worst_class (no group labels), accuracy, last or auto."),
          trials: int = typer.Option(1, "--trials", help="Hyper-parameter trials (trial 0: the defaults)."),
          seed: int = typer.Option(0, "--seed"),
          device: str = typer.Option("auto", "--device", help="auto, cpu or cuda."),
          data_dir: Optional[Path] = typer.Option(None, "--data-dir",
                                                  help="Data folder (default: $SPURLAB_DATA, else ~/.cache/spurlab)."),
          set_: Optional[list[str]] = typer.Option(None, "--set", help="A hyper-parameter or dataset parameter: "
                                                   "key=value (method.key / data.key when ambiguous)")) -> None:
    """Train with one method (ERM, GroupDRO, JTT, DFR, ...): summary.json, results.csv, model.pt."""
    from spurlab.train.training_run import model_overrides, run_training, split_overrides

    if method == "list":
        console.print(_methods_table())
        return
    try:
        METHODS.refuse_unknown(method)  # a typo answers before torch loads
        check_out_dir(out)
        model_spec, set_ = model_overrides(model, set_)
        hparams, params = split_overrides(method, dataset, set_)
        run = run_training(method, dataset, out, model=model_spec, epochs=epochs, selection=selection, n_trials=trials,
                           seed=seed, device=device, data_dir=data_dir, hparams=hparams, dataset_params=params)
    except SpurlabError as exc:
        fail(exc)
        return
    import pandas as pd

    table = pd.DataFrame([{"split": s, **{k: v for k, v in d.items() if not isinstance(v, dict)}}
                          for s, d in run.summary["splits"].items()])
    console.print(frame_table(table, title=f"{method} on {dataset}"))
    console.print(f"wrote {run.out_dir}/summary.json, results.csv and model.pt", markup=False)

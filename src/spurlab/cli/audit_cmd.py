"""``spurlab audit``: diagnose, explain and fix a model's reliance on spurious features."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.markup import escape

from spurlab.cli._console import (DataDir, ImageRootOpt, LabelOpt, SetOpt, SpuriousOpt, TableOpt, console, fail,
                                  frame_table, parse_sets, table_dataset)
from spurlab.errors import SpurlabError
from spurlab.runs import check_out_dir
from spurlab.train.methods.method_names import METHODS

MODEL_HELP = ("A registered model (list: spurlab models), torchvision:<arch>, timm:<name>, your trained model as a "
              "TorchScript file (torch.jit.save: audited as it is) or pkg.module:factory. Model options: --set "
              "freeze=backbone, pretrained=true|false, feature_layer=NAME, model.KEY=VALUE (e.g. model.image_size=64).")


def audit(dataset: Optional[str] = typer.Option(None, "--dataset", help="A registered dataset "
                                                "(default spurious-digits)."),
          embeddings: Optional[Path] = typer.Option(None, "--embeddings", help="Audit your own model from an "
                                                    ".npz/.parquet of embeddings, labels and predictions."),
          table: Optional[Path] = TableOpt,
          image_root: Optional[Path] = ImageRootOpt,
          label: Optional[str] = LabelOpt,
          spurious: Optional[str] = SpuriousOpt,
          out: Optional[Path] = typer.Option(None, "--out", help="Output folder (default runs/audit-TIME)."),
          quick: bool = typer.Option(False, "--quick", help="A first look: fewer methods, seeds and epochs."),
          model: str = typer.Option("auto", "--model", help=MODEL_HELP),
          epochs: Optional[int] = typer.Option(None, "--epochs", help="Training epochs (default 15 quick, 40 full)."),
          seeds: Optional[int] = typer.Option(None, "--seeds", help="Seeds per fix (default 2 quick, 3 full)."),
          methods: Optional[str] = typer.Option(None, "--methods", help="Fixes to compare, comma-separated."),
          skip: Optional[str] = typer.Option(None, "--skip", help="Steps to skip: directions, units, fixes."),
          seed: int = typer.Option(0, "--seed"),
          device: str = typer.Option("auto", "--device"),
          data_dir: Optional[Path] = DataDir,
          set_: Optional[list[str]] = SetOpt) -> None:
    """Diagnose, explain and fix a model's reliance on spurious features; writes report.html."""
    def split_list(text: str | None) -> tuple[str, ...] | None:
        return tuple(t.strip() for t in text.split(",") if t.strip()) if text else None

    try:
        for name in split_list(methods) or ():
            METHODS.refuse_unknown(name)  # a typo answers before torch loads
        check_out_dir(out)
        from spurlab.audit import run_audit
        from spurlab.models.model_registry import model_from_text, split_model_options

        if embeddings is not None and dataset is not None:
            raise SpurlabError("--embeddings cannot be combined with --dataset: the embeddings file is the dataset",
                               hint="give one of --dataset NAME, --embeddings FILE or --table FILE")
        model_options, data_params = split_model_options(parse_sets(set_))
        dataset, dataset_params = table_dataset(dataset, data_params, embeddings, table, image_root, label, spurious)
        report = run_audit(dataset=dataset, out_dir=out, model=model_from_text(model), model_options=model_options,
                           epochs=epochs, seed=seed, device=device,
                           data_dir=data_dir, dataset_params=dataset_params, embeddings=embeddings,
                           quick=quick, seeds=seeds, methods=split_list(methods), skip=split_list(skip) or ())
    except SpurlabError as exc:
        fail(exc)
        return
    test = report.group_table[report.group_table["split"] == "test"]
    console.print(frame_table(test.drop(columns=["split"]), title="test accuracy per group"))
    for method in report.summary.get("methods", []):
        console.print(f"  {escape(method['method']):<20} worst-group {method['worst_group_acc']:.3f} "
                      f"± {method['worst_group_acc_std']:.3f}   mean-group {method['mean_group_acc']:.3f}")
    console.print(report.verdict, markup=False)
    console.print(f"report: {report.out_dir / 'report.html'}", markup=False)

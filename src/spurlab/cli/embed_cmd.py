"""``spurlab embed``: a model's penultimate embeddings of a dataset as an embeddings file (feature-cached)."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from spurlab.cli._console import (DataDir, ImageRootOpt, LabelOpt, SetOpt, SpuriousOpt, TableOpt, console, fail,
                                  parse_sets, table_dataset)
from spurlab.errors import SpurlabError
from spurlab.runs import check_out_file

MODEL_HELP = ("Your trained model (a TorchScript file from torch.jit.save, embedded as it is), pkg.module:factory, "
              "or a registered model (list: spurlab models), trained by ERM first. Model options: --set "
              "freeze=backbone, pretrained=, feature_layer=NAME, model.KEY=VALUE.")


def embed(out: Path = typer.Option(..., "--out", help="The embeddings file to write (.npz or .parquet)."),
          model: str = typer.Option(..., "--model", help=MODEL_HELP),
          dataset: Optional[str] = typer.Option(None, "--dataset", help="A registered dataset "
                                                "(default spurious-digits)."),
          table: Optional[Path] = TableOpt,
          image_root: Optional[Path] = ImageRootOpt,
          label: Optional[str] = LabelOpt,
          spurious: Optional[str] = SpuriousOpt,
          epochs: int = typer.Option(10, "--epochs", help="ERM epochs when the model is a name or a factory."),
          batch_size: int = typer.Option(256, "--batch-size", help="Images embedded per batch."),
          cache: Optional[Path] = typer.Option(None, "--cache", help="Feature-cache folder (default "
                                               "$SPURLAB_CACHE, else ~/.cache/spurlab/features)."),
          no_cache: bool = typer.Option(False, "--no-cache", help="Do not read or write the feature cache."),
          seed: int = typer.Option(0, "--seed"),
          device: str = typer.Option("auto", "--device"),
          data_dir: Optional[Path] = DataDir,
          set_: Optional[list[str]] = SetOpt) -> None:
    """Write a model's penultimate embeddings, labels, groups, predictions and split (for directions/audit)."""
    from spurlab.models.model_registry import model_from_text, split_model_options
    from spurlab.train.embedding_run import embed_dataset

    try:
        check_out_file(out)
        model_options, params = split_model_options(parse_sets(set_))
        name, params = table_dataset(dataset, params, None, table, image_root, label, spurious)
        result = embed_dataset(name, model_from_text(model), out, data_dir=data_dir, seed=seed,
                               dataset_params=params, model_options=model_options, epochs=epochs,
                               batch_size=batch_size, device=device, cache=False if no_cache else cache)
    except SpurlabError as exc:
        fail(exc)
        return
    for split, feats in result.features.items():
        source = "cache" if feats.from_cache else "computed"
        console.print(f"  {split:<6} {feats.features.shape[0]:>7} x {feats.features.shape[1]:<5} ({source})")
    console.print(f"wrote {result.path}  (next: spurlab directions --embeddings {result.path})", markup=False)

"""``spurlab embed``: a model's penultimate embeddings of a dataset as an embeddings file (feature-cached)."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from spurlab.cli._console import DataDir, SetOpt, console, fail, parse_sets
from spurlab.errors import SpurlabError
from spurlab.runs import check_out_file

MODEL_HELP = ("Your trained model (a TorchScript file from torch.jit.save, embedded as it is), pkg.module:factory, "
              "or a registered model (list: spurlab models), trained by ERM first. Model options: --set "
              "freeze=backbone, pretrained=, feature_layer=NAME, model.KEY=VALUE.")


def embed(out: Path = typer.Option(..., "--out", help="The embeddings file to write (.npz or .parquet)."),
          model: str = typer.Option(..., "--model", help=MODEL_HELP),
          dataset: Optional[str] = typer.Option(None, "--dataset", help="A registered dataset."),
          table: Optional[Path] = typer.Option(None, "--table", help="Your own images: a CSV/parquet table of "
                                               "image paths, labels and a spurious attribute (dataset image-table)."),
          image_root: Optional[Path] = typer.Option(None, "--image-root", help="Folder the table's relative paths "
                                                    "start from (default: the table's folder)."),
          label: Optional[str] = typer.Option(None, "--label", help="Label column of --table (default 'label')."),
          spurious: Optional[str] = typer.Option(None, "--spurious", help="Spurious-attribute column of --table."),
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
        name, params = dataset_choice(dataset, table, image_root, label, spurious, params)
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


def dataset_choice(dataset: str | None, table: Path | None, image_root: Path | None, label: str | None,
                   spurious: str | None, params: dict) -> tuple[str, dict]:
    """``--dataset NAME`` or ``--table FILE [--image-root --label --spurious]`` (dataset image-table)."""
    table_flags = {"image_root": image_root, "label": label, "spurious": spurious}
    if table is None:
        given = [f"--{k.replace('_', '-')}" for k, v in table_flags.items() if v is not None]
        if given:
            raise SpurlabError(f"{', '.join(given)} only apply together with --table FILE")
        if dataset is None:
            raise SpurlabError("no data given", hint="pass --dataset NAME or --table FILE --label COL --spurious COL")
        return dataset, params
    if dataset is not None:
        raise SpurlabError("--table and --dataset both name the data", hint="give one of them")
    columns = {"table": str(table), **{k: str(v) if isinstance(v, Path) else v for k, v in table_flags.items()}}
    return "image-table", {**params, **{k: v for k, v in columns.items() if v is not None}}

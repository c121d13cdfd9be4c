"""``spurlab directions``: failure directions over an embeddings file."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from spurlab.cli._console import console, fail, frame_table, warn
from spurlab.errors import SpurlabError


def directions(embeddings: Path = typer.Option(..., "--embeddings", help="An .npz/.parquet with embeddings, "
                                               "labels, predictions [, split, groups, spurious, images, ...]."),
               out: Optional[Path] = typer.Option(None, "--out", help="Output folder (default runs/directions-TIME)."),
               captions: Optional[str] = typer.Option(None, "--captions", help="Caption vocabulary: a built-in "
                                                      "name (default, digits) or a JSON file; needs --clip."),
               clip: Optional[Path] = typer.Option(None, "--clip", help="Local CLIP checkpoint folder "
                                                   "(Hugging Face save_pretrained layout) for captions."),
               top_k: int = typer.Option(16, "--top-k", help="Failure-aligned examples shown per class."),
               seed: int = typer.Option(0, "--seed"),
               device: str = typer.Option("auto", "--device")) -> None:
    """Find, rank and caption a model's failure modes from an embeddings file (failure directions)."""
    from spurlab.audit.directions_run import run_directions
    from spurlab.runs import check_out_dir, default_out_dir

    try:
        check_out_dir(out)
        run = run_directions(embeddings, out or default_out_dir("directions"), captions=captions, clip=clip,
                             top_k=top_k, seed=seed, device=device)
    except SpurlabError as exc:
        fail(exc)
        return
    for warning in run.warnings:
        warn(warning)
    columns = [c for c in ("name", "n", "n_errors", "cv_balanced_acc", "error_auroc", "flagged_fraction",
                           "flag_minority_precision", "minority_recall") if c in run.table.columns]
    console.print(frame_table(run.table[columns], title="failure directions per class"))
    console.print(f"wrote {run.out_dir}/report.html, examples.csv, summary.json, directions.npz", markup=False)

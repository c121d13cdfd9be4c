"""The ``spurlab`` command line: one module per command group, the shared helpers in ``_console``.

Each command module imports its heavy dependencies inside the command, so ``spurlab --help`` stays fast.
"""
from __future__ import annotations

import typer

from spurlab.cli._guard import GuardedGroup, set_global_options
from spurlab.cli.audit_cmd import audit
from spurlab.cli.datasets_cmd import datasets_app
from spurlab.cli.directions_cmd import directions
from spurlab.cli.embed_cmd import embed
from spurlab.cli.models_cmd import models
from spurlab.cli.study_cmd import study
from spurlab.cli.sweep_cmd import sweep_app
from spurlab.cli.train_cmd import train

app = typer.Typer(cls=GuardedGroup, no_args_is_help=True, add_completion=False,
                  help="Find, measure, explain and fix the spurious features a model relies on.")
app.callback()(set_global_options)
app.add_typer(datasets_app, name="datasets")
app.command("study")(study)
app.command("audit")(audit)
app.command("directions")(directions)
app.command("embed")(embed)
app.command("models")(models)
app.command("train")(train)
app.add_typer(sweep_app, name="sweep")


def main() -> None:
    app()


if __name__ == "__main__":
    main()

"""The command line through Typer's test runner: datasets, bad options, the audit command's errors."""

import pytest
from typer.testing import CliRunner

from spurlab.cli import app

runner = CliRunner()


def test_datasets_list_shows_every_dataset():
    result = runner.invoke(app, ["datasets", "list"], terminal_width=200)
    assert result.exit_code == 0, result.output
    for name in ("linear-skew", "structured-features", "gaussian-core-spurious", "digits", "mnist",
                 "fashion-mnist", "waterbirds", "celeba", "embeddings"):
        assert name in result.output


def test_datasets_show_counts_per_split():
    result = runner.invoke(app, ["datasets", "show", "linear-skew", "--set", "n_min=6", "--set", "D=10"],
                           terminal_width=200)
    assert result.exit_code == 0, result.output
    assert "n_maj" in result.output and "duplicate_p" in result.output
    assert "y=-1,a=x_sp>0" in result.output


def test_unknown_dataset_exits_with_a_clear_error():
    result = runner.invoke(app, ["datasets", "show", "mnsit"])
    assert result.exit_code == 2
    assert "unknown dataset 'mnsit'" in result.output and "known datasets" in result.output


def test_bad_set_syntax():
    result = runner.invoke(app, ["datasets", "show", "digits", "--set", "p"])
    assert result.exit_code == 2 and "key=value" in result.output


def test_audit_bad_input():
    bad = runner.invoke(app, ["audit", "--skip", "everything"])
    assert bad.exit_code == 2 and "parameter 'skip' must be" in bad.output
    unknown = runner.invoke(app, ["audit", "--methods", "erm,magic"])
    assert unknown.exit_code == 2 and "magic" in unknown.output and "method" in unknown.output


def test_a_warning_is_one_line_without_the_source_echo(capsys):
    from spurlab.cli._guard import show_warning

    show_warning(UserWarning("the pruned copy is the model [raise prune_fraction]"), UserWarning, "x.py", 3,
                 line="history = framework(...)")
    err = capsys.readouterr().err
    assert err.strip() == "warning: the pruned copy is the model [raise prune_fraction]"


@pytest.mark.parametrize("argv, message", [(["study", "nope"], "unknown study 'nope'"),
                                           (["train", "--method", "nope"], "unknown method 'nope'"),
                                           (["audit", "--methods", "erm,magic"], "unknown method 'magic'"),
                                           (["datasets", "show", "mnsit"], "unknown dataset 'mnsit'")])
def test_a_bad_name_is_answered_before_torch_is_imported(argv, message):
    import subprocess
    import sys

    code = ("import sys\nfrom spurlab.cli import app\n"
            f"try:\n    app({argv!r}, prog_name='spurlab')\nexcept SystemExit as exc:\n    status = exc.code\n"
            "print('status', status, 'torch', 'torch' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert "status 2 torch False" in done.stdout, done.stdout + done.stderr
    assert message in done.stderr

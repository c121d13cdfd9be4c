"""Bad inputs, table-driven, through the command line and the Python API.

Every case asserts the exit status (2: a user error; the API: a SpurlabError), that no traceback is printed, that
the message names the offending parameter or file, and that nothing (no output folder, no temporary file) is left
behind in the case's folder. Inputs are tiny and every case fails before any training starts.
"""
from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from spurlab.cli import app
from spurlab.errors import SpurlabError

runner = CliRunner()
CFG_HEAD = 'target = "study:ood-failure-modes"\n'


# ------------------------------------------------------------------ the bad files every case may point at
def _npz(path: Path, **arrays) -> None:
    with open(path, "wb") as fh:
        np.savez(fh, **arrays)


def make_inputs(root: Path) -> None:
    """Small broken inputs under ``root`` (names are what the cases refer to)."""
    emb, lab = np.zeros((6, 3)), np.array([0, 1, 0, 1, 0, 1])
    (root / "empty.npz").write_bytes(b"")
    _npz(root / "good.npz", embeddings=emb, labels=lab)
    good = (root / "good.npz").read_bytes()
    (root / "truncated.npz").write_bytes(good[: len(good) // 2])
    (root / "garbage.npz").write_bytes(b"this is not a zip archive at all")
    np.save(root / "single.npy", emb)
    (root / "single.npz").write_bytes((root / "single.npy").read_bytes())
    _npz(root / "pickled.npz", embeddings=emb, labels=lab, meta=np.array([{"a": 1}] * 6, dtype=object))
    _npz(root / "gaps.npz", embeddings=emb, labels=np.array([0, 2, 0, 2, 0, 2]))
    _npz(root / "outside.npz", embeddings=emb, labels=lab, predictions=np.array([0, 1, 2, 1, 0, 1]))
    _npz(root / "nan.npz", embeddings=np.full((6, 3), np.nan), labels=lab)
    _npz(root / "flat.npz", embeddings=np.zeros(6), labels=lab)
    _npz(root / "nolabels.npz", embeddings=emb)
    _npz(root / "strings.npz", embeddings=np.array([["a"] * 3] * 6), labels=lab)
    _npz(root / "lengths.npz", embeddings=emb, labels=lab[:4])
    _npz(root / "halves.npz", embeddings=emb, labels=lab + 0.5)
    _npz(root / "negative.npz", embeddings=emb, labels=lab - 1)
    _npz(root / "names.npz", embeddings=emb, labels=lab * 3, class_names=np.array(["a", "b"]))
    _npz(root / "nothing.npz", embeddings=np.zeros((0, 3)), labels=np.zeros(0, dtype=int))
    _npz(root / "attr_gaps.npz", embeddings=emb, labels=lab, spurious=np.array([0, 3, 0, 3, 3, 0]))
    _npz(root / "attr_text.npz", embeddings=emb, labels=lab, spurious=np.array(list("abcabc")))
    (root / "corrupt.parquet").write_bytes(b"PAR1 but nothing else")
    idx = gzip.compress(bytes([0, 0, 8, 1]) + (6).to_bytes(4, "big") + bytes(6))
    (root / "labels-idx1-ubyte.gz").write_bytes(idx[: len(idx) - 9])
    (root / "garbage-idx1-ubyte.gz").write_bytes(b"<html>not found</html>")
    (root / "empty-idx1-ubyte").write_bytes(b"")
    (root / "header-idx3-ubyte").write_bytes(bytes([0, 0, 8, 3, 0, 0]))
    (root / "empty.parquet").write_bytes(b"")
    pd.DataFrame({"emb_0": [0.0, 1.0], "labels": [0, 1]}).to_csv(root / "table.txt")
    (root / "afile").write_text("I am a file, not a folder\n")
    configs = {
        "huge_samples.toml": CFG_HEAD + 'samples = 1000000000\n[random]\nD = {log_uniform = [1, 3]}\n',
        "huge_grid.toml": CFG_HEAD + "[grid]\n" + "".join(f"p{i} = {list(range(20))}\n" for i in range(5)),
        "huge_seeds.toml": CFG_HEAD + "seeds = 1000000000\n",
        "bad_toml.toml": CFG_HEAD + "[grid\n",
        "unknown_key.toml": CFG_HEAD + "colour = 3\n",
        "grid_scalar.toml": CFG_HEAD + "[grid]\nD = 5\n",
        "random_bad.toml": CFG_HEAD + 'samples = 2\n[random]\nD = {gaussian = [1, 2]}\n',
        "overlap.toml": CFG_HEAD + "[fixed]\nD = 5\n[grid]\nD = [5, 6]\n",
        "study_param.toml": CFG_HEAD + '[fixed]\nn_seeds = "abc"\n',
        "study_unknown.toml": CFG_HEAD + "[fixed]\nnosuch = 1\n",
        "method_lr.toml": 'target = "method:erm"\n[fixed]\nlr = -1.0\n',
        "method_batch.toml": 'target = "method:erm"\n[grid]\nbatch_size = [0, 32]\n',
        "no_target.toml": "seeds = 2\n",
        "bad_target.toml": 'target = "nonsense"\n',
        "seeds_zero.toml": CFG_HEAD + "seeds = 0\n",
        "seeds_halves.toml": CFG_HEAD + "seeds = [0, 1.5]\n",
        "quick_text.toml": CFG_HEAD + 'quick = "maybe"\n',
        "resources_negative.toml": CFG_HEAD + "[resources]\nnum_cpus = -1\n",
    }
    for name, text in configs.items():
        (root / name).write_text(text)


# ------------------------------------------------------------------ the command-line cases: (args, names)
DATASET_CASES = [
    (["datasets", "show", "linear-skew", "--set", "n_min=abc"], ["n_min"]),
    (["datasets", "show", "binary-mnist", "--set", "spurious=patch", "--set", "p=abc"], ["'p'"]),
    (["datasets", "show", "binary-mnist", "--set", "n_train=-5"], ["n_train"]),
    (["datasets", "show", "binary-mnist", "--set", "p=0.9"], ["'p'", "spurious"]),
    (["datasets", "show", "linear-skew", "--set", "n_maj=1000000000"], ["linear-skew", "would need about"]),
    (["datasets", "show", "linear-skew", "--set", "n=50"], ["'n'", "'p'"]),
    (["datasets", "show", "linear-skew", "--set", "D=1"], ["'D'"]),
    (["datasets", "show", "linear-skew", "--set", "margin=0"], ["margin"]),
    (["datasets", "show", "linear-skew", "--set", "duplicate_p=1.0"], ["duplicate_p"]),
    (["datasets", "show", "linear-skew", "--set", "nosuch=1"], ["nosuch"]),
    (["datasets", "show", "digits", "--set", "spurious=glitter"], ["spurious", "glitter"]),
    (["datasets", "show", "digits", "--set", "spurious=patch", "--set", "val_correlation=upside"],
     ["val_correlation"]),
    (["datasets", "show", "digits", "--set", "val_fraction=1.5"], ["val_fraction"]),
    (["datasets", "show", "digits", "--set", "spurious=patch", "--set", "patch_size=0"], ["patch_size"]),
    (["datasets", "show", "digits", "--set", "magnitude=2"], ["magnitude", "spurious"]),
    (["datasets", "show", "digits", "--set", "n_train=1.5"], ["n_train"]),
    (["datasets", "show", "digits", "--set", "spurious=patch", "--set", "p=1"], ["'p'"]),
    (["datasets", "show", "structured-features", "--set", "core=cubic"], ["core"]),
    (["datasets", "show", "structured-features", "--set", "d_in=0"], ["d_in"]),
    (["datasets", "show", "structured-features", "--set", "n=100000000"], ["structured-features", "limit"]),
    (["datasets", "show", "gaussian-core-spurious", "--set", "alpha=1"], ["alpha"]),
    (["datasets", "show", "gaussian-core-spurious", "--set", "query=maybe"], ["query"]),
    (["datasets", "show", "gaussian-core-spurious", "--set", "n=true"], ["'n'"]),
    (["datasets", "show", "no-such-dataset"], ["no-such-dataset"]),
    (["datasets", "show", "digits", "--set", "novalue"], ["novalue", "key=value"]),
    (["datasets", "show", "digits", "--set", "=5"], ["--set", "no parameter name"]),
    (["datasets", "show", "digits", "--set", "spurious=[1,"], ["spurious"]),
    (["datasets", "show", "embeddings", "--set", "path={tmp}/missing.npz"], ["missing.npz"]),
    (["datasets", "show", "embeddings", "--set", "path={tmp}/pickled.npz"], ["pickled.npz", "never unpickles"]),
    (["datasets", "show", "cifar10", "--set", "layout=zip"], ["layout"]),
    (["datasets", "show", "cifar100", "--set", "labels=medium"], ["labels"]),
    (["datasets", "show", "cifar100", "--set", "subclass_fraction=0.5"], ["subclass_fraction", "reduced_subclasses"]),
    (["datasets", "show", "celeba", "--set", "image_size=2"], ["image_size"]),
    (["datasets", "show", "waterbirds", "--set", "limit=0"], ["limit"]),
]
STUDY_CASES = [
    (["study", "no-such-study"], ["no-such-study"]),
    (["study", "ood-failure-modes", "--quick", "--out", "{tmp}/out", "--set", "n_seeds=abc"], ["n_seeds"]),
    (["study", "ood-failure-modes", "--quick", "--out", "{tmp}/out", "--set", "nosuch=1"], ["nosuch"]),
    (["study", "ood-failure-modes", "--quick", "--out", "{tmp}/afile"], ["--out", "afile"]),
    (["study", "ood-failure-modes", "--quick", "--out", "{tmp}/afile/below"], ["--out", "afile"]),
    (["study", "ood-failure-modes", "--quick", "--out", "{tmp}/out", "--set", "D=-1"], ["'D'"]),
    (["study", "failure-directions", "--quick", "--out", "{tmp}/out", "--set", "correlation=abc"], ["correlation"]),
    (["study", "spurious-memorization", "--quick", "--out", "{tmp}/out", "--set", "d=abc"], ["'d'"]),
    (["study", "feature-contamination", "--quick", "--out", "{tmp}/out", "--set", "frozen_output=maybe"],
     ["frozen_output"]),
    (["study", "critical-neurons", "--quick", "--out", "{tmp}/out", "--set", "ks=x"], ["ks"]),
]
AUDIT_CASES = [
    (["audit", "--out", "{tmp}/afile"], ["--out", "afile"]),
    (["audit", "--embeddings", "{tmp}/empty.npz", "--out", "{tmp}/out"], ["empty.npz", "empty"]),
    (["audit", "--embeddings", "{tmp}/pickled.npz", "--out", "{tmp}/out"], ["pickled.npz", "never unpickles"]),
    (["audit", "--embeddings", "{tmp}/gaps.npz", "--out", "{tmp}/out"], ["gaps.npz", "labels skip"]),
    (["audit", "--embeddings", "{tmp}/good.npz", "--dataset", "digits"], ["--embeddings", "--dataset"]),
    (["audit", "--embeddings", "{tmp}/missing.npz", "--out", "{tmp}/out"], ["missing.npz"]),
    (["audit", "--embeddings", "{tmp}/table.txt", "--out", "{tmp}/out"], [".txt"]),
    (["audit", "--dataset", "no-such-dataset", "--out", "{tmp}/out"], ["no-such-dataset"]),
    (["audit", "--set", "n_train=-1", "--out", "{tmp}/out"], ["n_train"]),
    (["audit", "--methods", "erm,magic", "--out", "{tmp}/out"], ["magic"]),
]
DIRECTIONS_CASES = [
    (["directions", "--embeddings", "{tmp}/empty.npz", "--out", "{tmp}/out"], ["empty.npz"]),
    (["directions", "--embeddings", "{tmp}/truncated.npz", "--out", "{tmp}/out"], ["truncated.npz", "truncated"]),
    (["directions", "--embeddings", "{tmp}/garbage.npz", "--out", "{tmp}/out"], ["garbage.npz"]),
    (["directions", "--embeddings", "{tmp}/single.npz", "--out", "{tmp}/out"], ["single.npz", ".npy"]),
    (["directions", "--embeddings", "{tmp}/outside.npz", "--out", "{tmp}/out"], ["outside.npz", "predictions"]),
    (["directions", "--embeddings", "{tmp}/nan.npz", "--out", "{tmp}/out"], ["embeddings", "NaN"]),
    (["directions", "--embeddings", "{tmp}/flat.npz", "--out", "{tmp}/out"], ["flat.npz", "2-d"]),
    (["directions", "--embeddings", "{tmp}/nolabels.npz", "--out", "{tmp}/out"], ["nolabels.npz", "'labels'"]),
    (["directions", "--embeddings", "{tmp}/strings.npz", "--out", "{tmp}/out"], ["strings.npz", "embeddings"]),
    (["directions", "--embeddings", "{tmp}/lengths.npz", "--out", "{tmp}/out"], ["embeddings=6", "labels=4"]),
    (["directions", "--embeddings", "{tmp}/halves.npz", "--out", "{tmp}/out"], ["labels"]),
    (["directions", "--embeddings", "{tmp}/negative.npz", "--out", "{tmp}/out"], ["labels", "negative"]),
    (["directions", "--embeddings", "{tmp}/names.npz", "--out", "{tmp}/out"], ["labels", "2 classes"]),
    (["directions", "--embeddings", "{tmp}/nothing.npz", "--out", "{tmp}/out"], ["nothing.npz", "no examples"]),
    (["directions", "--embeddings", "{tmp}/corrupt.parquet", "--out", "{tmp}/out"], ["corrupt.parquet"]),
    (["directions", "--embeddings", "{tmp}/attr_gaps.npz", "--out", "{tmp}/out"], ["'spurious'", "skip [1, 2]"]),
    (["directions", "--embeddings", "{tmp}/attr_text.npz", "--out", "{tmp}/out"], ["'spurious'", "integer"]),
    (["directions", "--embeddings", "{tmp}/empty.parquet", "--out", "{tmp}/out"], ["empty.parquet"]),
    (["directions", "--embeddings", "{tmp}/good.npz", "--out", "{tmp}/afile"], ["--out", "afile"]),
]
TRAIN_CASES = [
    (["train", "--method", "no-such-method", "--out", "{tmp}/out"], ["no-such-method"]),
    (["train", "--method", "erm", "--set", "lr=abc", "--out", "{tmp}/out"], ["lr"]),
    (["train", "--method", "erm", "--set", "lr=-1", "--out", "{tmp}/out"], ["lr"]),
    (["train", "--method", "erm", "--set", "batch_size=0", "--out", "{tmp}/out"], ["batch_size"]),
    (["train", "--method", "groupdro", "--set", "eta=0", "--out", "{tmp}/out"], ["eta"]),
    (["train", "--method", "jtt", "--set", "upweight=sideways", "--out", "{tmp}/out"], ["upweight"]),
    (["train", "--method", "dfr", "--set", "C=-1", "--out", "{tmp}/out"], ["'C'"]),
    (["train", "--method", "erm", "--out", "{tmp}/afile"], ["--out", "afile"]),
    (["train", "--method", "erm", "--epochs", "0", "--out", "{tmp}/out"], ["epochs"]),
    (["train", "--method", "erm", "--selection", "best", "--out", "{tmp}/out"], ["'selection'", "'worst_group'"]),
    (["train", "--method", "erm", "--trials", "0", "--out", "{tmp}/out"], ["'n_trials'"]),
    (["train", "--method", "erm", "--dataset", "no-such-dataset", "--out", "{tmp}/out"], ["no-such-dataset"]),
]
SWEEP_CASES = [
    (["sweep", "{tmp}/huge_samples.toml", "--dry-run"], ["samples", "1,000,000,000"]),
    (["sweep", "{tmp}/huge_samples.toml", "--out", "{tmp}/out"], ["samples"]),
    (["sweep", "{tmp}/huge_grid.toml", "--dry-run"], ["grid cells", "3,200,000"]),
    (["sweep", "{tmp}/huge_seeds.toml", "--dry-run"], ["seeds"]),
    (["sweep", "{tmp}/missing.toml", "--dry-run"], ["missing.toml"]),
    (["sweep", "{tmp}/bad_toml.toml", "--dry-run"], ["bad_toml.toml", "TOML"]),
    (["sweep", "{tmp}/unknown_key.toml", "--dry-run"], ["colour"]),
    (["sweep", "{tmp}/grid_scalar.toml", "--dry-run"], ["[grid] D"]),
    (["sweep", "{tmp}/random_bad.toml", "--dry-run"], ["[random] D", "gaussian"]),
    (["sweep", "{tmp}/overlap.toml", "--dry-run"], ["'D'", "[fixed], [grid], [random]"]),
    (["sweep", "{tmp}/study_param.toml", "--dry-run"], ["n_seeds"]),
    (["sweep", "{tmp}/study_unknown.toml", "--dry-run"], ["nosuch"]),
    (["sweep", "{tmp}/method_lr.toml", "--dry-run"], ["lr"]),
    (["sweep", "{tmp}/method_batch.toml", "--dry-run"], ["batch_size"]),
    (["sweep", "{tmp}/no_target.toml", "--dry-run"], ["target"]),
    (["sweep", "{tmp}/bad_target.toml", "--dry-run"], ["nonsense"]),
    (["sweep", "{tmp}/seeds_zero.toml", "--dry-run"], ["seeds_zero.toml", "'seeds'"]),
    (["sweep", "{tmp}/seeds_halves.toml", "--dry-run"], ["'seeds'", "1.5"]),
    (["sweep", "{tmp}/quick_text.toml", "--dry-run"], ["'quick'", "true or false"]),
    (["sweep", "{tmp}/resources_negative.toml", "--dry-run"], ["[resources]", "'num_cpus'"]),
    (["sweep", "{tmp}/study_param.toml", "--out", "{tmp}/afile"], ["--out", "afile"]),
    (["sweep", "status", "{tmp}"], ["plan.json"]),
    (["sweep", "params", "nonsense"], ["nonsense"]),
    (["sweep", "params", "study:no-such-study"], ["no-such-study"]),
]
EMBED_CASES = [
    (["embed", "--out", "{tmp}", "--model", "mlp", "--dataset", "digits"], ["--out", "folder"]),
    (["embed", "--out", "{tmp}/afile/emb.npz", "--model", "mlp", "--dataset", "digits"], ["--out", "afile"]),
]
CLI_CASES = DATASET_CASES + STUDY_CASES + AUDIT_CASES + DIRECTIONS_CASES + TRAIN_CASES + SWEEP_CASES + EMBED_CASES


def _tree(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def _flat(text: str) -> str:
    """The message with the console's line wrapping undone."""
    return " ".join(text.split())


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("bad-inputs")
    make_inputs(root)
    return root


@pytest.mark.parametrize("args, names", CLI_CASES, ids=[" ".join(a)[:70] for a, _ in CLI_CASES])
def test_cli_bad_input_is_one_named_error(inputs, args, names):
    before = _tree(inputs)
    result = runner.invoke(app, [a.format(tmp=inputs) for a in args], terminal_width=400)
    output = _flat(result.output)
    assert result.exit_code == 2, output
    assert "Traceback" not in result.output, output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert output.startswith("error:") or "error:" in output, output
    for name in names:
        assert _flat(name.format(tmp=inputs)) in output, (name, output)
    assert _tree(inputs) == before, "a failing command left files behind"


def test_there_are_at_least_80_bad_inputs():
    assert len(CLI_CASES) + len(API_CASES) >= 80


# ------------------------------------------------------------------ the Python API: (callable, names)
def _get_method(name, **kw):
    from spurlab.train.methods.method_base import get_method

    return get_method(name, **kw)


def _load(name, **params):
    from spurlab.data.dataset_registry import load_splits

    return load_splits(name, **params)


def _study(**overrides):
    from spurlab.studies.study_base import run_study

    return run_study("ood-failure-modes", quick=True, overrides=overrides, write=False)


def _plan(**config):
    from spurlab.sweep.runner import plan_sweep

    return plan_sweep({"target": "study:ood-failure-modes", **config})


def _read(name):
    from spurlab.data.embeddings import read_embeddings_file

    return lambda root: read_embeddings_file(root / name)


def _idx(name):
    from spurlab.data.images import read_idx

    return lambda root: read_idx(root / name)


def _sets(*items):
    from spurlab.runs import parse_sets

    return parse_sets(list(items))


def _audit(**settings):
    from spurlab.audit.core import Audit

    return Audit(device="cpu", **settings).find_issues()


def _score(name, *args, **kw):
    from spurlab import metrics

    return getattr(metrics, name)(*args, **kw)


def _edits(**kw):
    import torch

    from spurlab.models.batched_edits import evaluate_interventions

    args = {"x": np.zeros((4, 2), np.float32), "y": [0, 1, 0, 1], "groups": [0, 1, 2, 3], **kw}
    return evaluate_interventions(torch.nn.Linear(2, 2), [], **args)


def _units(**kw):
    import torch

    from spurlab.probes.neurons import find_critical_units

    x, y = np.zeros((4, 3), np.float32), np.array([0, 1, 0, 1])
    return find_critical_units(torch.nn.Sequential(torch.nn.Linear(3, 2)), (x, y, y), **kw)


def _ranked(**kw):
    from spurlab.models.units import CriticalUnits

    return CriticalUnits(layers=["0"], indices=[0], scores=[1.0], **kw)


def _api(module, function, /, *args, **kw):
    """``spurlab.<module>.<function>(*args, **kw)``."""
    from importlib import import_module

    return getattr(import_module(f"spurlab.{module}"), function)(*args, **kw)


def _fit_after(**settings):
    """A method built right, then given bad settings (scikit-learn manners): refused at fit, before training."""
    method = _get_method("erm")
    for name, value in settings.items():
        setattr(method, name, value)
    return method.fit({"train": None})


def _train(**config):
    import torch

    from spurlab.train.trainer import TrainConfig, fit

    return fit(torch.nn.Linear(2, 2), np.zeros((4, 2), np.float32), np.array([0, 1, 0, 1]), TrainConfig(**config))


def _directions(**params):
    from spurlab.probes.directions import FailureDirections

    return FailureDirections(**params).fit(np.eye(4), [0, 1, 0, 1], [0, 1, 1, 0])


OOD_IMAGES = "studies.ood_failure_modes.ood_images"


def _from_arrays(**kw):
    from spurlab.data.grouped import DatasetSplits

    return DatasetSplits.from_arrays(np.zeros((4, 2)), [0, 1, 0, 1], **kw)


def _grouped(y=(0, 1, 0, 1), **kw):
    from spurlab.data.grouped import GroupedDataset

    return GroupedDataset(x=np.zeros((4, 2)), y=np.array(y), a=np.array(kw.pop("a")) if "a" in kw else None, **kw)


API_CASES = [
    (lambda root: _get_method("erm", lr="abc"), ["'lr'"]),
    (lambda root: _get_method("erm", lr=float("nan")), ["'lr'"]),
    (lambda root: _get_method("erm", epochs=0), ["epochs"]),
    (lambda root: _get_method("erm", seed=-3), ["seed"]),
    (lambda root: _get_method("erm", batch_size=2.5), ["batch_size"]),
    (lambda root: _get_method("erm", weight_decay=-1), ["weight_decay"]),
    (lambda root: _get_method("dfr", balance="x"), ["balance"]),
    (lambda root: _get_method("dfr", n_draws=0), ["n_draws"]),
    (lambda root: _get_method("groupdro", adjustment=-1), ["adjustment"]),
    (lambda root: _get_method("jtt", lambda_up=0), ["lambda_up"]),
    (lambda root: _get_method("failure_directions", scheme="x"), ["scheme"]),
    (lambda root: _get_method("erm", nosuch=1), ["nosuch"]),
    (lambda root: _get_method("erm", selection="best"), ["method 'erm'", "'selection'", "'worst_group'"]),
    (lambda root: _load("linear-skew", n_min="abc"), ["n_min"]),
    (lambda root: _load("digits", p=0.9), ["'p'", "spurious"]),
    (lambda root: _load("digits", spurious="patch", test_correlation=2.0), ["test_correlation"]),
    (lambda root: _load("gaussian-core-spurious", d=10**12), ["gaussian-core-spurious", "limit"]),
    (lambda root: _study(n_seeds="x"), ["n_seeds"]),
    (lambda root: _study(margin="wide"), ["margin"]),
    (lambda root: _plan(samples=10**9, random={"D": {"uniform": [1, 2]}}), ["samples"]),
    (lambda root: _plan(grid={f"p{i}": list(range(30)) for i in range(4)}), ["grid cells"]),
    (lambda root: _plan(fixed={"n_seeds": "abc"}), ["n_seeds"]),
    (_read("empty.npz"), ["empty.npz"]),
    (_read("pickled.npz"), ["pickled.npz", "never unpickles"]),
    (_read("truncated.npz"), ["truncated.npz"]),
    (_read("corrupt.parquet"), ["corrupt.parquet"]),
    (_idx("labels-idx1-ubyte.gz"), ["labels-idx1-ubyte.gz", "truncated"]),
    (_idx("garbage-idx1-ubyte.gz"), ["garbage-idx1-ubyte.gz"]),
    (_idx("empty-idx1-ubyte"), ["empty-idx1-ubyte", "empty"]),
    (_idx("header-idx3-ubyte"), ["header-idx3-ubyte", "truncated"]),
    (lambda root: _sets("k=[1,"), ["k"]),
    (lambda root: _sets("k"), ["'k'", "key=value"]),
    (lambda root: _audit(epochs=0), ["Audit", "'epochs'"]),
    (lambda root: _audit(seeds="two"), ["'seeds'"]),
    (lambda root: _audit(skip=("train",)), ["'skip'", "'directions'"]),
    (lambda root: _audit(methods=["erm", "magic"]), ["'methods'", "magic"]),
    (lambda root: _audit(lr=0), ["'lr'"]),
    (lambda root: _score("accuracy", [0, 1], [0, 1.5]), ["accuracy", "'y_pred'", "integer class indices"]),
    (lambda root: _score("group_accuracies", [], [], []), ["'y_true'", "no examples"]),
    (lambda root: _score("group_accuracies", [0, 1], [0, 1], [0, -1]), ["'groups'", "negative"]),
    (lambda root: _score("group_accuracies", [0, 1], [0, 1], [0, 1], n_groups="x"), ["'n_groups'"]),
    (lambda root: _score("train_weighted_accuracy", [0], [0], [0], [[0]]), ["'train_groups'", "1-d"]),
    (lambda root: _edits(strategy="fast"), ["'strategy'", "'shared'"]),
    (lambda root: _edits(batch_size=0), ["'batch_size'"]),
    (lambda root: _edits(y=[], groups=[], x=np.zeros((0, 2))), ["'y'", "no examples"]),
    (lambda root: _grouped(a=[0, 2, 0, 2], attr_names=("x", "y")), ["a has value 2", "attribute values"]),
    (lambda root: _grouped(y=[0, 1, 5, 1], class_names=("u", "v")), ["y has value 5", "classes"]),
    (lambda root: _units(method="weight_norm", k=0), ["CriticalUnitSelector", "'k'"]),
    (lambda root: _units(method="group_gradient", k=1, n_worst=0), ["'n_worst'"]),
    (lambda root: _units(method="magnitude", fraction=1.5), ["'fraction'"]),
    (lambda root: _units(method="weight_norm", granularity="neuron"), ["'granularity'", "'channel'"]),
    (lambda root: _units(method="weight_norm", largest="maybe"), ["'largest'"]),
    (lambda root: _ranked().top(0), ["'k'"]),
    (lambda root: _ranked(granularity="neuron"), ["CriticalUnits", "'granularity'"]),
    (lambda root: _api("train.engines.upweighting", "upweight_flagged", [1.0, -1.0], upweight=0.5), ["'upweight'"]),
    (lambda root: _api("train.engines.upweighting", "upweight_flagged", [1.0, -1.0], scheme="heavy"), ["'scheme'"]),
    (lambda root: _api("train.engines.upweighting", "confidence_weights", [0.5], [0], 1, upweight="x"), ["'upweight'"]),
    (lambda root: _api("train.engines.upweighting", "select_from_pool", "best", [0, 1], 1), ["'strategy'"]),
    (lambda root: _api("train.engines.upweighting", "select_from_pool", "random", [0, 1], -1), ["'k'"]),
    (lambda root: _api("train.engines.fit_to_data", "FitConfig", lr=0), ["FitConfig", "'lr'"]),
    (lambda root: _api("train.engines.fit_to_data", "FitConfig", momentum=1.0), ["'momentum'"]),
    (lambda root: _api("train.engines.fit_to_data", "FitConfig", optimizer="lbfgs"), ["'optimizer'", "'sgd'"]),
    (lambda root: _api("train.engines.fit_to_data", "FitConfig", check_every=-1), ["'check_every'"]),
    (lambda root: _api("train.engines.fit_to_data", "FitConfig", min_steps=10, max_steps=5), ["'min_steps'"]),
    (lambda root: _api("train.methods.compare", "hparam_grid", "erm", 0), ["hparam_grid", "'n_trials'"]),
    (lambda root: _api("train.methods.compare", "tune_method", "erm", None, n_trials="x"), ["'n_trials'"]),
    (lambda root: _api("train.methods.compare", "compare_methods", None, ["erm"], seeds=[]), ["'seeds'"]),
    (lambda root: _api("train.methods.compare", "compare_methods", None, ["erm", "magic"]), ["'methods'", "magic"]),
    (lambda root: _fit_after(epochs=0), ["method 'erm'", "'epochs'"]),
    (lambda root: _fit_after(seed=-1), ["'seed'"]),
    (lambda root: _plan(seeds=0), ["<dict>", "'seeds'"]),
    (lambda root: _plan(seeds=[0, True]), ["'seeds'"]),
    (lambda root: _plan(quick="maybe"), ["'quick'"]),
    (lambda root: _plan(sampler_seed=-1), ["'sampler_seed'"]),
    (lambda root: _plan(resources={"num_gpus": "one"}), ["'num_gpus'"]),
    (lambda root: _api("probes.memorization", "solve_memorization", np.eye(2), np.eye(2), [0.0, 1.0], ridge=-1),
     ["solve_memorization", "'ridge'"]),
    (lambda root: _api("probes.memorization", "KernelMemorization", "svm").fit(np.eye(2), [0, 1], np.eye(2)),
     ["KernelMemorization", "'features'"]),
    (lambda root: _api("probes.memorization", "gamma", "rf", "phi2", alpha=1.5), ["gamma", "'alpha'"]),
    (lambda root: _api("probes.memorization", "gamma", "rf", "phi2", 0.5, regime="mid_n"), ["'regime'"]),
    (lambda root: _api("probes.memorization", "gamma", "svm", "phi2", 0.5), ["'model'", "'ntk'"]),
    (lambda root: _api("probes.memorization", "linear_leak_weight", "rf", "phi2", -1), ["'n_over_d'"]),
    (lambda root: _api("probes.captions", "AttributeCaptioner", np.zeros((2, 2)), [0, 1], {"c": [0, 1]}, fraction=0.9),
     ["AttributeCaptioner", "'fraction'"]),
    (lambda root: _api("probes.skew", "theory_spurious_ratio", 0.9, 0, [10]), ["'B'"]),
    (lambda root: _api("probes.skew", "theory_spurious_ratio", 1.0, 1, [10]), ["'p'"]),
    (lambda root: _api("sweep.executors", "LocalExecutor", workers=-2), ["LocalExecutor", "'workers'"]),
    (lambda root: _api("train.engines.max_margin", "fit_max_margin", np.eye(2), [1, -1], tol=2), ["'tol'"]),
    (lambda root: _api("train.engines.max_margin", "fit_max_margin", np.eye(2), [1, -1], formulation="qp"),
     ["'formulation'"]),
    (lambda root: _api("models.features", "RandomFeatures", -5).fit(np.eye(2)), ["RandomFeatures", "'n_features'"]),
    (lambda root: _api("train.engines.pruned_copy_contrastive", "PrunedContrastiveConfig", batch_size=1).validate(),
     ["PrunedContrastiveConfig", "'batch_size'"]),
    (lambda root: _api("train.engines.pruned_copy_contrastive", "PrunedContrastiveConfig", lr_factor=1).validate(),
     ["'lr_factor'"]),
    (lambda root: _api("train.engines.distill", "RepresentationDistiller", epochs=0).fit(None, None, None),
     ["RepresentationDistiller", "'epochs'"]),
    (lambda root: _api("train.engines.distill", "RepresentationDistiller", optimizer="lbfgs").fit(None, None, None),
     ["'optimizer'", "'adamw'"]),
    (lambda root: _api("train.engines.linear_gd", "BatchedLinearGD", n_logged=0).fit(np.eye(2), [1, -1]),
     ["BatchedLinearGD", "'n_logged'"]),
    (lambda root: _api("train.engines.linear_gd", "log_spaced_steps", 0, 5), ["'n_steps'"]),
    (lambda root: _api("data.lazy_images", "ImageTransform", 0), ["ImageTransform", "'image_size'"]),
    (lambda root: _api("data.lazy_images", "ImageTransform", 8, normalize="imagenette"), ["'normalize'"]),
    (lambda root: _api("models.model_registry", "ModelSpec", "mlp", freeze="all"), ["ModelSpec", "'freeze'"]),
    (lambda root: _api("models.embedders", "EfficientNetLite0Embedder", image_size=16), ["'image_size'", "32"]),
    (lambda root: _api("models.embedders", "EfficientNetLite0Embedder", normalization="x"), ["'normalization'"]),
    (lambda root: _directions(Cs=[0.0, 1.0]), ["FailureDirections", "'Cs'"]),
    (lambda root: _directions(n_folds=1), ["'n_folds'"]),
    (lambda root: _directions(loss="log"), ["'loss'", "'squared_hinge'"]),
    (lambda root: _directions(n_threads=0), ["'n_threads'"]),
    (lambda root: _api("data.synthetic", "easy_task", -1, 5), ["easy_task", "'n_maj'"]),
    (lambda root: _api("data.synthetic", "duplication_counts", 4, 0.3), ["duplication_counts", "'p'", "0.5"]),
    (lambda root: _api("data.synthetic", "structured_features", 10, core="cubic"), ["'core'", "'nonlinear'"]),
    (lambda root: _api("data.synthetic", "gaussian_core_spurious", 0), ["'n'"]),
    (lambda root: _api("data.synthetic", "split_dims", 10, 1.5), ["split_dims", "'alpha'"]),
    (lambda root: _api("data.images", "build_image_splits", {}, ("a", "b"), name="x", val_fraction=1),
     ["build_image_splits", "'val_fraction'"]),
    (lambda root: _api("data.spuco_mnist", "build_spuco_mnist", root, strength=1.0), ["'strength'"]),
    (lambda root: _api("data.spuco_mnist", "build_spuco_mnist", root, n_train=0), ["'n_train'"]),
    (lambda root: _train(optimizer="lbfgs"), ["TrainConfig", "'optimizer'", "'adamw'"]),
    (lambda root: _train(epochs=0), ["TrainConfig", "'epochs'"]),
    (lambda root: _train(checkpoint_every=-1), ["'checkpoint_every'"]),
    (lambda root: _api("probes.unit_evidence", "build_interventions", [], ["zap"], [1]), ["'modes'", "zap"]),
    (lambda root: _api("probes.unit_evidence", "build_interventions", [], ["zero"], [0]), ["'ks'"]),
    (lambda root: _api("probes.contamination", "background_probe_accuracy", np.eye(4), [0, 1, 0, 1], kind="svm"),
     ["background_probe_accuracy", "'kind'"]),
    (lambda root: _api("sweep.executors", "make_executor", "slurm"), ["make_executor", "'kind'", "'ray'"]),
    (lambda root: _api("data.planted", "planted_subgroups", n_classes=1), ["planted_subgroups", "'n_classes'"]),
    (lambda root: _api("data.planted", "planted_subgroups", n_classes=4, dim=6), ["'dim'", "2 * n_classes"]),
    (lambda root: _api("data.cifar", "find_cifar", root, layout="zip"), ["find_cifar", "'layout'"]),
    (lambda root: _api("data.cifar", "reduce_subclasses", np.zeros(3), [0], 1.5, 0), ["'subclass_fraction'"]),
    (lambda root: _api("data.replicas", "cifar_replica_arrays", "cifar11"), ["'variant'", "'cifar100'"]),
    (lambda root: _api("data.replicas", "write_cifar_replica", root, layout="zip"), ["'layout'"]),
    (lambda root: _api("data.injections", "resolve_correlation", "upside", 0.9, 2), ["'correlation'", "'reversed'"]),
    (lambda root: _api("data.injections", "resolve_correlation", 1.5, 0.9, 2), ["'correlation'", "1.5"]),
    (lambda root: _from_arrays(fractions=(0.5, 0.5)), ["from_arrays", "'fractions'", "at least 3"]),
    (lambda root: _from_arrays(fractions=(0.5, 0.5, 0.5)), ["'fractions'", "summing to 1"]),
    (lambda root: _from_arrays(fractions=(0.6, 0.6, -0.2)), ["'fractions'"]),
    (lambda root: _from_arrays(seed=-1), ["'seed'"]),
    (lambda root: _api(OOD_IMAGES, "ImageSpec", optimizer="lbfgs"), ["ImageSpec", "'optimizer'"]),
    (lambda root: _api(OOD_IMAGES, "ImageSpec", spurious="noise_frame"), ["image_spurious", "label-correlated"]),
    (lambda root: _api(OOD_IMAGES, "images_experiment", [], ["mlp"], ["melt"], [0], None, 1, [1], 1, [0.9], [1], 1),
     ["images_experiment", "'modes'", "melt"]),
]


@pytest.mark.parametrize("call, names", API_CASES, ids=[f"api-{i}" for i in range(len(API_CASES))])
def test_api_bad_input_is_a_named_spurlab_error(inputs, call, names):
    before = _tree(inputs)
    with pytest.raises(SpurlabError) as info:
        call(inputs)
    for name in names:
        assert name in str(info.value), (name, str(info.value))
    assert _tree(inputs) == before


# ------------------------------------------------------------------ unexpected errors: summary, log, --debug
def test_unexpected_error_is_summarized_with_a_log_file(monkeypatch):
    import spurlab.data.dataset_registry as registry

    def explode(name):
        raise RuntimeError("something inside broke\nsecond line")

    monkeypatch.setattr(registry, "get_entry", explode)
    result = runner.invoke(app, ["datasets", "show", "digits"], terminal_width=400)
    output = _flat(result.output)
    assert result.exit_code == 1, output
    assert "Traceback" not in result.output
    assert "unexpected RuntimeError: something inside broke" in output and "second line" not in output
    assert "--debug" in output
    log = Path(output.split("the traceback is in ")[1].split(";")[0])
    assert log.is_file() and "Traceback" in log.read_text() and "explode" in log.read_text()
    os.remove(log)

    debug = runner.invoke(app, ["--debug", "datasets", "show", "digits"], terminal_width=400)
    assert debug.exit_code == 1 and "Traceback" in debug.output and "explode" in debug.output


def test_markup_in_messages_is_printed_as_text(inputs):
    result = runner.invoke(app, ["sweep", str(inputs / "grid_scalar.toml"), "--dry-run"], terminal_width=400)
    assert "[grid] D must be a non-empty list" in _flat(result.output)

"""Auditing your own model: a trained nn.Module audited as it is, on splits you built or a registered dataset."""
import json

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from spurlab.audit import Audit
from spurlab.cli import app
from spurlab.data.dataset_registry import load_splits
from spurlab.data.grouped import DatasetSplits

runner = CliRunner()


class UsersNet(nn.Module):
    """Not one of spurlab's networks: no features() method, its own names."""

    def __init__(self, d_in: int):
        super().__init__()
        self.trunk = nn.Sequential(nn.Linear(d_in, 12), nn.Tanh())
        self.classifier = nn.Linear(12, 2)

    def forward(self, x):
        return self.classifier(self.trunk(torch.flatten(x, 1)))


class ExportedNet(UsersNet):
    @torch.jit.export
    def features(self, x):
        return self.trunk(torch.flatten(x, 1))


def train_users_net(net: nn.Module, x: np.ndarray, y: np.ndarray, steps: int = 150) -> nn.Module:
    torch.manual_seed(0)
    opt = torch.optim.Adam(net.parameters(), lr=0.02)
    xt, yt = torch.as_tensor(x, dtype=torch.float32), torch.as_tensor(y)
    for _ in range(steps):
        opt.zero_grad()
        nn.functional.cross_entropy(net(xt), yt).backward()
        opt.step()
    return net.eval()


@pytest.fixture(scope="module")
def user_data():
    rng = np.random.default_rng(1)
    n = 500
    y = rng.integers(0, 2, n)
    a = np.where(rng.random(n) < 0.9, y, 1 - y)
    x = np.stack([y + rng.normal(0, 1.0, n), 2.0 * a + rng.normal(0, 0.3, n), rng.normal(0, 1, n)], 1)
    splits = DatasetSplits.from_arrays(x.astype(np.float32), np.array(["landbird", "waterbird"])[y],
                                       attributes=np.array(["land", "water"])[a], seed=0)
    net = train_users_net(UsersNet(3), splits["train"].x, splits["train"].y)
    return splits, net


def test_your_trained_module_is_audited_as_it_is(user_data, tmp_path):
    splits, net = user_data
    before = {k: v.clone() for k, v in net.state_dict().items()}
    audit = Audit(splits, model=net, feature_layer="trunk", skip=("units", "fixes"), device="cpu").find_issues()
    report = audit.report(tmp_path / "run")
    assert audit.model_ is net and all(torch.equal(before[k], v) for k, v in net.state_dict().items())
    assert audit.findings_.history == [] and "train" in audit.findings_.timings  # no ERM step ran
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["model"] == "your model (UsersNet)" and summary["model_source"] == "given"
    assert "your model (UsersNet), audited as it is" in (tmp_path / "run" / "report.html").read_text()
    results = pd.read_csv(tmp_path / "run" / "results.csv")
    for split, ds in splits.items():
        with torch.no_grad():
            pred = net(torch.as_tensor(ds.x)).argmax(1).numpy()
        for g in range(ds.n_groups):
            members = ds.g == g
            if not members.any():
                continue
            name = ds.group_name(g)
            expected = float((pred[members] == ds.y[members]).mean())
            assert summary["splits"][split]["group_accuracy"][name] == pytest.approx(expected)
            row = results[(results.split == split) & (results.name == name) & (results.metric == "accuracy")]
            assert row["value"].iloc[0] == pytest.approx(expected)
    assert summary["dataset"] == "arrays" and "y=landbird,a=water" in summary["splits"]["test"]["group_accuracy"]
    assert report.summary["directions"]["fit_split"] == "val"


def test_features_come_from_the_cache_on_a_second_audit(user_data, tmp_path):
    splits, net = user_data
    first = Audit(splits, model=net, feature_layer="trunk", skip=("units", "fixes"), device="cpu",
                  cache=tmp_path).find_issues()
    second = Audit(splits, model=net, feature_layer="trunk", skip=("units", "fixes"), device="cpu",
                   cache=tmp_path).find_issues()
    assert set(first.findings_.features_from_cache.values()) == {False}
    assert set(second.findings_.features_from_cache.values()) == {True}
    pd.testing.assert_frame_equal(first.findings_.group_table, second.findings_.group_table)


def test_a_model_whose_features_cannot_be_found_skips_directions_and_says_why(user_data):
    splits, net = user_data
    audit = Audit(splits, model=net, skip=("units",), methods=["erm", "dfr"], seeds=1, epochs=1,
                  device="cpu").find_issues()
    reason = audit.findings_.skipped_steps["directions"]
    assert "cannot find the penultimate features of UsersNet" in reason and "feature_layer" in reason
    assert audit.findings_.split_metrics["test"]["accuracy"] > 0.5  # evaluated all the same
    assert list(audit.findings_.fixes.summary["method"]) == ["erm"]
    assert audit.findings_.fixes.notes[0].startswith("dfr skipped: it reads penultimate features")


def test_the_fixes_start_from_your_module(user_data, one_thread):
    splits, net = user_data
    audit = Audit(splits, model=net, feature_layer="trunk", methods=["erm", "dfr"], seeds=1, epochs=2,
                  skip=("units",), device="cpu").find_issues()
    summary = audit.findings_.fixes.summary
    assert set(summary["method"]) == {"erm", "dfr"}


def test_spurlab_audit_takes_a_torchscript_file(tmp_path):
    splits = load_splits("spurious-digits")
    train = splits["train"]
    net = train_users_net(ExportedNet(int(np.prod(train.input_shape))), train.x.reshape(len(train), -1), train.y, 60)
    path = tmp_path / "mine.pt"
    torch.jit.save(torch.jit.script(net), str(path))
    result = runner.invoke(app, ["audit", "--dataset", "spurious-digits", "--model", str(path), "--skip",
                                 "units,fixes", "--device", "cpu", "--out", str(tmp_path / "run")],
                           terminal_width=200)
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["model_source"] == "given" and summary["model"].startswith("your model")
    with torch.no_grad():
        pred = net(torch.as_tensor(splits["test"].x)).argmax(1).numpy()
    assert summary["splits"]["test"]["accuracy"] == pytest.approx(float((pred == splits["test"].y).mean()))
    not_a_model = tmp_path / "weights.pt"
    torch.save(net.state_dict(), not_a_model)
    bad = runner.invoke(app, ["audit", "--model", str(not_a_model)], terminal_width=200)
    assert bad.exit_code == 2 and "is not a TorchScript model" in " ".join(bad.output.split())


class TinyBirdNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Linear(4, 2)

    @torch.jit.export
    def features(self, x):
        return self.body(x)

    def forward(self, x):
        return self.head(self.features(x))


def test_the_own_model_page_pipeline_images_csv_torchscript_audit(tmp_path):
    """docs/own-model.md in miniature: replica JPEGs listed in a CSV, a TorchScript model, spurlab audit --table."""
    from spurlab.data.replicas import write_waterbirds_replica

    write_waterbirds_replica(tmp_path / "data", image_size=(24, 16))
    root = tmp_path / "data" / "waterbirds_v1.0"
    meta = pd.read_csv(root / "metadata.csv")
    table = pd.DataFrame({"path": meta["img_filename"], "bird": meta["y"].map({0: "landbird", 1: "waterbird"}),
                          "place": meta["place"].map({0: "land", 1: "water"}),
                          "split": meta["split"].map({0: "train", 1: "val", 2: "test"})})
    table.to_csv(root / "birds.csv", index=False)
    torch.manual_seed(0)
    path = tmp_path / "birdnet.pt"
    torch.jit.save(torch.jit.script(TinyBirdNet().eval()), str(path))
    out = tmp_path / "run"
    result = runner.invoke(app, ["audit", "--table", str(root / "birds.csv"), "--label", "bird", "--spurious", "place",
                                 "--set", "image_size=16", "--model", str(path), "--skip", "fixes", "--device", "cpu",
                                 "--out", str(out)], terminal_width=200)
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["model"] == "your model (TinyBirdNet)" and summary["model_source"] == "given"
    assert "TorchScript" in summary["skipped_steps"]["units"]
    assert set(summary["splits"]["test"]["group_accuracy"]) == {"y=landbird,a=land", "y=landbird,a=water",
                                                                "y=waterbird,a=land", "y=waterbird,a=water"}

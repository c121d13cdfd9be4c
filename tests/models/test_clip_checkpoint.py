"""A local CLIP checkpoint: refused by name unless it is one; a real one loads offline and embeds text and images."""
import json

import numpy as np
import pytest

from spurlab import SpurlabError
from spurlab.models.embedders import HFClipEncoder, check_clip_checkpoint, get_embedder
from spurlab.studies.study_base import run_study
from tests.clip_checkpoint import save_tiny_clip


def _folder(tmp_path, config=None, files=()):
    path = tmp_path / "ckpt"
    path.mkdir()
    if config is not None:
        (path / "config.json").write_text(config if isinstance(config, str) else json.dumps(config))
    for name in files:
        (path / name).write_text("{}")
    return path


@pytest.mark.parametrize("config, files, message", [
    (None, (), "no config.json"),
    ("[1, 2]", ("model.safetensors", "tokenizer.json"), "not a JSON object"),
    ("{not json", ("model.safetensors", "tokenizer.json"), "not a JSON object"),
    ({"model_type": "bert"}, ("model.safetensors", "tokenizer.json"), "model_type 'bert'"),
    ({"model_type": "clip"}, ("tokenizer.json",), "has no weights"),
    ({"model_type": "clip"}, ("pytorch_model.bin",), "has no tokenizer"),
])
def test_a_folder_that_is_not_a_clip_checkpoint_is_refused_by_name(tmp_path, config, files, message):
    path = _folder(tmp_path, config, files)
    with pytest.raises(SpurlabError, match=message):
        check_clip_checkpoint(path)
    with pytest.raises(SpurlabError, match=message):
        HFClipEncoder(path)
    with pytest.raises(SpurlabError, match=message):
        get_embedder("clip", path=path)


def test_a_missing_path_or_a_file_is_refused(tmp_path):
    with pytest.raises(SpurlabError, match="CLIP checkpoint not found"):
        check_clip_checkpoint(tmp_path / "missing")
    (tmp_path / "weights.bin").write_bytes(b"0")
    with pytest.raises(SpurlabError, match="is a file, not a folder"):
        HFClipEncoder(tmp_path / "weights.bin")


def test_the_study_refuses_a_bad_checkpoint_before_training(tmp_path):
    path = _folder(tmp_path, {"model_type": "bert"}, ("model.safetensors", "tokenizer.json"))
    # refused in validate: the ERM model is never trained, so no data folder is read
    with pytest.raises(SpurlabError, match="not a CLIP checkpoint"):
        run_study("failure-directions", out_dir=tmp_path / "out", quick=True, device="cpu",
                  overrides={"clip_checkpoint": str(path)})
    with pytest.raises(SpurlabError, match="not found"):
        run_study("failure-directions", out_dir=tmp_path / "out", quick=True, device="cpu",
                  overrides={"clip_checkpoint": str(tmp_path / "nowhere")})
    assert not (tmp_path / "out").exists()


def test_a_tiny_clip_checkpoint_loads_offline_and_embeds(tmp_path, monkeypatch):
    path = save_tiny_clip(tmp_path / "clip", max_positions=16)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # any attempt to reach the hub fails instead of downloading
    assert check_clip_checkpoint(path) == path
    encoder = HFClipEncoder(path, device="cpu", batch_size=3)
    texts = ["a photo of a red digit", "a green digit", "a photo of a slanted four on a striped background"]
    text = encoder.embed_text(texts)  # the last caption is longer than the 16 positions: truncated, not an error
    assert text.shape == (3, 8) and text.dtype == np.float32
    assert np.allclose(np.linalg.norm(text, axis=1), 1.0, atol=1e-5)
    assert not np.allclose(text[0], text[1])
    assert np.allclose(encoder.embed_text(texts[:1]), text[:1], atol=1e-5)  # batching does not change a text
    images = encoder.embed(np.random.default_rng(0).random((4, 1, 28, 28)))  # grey 28 px -> RGB 32 px
    assert images.shape == (4, 8) and np.isfinite(images).all()


def test_spurlab_directions_refuses_a_bad_clip_folder_before_fitting(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from spurlab.cli import app
    from spurlab.probes.directions import FailureDirections

    def no_fit(*args, **kwargs):
        raise AssertionError("the SVMs were fit before the CLIP folder was checked")

    monkeypatch.setattr(FailureDirections, "fit", no_fit)

    rng = np.random.default_rng(0)
    labels = np.arange(60) % 2
    np.savez(tmp_path / "emb.npz", embeddings=rng.normal(size=(60, 4)), labels=labels,
             predictions=np.where(rng.random(60) < 0.3, 1 - labels, labels))
    path = _folder(tmp_path, {"model_type": "bert"}, ("model.safetensors", "tokenizer.json"))
    result = CliRunner().invoke(app, ["directions", "--embeddings", str(tmp_path / "emb.npz"), "--out",
                                      str(tmp_path / "out"), "--clip", str(path), "--device", "cpu"])
    assert result.exit_code != 0 and "not a CLIP checkpoint" in result.output
    assert not (tmp_path / "out").exists()

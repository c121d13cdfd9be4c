"""The paper's network setting of spurious-memorization (the ``networks`` experiment, ``nn_setting="paper"``).

Following the authors' public code (``simone-bombari/spurious-features-memorization``,
``main_NN.py`` / ``utils_NN.py``): all ten MNIST classes, a frame of i.i.d. uniform
noise of width 10 around each image (48 x 48), the spurious query keeps the frame and
zeroes the image; cross-entropy on ten outputs; a fully connected net
``d -> 500 -> 200 -> 10`` (``fc``) and their small ConvNet ``conv16-pool-conv32-pool-fc256``
(``cnn``); Adam, lr 1e-3, batch 1024, 1000 epochs with the learning rate multiplied by
0.8 every 100 epochs; N from 10 to 50 000. The spurious accuracy is the share of
training points whose query (frame only) is assigned the point's own class (chance 1/10).
Deliberate differences are listed in ``docs/studies/spurious-memorization.md``.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from spurlab.data.dataset_registry import get_entry, load_splits
from spurlab.errors import SpurlabError
from spurlab.models import make_model
from spurlab.models.small_convnet import small_convnet
from spurlab.train.engines.fit_to_data import FitConfig, batched_accuracy, train_to_fit

PAPER_NET_MODELS = ("fc", "cnn")


def load_class_images(spec: str, n_train: int, n_test: int, seed: int, data_dir=None):
    """``(x_train, y_train, x_test, y_test, n_classes)`` of every class of dataset ``spec`` (``name[:classes]``)."""
    name, _, classes = str(spec).partition(":")
    known = get_entry(name.strip()).parameters()
    wanted = {"n_train": n_train, "n_test": n_test, "val_fraction": 0.0}
    if classes.strip():
        wanted["classes"] = classes.strip()
    splits = load_splits(name.strip(), data_dir=data_dir or None, seed=seed,
                         **{k: v for k, v in wanted.items() if k in known or k == "classes"})
    train, test = splits["train"], splits["test"]
    if train.x.ndim != 4:
        raise SpurlabError(f"dataset {spec!r} does not hold images (got x of shape {train.x.shape})")
    if len(train) < n_train:
        raise SpurlabError(f"dataset {spec!r} has {len(train)} training images, {n_train} are needed",
                           hint="lower nn_N")
    order = np.random.default_rng(seed).permutation(len(train))[:n_train]
    return train.x[order], train.y[order], test.x[:n_test], test.y[:n_test], len(train.class_names)


def paper_net(name: str, image_shape: tuple[int, ...], n_classes: int, seed: int) -> torch.nn.Module:
    """``fc``: d -> 500 -> 200 -> K (ReLU); ``cnn``: the authors' small ConvNet (16-32 conv, FC 256)."""
    if name not in PAPER_NET_MODELS:
        raise SpurlabError(f"unknown network {name!r}", hint=f"use one of {', '.join(PAPER_NET_MODELS)}")
    if name == "fc":
        return make_model("mlp", image_shape, n_classes, seed=seed, hidden=(500, 200))
    return small_convnet(image_shape, n_classes, seed=seed)


def paper_fit_config(cfg: dict[str, Any], n: int, seed: int, device: str) -> FitConfig:
    """Adam for ``nn_epochs`` passes over the N points, lr x ``nn_lr_gamma`` every ``nn_lr_step`` passes."""
    steps = int(cfg["nn_epochs"]) * math.ceil(n / int(cfg["nn_batch_size"]))
    return FitConfig(lr=float(cfg["nn_lr"]), batch_size=int(cfg["nn_batch_size"]), optimizer="adam",
                     max_steps=steps, stop_when_fitted=False, lr_step_epochs=int(cfg["nn_lr_step"]),
                     lr_gamma=float(cfg["nn_lr_gamma"]), seed=seed, device=device)


def paper_network_metrics(net: torch.nn.Module, framed: np.ndarray, query: np.ndarray, y: np.ndarray,
                          test: np.ndarray, y_test: np.ndarray, cfg: dict[str, Any], seed: int,
                          device: str) -> dict[str, float]:
    """Train one network on ``(framed, y)`` in the paper's way; train / test / spurious accuracy."""
    report = train_to_fit(net, framed, y, paper_fit_config(cfg, len(y), seed, device))
    dev = next(net.parameters()).device

    def accuracy(x: np.ndarray, labels: np.ndarray) -> float:
        return batched_accuracy(net, torch.as_tensor(x, dtype=torch.float32, device=dev),
                                torch.as_tensor(labels, dtype=torch.long, device=dev))

    net.eval()
    return {"train_acc": report.train_acc, "test_acc": accuracy(test, y_test), "spurious_acc": accuracy(query, y),
            "epochs": float(cfg["nn_epochs"]), "steps": float(report.steps)}

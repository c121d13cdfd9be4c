"""Probes of feature contamination: how much a network learned of label-uncorrelated features.

* :func:`core_background_norms` — first-layer weights mapped back to feature space
  through the structured-feature transform ``T`` (``W T``), mean over neurons of the
  norm of the core block and of the background block;
* :func:`activation_asymmetry` — mean over neurons of
  ``sign(a_k) [P(active | y=+1) - P(active | y=-1)]``;
* :class:`ContaminationTracker` — both, as a trajectory callback for
  :class:`~spurlab.train.engines.two_layer_trainer.TwoLayerTrainer`;
* :class:`LinearProbe`, :func:`background_probe_accuracy` and
  :func:`background_variance_share` — how well a linear read-out recovers the
  background (domain, colour) from a representation, and how much of it is background;
* :func:`colour_response` — how strongly a layer responds to a constant colour in
  a region of the image (the brick-red padding probe).
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from spurlab.errors import SpurlabError
from spurlab.params import Interval, Options, check_params, probability
from spurlab.utils import as_numpy, check_finite, check_labels, check_same_length


# ------------------------------------------------------------------ two-layer networks
def feature_space_weights(weight: torch.Tensor, transform) -> torch.Tensor:
    """``W T``: first-layer weights ``(..., m, d_in)`` in feature coordinates ``(..., m, d_feat)``."""
    T = torch.as_tensor(np.asarray(transform), dtype=weight.dtype, device=weight.device)
    if T.shape[0] != weight.shape[-1]:
        raise SpurlabError(f"transform maps into R^{T.shape[0]} but the weights live in R^{weight.shape[-1]}",
                           hint="pass the transform T that generated the network's inputs")
    return weight @ T


def core_background_norms(weight: torch.Tensor, transform, d_core: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean over neurons of ``||(W T)_core||`` and ``||(W T)_bg||``; one value per replica."""
    feats = feature_space_weights(weight, transform)
    if not 0 < d_core < feats.shape[-1]:
        raise SpurlabError(f"d_core={d_core} must lie strictly between 0 and {feats.shape[-1]}")
    core = feats[..., :d_core].norm(dim=-1).mean(dim=-1)
    background = feats[..., d_core:].norm(dim=-1).mean(dim=-1)
    return core, background


def activation_asymmetry(preact: torch.Tensor, y_signed: torch.Tensor, output: torch.Tensor) -> torch.Tensor:
    """``mean_k sign(a_k) [P(h_k > 0 | y=+1) - P(h_k > 0 | y=-1)]`` per replica.

    ``preact`` is ``(R, N, m)``, ``y_signed`` ``(N,)`` in {-1, +1}, ``output`` ``(R, m)``.
    A neuron that fires as often on both classes scores 0; ReLU neurons aligned with
    their output sign drift towards 1.
    """
    pos, neg = y_signed > 0, y_signed < 0
    if not pos.any() or not neg.any():
        raise SpurlabError("activation asymmetry needs examples of both classes")
    active = (preact > 0).float()
    gap = active[:, pos].mean(dim=1) - active[:, neg].mean(dim=1)
    return (torch.sign(output) * gap).mean(dim=-1)


class ContaminationTracker:
    """Trajectory callback: ``core_norm``, ``bg_norm`` and ``activation_asymmetry`` per replica.

    ``x, y`` are the examples on which activation frequencies are measured (the
    training set, by default in the study); ``transform`` and ``d_core`` come from
    :func:`~spurlab.data.synthetic.structured_features`.
    """

    def __init__(self, transform, d_core: int, x, y):
        from spurlab.utils import signed_labels

        self.transform = np.asarray(transform, dtype=np.float32)
        self.d_core = int(d_core)
        self.x = torch.as_tensor(as_numpy(x, np.float32))
        self.y = torch.as_tensor(signed_labels(y), dtype=torch.float32)

    @torch.no_grad()
    def __call__(self, model) -> dict[str, torch.Tensor]:
        device = model.weight.device
        core, bg = core_background_norms(model.weight, self.transform, self.d_core)
        preact = model.preactivations(self.x.to(device))
        asym = activation_asymmetry(preact, self.y.to(device), model.output)
        return {"core_norm": core, "bg_norm": bg, "activation_asymmetry": asym}


# ------------------------------------------------------------------ linear probes
class LinearProbe:
    """Standardised multinomial logistic regression on a representation (scikit-learn style)."""

    def __init__(self, C: float = 1.0, max_iter: int = 2000, seed: int = 0):
        self.C = C
        self.max_iter = max_iter
        self.seed = seed

    def fit(self, z: np.ndarray, y: np.ndarray) -> LinearProbe:
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        z, y = _probe_inputs(z, y)
        if len(np.unique(y)) < 2:
            raise SpurlabError("a linear probe needs at least two label values", hint="add examples of another class")
        self.pipeline_ = make_pipeline(StandardScaler(), LogisticRegression(
            C=self.C, max_iter=self.max_iter, random_state=self.seed))
        self.pipeline_.fit(z, y)
        self.classes_ = self.pipeline_.classes_
        return self

    def predict(self, z: np.ndarray) -> np.ndarray:
        if not hasattr(self, "pipeline_"):
            raise SpurlabError("this LinearProbe is not fitted yet", hint="call fit(z, y) first")
        return self.pipeline_.predict(_probe_inputs(z)[0])

    def score(self, z: np.ndarray, y: np.ndarray) -> float:
        z, y = _probe_inputs(z, y)
        return float(np.mean(self.predict(z) == y))


def _probe_inputs(z: np.ndarray, y: np.ndarray | None = None):
    z = np.asarray(z, dtype=np.float64)
    if z.ndim != 2:
        raise SpurlabError(f"representations must be 2-d (examples x dims), got shape {z.shape}",
                           hint="flatten them, e.g. z.reshape(len(z), -1)")
    check_finite("representations", z)
    if y is not None:
        check_same_length(z=z, y=y)
        y = check_labels("labels", np.asarray(y))
    return z, y


def background_probe_accuracy(z: np.ndarray, background: np.ndarray, kind: str = "centroid",
                              test_fraction: float = 0.5, C: float = 1.0, seed: int = 0) -> float:
    """Held-out accuracy of a linear probe that predicts the background (domain) from ``z``.

    ``kind="centroid"`` (default) is the nearest-class-mean classifier: it is linear and
    succeeds only when the backgrounds sit far apart *relative to the spread within a
    background*, so it measures how prominent the background is in the representation.
    ``kind="logistic"`` is a standardised logistic regression (``C``); on small image
    models it often decodes the background almost perfectly from any representation.
    The split is stratified; chance is ``1 / n_backgrounds`` for balanced backgrounds.
    """
    kind, test_fraction, C = check_params(
        "background_probe_accuracy", {"kind": Options("centroid", "logistic"), "test_fraction": probability("neither"),
                                      "C": Interval(float, 0, None, closed="neither")},
        {"kind": kind, "test_fraction": test_fraction, "C": C}).values()
    from sklearn.model_selection import train_test_split

    z, background = _probe_inputs(z, background)
    z_tr, z_te, b_tr, b_te = train_test_split(z, background, test_size=test_fraction, random_state=seed,
                                              stratify=background)
    if kind == "logistic":
        return LinearProbe(C=C, seed=seed).fit(z_tr, b_tr).score(z_te, b_te)
    labels = np.unique(b_tr)  # centroid
    means = np.stack([z_tr[b_tr == b].mean(axis=0) for b in labels])
    dist = (z_te ** 2).sum(1)[:, None] - 2.0 * z_te @ means.T + (means ** 2).sum(1)[None]
    return float(np.mean(labels[dist.argmin(axis=1)] == b_te))


def background_variance_share(z: np.ndarray, background: np.ndarray) -> float:
    """Share of the representation's total variance explained by the background (eta squared)."""
    z, background = _probe_inputs(z, background)
    centred = z - z.mean(axis=0)
    total = float((centred ** 2).sum())
    if total == 0:
        return 0.0
    between = sum(float((centred[background == b].mean(axis=0) ** 2).sum()) * int((background == b).sum())
                  for b in np.unique(background))
    return between / total


# ------------------------------------------------------------------ colour probes (padding)
def first_layer(model: nn.Module) -> nn.Module:
    """The first ``nn.Linear`` or ``nn.Conv2d`` of ``model`` (in registration order)."""
    for module in model.modules():
        if isinstance(module, (nn.Linear, nn.Conv2d)):
            return module
    raise SpurlabError(f"{type(model).__name__} has no Linear or Conv2d layer to probe")


@torch.no_grad()
def colour_response(layer: nn.Module, image_shape: tuple[int, int, int], mask: np.ndarray,
                    colour: np.ndarray) -> float:
    """Mean absolute response of ``layer`` (bias excluded) to ``colour`` painted on ``mask``.

    ``mask`` is ``(H, W)`` boolean (e.g. the padding region); the rest of the image is
    zero. Compare a trained layer with its initialisation to see whether it learned
    the colour.
    """
    c, h, w = image_shape
    colour = np.asarray(colour, dtype=np.float32).reshape(-1)
    if len(colour) != c or mask.shape != (h, w):
        raise SpurlabError(f"colour has {len(colour)} channels and mask shape {mask.shape}; "
                           f"the images are {image_shape}")
    probe = torch.zeros(1, c, h, w)
    probe[0] = torch.as_tensor(colour)[:, None, None] * torch.as_tensor(mask, dtype=torch.float32)
    weight = layer.weight.detach().cpu()
    if isinstance(layer, nn.Linear):
        out = probe.reshape(1, -1) @ weight.T
    else:
        out = torch.nn.functional.conv2d(probe, weight, stride=layer.stride, padding=layer.padding)
    return float(out.abs().mean())


def border_mask(height: int, width: int, pad: int) -> np.ndarray:
    """Boolean ``(height, width)`` mask of the outer ``pad`` pixels."""
    mask = np.ones((height, width), dtype=bool)
    mask[pad:height - pad, pad:width - pad] = False
    return mask

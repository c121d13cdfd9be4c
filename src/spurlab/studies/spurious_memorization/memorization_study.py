"""Study ``spurious-memorization``: Bombari & Mondelli, ICML 2024 (arXiv 2305.12100).

A spurious feature independent of the label is still memorized by random-features
and NTK regression; memorization = stability (leave-one-out error) x feature
alignment F, and F concentrates on closed forms gamma set by the activation's
Hermite coefficients and the spurious fraction alpha.

Experiments (the ``experiments`` config key):

* ``synthetic`` — Gaussian core + spurious parts, RF and NTK, sweep N, alpha, activation;
* ``alignment`` — measured F against both gamma regimes, vs alpha and vs N/d
  (infinite-width kernel by default, so no feature sampling noise);
* ``images`` — noise-framed MNIST 1 vs 7 and a Fashion-MNIST pair (any binary
  image dataset spec ``name[:classes]``, e.g. ``cifar10:3/8`` once registered);
* ``networks`` — a fully connected d->500->200->1 net and a small CNN trained with
  Adam to interpolation on the framed images (full run only by default).

Training sets for the N sweep are nested prefixes of one draw, so each setting
needs one kernel computation at the largest N.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from spurlab.data.injections import inject
from spurlab.data.dataset_registry import get_entry, load_splits
from spurlab.data.synthetic import gaussian_core_spurious, signed, spurious_query
from spurlab.errors import SpurlabError
from spurlab.params import Interval, NumberList, OptionList, Options, positive_int, probability
from spurlab.models.features import make_feature_map
from spurlab.models import make_model
from spurlab.probes.memorization import gammas, solve_memorization
from spurlab.studies.study_base import Study, StudyContext, StudyResult, register_study
from spurlab.studies.spurious_memorization.memorization_figures import add_figures, headline_table
from spurlab.studies.spurious_memorization.memorization_networks import (load_class_images,
                                                                          paper_net, paper_network_metrics)
from spurlab.utils import log, progress

EXPERIMENTS = ("synthetic", "alignment", "images", "networks")
IMAGE_NORMS = ("sphere", "none")
NET_MODELS = ("fc", "cnn")
PARAM_COLUMNS = ("model", "activation", "alpha", "N", "k", "d", "dataset", "frame_width")


def _params(**values: Any) -> dict[str, Any]:
    """Every row carries every parameter column (None where it does not apply)."""
    return {name: values.get(name) for name in PARAM_COLUMNS}


def _settings(config: dict[str, Any], prefix: str = "") -> list[tuple[str, str, int]]:
    """``(model, activation, k)`` for every kernel model and activation in the config."""
    out = []
    for model in config["models"]:
        for activation in config[f"{model}_activations"]:
            out.append((model, str(activation), int(config[f"{prefix}{model}_k"])))
    return out


# ================================================================== synthetic
def synthetic_setting(model: str, activation: str, k: int, alpha: float, d: int, Ns: list[int],
                      n_test: int, seed: int, query: str = "fresh", ridge: float = 0.0,
                      device: str = "cpu") -> list[dict[str, Any]]:
    """One (model, activation, alpha, seed): kernels at the largest N, one solve per N.

    Returns one dict of metrics (and ``N``) per N; ``n_test=0`` skips the test points.
    """
    n_max = max(Ns)
    train = gaussian_core_spurious(n_max, d, alpha, seed)
    z_query = spurious_query(train, query, seed + 2)
    others = [z_query]
    if n_test:
        test = gaussian_core_spurious(n_test, d, alpha, seed + 1, u=train.u)
        others.append(test.z)
    features = make_feature_map(model, k, activation, seed=seed + 3, device=device).fit(train.z)
    K, K_query, *K_test = features.gram_tensors(train.z, *others)
    g = signed(train.y)
    g_test = signed(test.y) if n_test else None
    theory = gammas(model, activation, alpha)
    out = []
    for n in sorted(Ns):
        sol = solve_memorization(K[:n, :n], K_query[:n, :n], g[:n], ridge, K_test[0][:, :n] if n_test else None)
        out.append({"N": n, **sol.metrics(g_test), **theory})
    return out


def run_synthetic(ctx: StudyContext, result: StudyResult) -> None:
    cfg = ctx.config
    jobs = [(s, a, r) for s in _settings(cfg) for a in cfg["alpha"] for r in range(cfg["repeats"])]
    for (model, activation, k), alpha, rep in progress(jobs, "synthetic sweep", total=len(jobs)):
        seed = ctx.seed + 1000 * rep
        with ctx.timed(f"synthetic/{model}"):
            rows = synthetic_setting(model, activation, k, float(alpha), cfg["d"], cfg["N"], cfg["n_test"],
                                     seed, cfg["query"], cfg["ridge"], ctx.device)
        for row in rows:
            params = _params(model=model, activation=activation, alpha=float(alpha), N=row.pop("N"), k=k,
                             d=cfg["d"], dataset="gaussian")
            for metric, value in row.items():
                result.add("synthetic", metric, value, seed, **params)


# ================================================================== alignment vs theory
def run_alignment(ctx: StudyContext, result: StudyResult) -> None:
    """Measured F against gamma in both regimes, on a grid of alpha and N/d."""
    cfg = ctx.config
    d = int(cfg["alignment_d"])
    Ns = sorted({max(2, int(round(r * d))) for r in cfg["alignment_n_over_d"]})
    k = int(cfg["alignment_k"])
    jobs = [(model, act, a) for model, act, _ in _settings(cfg) for a in cfg["alignment_alpha"]]
    for model, activation, alpha in progress(jobs, "alignment", total=len(jobs)):
        with ctx.timed("alignment"):
            rows = synthetic_setting(model, activation, k, float(alpha), d, Ns, 0, ctx.seed,
                                     cfg["query"], cfg["ridge"], ctx.device)
        for row in rows:
            params = _params(model=model, activation=activation, alpha=float(alpha), N=row.pop("N"), k=k, d=d,
                             dataset="gaussian")
            for metric, value in row.items():
                result.add("alignment", metric, value, ctx.seed, **params)


# ================================================================== images
def parse_dataset_spec(spec: str) -> tuple[str, dict[str, Any]]:
    """``"mnist-1v7"`` -> (name, {}); ``"fashion-mnist:0/6"`` -> (name, {"classes": "0/6"})."""
    name, _, classes = str(spec).partition(":")
    return name.strip(), ({"classes": classes.strip()} if classes.strip() else {})


def load_binary_images(spec: str, n_train: int, n_test: int, seed: int, data_dir=None):
    """``(x_train, y_train, x_test, y_test)`` images (N, C, H, W) in [0, 1] of a two-class task."""
    name, params = parse_dataset_spec(spec)
    known = get_entry(name).parameters()
    wanted = {"n_train": n_train, "n_test": n_test, "val_fraction": 0.0, **params}
    splits = load_splits(name, data_dir=data_dir or None, seed=seed,
                         **{k: v for k, v in wanted.items() if k in known})
    train, test = splits["train"], splits["test"]
    if len(train.class_names) != 2:
        raise SpurlabError(f"dataset {spec!r} has {len(train.class_names)} classes; the memorization "
                           f"study needs a binary task", hint="name two classes, e.g. 'fashion-mnist:0/6'")
    if train.x.ndim != 4:
        raise SpurlabError(f"dataset {spec!r} does not hold images (got x of shape {train.x.shape})")
    if len(train) < n_train:
        raise SpurlabError(f"dataset {spec!r} has {len(train)} training images, {n_train} are needed",
                           hint="lower image_N")
    order = np.random.default_rng(seed).permutation(len(train))[:n_train]  # a random nested prefix order
    return train.x[order], train.y[order], test.x[:n_test], test.y[:n_test]


def frame_images(x_train, x_test, frame_width: int, seed: int):
    """Noise-framed train and test images and the spurious queries (frame kept, core zeroed)."""
    framed = inject(x_train, None, "noise_frame", frame_width=frame_width, seed=seed)
    query = inject(x_train, None, "noise_frame", frame_width=frame_width, seed=seed, zero_core=True)
    test = inject(x_test, None, "noise_frame", frame_width=frame_width, seed=seed + 1)
    return framed, query, test


def frame_fraction(shape: tuple[int, ...], frame_width: int) -> float:
    """alpha of a framed image: the share of its pixels that belong to the frame."""
    h, w = shape[-2:]
    return 1.0 - (h - 2 * frame_width) * (w - 2 * frame_width) / (h * w)


def normalize_inputs(framed: np.ndarray, query: np.ndarray, test: np.ndarray, mode: str):
    """Flatten; ``sphere`` scales each image to norm sqrt(d) (a query uses its training image's scale)."""
    z, zq, zt = (a.reshape(len(a), -1).astype(np.float64) for a in (framed, query, test))
    if mode == "none":
        return z, zq, zt
    d = z.shape[1]

    def scale(a):
        return math.sqrt(d) / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)

    s = scale(z)
    return z * s, zq * s, zt * scale(zt)


def run_images(ctx: StudyContext, result: StudyResult) -> None:
    cfg = ctx.config
    Ns, n_max = sorted(cfg["image_N"]), max(cfg["image_N"])
    for spec in cfg["image_datasets"]:
        with ctx.timed("images/load"):
            x, y, x_test, y_test = load_binary_images(spec, n_max, cfg["n_image_test"], ctx.seed, cfg["data_dir"])
        g, g_test = signed(y), signed(y_test)
        for width in cfg["frame_width"]:
            framed, query, test = frame_images(x, x_test, int(width), ctx.seed + 17)
            alpha = frame_fraction(framed.shape, int(width))
            z, zq, zt = normalize_inputs(framed, query, test, cfg["image_norm"])
            for model, activation, k in progress(_settings(cfg, "image_"), f"images {spec}"):
                with ctx.timed(f"images/{model}"):
                    features = make_feature_map(model, k, activation, seed=ctx.seed + 3, device=ctx.device).fit(z)
                    K, K_query, K_test = features.gram_tensors(z, zq, zt)
                for n in Ns:
                    sol = solve_memorization(K[:n, :n], K_query[:n, :n], g[:n], cfg["ridge"], K_test[:, :n])
                    params = _params(model=model, activation=activation, alpha=alpha, N=n, k=k, d=z.shape[1],
                                     dataset=spec, frame_width=int(width))
                    for metric, value in sol.metrics(g_test).items():
                        result.add("images", metric, value, ctx.seed, **params)


# ================================================================== networks
def train_to_interpolation(model: torch.nn.Module, x: np.ndarray, g: np.ndarray, max_epochs: int = 300,
                           lr: float = 1e-3, batch_size: int = 64, seed: int = 0,
                           device: str = "cpu") -> dict[str, float]:
    """Adam on the logistic loss of a one-output net until every training point is fitted.

    Stops at the first epoch after which all signs of ``f(x_i)`` match ``g_i``."""
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model.to(device).train()
    xt = torch.as_tensor(x, dtype=torch.float32, device=device)
    gt = torch.as_tensor(g, dtype=torch.float32, device=device)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    train_acc, epoch = 0.0, 0
    for epoch in range(1, max_epochs + 1):
        for idx in torch.randperm(len(xt), generator=gen).split(batch_size):
            idx = idx.to(device)
            loss = torch.nn.functional.softplus(-gt[idx] * model(xt[idx]).squeeze(-1)).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
        train_acc = float(np.mean(np.sign(net_outputs(model, x, device)) == g))
        model.train()
        if train_acc == 1.0:
            break
    model.eval()
    return {"train_acc": train_acc, "epochs": float(epoch)}


@torch.no_grad()
def net_outputs(model: torch.nn.Module, x: np.ndarray, device: str = "cpu", batch_size: int = 512) -> np.ndarray:
    model.eval()
    out = [model(torch.as_tensor(x[i:i + batch_size], dtype=torch.float32, device=device)).squeeze(-1).cpu()
           for i in range(0, len(x), batch_size)]
    return torch.cat(out).numpy().astype(np.float64)


def make_net(name: str, image_shape: tuple[int, ...], seed: int) -> torch.nn.Module:
    """``fc``: d -> 500 -> 200 -> 1 (ReLU); ``cnn``: spurlab's SmallCNN with one output."""
    if name == "fc":
        return make_model("mlp", image_shape, 1, seed=seed, hidden=(500, 200))
    return make_model("cnn", image_shape, 1, seed=seed)


def run_paper_networks(ctx: StudyContext, result: StudyResult) -> None:
    """The paper's setting: ten classes, cross-entropy, Adam with a step schedule for a fixed budget."""
    cfg = ctx.config
    Ns = sorted(cfg["nn_N"])
    spec = cfg["nn_dataset"]
    passes = sum(Ns) * int(cfg["nn_epochs"]) * len(cfg["nn_models"])
    if ctx.device == "cpu" and passes > 5_000_000:
        message = (f"networks: {passes:,} example passes on the CPU (the paper's sizes are a GPU run); "
                   f"for a CPU check use e.g. --set nn_N=50,200,500 --set nn_epochs=200 --set nn_lr_step=20")
        log(f"[spurlab] warning: {message}")
        result.notes.append(message)
    x, y, x_test, y_test, n_classes = load_class_images(spec, max(Ns), cfg["n_image_test"], ctx.seed,
                                                        cfg["data_dir"])
    for width in cfg["frame_width"]:
        framed, query, test = frame_images(x, x_test, int(width), ctx.seed + 17)
        alpha = frame_fraction(framed.shape, int(width))
        jobs = [(m, n) for m in cfg["nn_models"] for n in Ns]
        for name, n in progress(jobs, f"networks {spec}", total=len(jobs)):
            net = paper_net(name, framed.shape[1:], n_classes, ctx.seed)
            with ctx.timed(f"networks/{name}"):
                metrics = paper_network_metrics(net, framed[:n], query[:n], y[:n], test, y_test, cfg, ctx.seed,
                                                ctx.device)
            metrics["chance_acc"] = 1.0 / n_classes
            params = _params(model=name, alpha=alpha, N=n, k=sum(p.numel() for p in net.parameters()),
                             d=int(np.prod(framed.shape[1:])), dataset=spec, frame_width=int(width))
            for metric, value in metrics.items():
                result.add("networks", metric, value, ctx.seed, **params)


def run_networks(ctx: StudyContext, result: StudyResult) -> None:
    if ctx.config["nn_setting"] == "paper":
        run_paper_networks(ctx, result)
    else:
        run_binary_networks(ctx, result)


def run_binary_networks(ctx: StudyContext, result: StudyResult) -> None:
    """spurlab's binary variant: one logit, logistic loss, Adam until every training point is fitted."""
    cfg = ctx.config
    Ns = sorted(cfg["nn_N"])
    for spec in cfg["image_datasets"]:
        x, y, x_test, y_test = load_binary_images(spec, max(Ns), cfg["n_image_test"], ctx.seed, cfg["data_dir"])
        g, g_test = signed(y), signed(y_test)
        for width in cfg["frame_width"]:
            framed, query, test = frame_images(x, x_test, int(width), ctx.seed + 17)
            alpha = frame_fraction(framed.shape, int(width))
            jobs = [(m, n) for m in cfg["nn_models"] for n in Ns]
            for name, n in progress(jobs, f"networks {spec}", total=len(jobs)):
                net = make_net(name, framed.shape[1:], ctx.seed)
                with ctx.timed(f"networks/{name}"):
                    fit = train_to_interpolation(net, framed[:n], g[:n], cfg["nn_epochs"], cfg["nn_lr"],
                                                 cfg["nn_batch_size"], ctx.seed, ctx.device)
                f_query = net_outputs(net, query[:n], ctx.device)
                f_test = net_outputs(net, test, ctx.device)
                metrics = {"test_acc": float(np.mean(np.sign(f_test) == g_test)),
                           "spurious_acc": float(np.mean(np.sign(f_query) == g[:n])),
                           "memorization_cov": float(np.mean(f_query * g[:n]) - f_query.mean() * g[:n].mean()),
                           **fit}
                params = _params(model=name, alpha=alpha, N=n, k=sum(p.numel() for p in net.parameters()),
                                 d=int(np.prod(framed.shape[1:])), dataset=spec, frame_width=int(width))
                for metric, value in metrics.items():
                    result.add("networks", metric, value, ctx.seed, **params)


# ================================================================== the study
@register_study
class SpuriousMemorizationStudy(Study):
    name = "spurious-memorization"
    title = "Spurious-feature memorization in random-features and NTK regression"
    paper = "Bombari & Mondelli, ICML 2024 (arXiv 2305.12100)"
    summary = ("A label-independent spurious part of the input is memorized: the trained model predicts a "
               "training label from the spurious part alone (spurious accuracy above 0.5). The amount is "
               "stability (leave-one-out error) times feature alignment F; F matches closed forms gamma "
               "from the activation's Hermite coefficients and the spurious fraction alpha, so memorization "
               "falls as N grows, is lower for phi4 than phi2 and for alpha = 1/4 than 1/2.")

    def default_config(self, quick: bool) -> dict[str, Any]:
        n_grid = [10, 20, 50, 100, 200, 500] + ([] if quick else [1000])
        return {
            "experiments": ["synthetic", "alignment", "images"] + ([] if quick else ["networks"]),
            "models": ["rf", "ntk"],
            "rf_activations": ["phi2", "phi4"],
            "ntk_activations": ["h0+h1", "h0+h3"],
            "alpha": [0.5, 0.25],
            "d": 1000,
            "N": n_grid,
            "rf_k": 10_000 if quick else 100_000,
            "ntk_k": 100,
            "n_test": 500 if quick else 1000,
            "query": "fresh",
            "ridge": 0.0,
            "repeats": 1,
            "alignment_d": 100 if quick else 300,
            "alignment_alpha": [0.1, 0.25, 0.5, 0.75, 0.9] if quick else [0.1, 0.25, 0.4, 0.5, 0.6, 0.75, 0.9],
            "alignment_n_over_d": [0.1, 0.3, 1, 3, 10] if quick else [0.1, 0.2, 0.5, 1, 2, 5, 10],
            "alignment_k": 0,
            "image_datasets": ["mnist-1v7", "fashion-mnist:0/6"],
            "frame_width": [10],
            "image_N": n_grid,
            "image_rf_k": 5_000 if quick else 20_000,
            "image_ntk_k": 100,
            "image_norm": "sphere",
            "n_image_test": 500 if quick else 1000,
            # networks: the paper's setting (10-class MNIST, cross-entropy, Adam, lr x 0.8 every 100 epochs,
            # 1000 epochs, N up to 50 000: a GPU run) or spurlab's binary one (nn_setting=binary)
            "nn_setting": "paper",
            "nn_dataset": "mnist",
            "nn_models": ["fc", "cnn"],
            "nn_N": [10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10_000, 20_000, 50_000],
            "nn_epochs": 1000,
            "nn_lr": 1e-3,
            "nn_batch_size": 1024,
            "nn_lr_step": 100,
            "nn_lr_gamma": 0.8,
            "data_dir": None,
        }

    # Declared bounds (checked by run_study before validate, each refusal naming its key).
    parameter_constraints = {
        "experiments": OptionList(*EXPERIMENTS),
        "models": OptionList("rf", "ntk"),
        "nn_models": OptionList(*NET_MODELS, min_len=0),
        **{key: positive_int() for key in ("d", "n_test", "repeats", "alignment_d", "n_image_test", "nn_epochs",
                                           "nn_batch_size")},
        **{key: NumberList(positive_int()) for key in ("N", "image_N", "nn_N", "frame_width")},
        **{key: Interval(int, 0, None) for key in ("rf_k", "ntk_k", "image_rf_k", "image_ntk_k", "alignment_k")},
        **{key: NumberList(probability(closed="neither")) for key in ("alpha", "alignment_alpha")},
        "alignment_n_over_d": NumberList(Interval(float, 0, None, closed="neither")),
        "query": Options("fresh", "zero"),
        "image_norm": Options(*IMAGE_NORMS),
        "ridge": Interval(float, 0, None),
        "nn_lr": Interval(float, 0, None, closed="neither"),
        "nn_setting": Options("paper", "binary"),
        "nn_lr_step": Interval(int, 0, None),
        "nn_lr_gamma": Interval(float, 0, None, closed="neither"),
    }

    def validate(self, config: dict[str, Any]) -> None:
        super().validate(config)
        for model in config["models"]:
            for activation in config[f"{model}_activations"]:
                try:
                    gammas(model, activation, 0.5)  # resolves the name and checks gamma is defined
                except SpurlabError as exc:
                    raise SpurlabError(f"{model}_activations: {exc}") from None
        self._check_interpolation(config)

    @staticmethod
    def _check_interpolation(config: dict[str, Any]) -> None:
        """With ridge 0 the interpolator needs more parameters than training points."""
        if float(config["ridge"]) > 0:
            return
        checks = [("", config["d"], max(config["N"]), "synthetic")]
        checks.append(("image_", 28 * 28, max(config["image_N"]), "images"))
        for prefix, d, n_max, experiment in checks:
            if experiment not in config["experiments"]:
                continue
            for model in config["models"]:
                k = int(config[f"{prefix}{model}_k"])
                params = k if model == "rf" else k * d
                if k and params <= n_max:
                    raise SpurlabError(
                        f"{prefix}{model}_k={k} gives {params} parameters for {prefix}N up to {n_max}: the "
                        f"minimum-norm interpolator needs more parameters than training points",
                        hint=f"raise {prefix}{model}_k, lower the largest {prefix}N, or set ridge > 0")

    def run(self, ctx: StudyContext) -> StudyResult:
        runners = {"synthetic": run_synthetic, "alignment": run_alignment, "images": run_images,
                   "networks": run_networks}
        result = StudyResult()
        for experiment in EXPERIMENTS:
            if experiment in ctx.config["experiments"]:
                runners[experiment](ctx, result)
        frame = result.frame()
        add_figures(result, frame)
        result.headline = headline_table(frame)
        result.notes.append(
            "Feature alignment F is the mean over training points of [K_s (K + ridge I)^-1]_ii; gamma_low_n is "
            "the closed form for N << d, gamma_high_n for d << N << d^2. loo_error is mean_i g_i (g_i - "
            "f(z_i, theta*_-i)), so memorization_cov ~ F x loo_error. Image rows use alpha = the frame's "
            "share of pixels; the closed forms are stated for Gaussian inputs only.")
        return result

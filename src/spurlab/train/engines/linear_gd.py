"""Batched gradient descent on linear classifiers: many independent runs as one tensor computation.

:class:`BatchedLinearGD` runs ``R`` independent problems (seeds x p x n_min, ...)
at once: the weights are an ``(R, d)`` tensor and every step is a handful of
batched matrix products, on CPU or GPU. The trajectory is logged at
log-spaced steps, so runs of 1e6 steps stay cheap to store.

Two exact shortcuts keep full-batch runs fast without changing the iterates:

* **duplicates collapsed** — identical rows are merged into one row whose
  weight is the number of copies (the mean loss is the same function);
* **kernel parametrization** — when there are fewer distinct points ``k``
  than features, GD stays in ``w0 + span(z_i)``, so the margins evolve as
  ``m <- m + lr * g G`` with the ``k x k`` Gram matrix ``G`` and ``w`` is only
  rebuilt at the logged steps.
"""
from __future__ import annotations

import math

import numpy as np
import torch

from spurlab.errors import SpurlabError
from spurlab.params import Interval, Options, check_params, optional, positive_int
from spurlab.utils import check_finite, resolve_device, signed_labels, torch_generator

LOSSES = ("logistic", "exponential")
PARAMETRIZATIONS = ("auto", "primal", "kernel")
SGD_CHUNK = 256  # SGD minibatch indices are drawn this many steps at a time


def log_spaced_steps(n_steps: int, n_points: int) -> np.ndarray:
    """Step 0 and about ``n_points`` log-spaced steps in ``1..n_steps`` (the last included)."""
    n_steps, n_points = check_params("log_spaced_steps", {"n_steps": positive_int(), "n_logged": positive_int()},
                                     {"n_steps": n_steps, "n_logged": n_points}).values()
    steps = np.round(np.logspace(0, math.log10(n_steps), n_points)).astype(np.int64)
    decades = 10 ** np.arange(int(math.log10(n_steps)) + 1)  # keep 1, 10, 100, ... for tables
    steps = np.unique(np.concatenate([steps, decades, [n_steps]]))
    return np.concatenate([[0], steps[(steps >= 1) & (steps <= n_steps)]])


def _neg_loss_grad(loss: str, margins: torch.Tensor) -> torch.Tensor:
    """``-l'(m)``: the weight of each point in the gradient step."""
    return torch.sigmoid(-margins) if loss == "logistic" else torch.exp(-margins)


def _loss_value(loss: str, margins: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.softplus(-margins) if loss == "logistic" else torch.exp(-margins)


class _Problem:
    """Validated tensors: signed inputs ``z = y x`` (shared (k, d) or per run (R, k, d)) and weights (R, k)."""

    def __init__(self, z: np.ndarray, weights: np.ndarray, device: str, dtype: torch.dtype):
        self.shared = z.ndim == 2
        self.z = torch.as_tensor(z, dtype=dtype, device=device)
        # (R, d, k) copy: a row-vector bmm against it is much faster than z @ w for small d
        self.zt = self.z.T.contiguous() if self.shared else self.z.transpose(1, 2).contiguous()
        totals = weights.sum(axis=1, keepdims=True)
        self.omega = torch.as_tensor(weights / totals, dtype=dtype, device=device)
        self.n_runs, self.k = self.omega.shape
        self.d = self.z.shape[-1]

    def margins(self, w: torch.Tensor) -> torch.Tensor:
        """(R, k) margins of weights (R, d)."""
        if self.shared:
            return w @ self.zt
        return torch.bmm(w.unsqueeze(1), self.zt).squeeze(1)

    def pull_back(self, g: torch.Tensor) -> torch.Tensor:
        """``sum_i g_i z_i`` per run: (R, k) -> (R, d)."""
        if self.shared:
            return g @ self.z
        return torch.bmm(g.unsqueeze(1), self.z).squeeze(1)

    def gram(self) -> torch.Tensor:
        return self.z @ self.z.T if self.shared else torch.bmm(self.z, self.z.transpose(1, 2))


def collapse_duplicates(z: np.ndarray, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Merge identical rows of ``z`` (shared (n, d) or per run (R, n, d)) and add up their weights."""
    if z.ndim == 2:
        used = weights.sum(axis=0) > 0
        unique, inverse = np.unique(z[used], axis=0, return_inverse=True)
        merged = np.zeros((len(weights), len(unique)))
        for r in range(len(weights)):  # a bincount per run: cheap next to the GD loop
            merged[r] = np.bincount(inverse.ravel(), weights=weights[r, used], minlength=len(unique))
        return unique, merged
    parts = [collapse_duplicates(z[r][weights[r] > 0], weights[r:r + 1, weights[r] > 0]) for r in range(len(z))]
    k = max(len(u) for u, _ in parts)
    z_out = np.zeros((len(z), k, z.shape[-1]))
    w_out = np.zeros((len(z), k))
    for r, (u, w) in enumerate(parts):
        z_out[r, :len(u)], w_out[r, :len(u)] = u, w[0]
    return z_out, w_out


class BatchedLinearGD:
    """Full-batch GD or SGD on the mean logistic / exponential loss of linear classifiers.

    Parameters
    ----------
    loss : "logistic" or "exponential"
    lr : float
        Step size.
    n_steps : int
        Number of steps (up to 1e6 and more; only the logged steps are stored).
    n_logged : int
        About this many log-spaced steps are recorded (plus step 0).
    batch_size : int or None
        ``None``: full-batch GD. An integer: SGD with minibatches of that size,
        drawn with replacement in proportion to the sample weights.
    fit_intercept : bool
        Learn a bias (as a weight on a constant feature, same step size).
    collapse_duplicates : bool
        Merge identical rows into weighted rows (exact; a big saving under duplication).
    parametrization : "auto", "primal" or "kernel"
        How full-batch steps are computed (the iterates are the same); ``auto``
        uses the kernel form when the distinct points are fewer than twice the features.
    dtype : "float64" or "float32"
        Long runs need float64: late updates are below float32's resolution.
    device : "auto", "cpu" or "cuda"
    seed : int
        Seeds the SGD minibatches.

    Attributes (after ``fit``): ``steps_`` (T,), ``coef_path_`` (R, T, d),
    ``intercept_path_`` (R, T), ``loss_path_`` (R, T), ``coef_`` (R, d),
    ``intercept_`` (R,), ``parametrization_``, ``n_distinct_``.
    """

    def __init__(self, loss: str = "logistic", lr: float = 0.5, n_steps: int = 10_000, n_logged: int = 50,
                 batch_size: int | None = None, fit_intercept: bool = False, collapse_duplicates: bool = True,
                 parametrization: str = "auto", dtype: str = "float64", device: str = "auto", seed: int = 0):
        self.loss = loss
        self.lr = lr
        self.n_steps = n_steps
        self.n_logged = n_logged
        self.batch_size = batch_size
        self.fit_intercept = fit_intercept
        self.collapse_duplicates = collapse_duplicates
        self.parametrization = parametrization
        self.dtype = dtype
        self.device = device
        self.seed = seed

    # ------------------------------------------------------------ validation
    _parameter_constraints = {
        "loss": Options(*LOSSES), "parametrization": Options(*PARAMETRIZATIONS),
        "lr": Interval(float, 0, None, closed="neither"), "n_steps": positive_int(), "n_logged": positive_int(),
        "batch_size": optional(positive_int()),  # None: full batch
        "dtype": Options("float64", "float32"),
    }

    def _check_params(self) -> None:
        check_params("BatchedLinearGD", self._parameter_constraints,
                     {name: getattr(self, name) for name in self._parameter_constraints})

    def _prepare(self, X, y, sample_weight) -> tuple[np.ndarray, np.ndarray]:
        """``(z, weights)``: z shared (n, d) or per run (R, n, d); weights (R, n)."""
        x = np.asarray(X, dtype=np.float64)
        if x.ndim not in (2, 3):
            raise SpurlabError(f"X must be (n, d) or (runs, n, d), got shape {x.shape}")
        check_finite("X", x)
        if self.fit_intercept:
            x = np.concatenate([x, np.ones(x.shape[:-1] + (1,))], axis=-1)
        y = signed_labels(y)
        n = x.shape[-2]
        weights = np.ones((1, n)) if sample_weight is None else np.asarray(sample_weight, dtype=np.float64)
        weights = weights[None] if weights.ndim == 1 else weights
        for name, arr in (("y", y), ("sample_weight", weights)):
            if arr.ndim not in (1, 2) or arr.shape[-1] != n:
                raise SpurlabError(f"{name} has shape {arr.shape}; expected {n} points per run "
                                   f"(X (n, d) or (runs, n, d), y (n,) or (runs, n), weights (n,) or (runs, n))")
        sizes = {len(arr) for arr, rank in ((y, 2), (weights, 2), (x, 3)) if arr.ndim == rank} - {1}
        if len(sizes) > 1:
            raise SpurlabError(f"X, y and sample_weight disagree on the number of runs: {sorted(sizes)}")
        n_runs = sizes.pop() if sizes else 1
        check_finite("sample_weight", weights)
        if weights.min() < 0 or np.any(weights.sum(axis=1) <= 0):
            raise SpurlabError("sample weights must be >= 0 with a positive total in every run")
        weights = np.broadcast_to(weights, (n_runs, n)).copy()
        if x.ndim == 2 and y.ndim == 1:
            return y[:, None] * x, weights  # one design shared by every run
        x = np.broadcast_to(x if x.ndim == 3 else x[None], (n_runs,) + x.shape[-2:])
        y = np.broadcast_to(y if y.ndim == 2 else y[None], (n_runs, n))
        return y[..., None] * x, weights

    def _use_kernel(self, k: int, d: int) -> bool:
        if self.batch_size is not None or self.parametrization == "primal":
            return False
        return self.parametrization == "kernel" or k < 2 * d

    # ------------------------------------------------------------ fitting
    def fit(self, X, y, sample_weight=None, coef_init=None) -> BatchedLinearGD:
        """Run GD from ``coef_init`` (zeros by default) on every problem.

        ``X``: (n, d) shared by every run, or (R, n, d). ``y``: (n,) or (R, n).
        ``sample_weight``: (R, n) (zero weight = padding) or (n,).
        """
        self._check_params()
        z, weights = self._prepare(X, y, sample_weight)
        if self.collapse_duplicates:
            z, weights = collapse_duplicates(z, weights)
        device = resolve_device(self.device)
        problem = _Problem(z, weights, device, getattr(torch, self.dtype))
        w0 = self._initial_weights(coef_init, problem)
        self.steps_ = log_spaced_steps(int(self.n_steps), int(self.n_logged))
        self.n_distinct_ = problem.k
        use_kernel = self._use_kernel(problem.k, problem.d)
        self.parametrization_ = "kernel" if use_kernel else "primal"
        with torch.no_grad():
            if use_kernel:
                path, losses = self._run_kernel(problem, w0)
            elif self.batch_size is None:
                path, losses = self._run_primal(problem, w0)
            else:
                path, losses = self._run_sgd(problem, w0, device)
        if not np.all(np.isfinite(path)):
            raise SpurlabError("gradient descent diverged (non-finite weights)", hint="lower lr")
        self._store(path, losses)
        return self

    def _initial_weights(self, coef_init, problem: _Problem) -> torch.Tensor:
        if coef_init is None:
            return torch.zeros(problem.n_runs, problem.d, dtype=problem.z.dtype, device=problem.z.device)
        w0 = np.asarray(coef_init, dtype=np.float64)
        w0 = np.broadcast_to(w0, (problem.n_runs, w0.shape[-1])).copy()
        if self.fit_intercept and w0.shape[1] == problem.d - 1:
            w0 = np.concatenate([w0, np.zeros((problem.n_runs, 1))], axis=1)
        if w0.shape[1] != problem.d:
            raise SpurlabError(f"coef_init has {w0.shape[1]} features, the data have {problem.d}")
        return torch.as_tensor(w0, dtype=problem.z.dtype, device=problem.z.device)

    def _logger(self, problem: _Problem):
        path = np.empty((problem.n_runs, len(self.steps_), problem.d))
        losses = np.empty((problem.n_runs, len(self.steps_)))

        def record(i: int, w: torch.Tensor, margins: torch.Tensor) -> None:
            path[:, i] = w.cpu().numpy()
            losses[:, i] = (problem.omega * _loss_value(self.loss, margins)).sum(dim=1).cpu().numpy()

        return path, losses, record

    def _run_primal(self, problem: _Problem, w: torch.Tensor):
        path, losses, record = self._logger(problem)
        w = w.clone()
        log_at = iter(enumerate(self.steps_))
        i, next_step = next(log_at)
        for t in range(int(self.n_steps) + 1):
            margins = problem.margins(w)
            if t == next_step:
                record(i, w, margins)
                i, next_step = next(log_at, (i + 1, -1))
            if t == self.n_steps:
                break
            g = _neg_loss_grad(self.loss, margins).mul_(problem.omega)
            w.add_(problem.pull_back(g), alpha=self.lr)
        return path, losses

    def _run_kernel(self, problem: _Problem, w0: torch.Tensor):
        path, losses, record = self._logger(problem)
        gram = problem.gram()
        margins = problem.margins(w0)
        coeffs = torch.zeros_like(problem.omega)  # w = w0 + sum_i c_i z_i
        log_at = iter(enumerate(self.steps_))
        i, next_step = next(log_at)
        for t in range(int(self.n_steps) + 1):
            if t == next_step:
                record(i, w0 + problem.pull_back(coeffs), margins)
                i, next_step = next(log_at, (i + 1, -1))
            if t == self.n_steps:
                break
            g = _neg_loss_grad(self.loss, margins).mul_(problem.omega)
            coeffs.add_(g, alpha=self.lr)
            if problem.shared:
                margins.addmm_(g, gram, alpha=self.lr)
            else:
                margins.add_(torch.bmm(g.unsqueeze(1), gram).squeeze(1), alpha=self.lr)
        return path, losses

    def _run_sgd(self, problem: _Problem, w: torch.Tensor, device: str):
        path, losses, record = self._logger(problem)
        w = w.clone()
        gen = torch_generator(self.seed, device if device.startswith("cuda") else "cpu")
        b = int(self.batch_size)
        rows = torch.arange(problem.n_runs, device=device)[:, None]
        log_at = iter(enumerate(self.steps_))
        i, next_step = next(log_at)
        batches = None
        for t in range(int(self.n_steps) + 1):
            if t == next_step:
                record(i, w, problem.margins(w))
                i, next_step = next(log_at, (i + 1, -1))
            if t == self.n_steps:
                break
            if t % SGD_CHUNK == 0:
                draws = torch.multinomial(problem.omega.float(), SGD_CHUNK * b, replacement=True, generator=gen)
                batches = draws.view(problem.n_runs, SGD_CHUNK, b)
            idx = batches[:, t % SGD_CHUNK]
            zb = problem.z[idx] if problem.shared else problem.z[rows, idx]  # (R, b, d)
            margins = torch.bmm(zb, w.unsqueeze(-1)).squeeze(-1)
            g = _neg_loss_grad(self.loss, margins)
            w.add_(torch.bmm(g.unsqueeze(1), zb).squeeze(1), alpha=self.lr / b)
        return path, losses

    def _store(self, path: np.ndarray, losses: np.ndarray) -> None:
        if self.fit_intercept:
            self.coef_path_, self.intercept_path_ = path[..., :-1], path[..., -1]
        else:
            self.coef_path_, self.intercept_path_ = path, np.zeros(path.shape[:2])
        self.loss_path_ = losses
        self.coef_ = self.coef_path_[:, -1]
        self.intercept_ = self.intercept_path_[:, -1]

    # ------------------------------------------------------------ prediction
    def decision_function(self, X) -> np.ndarray:
        """(R, m) scores of the final weights on X (m, d) or (R, m, d)."""
        if not hasattr(self, "coef_"):
            raise SpurlabError("this BatchedLinearGD is not fitted yet", hint="call fit(X, y) first")
        x = np.asarray(X, dtype=np.float64)
        if x.shape[-1] != self.coef_.shape[1]:
            raise SpurlabError(f"X has {x.shape[-1]} features, the model was fitted on {self.coef_.shape[1]}")
        scores = x @ self.coef_.T if x.ndim == 2 else np.einsum("rmd,rd->rm", x, self.coef_)
        scores = scores.T if x.ndim == 2 else scores
        return scores + self.intercept_[:, None]

    def predict(self, X) -> np.ndarray:
        """(R, m) predictions in {-1, +1}."""
        return np.where(self.decision_function(X) > 0, 1, -1)

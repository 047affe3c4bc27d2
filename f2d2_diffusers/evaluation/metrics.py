"""Sample-quality and detection metrics shared by the benchmarks (one implementation each).

All functions take torch tensors or numpy arrays and return a Python ``float``. Computations run in float64.

- :func:`frechet_distance`: Frechet distance between Gaussian fits of two feature sets (FID-style).
- :func:`energy_distance`: the E-statistic ``2 E|X-Y| - E|X-X'| - E|Y-Y'|`` (V-statistic, Euclidean norm).
- :func:`mmd_rbf`: squared maximum mean discrepancy with a sum of RBF kernels (biased V-statistic by default).
- :func:`auroc`: area under the ROC curve from two score sets, rank-based; higher score = more anomalous.
"""

from typing import Sequence

import numpy as np
import torch


def _as_2d_float64(x, name: str) -> torch.Tensor:
    t = torch.as_tensor(np.asarray(x) if not torch.is_tensor(x) else x).detach().to("cpu", torch.float64)
    if t.ndim == 1:
        t = t[:, None]
    if t.ndim != 2 or t.shape[0] == 0:
        raise ValueError(f"{name} must have shape (N, F) with N >= 1, got {tuple(t.shape)}")
    if not torch.isfinite(t).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    return t


def _sqrt_psd(matrix: np.ndarray) -> np.ndarray:
    """Symmetric square root of a symmetric positive semi-definite matrix (negative eigenvalues clipped to 0)."""
    values, vectors = np.linalg.eigh((matrix + matrix.T) / 2)
    return (vectors * np.sqrt(np.clip(values, 0.0, None))) @ vectors.T


def frechet_distance(features_a, features_b) -> float:
    """Frechet distance between Gaussian fits ``N(mu_a, C_a)`` and ``N(mu_b, C_b)`` of two feature sets.

    ``|mu_a - mu_b|^2 + Tr(C_a + C_b - 2 (C_a C_b)^{1/2})``, in squared feature units (as FID reports it).

    Args:
        features_a: ``(N_a, F)`` features (e.g. a classifier's penultimate layer), ``N_a >= 2``.
        features_b: ``(N_b, F)`` features, ``N_b >= 2``.

    Covariances are unbiased (``N - 1``). ``Tr (C_a C_b)^{1/2}`` is computed as ``Tr (S C_b S)^{1/2}`` with
    ``S = C_a^{1/2}``, a symmetric PSD matrix whose eigen-decomposition is exact and stable (no complex parts, unlike
    a general ``sqrtm``). Identical sets give 0 up to rounding; sets with equal covariances give ``|mu_a - mu_b|^2``.
    """
    a = _as_2d_float64(features_a, "features_a").numpy()
    b = _as_2d_float64(features_b, "features_b").numpy()
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"feature dimensions differ: {a.shape[1]} vs {b.shape[1]}")
    if a.shape[0] < 2 or b.shape[0] < 2:
        raise ValueError("each feature set needs at least 2 rows for a covariance")
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a = np.atleast_2d(np.cov(a, rowvar=False))
    cov_b = np.atleast_2d(np.cov(b, rowvar=False))
    root_a = _sqrt_psd(cov_a)
    cross = np.sqrt(np.clip(np.linalg.eigvalsh(root_a @ cov_b @ root_a), 0.0, None)).sum()
    value = float(((mu_a - mu_b) ** 2).sum() + np.trace(cov_a) + np.trace(cov_b) - 2.0 * cross)
    return max(value, 0.0)


def energy_distance(x, y) -> float:
    """Energy distance (E-statistic) ``2 E|X-Y| - E|X-X'| - E|Y-Y'|`` between two point sets.

    Args:
        x: ``(N, d)`` points (``(N,)`` is read as ``(N, 1)``).
        y: ``(M, d)`` points.

    Returns:
        The statistic in the points' units (Euclidean distances; no square root taken). All three means run over
        all ordered pairs, self-pairs included (V-statistic), so the value is ``>= 0`` and exactly 0 for
        identical sets.
    """
    x, y = _as_2d_float64(x, "x"), _as_2d_float64(y, "y")
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"dimensions differ: {x.shape[1]} vs {y.shape[1]}")
    xy = torch.cdist(x, y).mean()
    xx = torch.cdist(x, x).mean()
    yy = torch.cdist(y, y).mean()
    return max(float(2 * xy - xx - yy), 0.0)


DEFAULT_BANDWIDTHS = (0.1, 0.2, 0.5, 1.0, 2.0)


def mmd_rbf(x, y, bandwidths: Sequence[float] = DEFAULT_BANDWIDTHS, unbiased: bool = False) -> float:
    """Squared MMD with the kernel ``k(a, b) = mean_s exp(-|a - b|^2 / (2 s^2))`` over bandwidths ``s``.

    Args:
        x: ``(N, d)`` points; y: ``(M, d)`` points (same units as ``bandwidths``).
        bandwidths: RBF length scales ``s`` (in the points' units); the kernel is their average, so it lies in [0, 1].
        unbiased: ``False`` (default) is the biased V-statistic ``mean K_xx + mean K_yy - 2 mean K_xy`` over all
            pairs, self-pairs included: ``>= 0`` and exactly 0 for identical sets. ``True`` drops the self-pairs
            (U-statistic): unbiased for MMD^2, may be slightly negative, and needs ``N, M >= 2``.

    Returns:
        MMD^2 (dimensionless).
    """
    x, y = _as_2d_float64(x, "x"), _as_2d_float64(y, "y")
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"dimensions differ: {x.shape[1]} vs {y.shape[1]}")
    scales = torch.as_tensor(list(bandwidths), dtype=torch.float64)
    if scales.numel() == 0 or not (scales > 0).all():
        raise ValueError(f"bandwidths must be positive, got {list(bandwidths)}")

    def kernel(a, b):
        sq = torch.cdist(a, b).pow_(2)
        out = torch.zeros_like(sq)
        for s in scales.tolist():  # one (N, M) buffer at a time, not (len(bandwidths), N, M)
            out += torch.exp(sq / (-2.0 * s * s))
        return out / len(scales)

    kxx, kyy, kxy = kernel(x, x), kernel(y, y), kernel(x, y)
    if not unbiased:
        return max(float(kxx.mean() + kyy.mean() - 2 * kxy.mean()), 0.0)
    n, m = x.shape[0], y.shape[0]
    if n < 2 or m < 2:
        raise ValueError("the unbiased estimate needs at least 2 points in each set")
    off_xx = (kxx.sum() - kxx.diagonal().sum()) / (n * (n - 1))
    off_yy = (kyy.sum() - kyy.diagonal().sum()) / (m * (m - 1))
    return float(off_xx + off_yy - 2 * kxy.mean())


def auroc(scores_in, scores_out) -> float:
    """Area under the ROC curve for telling out-of-distribution from in-distribution points by a score.

    Convention: a **higher score means more anomalous** (e.g. bits/dim or NLL); OOD is the positive class. The value
    is ``P(s_out > s_in) + P(s_out = s_in) / 2`` over all (in, out) pairs (scikit-learn's ``roc_auc_score``, so
    ties count one half). 1 = perfectly separated, 0.5 = indistinguishable, 0 = separated the wrong way.

    Args:
        scores_in: ``(N_in,)`` scores of in-distribution points.
        scores_out: ``(N_out,)`` scores of OOD points.
    """
    from sklearn.metrics import roc_auc_score

    s_in = _as_2d_float64(scores_in, "scores_in").flatten().numpy()
    s_out = _as_2d_float64(scores_out, "scores_out").flatten().numpy()
    labels = np.concatenate([np.zeros(len(s_in)), np.ones(len(s_out))])
    return float(roc_auc_score(labels, np.concatenate([s_in, s_out])))

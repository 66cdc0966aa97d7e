"""Image-generation metrics computed from feature arrays or image batches.

Inputs may be torch tensors (any device) or numpy arrays; everything is computed in
float64 and returned as python floats (or numpy arrays where a vector is the answer).

- `frechet_distance`, `fid`: Fréchet Inception Distance (Heusel et al. 2017).
- `kid`: Kernel Inception Distance (Binkowski et al. 2018).
- `inception_score`: Inception Score (Salimans et al. 2016).
- `precision_recall`: improved precision and recall (Kynkäänniemi et al. 2019).
- `density_coverage`: density and coverage (Naeem et al. 2020).
- `class_histogram`: share of samples per predicted class, to spot mode collapse.
- `psnr`, `ssim`: full-reference image quality (Wang et al. 2004 for SSIM).
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np
import torch
import torch.nn.functional as F

from genlab.errors import GenlabError

ArrayLike = torch.Tensor | np.ndarray

# Pairwise-distance blocks hold at most this many entries (32 MiB in float64), so k-NN
# metrics on any number of samples use bounded memory.
_BLOCK_ENTRIES = 2**22

# SSIM constants from Wang et al. 2004, as in skimage's gaussian_weights=True mode: an
# 11-tap Gaussian (sigma 1.5, truncated at 3.5 sigma) and stabilisers K1, K2.
_SSIM_SIGMA = 1.5
_SSIM_RADIUS = 5
_SSIM_K1 = 0.01
_SSIM_K2 = 0.03
# Images per SSIM chunk: five blurred copies of each chunk are alive at once.
_SSIM_CHUNK = 128


def _as_float64(x: ArrayLike, name: str) -> torch.Tensor:
    """`x` as a float64 tensor on its own device, rejecting NaN and Inf."""
    t = torch.as_tensor(x).detach().to(torch.float64)
    if torch.isnan(t).any():
        raise GenlabError(
            "features contain NaN: the images or the model produced NaN",
            f"check `{name}`; a diverged model or an empty division upstream is the usual cause",
        )
    if torch.isinf(t).any():
        raise GenlabError(
            "features contain Inf: the images or the model produced Inf",
            f"check `{name}`; inputs overflowed (try float32 and normalised images)",
        )
    return t


def _features(x: ArrayLike, name: str, min_samples: int, why: str) -> torch.Tensor:
    """A checked [N, D] float64 feature matrix with at least `min_samples` rows."""
    t = _as_float64(x, name)
    if t.ndim != 2:
        raise GenlabError(
            f"`{name}` must be a 2-D [num_samples, feature_dim] array, got shape {tuple(t.shape)}",
            "flatten per-sample features, e.g. feats.reshape(len(feats), -1)",
        )
    if t.shape[0] < min_samples:
        raise GenlabError(
            f"`{name}` has {t.shape[0]} samples; {why} needs at least {min_samples}",
            "evaluate on more samples",
        )
    return t


def _same_dim(a: torch.Tensor, b: torch.Tensor, names: str) -> None:
    if a.shape[-1] != b.shape[-1]:
        raise GenlabError(
            f"feature dimensions differ: {names} have {a.shape[-1]} and {b.shape[-1]}",
            "extract both feature sets with the same feature extractor and layer",
        )


# --------------------------------------------------------------------------- FID


def _psd_factor(sigma: torch.Tensor) -> torch.Tensor:
    """A matrix W with W W^T = sigma, for a symmetric positive semi-definite sigma.

    Cholesky when sigma is positive definite: it is exact up to round-off and an order of
    magnitude faster than an eigendecomposition. Covariances from fewer samples than
    dimensions are singular, so otherwise W = V diag(sqrt(w)) from eigh, with the tiny
    negative eigenvalues that round-off produces clipped at 0.
    """
    factor, info = torch.linalg.cholesky_ex(sigma)
    if info == 0:
        return factor
    eigenvalues, eigenvectors = torch.linalg.eigh(sigma)
    return eigenvectors * eigenvalues.clamp(min=0).sqrt()


def frechet_distance(mu1: ArrayLike, sigma1: ArrayLike, mu2: ArrayLike, sigma2: ArrayLike) -> float:
    """Squared Fréchet (2-Wasserstein) distance between N(mu1, sigma1) and N(mu2, sigma2).

        d^2 = |mu1 - mu2|^2 + tr(S1) + tr(S2) - 2 tr((S1^1/2 S2 S1^1/2)^1/2)

    (Dowson & Landau 1982; the FID of Heusel et al. 2017). For any W with W W^T = S1,
    W^T S2 W is symmetric PSD with the same eigenvalues as S1^1/2 S2 S1^1/2, so the cross
    term is the sum of square roots of its eigenvalues (eigvalsh, negatives from
    round-off clipped at 0). Unlike scipy.linalg.sqrtm(S1 @ S2) on a non-symmetric
    product, this never yields complex parts to discard, and 2048 x 2048 takes seconds.
    """
    mu1_t, mu2_t = _as_float64(mu1, "mu1"), _as_float64(mu2, "mu2")
    sigma1_t, sigma2_t = _as_float64(sigma1, "sigma1"), _as_float64(sigma2, "sigma2")
    if mu1_t.ndim != 1 or mu2_t.shape != mu1_t.shape:
        raise GenlabError(
            f"mu1 and mu2 must be vectors of one length, got shapes {tuple(mu1_t.shape)} and {tuple(mu2_t.shape)}",
            "means must come from features of the same dimension",
        )
    d = len(mu1_t)
    for name, sigma in (("sigma1", sigma1_t), ("sigma2", sigma2_t)):
        if sigma.shape != (d, d):
            raise GenlabError(
                f"`{name}` must be a {d} x {d} covariance matrix, got shape {tuple(sigma.shape)}",
                "means and covariances must come from features of the same dimension",
            )
    # Round-off leaves sample covariances slightly asymmetric; use their symmetric part.
    sigma1_t, sigma2_t = (sigma1_t + sigma1_t.T) / 2, (sigma2_t + sigma2_t.T) / 2
    factor = _psd_factor(sigma1_t)
    middle = factor.T @ sigma2_t @ factor
    # The product is symmetric in exact arithmetic; eigvalsh reads one triangle.
    trace_cross = torch.linalg.eigvalsh(middle).clamp(min=0).sqrt().sum()
    distance = (mu1_t - mu2_t).square().sum() + sigma1_t.trace() + sigma2_t.trace() - 2 * trace_cross
    # Round-off can push a zero distance a hair below 0.
    return max(float(distance), 0.0)


def fid(features_a: ArrayLike, features_b: ArrayLike) -> float:
    """Fréchet Inception Distance (Heusel et al. 2017) between two [N, D] feature sets.

    Each set is summarised by its mean and unbiased covariance (as pytorch-fid and
    torchmetrics do), then compared with `frechet_distance`.
    """
    a = _features(features_a, "features_a", 2, "a covariance estimate")
    b = _features(features_b, "features_b", 2, "a covariance estimate")
    _same_dim(a, b, "features_a and features_b")
    return frechet_distance(a.mean(0), torch.cov(a.T), b.mean(0), torch.cov(b.T))


# --------------------------------------------------------------------------- KID


def _polynomial_mmd2(x: torch.Tensor, y: torch.Tensor) -> float:
    """Unbiased MMD^2 between equal-sized samples with k(u, v) = (u.v / d + 1)^3.

    Diagonal terms k(x_i, x_i) are left out of the within-set sums, which is what makes
    the estimate unbiased (Gretton et al. 2012, eq. 3).
    """
    m, d = x.shape
    one = torch.ones((), dtype=x.dtype, device=x.device)

    def kernel(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        # addmm fuses the scaling and the +1 into the matrix product; the cube is in place.
        return torch.addmm(one, u, v.T, alpha=1 / d).pow_(3)

    k_xx, k_yy = kernel(x, x), kernel(y, y)
    within = (k_xx.sum() - k_xx.diagonal().sum() + k_yy.sum() - k_yy.diagonal().sum()) / (m * (m - 1))
    return float(within - 2 * kernel(x, y).mean())


def kid(
    features_a: ArrayLike,
    features_b: ArrayLike,
    num_subsets: int = 100,
    subset_size: int = 1000,
    seed: int = 0,
) -> tuple[float, float]:
    """Kernel Inception Distance (Binkowski et al. 2018): (mean, std) of unbiased MMD^2.

    As in torch-fidelity, each of `num_subsets` rounds draws `subset_size` samples without
    replacement from each set (capped at the smaller set) and computes the unbiased MMD^2
    under the cubic polynomial kernel; std is the population std over rounds (ddof=0).
    """
    if num_subsets < 1:
        raise GenlabError(f"num_subsets must be >= 1, got {num_subsets}", "use e.g. num_subsets=100")
    a = _features(features_a, "features_a", 2, "an unbiased MMD estimate")
    b = _features(features_b, "features_b", 2, "an unbiased MMD estimate")
    _same_dim(a, b, "features_a and features_b")
    m = min(subset_size, len(a), len(b))
    if m < 2:
        raise GenlabError(f"subset_size must be >= 2, got {subset_size}", "use e.g. subset_size=1000")
    generator = torch.Generator().manual_seed(seed)
    mmds = []
    for _ in range(num_subsets):
        x = a[torch.randperm(len(a), generator=generator)[:m]]
        y = b[torch.randperm(len(b), generator=generator)[:m]]
        mmds.append(_polynomial_mmd2(x, y))
    return float(np.mean(mmds)), float(np.std(mmds))


# --------------------------------------------------------------------------- IS


def _probabilities(probabilities: ArrayLike, name: str = "probabilities") -> torch.Tensor:
    p = _as_float64(probabilities, name)
    if p.ndim != 2:
        raise GenlabError(
            f"`{name}` must be [num_samples, num_classes], got shape {tuple(p.shape)}",
            "pass the classifier's softmax output for each sample",
        )
    if (p < 0).any() or not torch.allclose(p.sum(1), torch.ones_like(p[:, 0]), atol=1e-3):
        raise GenlabError(
            f"`{name}` rows must be probability distributions (non-negative, summing to 1)",
            "apply softmax to the classifier's logits first",
        )
    return p


def inception_score(probabilities: ArrayLike, splits: int = 1) -> tuple[float, float]:
    """Inception Score (Salimans et al. 2016): exp(E_x KL(p(y|x) || p(y))), as (mean, std).

    `probabilities` is [N, C] softmax output. The samples are cut into `splits` contiguous
    parts at i * N // splits (as in the original code); p(y) is each part's mean
    prediction and std is over parts (ddof=0). It ranges from 1 (every sample gets the same
    prediction) to C (confident predictions spread evenly over all classes).
    """
    p = _probabilities(probabilities)
    n = len(p)
    if not 1 <= splits <= n:
        raise GenlabError(f"splits must be between 1 and the number of samples ({n}), got {splits}")
    scores = []
    for i in range(splits):
        part = p[i * n // splits : (i + 1) * n // splits]
        marginal = part.mean(0, keepdim=True)
        # xlogy makes 0 * log 0 = 0, so confident one-hot predictions are exact.
        kl = (torch.xlogy(part, part) - torch.xlogy(part, marginal)).sum(1)
        scores.append(math.exp(float(kl.mean())))
    return float(np.mean(scores)), float(np.std(scores))


# ----------------------------------------------------- k-NN manifold metrics


def _distance_blocks(rows: torch.Tensor, columns: torch.Tensor) -> Iterator[tuple[slice, torch.Tensor]]:
    """Euclidean distances from `rows` to `columns`, a bounded block of rows at a time."""
    step = max(1, _BLOCK_ENTRIES // len(columns))
    for start in range(0, len(rows), step):
        block = slice(start, start + step)
        yield block, torch.cdist(rows[block], columns)


def _kth_neighbour_distances(x: torch.Tensor, k: int) -> torch.Tensor:
    """Distance from each row of `x` to its k-th nearest other row (the k-NN ball radius)."""
    radii = torch.empty(len(x), dtype=x.dtype, device=x.device)
    for block, distances in _distance_blocks(x, x):
        # k + 1 smallest because each point is its own nearest neighbour at distance 0.
        radii[block] = distances.topk(k + 1, dim=1, largest=False).values[:, k]
    return radii


def _manifold_sets(real: ArrayLike, fake: ArrayLike, k: int, metric: str) -> tuple[torch.Tensor, torch.Tensor]:
    if k < 1:
        raise GenlabError(f"k must be >= 1, got {k}")
    why = f"{metric} with k={k} (k nearest neighbours besides itself)"
    real_t = _features(real, "real", k + 1, why)
    fake_t = _features(fake, "fake", k + 1, why)
    _same_dim(real_t, fake_t, "real and fake")
    return real_t, fake_t.to(real_t.device)


def precision_recall(real: ArrayLike, fake: ArrayLike, k: int = 3) -> dict[str, float]:
    """Improved precision and recall (Kynkäänniemi et al. 2019).

    Each set's manifold is the union of balls around its samples reaching their k-th
    nearest neighbour. Precision is the share of fake samples inside the real manifold
    (fidelity); recall is the share of real samples inside the fake manifold (diversity).
    A point on a ball's boundary counts as inside, as in the authors' code.
    """
    real_t, fake_t = _manifold_sets(real, fake, k, "precision/recall")
    real_radii, fake_radii = _kth_neighbour_distances(real_t, k), _kth_neighbour_distances(fake_t, k)
    fake_in_real = torch.zeros(len(fake_t), dtype=torch.bool, device=real_t.device)
    real_in_fake = torch.zeros(len(real_t), dtype=torch.bool, device=real_t.device)
    # One pass over fake-to-real distances answers both directions.
    for block, distances in _distance_blocks(fake_t, real_t):
        fake_in_real[block] = (distances <= real_radii).any(1)
        real_in_fake |= (distances <= fake_radii[block, None]).any(0)
    return {"precision": float(fake_in_real.double().mean()), "recall": float(real_in_fake.double().mean())}


def density_coverage(real: ArrayLike, fake: ArrayLike, k: int = 5) -> dict[str, float]:
    """Density and coverage (Naeem et al. 2020), using k-NN balls around real samples only.

    density = 1/(k M) sum_j #{real balls holding fake_j}: about 1 when fake matches real,
    above 1 when fakes crowd dense regions. coverage = share of real balls holding at least
    one fake sample: robust to outliers in the fake set, unlike recall. A point on a ball's
    boundary counts as inside, as in `precision_recall`.
    """
    real_t, fake_t = _manifold_sets(real, fake, k, "density/coverage")
    real_radii = _kth_neighbour_distances(real_t, k)
    balls_per_fake = torch.empty(len(fake_t), dtype=torch.long, device=real_t.device)
    ball_covered = torch.zeros(len(real_t), dtype=torch.bool, device=real_t.device)
    for block, distances in _distance_blocks(fake_t, real_t):
        inside = distances <= real_radii
        balls_per_fake[block] = inside.sum(1)
        ball_covered |= inside.any(0)
    return {
        "density": float(balls_per_fake.double().sum() / (k * len(fake_t))),
        "coverage": float(ball_covered.double().mean()),
    }


def class_histogram(predictions: ArrayLike, num_classes: int) -> np.ndarray:
    """Share of samples assigned to each class, for spotting mode collapse.

    `predictions` is either [N] integer labels or [N, C] class probabilities (argmax is
    taken). A generator that covers the classes evenly gives about 1/num_classes each.
    """
    p = torch.as_tensor(predictions).detach().cpu()
    if p.ndim == 2:
        if p.shape[1] != num_classes:
            raise GenlabError(
                f"predictions have {p.shape[1]} classes but num_classes is {num_classes}",
                "pass num_classes equal to the classifier's number of outputs",
            )
        labels = _probabilities(p, "predictions").argmax(1)
    elif p.ndim == 1 and not p.is_floating_point() and not p.is_complex():
        labels = p.long()
    else:
        raise GenlabError(
            f"predictions must be [N] integer labels or [N, C] probabilities, got {p.dtype} of shape {tuple(p.shape)}"
        )
    if len(labels) == 0:
        raise GenlabError("predictions are empty", "classify at least one sample")
    if labels.min() < 0 or labels.max() >= num_classes:
        raise GenlabError(
            f"labels must lie in [0, {num_classes}), got values from {int(labels.min())} to {int(labels.max())}"
        )
    return np.bincount(labels.numpy(), minlength=num_classes) / len(labels)


# ------------------------------------------------------------------- PSNR, SSIM


def _image_pair(a: ArrayLike, b: ArrayLike, data_range: float) -> tuple[torch.Tensor, torch.Tensor]:
    x, y = _as_float64(a, "a"), _as_float64(b, "b")
    if x.ndim != 4 or x.shape != y.shape:
        raise GenlabError(
            f"images must be two [N, C, H, W] batches of the same shape, got {tuple(x.shape)} and {tuple(y.shape)}",
            "add a batch dimension with x[None] for a single image",
        )
    if not data_range > 0:
        raise GenlabError(
            f"data_range must be positive, got {data_range}",
            "use 1.0 for images in [0, 1], 2.0 for [-1, 1], 255 for uint8",
        )
    return x, y.to(x.device)


def psnr(a: ArrayLike, b: ArrayLike, data_range: float, *, min_mse: float = 0.0) -> float:
    """Peak signal-to-noise ratio 10 log10(data_range^2 / MSE) in dB, averaged over images.

    Identical images have infinite PSNR, so the mean is inf if any pair is identical; a
    `min_mse` floor (validation logs use 1e-12, i.e. at most 120 dB at range 1) keeps one
    perfect image from making the mean of a batch inf.
    """
    x, y = _image_pair(a, b, data_range)
    mse = (x - y).square().flatten(1).mean(1).clamp_min(min_mse)
    return float((10 * torch.log10(data_range**2 / mse)).mean())


def mean_psnr(a: ArrayLike, b: ArrayLike, data_range: float) -> float:
    """`psnr` of [N, C, H, W] batches with a 1e-12 MSE floor (at most 120 dB at range 1), so one
    exactly reproduced image cannot turn a batch mean into inf: what validation logs and
    served replies report."""
    return psnr(a, b, data_range, min_mse=1e-12)


def _reflect_indices(size: int, radius: int, device: torch.device) -> torch.Tensor:
    """Indices extending an axis by `radius` with scipy.ndimage's 'reflect' mode (d c b a | a b c d).

    The extension repeats with period 2 * size, so it also works when radius > size,
    which torch's own reflect padding refuses.
    """
    index = torch.arange(-radius, size + radius, device=device) % (2 * size)
    return torch.where(index < size, index, 2 * size - 1 - index)


def _gaussian_blur(x: torch.Tensor) -> torch.Tensor:
    """Blur [B, 1, H, W] maps like scipy.ndimage.gaussian_filter(sigma=1.5, truncate=3.5, mode='reflect')."""
    offsets = torch.arange(-_SSIM_RADIUS, _SSIM_RADIUS + 1, dtype=x.dtype, device=x.device)
    taps = torch.exp(-0.5 * (offsets / _SSIM_SIGMA) ** 2)
    taps = taps / taps.sum()
    h, w = x.shape[-2:]
    x = x[:, :, _reflect_indices(h, _SSIM_RADIUS, x.device)][:, :, :, _reflect_indices(w, _SSIM_RADIUS, x.device)]
    x = F.conv2d(x, taps.view(1, 1, -1, 1))
    return F.conv2d(x, taps.view(1, 1, 1, -1))


def ssim(a: ArrayLike, b: ArrayLike, data_range: float) -> float:
    """Structural similarity (Wang et al. 2004) of [N, C, H, W] batches, averaged over images.

    Matches skimage.metrics.structural_similarity(gaussian_weights=True, sigma=1.5,
    use_sample_covariance=False, data_range=...) per channel: local statistics under an
    11-tap Gaussian window with reflected borders, K1=0.01, K2=0.03, and the SSIM map
    averaged after cropping (win - 1) / 2 pixels from each border, where win is 11, or the
    largest odd size that fits images smaller than 11 x 11 (7 for 8 x 8; pass that
    win_size to skimage to compare).
    """
    x, y = _image_pair(a, b, data_range)
    n, c, h, w = x.shape
    win = min(11, h - (h + 1) % 2, w - (w + 1) % 2)
    crop = (win - 1) // 2
    c1, c2 = (_SSIM_K1 * data_range) ** 2, (_SSIM_K2 * data_range) ** 2
    per_image = []
    for start in range(0, n, _SSIM_CHUNK):
        xs = x[start : start + _SSIM_CHUNK].reshape(-1, 1, h, w)
        ys = y[start : start + _SSIM_CHUNK].reshape(-1, 1, h, w)
        mu_x, mu_y, xx, yy, xy = _gaussian_blur(torch.cat([xs, ys, xs * xs, ys * ys, xs * ys])).chunk(5)
        # Population (biased) local covariances, as in Wang et al. 2004.
        var_x, var_y, cov_xy = xx - mu_x**2, yy - mu_y**2, xy - mu_x * mu_y
        ssim_map = ((2 * mu_x * mu_y + c1) * (2 * cov_xy + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))
        ssim_map = ssim_map[:, :, crop : h - crop, crop : w - crop].reshape(-1, c, h - 2 * crop, w - 2 * crop)
        per_image.append(ssim_map.mean((1, 2, 3)))
    return float(torch.cat(per_image).mean())

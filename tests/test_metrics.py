"""Metrics against closed forms and independent references (scipy, scikit-image,
scikit-learn, torchmetrics, sacrebleu, and direct O(n^2) formulas written here)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.linalg
import torch
from scipy.spatial.distance import cdist

from genlab.errors import GenlabError
from genlab.metrics import image
from genlab.metrics.image import (
    class_histogram,
    density_coverage,
    fid,
    frechet_distance,
    inception_score,
    kid,
    precision_recall,
    psnr,
    ssim,
)
from genlab.metrics.ranking import ndcg_at_k, recall_at_k
from genlab.metrics.text import bits_per_char, distinct_n, perplexity, self_bleu


def random_spd(rng: np.random.Generator, d: int) -> np.ndarray:
    a = rng.normal(size=(d, d))
    return a @ a.T / d + 0.1 * np.eye(d)


class IdentityFeatures(torch.nn.Module):
    """Lets torchmetrics' FID/KID run on precomputed features."""

    def __init__(self, num_features: int):
        super().__init__()
        self.num_features = num_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


# --------------------------------------------------------------------------- FID


def test_frechet_distance_diagonal_closed_form():
    # Commuting (diagonal) covariances: d^2 = |mu1 - mu2|^2 + sum (sqrt(s1) - sqrt(s2))^2.
    rng = np.random.default_rng(0)
    mu1, mu2 = rng.normal(size=6), rng.normal(size=6)
    s1, s2 = rng.uniform(0.1, 3, size=6), rng.uniform(0.1, 3, size=6)
    expected = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(s1) - np.sqrt(s2)) ** 2)
    assert frechet_distance(mu1, np.diag(s1), mu2, np.diag(s2)) == pytest.approx(expected, rel=1e-10)


def test_frechet_distance_matches_sqrtm_for_full_covariances():
    rng = np.random.default_rng(1)
    for d in (2, 5, 16):
        mu1, mu2 = rng.normal(size=d), rng.normal(size=d)
        s1, s2 = random_spd(rng, d), random_spd(rng, d)
        cross = np.trace(scipy.linalg.sqrtm(s1 @ s2).real)
        expected = np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2 * cross
        assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(expected, rel=1e-9)
        assert frechet_distance(mu2, s2, mu1, s1) == pytest.approx(expected, rel=1e-9)


def test_frechet_distance_with_singular_covariance():
    # S1 = A A^T of rank 3 in 8 dimensions (Cholesky fails; the eigh path runs). The nonzero
    # eigenvalues of S1 S2 are those of A^T S2 A.
    rng = np.random.default_rng(10)
    a = rng.normal(size=(8, 3))
    s1, s2 = a @ a.T, random_spd(rng, 8)
    mu1, mu2 = rng.normal(size=8), rng.normal(size=8)
    cross = np.sqrt(np.linalg.eigvalsh(a.T @ s2 @ a)).sum()
    expected = np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2 * cross
    # Round-off eigenvalues of ~1e-16 in place of the exact zeros add ~1e-8 each after the
    # square root, whatever the method; hence a looser tolerance than the full-rank case.
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(expected, rel=1e-6)
    assert frechet_distance(mu2, s2, mu1, s1) == pytest.approx(expected, rel=1e-6)
    assert frechet_distance(mu1, s1, mu1, s1) == pytest.approx(0.0, abs=1e-6)


def test_fid_of_samples_approaches_the_analytic_distance():
    rng = np.random.default_rng(2)
    d = 4
    mu1, mu2 = np.zeros(d), np.full(d, 0.5)
    s1, s2 = random_spd(rng, d), random_spd(rng, d)
    a = rng.multivariate_normal(mu1, s1, size=40_000)
    b = rng.multivariate_normal(mu2, s2, size=40_000)
    assert fid(a, b) == pytest.approx(frechet_distance(mu1, s1, mu2, s2), rel=0.03)


def test_fid_identity_symmetry_and_sign():
    rng = np.random.default_rng(3)
    a = rng.normal(size=(500, 64))
    b = rng.normal(size=(400, 64)) * 1.1 + 0.2
    assert fid(a, a) == pytest.approx(0.0, abs=1e-8)
    assert fid(torch.from_numpy(a).float(), a) == pytest.approx(0.0, abs=1e-4)
    assert fid(a, b) == pytest.approx(fid(b, a), rel=1e-9)
    assert fid(a, b) > 0
    # Fewer samples than dimensions: singular covariances must not give a negative or NaN distance.
    assert fid(a[:10], a[10:20]) >= 0


@pytest.mark.filterwarnings("ignore:Metric `Kernel Inception Distance` will save")
def test_fid_and_kid_match_torchmetrics():
    from torchmetrics.image.fid import FrechetInceptionDistance
    from torchmetrics.image.kid import KernelInceptionDistance

    rng = np.random.default_rng(4)
    a = torch.from_numpy(rng.normal(size=(300, 32)))
    b = torch.from_numpy(rng.normal(size=(250, 32)) * 0.9 + 0.1)

    reference_fid = FrechetInceptionDistance(feature=IdentityFeatures(32))
    reference_fid.update(a, real=True)
    reference_fid.update(b, real=False)
    assert fid(a, b) == pytest.approx(float(reference_fid.compute()), rel=1e-6)

    reference_kid = KernelInceptionDistance(feature=IdentityFeatures(32), subsets=20, subset_size=100)
    reference_kid.update(a, real=True)
    reference_kid.update(b, real=False)
    # torchmetrics draws the same randperm sequence from the global generator.
    torch.manual_seed(7)
    reference_mean, reference_std = reference_kid.compute()
    mean, std = kid(a, b, num_subsets=20, subset_size=100, seed=7)
    assert mean == pytest.approx(float(reference_mean), rel=1e-9)
    assert std == pytest.approx(float(reference_std), rel=1e-9)


def direct_unbiased_mmd2(x: np.ndarray, y: np.ndarray) -> float:
    """Gretton et al. 2012 eq. 3, written out pair by pair for the cubic polynomial kernel."""
    d = x.shape[1]

    def kernel(u, v):
        return (u @ v / d + 1) ** 3

    m, n = len(x), len(y)
    xx = sum(kernel(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    yy = sum(kernel(y[i], y[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    xy = sum(kernel(x[i], y[j]) for i in range(m) for j in range(n)) / (m * n)
    return xx + yy - 2 * xy


def test_kid_with_one_full_subset_is_the_unbiased_mmd():
    rng = np.random.default_rng(5)
    a = rng.normal(size=(60, 8))
    b = rng.normal(size=(60, 8)) + 0.3
    mean, std = kid(a, b, num_subsets=1, subset_size=1000)  # capped at 60: the full sets
    assert mean == pytest.approx(direct_unbiased_mmd2(a, b), rel=1e-10)
    assert std == 0.0


def test_kid_is_about_zero_for_one_distribution():
    rng = np.random.default_rng(6)
    a, b = rng.normal(size=(1000, 16)), rng.normal(size=(1000, 16))
    shifted = rng.normal(size=(1000, 16)) + 0.5
    different_mean, _ = kid(a, shifted, num_subsets=20, subset_size=250)
    same_mean, same_std = kid(a, b, num_subsets=20, subset_size=250)
    assert abs(same_mean) < 3 * same_std and abs(same_mean) < 0.01 * different_mean
    # Identical sets: a point drawn into both subsets adds its large self-similarity k(x, x)
    # to the cross term but not to the within-set terms, so the estimate dips slightly below 0.
    identical_mean, _ = kid(a, a, num_subsets=20, subset_size=250)
    assert abs(identical_mean) < 0.03 * different_mean


# --------------------------------------------------------------------- IS, histogram


def test_inception_score_extremes():
    num_classes = 10
    confident_uniform = np.eye(num_classes)[np.arange(200) % num_classes]
    assert inception_score(confident_uniform)[0] == pytest.approx(num_classes, rel=1e-12)
    assert inception_score(confident_uniform, splits=4) == pytest.approx((num_classes, 0.0))
    constant = np.tile(np.random.default_rng(0).dirichlet(np.ones(num_classes)), (50, 1))
    assert inception_score(constant)[0] == pytest.approx(1.0, rel=1e-12)


def test_inception_score_matches_the_original_formula():
    p = np.random.default_rng(7).dirichlet(np.ones(5) * 0.3, size=103)
    scores = []
    for i in range(3):  # Salimans et al.'s split and KL, written out
        part = p[i * 103 // 3 : (i + 1) * 103 // 3]
        kl = part * (np.log(part) - np.log(part.mean(0, keepdims=True)))
        scores.append(np.exp(kl.sum(1).mean()))
    assert inception_score(p, splits=3) == pytest.approx((np.mean(scores), np.std(scores)), rel=1e-10)


def test_class_histogram():
    assert class_histogram(np.array([0, 0, 2, 1]), 4).tolist() == [0.5, 0.25, 0.25, 0.0]
    probabilities = torch.tensor([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]])
    assert class_histogram(probabilities, 2) == pytest.approx([2 / 3, 1 / 3])


# ---------------------------------------------------- precision/recall, density/coverage


def reference_knn_metrics(real: np.ndarray, fake: np.ndarray, k: int) -> dict[str, float]:
    """Brute force with scipy distances, following the papers' reference code."""
    real_radii = np.sort(cdist(real, real), axis=1)[:, k]
    fake_radii = np.sort(cdist(fake, fake), axis=1)[:, k]
    fake_to_real = cdist(fake, real)
    inside_real = fake_to_real <= real_radii[None, :]
    inside_fake = fake_to_real.T <= fake_radii[None, :]
    return {
        "precision": inside_real.any(1).mean(),
        "recall": inside_fake.any(1).mean(),
        "density": inside_real.sum() / (k * len(fake)),
        "coverage": inside_real.any(0).mean(),
    }


def test_knn_metrics_match_brute_force_in_any_block_size(monkeypatch):
    rng = np.random.default_rng(8)
    real, fake = rng.normal(size=(300, 5)), rng.normal(size=(250, 5)) * 1.2 + 0.3
    expected = reference_knn_metrics(real, fake, k=3)
    for block_entries in (image._BLOCK_ENTRIES, 1000, 1):
        monkeypatch.setattr(image, "_BLOCK_ENTRIES", block_entries)
        pr = precision_recall(real, fake, k=3)
        dc = density_coverage(real, fake, k=3)
        assert pr == pytest.approx({key: expected[key] for key in ("precision", "recall")}, abs=1e-12)
        assert dc == pytest.approx({key: expected[key] for key in ("density", "coverage")}, abs=1e-12)


def test_knn_metrics_on_manifolds_with_known_overlap():
    rng = np.random.default_rng(9)
    real = rng.uniform(size=(2000, 2))

    same = precision_recall(real, rng.uniform(size=(2000, 2)))
    assert same["precision"] > 0.95 and same["recall"] > 0.95
    same_dc = density_coverage(real, rng.uniform(size=(2000, 2)))
    assert 0.85 < same_dc["density"] < 1.15 and same_dc["coverage"] > 0.95

    disjoint = rng.uniform(size=(2000, 2)) + 5.0
    assert precision_recall(real, disjoint) == {"precision": 0.0, "recall": 0.0}
    assert density_coverage(real, disjoint) == {"density": 0.0, "coverage": 0.0}

    # Fake samples fill only the lower-left quarter of the real square.
    quarter = rng.uniform(size=(2000, 2)) * 0.5
    pr = precision_recall(real, quarter)
    assert pr["precision"] > 0.98 and 0.2 < pr["recall"] < 0.4
    dc = density_coverage(real, quarter)
    assert dc["density"] > 0.8 and 0.2 < dc["coverage"] < 0.4


# ------------------------------------------------------------------------ PSNR, SSIM


def image_pairs(size: int, channels: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Random noise pairs and structured pairs (a gradient with a square, and a distorted copy)."""
    rng = np.random.default_rng(size * 10 + channels)
    noise = (rng.uniform(size=(3, channels, size, size)), rng.uniform(size=(3, channels, size, size)))
    yy, xx = np.mgrid[0:size, 0:size] / size
    scene = 0.6 * xx + 0.2 * yy
    scene[size // 4 : size // 2, size // 4 : 3 * size // 4] = 0.9
    clean = np.broadcast_to(scene, (3, channels, size, size)) * np.linspace(0.6, 1.0, 3)[:, None, None, None]
    distorted = np.clip(clean + rng.normal(scale=0.05, size=clean.shape), 0, 1) ** 1.2
    return [noise, (np.ascontiguousarray(clean), distorted)]


@pytest.mark.parametrize("size", [8, 28])
@pytest.mark.parametrize("channels", [1, 3])
def test_psnr_and_ssim_match_scikit_image(size, channels):
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity

    win_size = min(11, size if size % 2 else size - 1)
    for a, b in image_pairs(size, channels):
        expected_ssim = np.mean([
            structural_similarity(
                x[0] if channels == 1 else x,
                y[0] if channels == 1 else y,
                gaussian_weights=True,
                sigma=1.5,
                use_sample_covariance=False,
                data_range=1.0,
                win_size=win_size,
                channel_axis=None if channels == 1 else 0,
            )
            for x, y in zip(a, b)
        ])
        expected_psnr = np.mean([peak_signal_noise_ratio(x, y, data_range=1.0) for x, y in zip(a, b)])
        assert ssim(a, b, data_range=1.0) == pytest.approx(expected_ssim, abs=1e-4)
        assert psnr(torch.from_numpy(a), torch.from_numpy(b), data_range=1.0) == pytest.approx(expected_psnr, abs=1e-4)


def test_psnr_of_identical_images_is_inf_unless_floored():
    x = torch.rand(2, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    y = x.clone()
    y[1] += 0.1  # MSE 0.01 -> 20 dB at range 1
    assert psnr(x, x, data_range=1.0) == math.inf
    # With the floor, the identical pair counts as 10 log10(1 / 1e-12) = 120 dB: mean (120 + 20) / 2.
    assert psnr(x, y, data_range=1.0, min_mse=1e-12) == pytest.approx(70.0, abs=1e-6)
    assert psnr(x, y, data_range=2.0, min_mse=1e-12) == pytest.approx((10 * math.log10(4e12) + 10 * math.log10(400)) / 2)


def test_ssim_of_identical_images_is_one_and_scales_with_data_range():
    x = np.random.default_rng(10).uniform(size=(2, 3, 16, 16))
    assert ssim(x, x, data_range=1.0) == pytest.approx(1.0, abs=1e-12)
    assert ssim(x * 255, (x * 0.9) * 255, data_range=255.0) == pytest.approx(ssim(x, x * 0.9, data_range=1.0))
    assert psnr(x, x, data_range=1.0) == math.inf


# ------------------------------------------------------------------------------ text


def test_perplexity_and_bits_per_char():
    assert perplexity(math.log(50.0)) == pytest.approx(50.0)
    assert perplexity(torch.tensor(0.0)) == 1.0
    assert bits_per_char(100 * math.log(2.0), 50) == pytest.approx(2.0)


def test_distinct_n_by_hand():
    texts = ["a b a b", "a b c"]
    assert distinct_n(texts, 1) == pytest.approx(3 / 7)  # a b c out of 7 words
    assert distinct_n(texts, 2) == pytest.approx(3 / 5)  # ab, ba, bc out of ab ba ab | ab bc
    assert distinct_n(["x y z"], 3) == 1.0


def test_self_bleu_scale_and_sacrebleu_reference():
    from sacrebleu.metrics import BLEU

    assert self_bleu(["the cat sat on the mat ."] * 5) == pytest.approx(100.0)
    texts = [
        "the cat sat on the mat .",
        "the cat sat on the mat , the cat .",
        "a dog ran in the park",
        "the the the the",
        "a dog sat in the park today",
        "completely unrelated words here",
        "the cat sat on the mat .",
        "",
    ]
    bleu = BLEU(effective_order=True)
    expected = np.mean([bleu.sentence_score(t, texts[:i] + texts[i + 1 :]).score for i, t in enumerate(texts)])
    assert self_bleu(texts) == pytest.approx(expected, rel=1e-12)
    assert self_bleu(texts, max_order=2) != pytest.approx(expected)
    assert self_bleu(texts) < 100.0
    diverse = ["alpha beta gamma delta", "one two three four", "red green blue yellow"]
    assert self_bleu(diverse) == 0.0


def test_self_bleu_subsamples_large_sets():
    rng = np.random.default_rng(11)
    texts = [" ".join(rng.choice(list("abcdefgh"), size=6)) for _ in range(60)]
    assert self_bleu(texts, max_texts=20, seed=1) == self_bleu(texts, max_texts=20, seed=1)
    assert self_bleu(texts, max_texts=20, seed=1) != self_bleu(texts, max_texts=20, seed=2)


# --------------------------------------------------------------------------- ranking


def test_recall_and_ndcg_by_hand():
    scores = torch.tensor([[0.9, 0.8, 0.1, 0.3], [0.1, 0.2, 0.3, 0.4], [0.5, 0.6, 0.7, 0.8], [0.4, 0.3, 0.2, 0.1]])
    relevant = torch.tensor([[1, 0, 0, 1], [1, 0, 0, 0], [0, 0, 0, 0], [1, 1, 1, 0]])
    # Users 0, 1, 3 count (user 2 has nothing relevant). Top 2: user 0 -> items 0, 1 (one hit of
    # min(2, 2)); user 1 -> items 3, 2 (none); user 3 -> items 0, 1 (two hits of min(2, 3)).
    assert recall_at_k(scores, relevant, k=2) == pytest.approx((1 / 2 + 0 + 1) / 3)
    ideal = 1 + 1 / math.log2(3)
    assert ndcg_at_k(scores, relevant, k=2) == pytest.approx((1 / ideal + 0 + 1) / 3)

    # Excluding seen items: user 0 loses item 1 (now items 0, 3: both hits); user 1 loses item 3.
    exclude = torch.zeros_like(relevant)
    exclude[0, 1] = exclude[1, 3] = 1
    assert recall_at_k(scores, relevant, k=2, exclude=exclude) == pytest.approx((1 + 0 + 1) / 3)
    assert ndcg_at_k(scores, relevant, k=2, exclude=exclude) == pytest.approx((1 + 0 + 1) / 3)


def test_ndcg_matches_scikit_learn():
    from sklearn.metrics import ndcg_score

    rng = np.random.default_rng(12)
    scores = rng.normal(size=(40, 30))
    relevant = rng.uniform(size=(40, 30)) < 0.2
    relevant[:, 0] = True  # every user has a relevant item, as sklearn averages over all
    for k in (1, 5, 30):
        assert ndcg_at_k(scores, relevant, k) == pytest.approx(ndcg_score(relevant, scores, k=k), rel=1e-10)


# ------------------------------------------------------------------------ bad input


def test_bad_inputs_raise_genlab_errors():
    rng = np.random.default_rng(13)
    good = rng.normal(size=(20, 4))
    bad = good.copy()
    bad[3, 1] = np.nan
    with pytest.raises(GenlabError, match="features contain NaN: the images or the model produced NaN"):
        fid(good, bad)
    with pytest.raises(GenlabError, match="feature dimensions differ"):
        fid(good, rng.normal(size=(20, 5)))
    with pytest.raises(GenlabError, match="at least 2"):
        fid(good, good[:1])
    with pytest.raises(GenlabError, match="at least 4"):
        precision_recall(good, good[:3], k=3)
    with pytest.raises(GenlabError, match="num_subsets"):
        kid(good, good, num_subsets=0)
    with pytest.raises(GenlabError, match="softmax"):
        inception_score(rng.normal(size=(10, 3)))
    with pytest.raises(GenlabError, match="same shape"):
        ssim(np.zeros((1, 1, 8, 8)), np.zeros((1, 1, 8, 9)), data_range=1.0)
    with pytest.raises(GenlabError, match="data_range"):
        psnr(np.zeros((1, 1, 8, 8)), np.ones((1, 1, 8, 8)), data_range=0)
    with pytest.raises(GenlabError, match="k must be between"):
        recall_at_k(np.zeros((2, 3)), np.ones((2, 3)), k=4)
    with pytest.raises(GenlabError, match="no user"):
        ndcg_at_k(np.zeros((2, 3)), np.zeros((2, 3)), k=2)
    with pytest.raises(GenlabError, match="no text"):
        distinct_n(["one two"], 3)
    with pytest.raises(GenlabError, match="labels must lie"):
        class_histogram(np.array([0, 5]), 3)

"""Applications on top of trained models; each reports how it compares with the obvious baseline.

    task         needs (capability)          baseline
    inpaint      decode (VAE, GAN) or a      mean of the known pixels
                 pixel-space diffusion model (RePaint)
    superres     upscale (superres)          bicubic interpolation
    denoise      denoise (denoiser)          the noisy input; the best tuned scikit-image filter
    anomaly      log_likelihood / encode     chance (AUROC 0.5)
    interpolate  encode + decode (VAE)       linear vs spherical paths
    traverse     decode (VAE, GAN)           -
    augment      conditional                 the same classifier without synthetic data
    compress     encode + decode (VAE)       the PNG file of the same image

Each is a plain function here; genlab.apps declares its `genlab apply NAME` command and HTTP route. Images
are [N, C, H, W] tensors in the model's data range; genlab.tasks.images reads and writes
files of any size and mode.
"""

from .anomaly import anomaly_scores, auroc, one_class_auroc
from .augment import augmentation_benefit, synthesize
from .compress import compress, decode_codes, encode_codes, fit_entropy_model
from .denoise import classical_denoise, denoise, evaluate_denoise
from .inpaint import inpaint, masked_psnr, mean_fill
from .interpolate import interpolate, slerp, traverse
from .superres import evaluate_superres, superres

__all__ = [
    "inpaint", "mean_fill", "masked_psnr", "superres", "evaluate_superres", "denoise", "evaluate_denoise",
    "classical_denoise", "anomaly_scores", "auroc", "one_class_auroc", "interpolate", "slerp", "traverse",
    "synthesize", "augmentation_benefit", "compress", "encode_codes", "decode_codes", "fit_entropy_model",
]

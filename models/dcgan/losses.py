"""The training objectives of the direct family, on the DCGAN networks (training only).

* ``gan``: Goodfellow et al., "Generative Adversarial Nets", NeurIPS 2014, Eq. 1, with the
  non-saturating generator loss of Sec. 3 (maximise log D(G(z))), written as the
  reference's BCE losses (pytorch/examples ``dcgan/main.py``).
* ``improved``: Salimans et al., "Improved Techniques for Training GANs", NeurIPS 2016:
  feature matching (Sec. 3.1) as the generator's loss; minibatch discrimination (Sec. 3.2)
  lives in ``networks.MinibatchDiscrimination``.
* ``infogan``: Chen et al., "InfoGAN", NeurIPS 2016: codes c = (one categorical code of k
  values, continuous codes uniform on [-1, 1]); the variational lower bound of the mutual
  information, Eq. 4-5: L_I(G, Q) = E[log Q(c | G(z, c))] + H(c).
* ``fgan``: Nowozin et al., "f-GAN", NeurIPS 2016: F(theta, omega) = E_P[g_f(V(x))] +
  E_Q[-f*(g_f(V(x)))] (Eq. 6), with the output activations g_f and conjugates f* of
  Table 2 (``ACTIVATIONS``, ``CONJUGATES``); the generator maximises E_Q[g_f(V(G(z)))]
  (Sec. 3.2, the alternative that does not saturate).
* ``gan-int-cls``: Reed et al., "Generative Adversarial Text to Image Synthesis", ICML
  2016, Algorithm 1: the matching-aware discriminator loss (real image / right text,
  real image / wrong text, fake image / right text) and the interpolated embeddings of
  Sec. 4.3 (GAN-INT).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

OBJECTIVES = ("gan", "improved", "infogan", "fgan", "gan-int-cls")
DIVERGENCES = ("kl", "reverse-kl", "js", "pearson", "hellinger", "gan")


# ---------------------------------------------------------------------------------------
# The original GAN (Goodfellow et al. 2014)


def discriminator_loss(real: torch.Tensor, fake: torch.Tensor, logits=False) -> torch.Tensor:
    """-log D(x) - log(1 - D(G(z))), batch means: D maximises Eq. 1 of Goodfellow et al.

    ``real`` and ``fake`` are probabilities (the reference's sigmoid output), or scores
    before the sigmoid when ``logits``.
    """
    bce = F.binary_cross_entropy_with_logits if logits else F.binary_cross_entropy
    return bce(real, torch.ones_like(real)) + bce(fake, torch.zeros_like(fake))


def generator_loss(fake: torch.Tensor, logits=False) -> torch.Tensor:
    """-log D(G(z)): the non-saturating generator loss (Sec. 3 of Goodfellow et al.)."""
    bce = F.binary_cross_entropy_with_logits if logits else F.binary_cross_entropy
    return bce(fake, torch.ones_like(fake))


# ---------------------------------------------------------------------------------------
# Improved GAN (Salimans et al. 2016)


def feature_matching_loss(real_features: torch.Tensor, fake_features: torch.Tensor) -> torch.Tensor:
    """||E_x f(x) - E_z f(G(z))||_2^2 (Sec. 3.1): the means over the batch, squared L2 distance."""
    return (real_features.flatten(1).mean(0) - fake_features.flatten(1).mean(0)).pow(2).sum()


# ---------------------------------------------------------------------------------------
# InfoGAN (Chen et al. 2016)


def sample_codes(n: int, categories: int, continuous: int, label: int | None = None, vector=None):
    """InfoGAN's latent codes from torch's global RNG: ``(indices (n,), one-hot (n, k), continuous (n, c))``.

    The categorical code is uniform on k values (or ``label`` for all), the continuous
    codes uniform on [-1, 1] (or ``vector``, (n, c)).
    """
    if categories:
        indices = (torch.full((n,), int(label), dtype=torch.long) if label is not None
                   else torch.randint(categories, (n,)))
        one_hot = F.one_hot(indices, categories).float()
    else:
        indices, one_hot = torch.zeros(n, dtype=torch.long), torch.zeros(n, 0)
    cont = torch.rand(n, continuous) * 2 - 1 if vector is None else torch.as_tensor(vector, dtype=torch.float32)
    return indices, one_hot, cont


def code_entropy(categories: int, continuous: int) -> float:
    """H(c): log k for the uniform categorical code plus log 2 for each code uniform on [-1, 1]."""
    return (math.log(categories) if categories else 0.0) + continuous * math.log(2.0)


def gaussian_nll(value: torch.Tensor, mean: torch.Tensor, log_var: torch.Tensor) -> torch.Tensor:
    """-log N(value; mean, exp(log_var)), summed over the codes: (N,)."""
    return (0.5 * math.log(2 * math.pi) + 0.5 * log_var + (value - mean) ** 2 / (2 * log_var.exp())).sum(1)


def information_terms(cat_logits, indices, cont_mean, cont_log_var, cont):
    """``(categorical -E log Q(c_cat | x), continuous -E log Q(c_cont | x))``, batch means."""
    cat = F.cross_entropy(cat_logits, indices) if cat_logits.shape[1] else cat_logits.new_zeros(())
    gauss = gaussian_nll(cont, cont_mean, cont_log_var).mean() if cont.shape[1] else cont_mean.new_zeros(())
    return cat, gauss


def mutual_information_bound(cat_logits, indices, cont_mean, cont_log_var, cont) -> torch.Tensor:
    """L_I(G, Q) = E[log Q(c | x)] + H(c) (Eq. 4-5), the lower bound of I(c; G(z, c))."""
    cat, gauss = information_terms(cat_logits, indices, cont_mean, cont_log_var, cont)
    return code_entropy(cat_logits.shape[1], cont.shape[1]) - cat - gauss


def information_loss(cat_logits, indices, cont_mean, cont_log_var, cont, lambda_cat=1.0, lambda_cont=0.1):
    """-lambda L_I up to the constant H(c): what G and Q minimise (Eq. 5-6).

    The paper sets lambda to 1 for discrete codes and smaller for continuous ones (Sec. 7),
    whose differential entropy puts the Gaussian term on another scale.
    """
    cat, gauss = information_terms(cat_logits, indices, cont_mean, cont_log_var, cont)
    return lambda_cat * cat + lambda_cont * gauss


# ---------------------------------------------------------------------------------------
# f-GAN (Nowozin et al. 2016), Table 2


def _softplus(v):
    return F.softplus(v)


# g_f: R -> dom f*, the output activation of the variational function V.
ACTIVATIONS = {
    "kl": lambda v: v,
    "reverse-kl": lambda v: -torch.exp(-v),
    "pearson": lambda v: v,
    "hellinger": lambda v: 1 - torch.exp(-v),
    "js": lambda v: math.log(2.0) - _softplus(-v),
    "gan": lambda v: -_softplus(-v),
}
# f*(t), the Fenchel conjugate of the divergence's generator f.
CONJUGATES = {
    "kl": lambda t: torch.exp(t - 1),
    "reverse-kl": lambda t: -1 - torch.log(-t),
    "pearson": lambda t: 0.25 * t ** 2 + t,
    "hellinger": lambda t: t / (1 - t),
    "js": lambda t: -torch.log(2 - torch.exp(t)),
    "gan": lambda t: -torch.log(1 - torch.exp(t)),
}
# f*(g_f(v)) written so that it stays finite for every v (the same values as
# CONJUGATES[d](ACTIVATIONS[d](v)) wherever those are finite).
COMPOSED = {
    "kl": lambda v: torch.exp(v - 1),
    "reverse-kl": lambda v: v - 1,
    "pearson": lambda v: 0.25 * v ** 2 + v,
    "hellinger": lambda v: torch.expm1(v),
    "js": lambda v: _softplus(v) - math.log(2.0),
    "gan": lambda v: _softplus(v),
}


def _check(divergence):
    if divergence not in ACTIVATIONS:
        raise ValueError(f"unknown f-divergence {divergence!r}; known: {', '.join(DIVERGENCES)}")


def fgan_objective(divergence: str, v_real: torch.Tensor, v_fake: torch.Tensor) -> torch.Tensor:
    """F = E_P[g_f(V(x))] - E_Q[f*(g_f(V(x)))] (Eq. 6), from V's outputs on real and generated images."""
    _check(divergence)
    return ACTIVATIONS[divergence](v_real).mean() - COMPOSED[divergence](v_fake).mean()


def fgan_discriminator_loss(divergence: str, v_real: torch.Tensor, v_fake: torch.Tensor) -> torch.Tensor:
    """-F: the variational function maximises F, the divergence's lower bound."""
    return -fgan_objective(divergence, v_real, v_fake)


def fgan_generator_loss(divergence: str, v_fake: torch.Tensor) -> torch.Tensor:
    """-E_Q[g_f(V(G(z)))]: the generator's alternative update of Sec. 3.2."""
    _check(divergence)
    return -ACTIVATIONS[divergence](v_fake).mean()


# ---------------------------------------------------------------------------------------
# GAN-INT-CLS (Reed et al. 2016)


def matching_aware_discriminator_loss(s_real, s_wrong, s_fake, logits=True) -> torch.Tensor:
    """Algorithm 1: -[log s_r + (log(1 - s_w) + log(1 - s_f)) / 2].

    ``s_real`` = D(x, h) (real image, right text), ``s_wrong`` = D(x, h^) (real image,
    wrong text), ``s_fake`` = D(x^, h) (generated image, right text).
    """
    bce = F.binary_cross_entropy_with_logits if logits else F.binary_cross_entropy
    return (bce(s_real, torch.ones_like(s_real))
            + 0.5 * (bce(s_wrong, torch.zeros_like(s_wrong)) + bce(s_fake, torch.zeros_like(s_fake))))


def interpolate_embeddings(h1: torch.Tensor, h2: torch.Tensor, beta: float = 0.5) -> torch.Tensor:
    """beta t1 + (1 - beta) t2 (Sec. 4.3, GAN-INT; the paper fixes beta = 0.5)."""
    return beta * h1 + (1 - beta) * h2


def wrong_embeddings(embeddings: torch.Tensor) -> torch.Tensor:
    """Mismatched texts: each image gets the next image's embedding in the batch."""
    return embeddings.roll(1, 0)

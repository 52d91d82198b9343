"""DCGAN networks, and the heads the direct-family objectives put on them.

Radford, Metz and Chintala, "Unsupervised Representation Learning with Deep Convolutional
Generative Adversarial Networks", ICLR 2016 (arXiv:1511.06434). ``Generator`` and
``Discriminator`` are layer for layer those of pytorch/examples ``dcgan/main.py``: one
``nn.Sequential`` named ``main`` each, so the ``netG_epoch_N.pth`` / ``netD_epoch_N.pth``
state dicts that script writes (keys ``main.0.weight``, ``main.1.running_mean`` ...) load
strictly, and the forward passes return what the reference returns (the generator an
image in [-1, 1], the discriminator the probability ``D(x)`` flattened to ``(N,)``).

The reference's sizes come from its command line (``--nz 100 --ngf 64 --ndf 64``, ``nc`` 3,
1 for MNIST) and its networks are built for 64x64 images. ``image_size`` (a power of two,
at least 16) is this project's addition: 64 gives exactly the reference's layers; a
smaller size drops the first up-sampling (resp. the last down-sampling) blocks, so a
32x32 generator starts at ``ngf * 4`` channels. The demo weights use 32x32.

The other networks serve the objectives of the survey built on the DCGAN networks
(``models.dcgan.losses``):

* ``MinibatchDiscrimination`` and ``ImprovedDiscriminator``: Salimans et al., "Improved
  Techniques for Training GANs", NeurIPS 2016, Sec. 3.2 (minibatch discrimination) on the
  DCGAN discriminator's features (also those of feature matching, Sec. 3.1);
* ``InfoDiscriminator``: Chen et al., "InfoGAN", NeurIPS 2016, Sec. 5: the Q network shares
  the discriminator's convolutions and adds one hidden layer, with the categorical code's
  logits and the continuous codes' Gaussian means and log-variances as outputs;
* ``TextConditionalGenerator`` and ``MatchingAwareDiscriminator``: Reed et al., "Generative
  Adversarial Text to Image Synthesis", ICML 2016, Sec. 4.1: the text embedding is
  projected to 128 numbers (fully connected + leaky ReLU) and concatenated to ``z``; in the
  discriminator it is projected again, replicated over the 4x4 map and concatenated
  depth-wise before a 1x1 convolution and the final 4x4 one.

Every network records its constructor arguments in ``config`` (the project's weights
folders save them).
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn

from models.errors import InvalidInput


def _depth(image_size: int) -> int:
    """Stride-2 (de)convolutions between the 4x4 map and an ``image_size`` image."""
    steps = int(round(math.log2(image_size))) - 2 if image_size > 0 else 0
    if image_size < 16 or 2 ** (steps + 2) != image_size:
        raise InvalidInput(f"DCGAN image_size must be a power of two of at least 16, got {image_size}")
    return steps


def weights_init(module: nn.Module):
    """The reference's initialisation: convolutions N(0, 0.02), batch-norm scales N(1, 0.02), shifts 0.

    Sec. 4 of the paper ("All weights were initialized from a zero-centered Normal
    distribution with standard deviation 0.02"); use with ``network.apply(weights_init)``.
    """
    name = type(module).__name__
    if "Conv" in name:
        nn.init.normal_(module.weight, 0.0, 0.02)
    elif "BatchNorm" in name:
        nn.init.normal_(module.weight, 1.0, 0.02)
        nn.init.zeros_(module.bias)


# ---------------------------------------------------------------------------------------
# The reference networks


class Generator(nn.Module):
    """The DCGAN generator G(z): ``z`` (N, nz, 1, 1) -> image (N, nc, S, S) in [-1, 1].

    Fractionally-strided 4x4 convolutions without bias, each but the last followed by
    batch norm and ReLU; tanh on the output (Sec. 3 of the paper, Fig. 1).

    Args:
        nz (`int`, 100): length of the latent vector z (the reference's ``--nz``).
        ngf (`int`, 64): generator width; the 4x4 map has ``ngf * 2**(depth-1)`` channels
            (``ngf * 8`` at 64x64).
        nc (`int`, 3): image channels (1 for grey images).
        image_size (`int`, 64): side of the image; 64 = the reference's layers.
    """

    def __init__(self, nz: int = 100, ngf: int = 64, nc: int = 3, image_size: int = 64):
        super().__init__()
        self.config = {"nz": nz, "ngf": ngf, "nc": nc, "image_size": image_size}
        self.nz = nz
        depth = _depth(image_size)
        width = ngf * 2 ** (depth - 1)
        layers = [nn.ConvTranspose2d(nz, width, 4, 1, 0, bias=False), nn.BatchNorm2d(width), nn.ReLU(True)]
        for _ in range(depth - 1):      # (width) x s x s -> (width / 2) x 2s x 2s
            layers += [nn.ConvTranspose2d(width, width // 2, 4, 2, 1, bias=False), nn.BatchNorm2d(width // 2),
                       nn.ReLU(True)]
            width //= 2
        layers += [nn.ConvTranspose2d(width, nc, 4, 2, 1, bias=False), nn.Tanh()]
        self.main = nn.Sequential(*layers)

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return self.main(input)


class Discriminator(nn.Module):
    """The DCGAN discriminator D(x): image (N, nc, S, S) -> probability of being real (N,).

    Strided 4x4 convolutions without bias, leaky ReLU (slope 0.2), batch norm on all but
    the first; a 4x4 convolution to one number and a sigmoid (Sec. 3 of the paper).

    Args:
        nc (`int`, 3): image channels.
        ndf (`int`, 64): discriminator width (``ndf * 8`` channels on the 4x4 map at 64x64).
        image_size (`int`, 64): side of the image; 64 = the reference's layers.
    """

    def __init__(self, nc: int = 3, ndf: int = 64, image_size: int = 64):
        super().__init__()
        self.config = {"nc": nc, "ndf": ndf, "image_size": image_size}
        depth = _depth(image_size)
        layers = [nn.Conv2d(nc, ndf, 4, 2, 1, bias=False), nn.LeakyReLU(0.2, inplace=True)]
        width = ndf
        for _ in range(depth - 1):      # (width) x s x s -> (2 width) x s/2 x s/2
            layers += [nn.Conv2d(width, width * 2, 4, 2, 1, bias=False), nn.BatchNorm2d(width * 2),
                       nn.LeakyReLU(0.2, inplace=True)]
            width *= 2
        layers += [nn.Conv2d(width, 1, 4, 1, 0, bias=False), nn.Sigmoid()]
        self.main = nn.Sequential(*layers)
        self.feature_channels = width   # channels of the last 4x4 map

    def features(self, input: torch.Tensor) -> torch.Tensor:
        """The last 4x4 map (N, ndf * 2**(depth-1), 4, 4), after its leaky ReLU."""
        return self.main[:-2](input)

    def logits(self, input: torch.Tensor) -> torch.Tensor:
        """The score before the sigmoid, (N,): the variational function V(x) of f-GAN."""
        return self.main[-2](self.features(input)).view(-1)

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return self.main(input).view(-1, 1).squeeze(1)


# ---------------------------------------------------------------------------------------
# Improved GAN (Salimans et al. 2016)


class MinibatchDiscrimination(nn.Module):
    """Minibatch discrimination, Sec. 3.2 of Salimans et al. 2016.

    With the features f(x_i) in R^A and the tensor T in R^{A x B x C}: M_i = f(x_i) T in
    R^{B x C}; for each kernel b, c_b(x_i, x_j) = exp(-||M_{i,b} - M_{j,b}||_L1) and
    o(x_i)_b = sum_j c_b(x_i, x_j) over the minibatch (j = i included, as the paper writes
    the sum: it adds 1 to every o). The output is [f(x_i), o(x_i)] in R^{A + B}.

    Args:
        in_features (`int`): A.
        kernels (`int`, 100): B.
        kernel_dims (`int`, 5): C.
    """

    def __init__(self, in_features: int, kernels: int = 100, kernel_dims: int = 5):
        super().__init__()
        self.kernels, self.kernel_dims = kernels, kernel_dims
        self.T = nn.Parameter(torch.randn(in_features, kernels, kernel_dims) * 0.1)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        m = torch.einsum("na,abc->nbc", features, self.T)                  # (N, B, C)
        distances = (m[:, None] - m[None, :]).abs().sum(3)                 # (N, N, B): L1 over C
        o = torch.exp(-distances).sum(1)                                   # (N, B)
        return torch.cat([features, o], 1)


class ImprovedDiscriminator(nn.Module):
    """The DCGAN discriminator with minibatch discrimination on its last features.

    ``main`` holds the reference discriminator's layers up to the last 4x4 map (the same
    names as ``Discriminator``'s); the map is flattened (the features f(x) of Sec. 3.1 and
    3.2), extended by ``MinibatchDiscrimination`` and scored by a linear layer.

    Args:
        nc, ndf, image_size: as ``Discriminator``.
        kernels (`int`, 100), kernel_dims (`int`, 5): B and C of the minibatch layer (Sec. 3.2
            leaves them open; 100 kernels of 5 dimensions are those of the authors' CIFAR-10
            code, openai/improved-gan).
    """

    def __init__(self, nc: int = 3, ndf: int = 64, image_size: int = 64, kernels: int = 100, kernel_dims: int = 5):
        super().__init__()
        self.config = {"nc": nc, "ndf": ndf, "image_size": image_size, "kernels": kernels,
                       "kernel_dims": kernel_dims}
        body = Discriminator(nc, ndf, image_size)
        self.main = body.main[:-2]
        self.feature_size = body.feature_channels * 16
        self.minibatch = MinibatchDiscrimination(self.feature_size, kernels, kernel_dims)
        self.out = nn.Linear(self.feature_size + kernels, 1)

    def features(self, input: torch.Tensor) -> torch.Tensor:
        """f(x): the last 4x4 map flattened, (N, feature_size)."""
        return self.main(input).flatten(1)

    def logits(self, input: torch.Tensor) -> torch.Tensor:
        """The score before the sigmoid, (N,)."""
        return self.out(self.minibatch(self.features(input))).view(-1)

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.logits(input))


# ---------------------------------------------------------------------------------------
# InfoGAN (Chen et al. 2016)


class InfoDiscriminator(nn.Module):
    """The DCGAN discriminator D and InfoGAN's Q network on its shared convolutions.

    ``main`` is exactly ``Discriminator``'s (D(x) as the reference computes it); ``q`` reads
    the last 4x4 map (Sec. 4: Q "shares all convolutional layers with D and there is one
    final fully connected layer to output parameters for the conditional distribution
    Q(c|x)"), through the hidden layer of the paper's appendix networks (FC 128, batch norm,
    leaky ReLU) before that output layer.

    Args:
        nc, ndf, image_size: as ``Discriminator``.
        categories (`int`, 10): k, values of the categorical code (0 for none).
        continuous (`int`, 2): c, continuous codes (each uniform on [-1, 1]).
        hidden (`int`, 128): width of Q's hidden layer.
    """

    def __init__(self, nc: int = 3, ndf: int = 64, image_size: int = 64, categories: int = 10, continuous: int = 2,
                 hidden: int = 128):
        super().__init__()
        self.config = {"nc": nc, "ndf": ndf, "image_size": image_size, "categories": categories,
                       "continuous": continuous, "hidden": hidden}
        body = Discriminator(nc, ndf, image_size)
        self.main = body.main
        self.categories, self.continuous = categories, continuous
        self.q = nn.Sequential(nn.Flatten(), nn.Linear(body.feature_channels * 16, hidden), nn.BatchNorm1d(hidden),
                               nn.LeakyReLU(0.2, inplace=True), nn.Linear(hidden, categories + 2 * continuous))

    def forward(self, input: torch.Tensor):
        """``(D(x) (N,), categorical logits (N, k), continuous means (N, c), log-variances (N, c))``."""
        features = self.main[:-2](input)
        probability = self.main[-2:](features).view(-1)
        q = self.q(features)
        k, c = self.categories, self.continuous
        return probability, q[:, :k], q[:, k:k + c], q[:, k + c:]


# ---------------------------------------------------------------------------------------
# GAN-INT-CLS (Reed et al. 2016)


class TextConditionalGenerator(nn.Module):
    """G(z, phi(t)): the DCGAN generator on [z, projection of the text embedding].

    Sec. 4.1 of Reed et al.: phi(t) is "compressed using a fully-connected layer to a
    small dimension (in practice we used 128) followed by leaky-ReLU and then concatenated
    to the noise vector z".

    Args:
        nz (`int`, 100): length of z.
        ngf, nc, image_size: as ``Generator``.
        embedding_dim (`int`, 1024): length of the text embedding (the char-CNN-RNN's 1024).
        projected_dim (`int`, 128): its projection.
    """

    def __init__(self, nz: int = 100, ngf: int = 64, nc: int = 3, image_size: int = 64, embedding_dim: int = 1024,
                 projected_dim: int = 128):
        super().__init__()
        self.config = {"nz": nz, "ngf": ngf, "nc": nc, "image_size": image_size, "embedding_dim": embedding_dim,
                       "projected_dim": projected_dim}
        self.nz, self.embedding_dim = nz, embedding_dim
        self.projection = nn.Sequential(nn.Linear(embedding_dim, projected_dim), nn.LeakyReLU(0.2, inplace=True))
        self.main = Generator(nz + projected_dim, ngf, nc, image_size).main

    def forward(self, z: torch.Tensor, embedding: torch.Tensor) -> torch.Tensor:
        projected = self.projection(embedding)                             # (N, 128)
        return self.main(torch.cat([z.flatten(1), projected], 1)[:, :, None, None])


class MatchingAwareDiscriminator(nn.Module):
    """D(x, phi(t)): the DCGAN discriminator with the text embedding joined at the 4x4 map.

    Sec. 4.1 of Reed et al.: "When the spatial dimension of the discriminator is 4x4, we
    replicate the description embedding spatially and perform a depth concatenation. We
    then perform a 1x1 convolution followed by rectification and a 4x4 convolution to
    compute the final score from D."

    Args:
        nc, ndf, image_size: as ``Discriminator``.
        embedding_dim (`int`, 1024), projected_dim (`int`, 128): as ``TextConditionalGenerator``.
    """

    def __init__(self, nc: int = 3, ndf: int = 64, image_size: int = 64, embedding_dim: int = 1024,
                 projected_dim: int = 128):
        super().__init__()
        self.config = {"nc": nc, "ndf": ndf, "image_size": image_size, "embedding_dim": embedding_dim,
                       "projected_dim": projected_dim}
        body = Discriminator(nc, ndf, image_size)
        width = body.feature_channels
        self.main = body.main[:-2]
        self.projection = nn.Sequential(nn.Linear(embedding_dim, projected_dim), nn.LeakyReLU(0.2, inplace=True))
        self.joint = nn.Sequential(nn.Conv2d(width + projected_dim, width, 1, 1, 0, bias=False), nn.BatchNorm2d(width),
                                   nn.LeakyReLU(0.2, inplace=True), nn.Conv2d(width, 1, 4, 1, 0, bias=False))

    def logits(self, input: torch.Tensor, embedding: torch.Tensor) -> torch.Tensor:
        """The score before the sigmoid, (N,)."""
        features = self.main(input)                                        # (N, width, 4, 4)
        text = self.projection(embedding)[:, :, None, None].expand(-1, -1, *features.shape[2:])
        return self.joint(torch.cat([features, text], 1)).view(-1)

    def forward(self, input: torch.Tensor, embedding: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.logits(input, embedding))

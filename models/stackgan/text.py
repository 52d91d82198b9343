"""The project's own caption encoder for StackGAN: a small char-level CNN-RNN.

StackGAN's released weights expect the 1024-d char-CNN-RNN embeddings of Reed, Akata,
Lee and Schiele, "Learning Deep Representations of Fine-grained Visual Descriptions",
CVPR 2016 (github.com/reedscot/cvpr2016, Torch7). Those encoders are not in this
project; with them absent, a caption reaches the authors' weights only as its embedding
(the ``vector`` condition). This module gives the models this project trains (the demo
weights, ``talkingface train stackgan --captions``) an encoder of their own:

* ``CharCNNRNN``: the captions' characters one-hot (Reed et al.'s 70-character
  alphabet), two 1-D convolutions with max pooling, a GRU, the mean of its states, a
  linear layer to ``text_dim``: the char-CNN-RNN of Reed et al. (Sec. 3.2), much smaller.
* ``ImageEncoder``: a small CNN from images to ``text_dim`` (Reed et al. use GoogLeNet
  features); it exists only for training the text encoder.
* ``matching_loss``: Reed et al.'s symmetric structured joint-embedding objective (Eq. 1-3):
  a caption's image must score higher with it than with the batch's other captions, and
  an image's caption higher with it than with the other images (equal captions counting
  as one class), with a softmax surrogate of the 0-1 loss in place of their hinge (see
  its docstring for why).

Limits: the encoder knows only what its training captions say. The demo's was trained
on the demo's captions ("a red disc on a dark blue background": eight colours, two
shapes, five backgrounds); other words give an embedding, but not a meaningful one.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from models.errors import InvalidInput

# Reed et al.'s alphabet (cvpr2016 ``util/util.lua``): 70 characters; others are dropped.
ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789-,;.!?:'\"/\\|_@#$%^&*~`+-=<>()[]{} "
CHAR_INDEX = {c: i for i, c in enumerate(ALPHABET)}


def encode_chars(captions: list[str], max_length: int) -> torch.Tensor:
    """Captions -> one-hot characters (n, len(ALPHABET), max_length), lower-cased, cut or zero-padded."""
    out = torch.zeros(len(captions), len(ALPHABET), max_length)
    for i, caption in enumerate(captions):
        indices = [CHAR_INDEX[c] for c in caption.lower() if c in CHAR_INDEX][:max_length]
        if indices:
            out[i, indices, torch.arange(len(indices))] = 1.0
    return out


class CharCNNRNN(nn.Module):
    """Char-CNN-RNN text encoder (Reed et al. 2016, reduced): caption -> ``text_dim`` vector.

    Args:
        text_dim (int, 64): the embedding size (the StackGAN generator's ``text_dim``).
        channels (int, 64): convolution channels. hidden (int, 64): GRU size.
        max_length (int, 64): characters read.
    """

    def __init__(self, text_dim=64, channels=64, hidden=64, max_length=64):
        super().__init__()
        self.config = {"text_dim": text_dim, "channels": channels, "hidden": hidden, "max_length": max_length}
        self.max_length = max_length
        self.conv1 = nn.Conv1d(len(ALPHABET), channels, 4)
        self.conv2 = nn.Conv1d(channels, channels, 4)
        self.rnn = nn.GRU(channels, hidden, batch_first=True)
        self.fc = nn.Linear(hidden, text_dim)

    def forward(self, chars: torch.Tensor) -> torch.Tensor:
        """One-hot characters (n, alphabet, L) -> embeddings (n, text_dim)."""
        h = F.max_pool1d(F.relu(self.conv1(chars)), 3)             # (n, C, (L - 3) / 3)
        h = F.max_pool1d(F.relu(self.conv2(h)), 3)                 # (n, C, T)
        states, _ = self.rnn(h.transpose(1, 2))                    # (n, T, hidden)
        return self.fc(states.mean(1))

    def encode(self, captions: list[str]) -> torch.Tensor:
        """Captions -> embeddings (n, text_dim), on the encoder's device."""
        if any(not isinstance(c, str) or not c.strip() for c in captions):
            raise InvalidInput("a caption must be non-empty text")
        device = self.fc.weight.device
        return self(encode_chars(captions, self.max_length).to(device))


class ImageEncoder(nn.Module):
    """Image (n, 3, S, S) in [-1, 1] -> (n, text_dim): the image side of the joint embedding."""

    def __init__(self, text_dim=64, channels=32):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(3, channels, 4, 2, 1), nn.LeakyReLU(0.2),
            nn.Conv2d(channels, channels * 2, 4, 2, 1), nn.LeakyReLU(0.2),
            nn.Conv2d(channels * 2, channels * 4, 4, 2, 1), nn.LeakyReLU(0.2),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(channels * 4, text_dim))

    def forward(self, images):
        return self.net(images)


def matching_loss(image_features, text_features, caption_ids, scale=5.0) -> torch.Tensor:
    """Reed et al.'s symmetric matching objective, with the softmax surrogate of the 0-1 loss.

    Args:
        image_features, text_features: (n, d); ``scale`` x their cosines are the compatibility F.
        caption_ids: (n,) ints, equal for equal captions (one class).

    Returns:
        mean over i of [-log softmax_j F(v_i, t_j) at j = i] + [-log softmax_j F(v_j, t_i) at j = i],
        the other images and captions of the batch being the other classes (pairs of equal
        captions off the diagonal are left out). Reed et al. bound the 0-1 loss with a hinge
        on the best wrong class; trained from scratch on a small encoder, that hinge settles on
        equal features for every input (every score equal, loss 2), the softmax does not.
    """
    scores = scale * F.normalize(image_features, dim=1) @ F.normalize(text_features, dim=1).t()   # F(v_i, t_j)
    same_elsewhere = (caption_ids[:, None] == caption_ids[None, :]) & ~torch.eye(
        len(scores), dtype=torch.bool, device=scores.device)
    scores = scores.masked_fill(same_elsewhere, float("-inf"))
    target = torch.arange(len(scores), device=scores.device)
    return F.cross_entropy(scores, target) + F.cross_entropy(scores.t(), target)


def train_text_encoder(images: torch.Tensor, captions: list[str], steps=400, batch_size=64, text_dim=64,
                       lr=2e-3, seed=0, progress=None) -> tuple[CharCNNRNN, list[float]]:
    """Train a ``CharCNNRNN`` with ``matching_loss`` against a fresh ``ImageEncoder``.

    Args:
        images: float (N, 3, S, S) in [-1, 1] (S >= 32; they are read at 32 x 32).
        captions: N captions, one per image.
        steps, batch_size, lr: Adam steps on random batches (seeded by ``seed``).

    Returns:
        (the encoder in eval mode, the loss of every step).
    """
    if len(captions) != len(images):
        raise InvalidInput(f"{len(captions)} captions for {len(images)} images")
    generator = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        encoder, image_encoder = CharCNNRNN(text_dim), ImageEncoder(text_dim)
    small = F.interpolate(images, size=(32, 32), mode="area") if images.shape[-1] != 32 else images
    names = sorted(set(captions))
    ids = torch.tensor([names.index(c) for c in captions])
    chars = encode_chars(captions, encoder.max_length)
    params = list(encoder.parameters()) + list(image_encoder.parameters())
    optimizer = torch.optim.Adam(params, lr=lr)
    losses = []
    for step in range(steps):
        batch = torch.randperm(len(images), generator=generator)[:batch_size]
        loss = matching_loss(image_encoder(small[batch]), encoder(chars[batch]), ids[batch])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
        if progress is not None:
            progress(step + 1, steps)
    return encoder.eval(), losses


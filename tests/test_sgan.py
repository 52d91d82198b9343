"""SGAN: the converter against a direct numpy computation of the Lasagne / Theano semantics,
strict loading, the paper's losses, training steps, the demo weights and the pipeline's checks.

The reference (Theano / Lasagne 0.1) cannot run here, so its semantics are written out in
numpy below, from its ``nn.py`` and Lasagne's layers: a ``DenseLayer`` is ``x @ W + b``; a
``Conv2DDNNLayer`` a cross-correlation; ``nn.Deconv2DLayer`` Theano's
``AbstractConv2d_gradInputs`` (``filter_flip=True``), i.e. the transpose (the gradient) of a
*true* convolution, computed here by scattering; ``BatchNormLayer`` normalises with
``sqrt(1e-6 + var)``. Parameter files are written as the reference saves them
(``np.savez(f, *get_all_param_values(layer))``) from seeded weights.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from models import registry
from models.errors import InvalidInput, WeightsMissing
from models.sgan import convert
from models.sgan.networks import (
    CIFAR_G0,
    CIFAR_G1,
    MNIST_ENCODER,
    MNIST_G0,
    MNIST_G1,
    Discriminator0,
    Discriminator1,
    Encoder,
    Generator0,
    Generator1,
)
from models.types import ImageCondition
from models.weights import WeightsInvalid

TINY = {
    "encoder": dict(in_channels=1, image_size=28, channels=(4, 4), feature_dim=16, num_classes=10),
    "g1": dict(z_dim=6, num_classes=10, feature_dim=16, hidden=16, z_embed=0, y_embed=0),
    "g0": dict(z_dim=5, feature_dim=16, z_embed=(8,), base_channels=8, base_size=4, channels=(8, 6, 6),
               out_channels=1),
    "d1": dict(feature_dim=16, hidden=16, z_dim=6),
    "d0": dict(in_channels=1, image_size=28, channels=(4, 4, 4), hidden=16, z_dim=5),
}


# ---------------------------------------------------------------------------------------
# The reference's semantics in numpy


def np_dense(x, W, b=None):
    out = x.reshape(len(x), -1) @ W
    return out if b is None else out + b


def np_conv_cross(x, W, b, stride=1, pad=0):
    """dnn.Conv2DDNNLayer (flip_filters=False): cross-correlation."""
    x = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    n, _, h, w = x.shape
    k = W.shape[2]
    oh, ow = (h - k) // stride + 1, (w - k) // stride + 1
    out = np.zeros((n, W.shape[0], oh, ow))
    for i in range(oh):
        for j in range(ow):
            patch = x[:, :, i * stride:i * stride + k, j * stride:j * stride + k]
            out[:, :, i, j] = np.einsum("ncab,kcab->nk", patch, W)
    return out + b[None, :, None, None]


def np_deconv_theano(x, W, target, stride, pad, b=None):
    """AbstractConv2d_gradInputs(filter_flip=True): the gradient w.r.t. its input of the true
    convolution ``out[k] = sum_c in_padded[c] (*) W[k, c]`` (kernel flipped), for an input of
    ``target`` (h, w) padded by ``pad``: scatter each output pixel back through the kernel."""
    n, k_in, ih, iw = x.shape
    ks = W.shape[2]
    flipped = W[:, :, ::-1, ::-1]
    grad = np.zeros((n, W.shape[1], target[0] + 2 * pad + ks, target[1] + 2 * pad + ks))
    for i in range(ih):
        for j in range(iw):
            # the true convolution's output (i, j) saw padded input rows i*s .. i*s+ks-1 with W flipped
            grad[:, :, i * stride:i * stride + ks, j * stride:j * stride + ks] += np.einsum(
                "nk,kcab->ncab", x[:, :, i, j], flipped)
    out = grad[:, :, pad:pad + target[0], pad:pad + target[1]]
    return out if b is None else out + b[None, :, None, None]


def np_bn(x, b, g, mean, var):
    shape = (1, -1) + (1,) * (x.ndim - 2)
    return (x - mean.reshape(shape)) / np.sqrt(1e-6 + var.reshape(shape)) * g.reshape(shape) + b.reshape(shape)


def relu(x):
    return np.maximum(x, 0)


def sigmoid(x):
    return 1 / (1 + np.exp(-x))


def maxpool2(x):
    n, c, h, w = x.shape
    x = x[:, :, :h // 2 * 2, :w // 2 * 2]
    return x.reshape(n, c, h // 2, 2, w // 2, 2).max(axis=(3, 5))


class Take:
    def __init__(self, arrays):
        self.arrays, self.i = arrays, 0

    def __call__(self, count=1):
        out = self.arrays[self.i:self.i + count]
        self.i += count
        return out if count > 1 else out[0]


def np_dense_bn(x, take):
    W, (b, g, m, v) = take(), take(4)
    return relu(np_bn(np_dense(x, W), b, g, m, v))


def np_g1(arrays, z1, y, embedded):
    take = Take(arrays)
    if embedded:
        z1, y = np_dense_bn(z1, take), np_dense_bn(y, take)
    h = np.concatenate([z1, y], 1)
    h = np_dense_bn(np_dense_bn(h, take), take)
    W, b = take(2)
    return relu(np_dense(h, W, b))


def np_g0(arrays, h1, z0, n_embed, base, sizes):
    """sizes: the target sides of the four deconvolutions (MNIST 8, 12, 24, 28)."""
    take = Take(arrays)
    for _ in range(n_embed):
        z0 = np_dense_bn(z0, take)
    h = np_dense_bn(np.concatenate([h1, z0], 1), take).reshape(len(h1), base[0], base[1], base[1])
    for side, stride in zip(sizes[:3], (2, 1, 2)):
        W, (b, g, m, v) = take(), take(4)
        pad = 2 if stride == 2 else 0
        h = relu(np_bn(np_deconv_theano(h, W, (side, side), stride, pad), b, g, m, v))
    W, b = take(2)
    return sigmoid(np_deconv_theano(h, W, (sizes[3], sizes[3]), 1, 0, b))


def np_encoder(arrays, x):
    W1, b1, W2, b2, W3, b3, W4, b4 = arrays
    h = maxpool2(relu(np_conv_cross(x, W1, b1)))
    h = maxpool2(relu(np_conv_cross(h, W2, b2)))
    h1 = relu(np_dense(h, W3, b3))
    logits = np_dense(h1, W4, b4)
    e = np.exp(logits - logits.max(1, keepdims=True))
    return h1, e / e.sum(1, keepdims=True)


# ---------------------------------------------------------------------------------------
# Files in the reference's layout, from seeded weights


def dense_arrays(rng, n_in, n_out, bn):
    arrays = [rng.normal(0, 1.5 / np.sqrt(n_in), (n_in, n_out))]                       # unsaturated outputs
    if bn:
        arrays += [rng.normal(0, 0.1, n_out), rng.uniform(0.5, 1.5, n_out), rng.normal(0, 0.1, n_out),
                   rng.uniform(0.5, 2.0, n_out)]
    else:
        arrays += [rng.normal(0, 0.1, n_out)]
    return arrays


def deconv_arrays(rng, c_in, c_out, bn):
    arrays = [rng.normal(0, 3.0 / np.sqrt(c_in * 25), (c_in, c_out, 5, 5))]
    if bn:
        arrays += [rng.normal(0, 0.1, c_out), rng.uniform(0.5, 1.5, c_out), rng.normal(0, 0.1, c_out),
                   rng.uniform(0.5, 2.0, c_out)]
    else:
        arrays += [rng.normal(0, 0.1, c_out)]
    return arrays


def g1_arrays(rng, c):
    arrays = []
    if c["z_embed"]:
        arrays += dense_arrays(rng, c["z_dim"], c["z_embed"], True)
        arrays += dense_arrays(rng, c["num_classes"], c["y_embed"], True)
    joined = (c["z_embed"] or c["z_dim"]) + (c["y_embed"] or c["num_classes"])
    arrays += dense_arrays(rng, joined, c["hidden"], True) + dense_arrays(rng, c["hidden"], c["hidden"], True)
    return arrays + dense_arrays(rng, c["hidden"], c["feature_dim"], False)


def g0_arrays(rng, c):
    arrays, n_in = [], c["z_dim"]
    for units in c["z_embed"]:
        arrays += dense_arrays(rng, n_in, units, True)
        n_in = units
    arrays += dense_arrays(rng, c["feature_dim"] + n_in, c["base_channels"] * c["base_size"] ** 2, True)
    channels = [c["base_channels"], *c["channels"]]
    for a, b in zip(channels[:-1], channels[1:]):
        arrays += deconv_arrays(rng, a, b, True)
    return arrays + deconv_arrays(rng, channels[-1], c["out_channels"], False)


def encoder_arrays(rng, c):
    c1, c2 = c["channels"]
    side = ((c["image_size"] - 4) // 2 - 4) // 2
    return [rng.normal(0, 0.1, (c1, c["in_channels"], 5, 5)), rng.normal(0, 0.1, c1),
            rng.normal(0, 0.05, (c2, c1, 5, 5)), rng.normal(0, 0.1, c2),
            rng.normal(0, 0.05, (c2 * side * side, c["feature_dim"])), rng.normal(0, 0.1, c["feature_dim"]),
            rng.normal(0, 0.1, (c["feature_dim"], c["num_classes"])), rng.normal(0, 0.1, c["num_classes"])]


def save_reference(path, arrays):
    """What the reference's np.savez(path, *LL.get_all_param_values(layer)) writes."""
    arrays = [a.astype(np.float32) for a in arrays]
    np.savez(path, *arrays)
    return arrays


# ---------------------------------------------------------------------------------------
# Converter and equivalence


def test_dense_and_deconv_layers_match_theano(tmp_path):
    """One dense and one deconvolution (stride 2, 'half'), checked alone."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(3, 7)).astype(np.float32)
    W, b = rng.normal(size=(7, 5)).astype(np.float32), rng.normal(size=5).astype(np.float32)
    reader = convert._Arrays([W, b], "dense")
    linear = torch.nn.Linear(7, 5)
    reader.dense("l", linear)
    linear.load_state_dict({"weight": reader.state["l.weight"], "bias": reader.state["l.bias"]})
    np.testing.assert_allclose(linear(torch.from_numpy(x)).detach().numpy(), np_dense(x, W, b), atol=1e-5)

    from models.sgan.networks import deconv
    x = rng.normal(size=(2, 3, 4, 4)).astype(np.float32)
    W = rng.normal(size=(3, 2, 5, 5)).astype(np.float32)
    b = rng.normal(size=2).astype(np.float32)
    layer = deconv(3, 2, stride=2)
    reader = convert._Arrays([W, b], "deconv")
    reader.deconv("d", layer)
    layer.load_state_dict({"weight": reader.state["d.weight"], "bias": reader.state["d.bias"]})
    ours = layer(torch.from_numpy(x)).detach().numpy()
    assert ours.shape == (2, 2, 8, 8)
    np.testing.assert_allclose(ours, np_deconv_theano(x, W, (8, 8), 2, 2, b), atol=1e-5)
    # Without the flip the result differs: Theano's deconvolution is not PyTorch's as it is.
    unflipped = torch.nn.functional.conv_transpose2d(torch.from_numpy(x), torch.from_numpy(W), torch.from_numpy(b),
                                                     stride=2, padding=2, output_padding=1).numpy()
    assert np.abs(unflipped - ours).max() > 1e-2


def test_mnist_files_convert_and_match_the_reference(tmp_path):
    rng = np.random.default_rng(1)
    enc = save_reference(tmp_path / "encoder.npz", encoder_arrays(rng, MNIST_ENCODER))
    g1 = save_reference(tmp_path / "gen1_params_epoch7.npz", g1_arrays(rng, MNIST_G1))
    g0 = save_reference(tmp_path / "gen0_params_epoch7.npz", g0_arrays(rng, MNIST_G0))
    save_reference(tmp_path / "gen0_params_epoch3.npz", g0_arrays(rng, MNIST_G0))       # an older epoch
    assert len(enc) == 8 and len(g1) == 12 and len(g0) == 27
    networks, names = convert.convert_source(tmp_path)
    assert set(networks) == {"encoder", "g1", "g0"} and "gen0_params_epoch7.npz" in names
    assert networks["g1"].config == Generator1(**MNIST_G1).config
    assert networks["g0"].config == Generator0(**MNIST_G0).config

    z1, z0 = rng.uniform(size=(4, 50)).astype(np.float32), rng.uniform(size=(4, 50)).astype(np.float32)
    y = np.eye(10, dtype=np.float32)[[0, 3, 7, 9]]
    with torch.no_grad():
        h1 = networks["g1"](torch.from_numpy(z1), torch.from_numpy(y))
        x = networks["g0"](h1, torch.from_numpy(z0))
        e_h1 = networks["encoder"](x)
        e_y = networks["encoder"].classify(e_h1)
    ref_h1 = np_g1(g1, z1, y, embedded=False)
    ref_x = np_g0(g0, ref_h1, z0, 1, (128, 4), (8, 12, 24, 28))
    ref_e_h1, ref_e_y = np_encoder(enc, ref_x)
    assert x.shape == (4, 1, 28, 28)
    np.testing.assert_allclose(h1.numpy(), ref_h1, atol=1e-4)
    np.testing.assert_allclose(x.numpy(), ref_x, atol=1e-4)
    np.testing.assert_allclose(e_h1.numpy(), ref_e_h1, atol=1e-4)
    np.testing.assert_allclose(e_y.numpy(), ref_e_y, atol=1e-5)


def test_cifar_generator_file_converts_and_loads_as_the_authors_weights(tmp_path):
    rng = np.random.default_rng(2)
    g1, g0 = g1_arrays(rng, CIFAR_G1), g0_arrays(rng, CIFAR_G0)
    arrays = save_reference(tmp_path / "generator.npz", g1 + g0)                          # G0's graph holds G1
    assert len(arrays) == 54
    pipe = registry.load("sgan", weights=tmp_path, device="cpu")
    assert pipe.g1.config == Generator1(**CIFAR_G1).config and pipe.g0.config == Generator0(**CIFAR_G0).config
    z1, z0 = rng.uniform(size=(2, 50)).astype(np.float32), rng.uniform(size=(2, 16)).astype(np.float32)
    y = np.eye(10, dtype=np.float32)[[1, 8]]
    with torch.no_grad():
        x = pipe.g0(pipe.g1(torch.from_numpy(z1), torch.from_numpy(y)), torch.from_numpy(z0)).numpy()
    ref = np_g0(arrays[22:], np_g1(arrays[:22], z1, y, embedded=True), z0, 2, (256, 5), (10, 14, 28, 32))
    np.testing.assert_allclose(x, ref, atol=1e-4)
    torch.manual_seed(0)
    images = pipe(n=2, condition=ImageCondition(label=4))
    assert images.images.shape == (2, 32, 32, 3) and images.info["dataset"] == "cifar10"


def test_converted_folder_is_a_project_folder(tmp_path):
    rng = np.random.default_rng(3)
    save_reference(tmp_path / "generator.npz", g1_arrays(rng, CIFAR_G1) + g0_arrays(rng, CIFAR_G0))
    out = convert.convert(tmp_path / "generator.npz", tmp_path / "out")
    pipe = registry.load("sgan", weights=out, device="cpu")
    torch.manual_seed(0)
    assert pipe(n=1).images.shape == (1, 32, 32, 3)


def test_files_that_are_not_sgan_are_refused(tmp_path):
    rng = np.random.default_rng(4)
    arrays = g0_arrays(rng, MNIST_G0)
    save_reference(tmp_path / "short.npz", arrays[:-1])
    with pytest.raises(WeightsInvalid, match="26 arrays"):
        convert.convert_file(tmp_path / "short.npz")
    arrays[7] = arrays[7][:100]                                                         # a wrong shape
    save_reference(tmp_path / "bad.npz", arrays)
    with pytest.raises(WeightsInvalid, match="arr_"):
        convert.convert_file(tmp_path / "bad.npz")
    with pytest.raises(WeightsMissing, match="generator.npz"):
        registry.load("sgan", weights=tmp_path / "empty", device="cpu")


def test_networks_load_strictly():
    g0 = Generator0(**TINY["g0"])
    state = g0.state_dict()
    loaded = registry.load_network("sgan", "g0", state, **TINY["g0"])
    for key, value in loaded.state_dict().items():
        assert torch.equal(value, state[key])
    state.pop("deconv4.bias")
    with pytest.raises(WeightsInvalid):
        registry.load_network("sgan", "g0", state, **TINY["g0"])
    with pytest.raises(WeightsInvalid):
        registry.load_network("sgan", "g1", Generator1(**TINY["g1"]).state_dict())     # published sizes differ


# ---------------------------------------------------------------------------------------
# Formulas


def test_batch_norm_is_the_reference_batch_norm():
    """Training: biased batch variance, eps 1e-6 in the root; averages 0.9 old + 0.1 batch (variance n/(n-1))."""
    rng = np.random.default_rng(5)
    block = Generator0(**TINY["g0"]).fc
    x = torch.from_numpy(rng.normal(size=(6, 24)).astype(np.float32))
    with torch.no_grad():
        block.bn.weight.uniform_(0.5, 1.5), block.bn.bias.normal_()
    block.train()
    out = block(x).detach().numpy()
    pre = (x @ block.linear.weight.T).detach().numpy()
    mean, var = pre.mean(0), pre.var(0)
    ref = relu((pre - mean) / np.sqrt(1e-6 + var) * block.bn.weight.detach().numpy() + block.bn.bias.detach().numpy())
    np.testing.assert_allclose(out, ref, atol=1e-4)
    np.testing.assert_allclose(block.bn.running_mean.numpy(), 0.1 * mean, atol=1e-5)
    np.testing.assert_allclose(block.bn.running_var.numpy(), 0.9 + 0.1 * var * 6 / 5, atol=1e-4)


def test_generator_sizes_follow_the_reference():
    assert Generator0(**MNIST_G0).image_size == 28 and Generator0(**CIFAR_G0).image_size == 32
    d0, d1 = Discriminator0(), Discriminator1()
    prob, z = d0(torch.rand(3, 1, 28, 28))
    assert prob.shape == (3,) and z.shape == (3, 50) and ((prob > 0) & (prob < 1)).all()
    assert d0.fc.in_features == 128 * 4 * 4 and d1(torch.rand(2, 256))[1].shape == (2, 50)
    assert Encoder().fc3.in_features == 32 * 4 * 4


def test_entropy_loss_and_frozen_running_stats():
    from models.sgan.train import frozen_running_stats

    g0 = Generator0(**TINY["g0"]).train()
    before = {k: v.clone() for k, v in g0.state_dict().items() if "running" in k}
    with frozen_running_stats(g0):
        g0(torch.rand(4, 16), torch.rand(4, 5))
    assert all(torch.equal(before[k], g0.state_dict()[k]) for k in before)
    g0(torch.rand(4, 16), torch.rand(4, 5))
    assert not all(torch.equal(before[k], g0.state_dict()[k]) for k in before)


# ---------------------------------------------------------------------------------------
# Training


def write_digits(folder, per_class=4):
    from PIL import Image

    from models.sgan.demo import labelled_digits

    images, labels = labelled_digits()
    for k in range(10):
        (folder / str(k)).mkdir(parents=True, exist_ok=True)
        for i, image in enumerate(images[labels == k][:per_class]):
            Image.fromarray(image).save(folder / str(k) / f"{i}.png")
    return folder


def tiny_trainer(tmp_path, **options):
    from models.sgan import train as training

    data = write_digits(tmp_path / "digits")
    config = training.TrainConfig(data_dir=str(data), out_dir=str(tmp_path / "run"), batch_size=20, progress=False,
                                  sample_every=0, resume=False, device="cpu", **{**TINY, **options})
    return training.Trainer(config)


def test_training_steps_lower_each_loss(tmp_path):
    """On a fixed batch and fixed noise: E's steps lower its cross-entropy, D's steps every D / Q
    term, G's steps every G term (adversarial, conditional, entropy, both levels)."""
    torch.manual_seed(0)
    trainer = tiny_trainer(tmp_path, encoder_steps=0, lr=1e-3, disc_lr=1e-3, encoder_lr=3e-3)
    batch = next(iter(trainer.epoch_loader(0)))
    x, y = batch["x"], batch["y"]
    enc = [trainer.encoder_step(x, y)["enc_ce"] for _ in range(30)]
    assert np.mean(enc[-3:]) < np.mean(enc[:3])
    for _ in range(5):                                   # away from the initial point
        trainer.gan_step(x, y, joint=True)
    z1, z0 = torch.rand(len(x), 6), torch.rand(len(x), 5)
    trainer.noise = lambda n: (z1, z0)
    y_onehot, real_h1 = trainer.gan_inputs(x, y)
    sides = ((lambda: trainer.disc_losses(x, y_onehot, real_h1, True), (trainer.d1, trainer.d0)),
             (lambda: trainer.gen_losses(y, y_onehot, real_h1, True), (trainer.g1, trainer.g0)))
    for losses, networks in sides:
        saved = [copy.deepcopy(net.state_dict()) for net in networks]
        for name in [k for k in losses() if k != "total"]:
            optimizer = torch.optim.Adam([p for net in networks for p in net.parameters()], lr=1e-3)
            before = losses()[name].item()
            for _ in range(3):
                optimizer.zero_grad()
                losses()[name].backward()
                optimizer.step()
            assert losses()[name].item() < before, name
            for net, state in zip(networks, saved):
                net.load_state_dict(state)


def test_a_training_run_loads_as_weights(tmp_path):
    from models.sgan.train import train

    write_digits(tmp_path / "digits")
    summary = train(tmp_path / "digits", tmp_path / "run", progress=False, batch_size=20, max_steps=3,
                    encoder_steps=1, independent_steps=1, sample_every=2, device="cpu", **TINY)
    assert summary["step"] == 3 and (tmp_path / "run" / "samples" / "step_000002.png").is_file()
    pipe = registry.load("sgan", weights=tmp_path / "run", device="cpu")
    torch.manual_seed(1)
    out = pipe(n=3, condition=ImageCondition(label=2), levels=True)
    assert out.images.shape == (3, 28, 28, 3) and out.levels[0][1].shape == (3, 28, 28, 3)
    # Resuming continues the same run.
    assert train(tmp_path / "digits", tmp_path / "run", progress=False, batch_size=20, max_steps=4,
                 encoder_steps=1, independent_steps=1, device="cpu", **TINY)["step"] == 4


def test_train_needs_class_folders(tmp_path):
    from models.sgan.commands import train as train_command
    from models.sgan.train import read_labelled_folder

    (tmp_path / "flat").mkdir()
    with pytest.raises(InvalidInput, match="class sub-folders"):
        read_labelled_folder(tmp_path / "flat")
    import argparse

    from models.errors import TalkingFaceError
    with pytest.raises(TalkingFaceError, match="--images"):
        train_command(argparse.Namespace(images=None, out=str(tmp_path / "run")))


# ---------------------------------------------------------------------------------------
# The demo weights and the pipeline


@pytest.fixture(scope="module")
def demo_pipe():
    return registry.load("sgan", device="cpu")


def test_demo_weights_sample_reproducibly(demo_pipe):
    assert "demo" in demo_pipe.info["weights"]
    torch.manual_seed(0)
    first = demo_pipe(n=2, condition=ImageCondition(label=3), levels=True)
    torch.manual_seed(0)
    again = demo_pipe(n=2, condition=ImageCondition(label=3), levels=True)
    torch.manual_seed(1)
    other = demo_pipe(n=2, condition=ImageCondition(label=3))
    assert first.images.shape == (2, 28, 28, 3) and first.images.dtype == np.uint8
    assert np.array_equal(first.images, again.images) and np.array_equal(first.levels[0][1], again.levels[0][1])
    assert not np.array_equal(first.images, other.images)
    assert first.info["labels"] == [3, 3] and first.info["label_source"] == "given"
    torch.manual_seed(0)
    random = demo_pipe(n=6)
    assert random.info["label_source"] == "random" and random.levels == []
    # Grey digits: the three channels are equal; the images are not blank.
    assert np.array_equal(first.images[..., 0], first.images[..., 2]) and first.images.std() > 10


@pytest.mark.parametrize("condition, n", [
    (ImageCondition(label=10), 1), (ImageCondition(label=-1), 1), (ImageCondition(text="a seven"), 1),
    (ImageCondition(vector=np.zeros(4, np.float32)), 1), (ImageCondition(label=True), 1), (None, 0),
])
def test_bad_conditions_are_refused(demo_pipe, condition, n):
    with pytest.raises(InvalidInput):
        demo_pipe(n=n, condition=condition)


def test_sampling_is_top_down_with_the_documented_draws(demo_pipe):
    """y, z1 ~ U[0,1), z0 ~ U[0,1) from the global generator; the level is G0(G1(z1, y), 1/2)."""
    from models.sgan.pipeline import to_uint8

    torch.manual_seed(5)
    out = demo_pipe(n=3, condition=ImageCondition(label=6), levels=True)
    torch.manual_seed(5)
    labels, z1, z0 = demo_pipe.sample_inputs(3, 6)
    with torch.no_grad():
        h1 = demo_pipe.g1(z1, torch.nn.functional.one_hot(labels, 10).float())
        assert np.array_equal(out.images, to_uint8(demo_pipe.g0(h1, z0)))
        assert np.array_equal(out.levels[0][1], to_uint8(demo_pipe.g0(h1, torch.full_like(z0, 0.5))))
    assert out.levels[0][0] == "h1_z0_mean"


def test_commands_declare_the_images_flag():
    from models.sgan.commands import COMMANDS

    assert {"train", "build-demo", "convert", "bench"} <= set(COMMANDS)
    assert "--images" in [a.name for a in COMMANDS["train"].arguments]

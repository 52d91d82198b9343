"""LAPGAN: the pyramid operators against Torch7's image.scale, the pyramid's exact
reconstruction, the networks' shapes and conditioning, training steps, the pipeline and
the demo weights."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from models import registry
from models.errors import InvalidInput, WeightsMissing
from models.lapgan import networks as nets
from models.lapgan.pipeline import LAPGANPipeline
from models.types import ImageCondition
from models.weights import WeightsInvalid


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# ---------------------------------------------------------------------------------------
# The pyramid operators


def torch7_scale_rowcol(src: np.ndarray, dst_len: int) -> np.ndarray:
    """Torch image's ``Main_scaleLinear_rowcol`` on one float32 line, loop for loop."""
    f32 = np.float32
    src_len = len(src)
    dst = np.zeros(dst_len, np.float32)
    if dst_len > src_len:
        scale = f32(src_len - 1) / f32(dst_len - 1)
        for di in range(dst_len - 1):
            si_f = f32(di) * scale
            si_i = int(si_f)
            si_f = f32(si_f - f32(si_i))
            dst[di] = (f32(1) - si_f) * src[si_i] + si_f * src[si_i + 1]
        dst[dst_len - 1] = src[src_len - 1]
    elif dst_len < src_len:
        si0_i, si0_f = 0, f32(0)
        scale = f32(src_len) / f32(dst_len)
        for di in range(dst_len):
            si1_f = f32(di + 1) * scale
            si1_i = int(si1_f)
            si1_f = f32(si1_f - f32(si1_i))
            acc = (f32(1) - si0_f) * src[si0_i]
            n = f32(1) - si0_f
            for si in range(si0_i + 1, si1_i):
                acc += src[si]
                n += f32(1)
            if si1_i < src_len:
                acc += si1_f * src[si1_i]
                n += si1_f
            dst[di] = acc / n
            si0_i, si0_f = si1_i, si1_f
    else:
        dst[:] = src
    return dst


def torch7_scale_bilinear(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """``image.scale(img, width, height, 'bilinear')`` of one (C, H, W) image: rows, then columns."""
    channels, src_h, _ = image.shape
    tmp = np.zeros((channels, src_h, width), np.float32)
    out = np.zeros((channels, height, width), np.float32)
    for k in range(channels):
        for j in range(src_h):
            tmp[k, j] = torch7_scale_rowcol(image[k, j], width)
        for i in range(width):
            out[k, :, i] = torch7_scale_rowcol(tmp[k, :, i], height)
    return out


@pytest.mark.parametrize("src,dst", [(32, 16), (32, 8), (16, 8), (8, 16), (16, 32), (10, 4), (5, 13), (7, 7)])
def test_image_scale_matches_torch7_image_scale(src, dst):
    image = torch.rand(2, 3, src, src, generator=torch.Generator().manual_seed(src * 100 + dst)) * 4 - 2
    ours = nets.image_scale(image, dst).numpy()
    for n in range(2):
        theirs = torch7_scale_bilinear(image[n].numpy(), dst, dst)
        np.testing.assert_allclose(ours[n], theirs, rtol=0, atol=2e-6)


def test_downsampling_by_two_averages_boxes_and_upsampling_aligns_corners():
    image = torch.arange(16.0).reshape(1, 1, 4, 4)
    np.testing.assert_allclose(nets.downsample(image, 2)[0, 0].numpy(), [[2.5, 4.5], [10.5, 12.5]])
    up = nets.upsample(torch.tensor([[[[0.0, 3.0], [6.0, 9.0]]]]), 4)[0, 0]
    np.testing.assert_allclose(up.numpy(), [[0, 1, 2, 3], [2, 3, 4, 5], [4, 5, 6, 7], [6, 7, 8, 9]], atol=1e-5)


def test_pyramid_reconstructs_exactly_from_true_residuals():
    images = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    coarsest, residuals = nets.laplacian_pyramid(images, nets.SIZES)
    assert coarsest.shape == (3, 3, 8, 8)
    assert [r.shape[-1] for r in residuals] == [16, 32]
    levels = nets.reconstruct(coarsest, residuals, nets.SIZES)
    assert (levels[-1] - images).abs().max() < 1e-5
    # each level is the low-pass image of its size: I_k = l_k(I) (Eq. 3)
    assert (levels[1] - nets.image_scale(images, 16)).abs().max() < 1e-5
    # h_k = l_k(I) - u(l_{k+1}(I)) holds by definition
    expected = nets.image_scale(images, 16) - nets.upsample(nets.image_scale(images, 8), 16)
    assert torch.equal(residuals[0], expected)
    # and the band-pass images carry what the coarse level lacks: without them it is not the image
    assert (nets.reconstruct(coarsest, [torch.zeros_like(r) for r in residuals], nets.SIZES)[-1]
            - images).abs().max() > 0.1


# ---------------------------------------------------------------------------------------
# The networks


def published():
    config = nets.published_config()
    return {name: nets.network_class(name)(**kwargs).eval() for name, kwargs in config.items()}


def test_published_sizes_and_shapes_per_level():
    torch.manual_seed(0)
    networks = published()
    n = 4
    label = nets.one_hot(torch.tensor([0, 3, 9, 1]), 10)
    coarse = networks["coarse"](torch.rand(n, 100) * 2 - 1, label)
    assert coarse.shape == (n, 3, 8, 8)
    assert networks["coarse"].net[0].weight.shape == (1200, 110)
    assert networks["coarse_d"].h1.weight.shape == (600, 3 * 64 + 10)
    assert networks["coarse_d"](coarse, label).shape == (n, 1)
    image = coarse
    for k, size in ((1, 16), (2, 32)):
        g, d = networks[f"level{k}"], networks[f"level{k}_d"]
        assert g.g2.weight.shape == (64, 5, 7, 7)           # noise + class plane + RGB
        assert g.g4.weight.shape == (3, 64, 5, 5)
        assert g.class1.weight.shape == (size * size, 10)
        up = nets.upsample(image, size)
        residual = g(torch.rand(n, 1, size, size), label, up)
        assert residual.shape == (n, 3, size, size)
        side = ((size - 4) - 5) // 2 + 1
        assert d.d6.weight.shape == (1, 64 * side * side)
        probability = d(residual, label, up)
        assert probability.shape == (n, 1) and ((probability > 0) & (probability < 1)).all()
        image = up + residual


def test_class_conditioning_changes_every_level():
    torch.manual_seed(0)
    networks = published()
    z = torch.rand(2, 100) * 2 - 1
    a, b = nets.one_hot(torch.tensor([1, 1]), 10), nets.one_hot(torch.tensor([7, 7]), 10)
    assert (networks["coarse"](z, a) - networks["coarse"](z, b)).abs().max() > 1e-4
    noise, coarse = torch.rand(2, 1, 16, 16), torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        networks["level1"].class1.bias.zero_()      # the class plane is all the label changes
    assert (networks["level1"](noise, a, coarse) - networks["level1"](noise, b, coarse)).abs().max() > 1e-4
    assert (networks["level1_d"](coarse, a, coarse) - networks["level1_d"](coarse, b, coarse)).abs().max() > 0


def test_unconditional_networks_take_no_class():
    g = nets.CoarseGenerator(classes=0, hidden=32)
    assert isinstance(g.net[3], torch.nn.Sigmoid)            # train_cifar.lua's second activation
    assert g(torch.rand(2, 100)).shape == (2, 3, 8, 8)
    level = nets.LevelGenerator(16, classes=0, hidden=8)
    assert level.g2.weight.shape[1] == 4 and not hasattr(level, "class1")
    assert level(torch.rand(2, 1, 16, 16), None, torch.rand(2, 3, 16, 16)).shape == (2, 3, 16, 16)


def test_spatial_convolution_upsample_views_the_planes_as_lua():
    layer = nets.SpatialConvolutionUpsample(2, 3, 3, factor=2)
    x = torch.randn(1, 2, 4, 5)
    plain = torch.nn.functional.conv2d(x, layer.weight, layer.bias, padding=1)      # (1, 12, 4, 5)
    assert torch.equal(layer(x), plain.reshape(1, 3, 8, 10))


def test_registry_loads_networks_strictly():
    torch.manual_seed(0)
    net = nets.LevelGenerator(16, hidden=8)
    state = {f"module.{k}": v for k, v in net.state_dict().items()}
    loaded = registry.load_network("lapgan", "level1", state, image_size=16, hidden=8)
    x = (torch.rand(2, 1, 16, 16), nets.one_hot(torch.tensor([2, 5]), 10), torch.rand(2, 3, 16, 16))
    assert torch.equal(loaded(*x), net.eval()(*x))
    with pytest.raises(WeightsInvalid, match="class1"):      # a 32x32 level has another class plane
        registry.load_network("lapgan", "level1", state, image_size=32, hidden=8)
    state.pop("module.g4.bias")
    with pytest.raises(WeightsInvalid, match="g4.bias"):
        registry.load_network("lapgan", "level1", state, image_size=16, hidden=8)


# ---------------------------------------------------------------------------------------
# Training


def small_digits(n=64, classes=4):
    from sklearn.datasets import load_digits

    digits = load_digits(n_class=classes)
    x = torch.from_numpy(digits.images[:n] / 16).float()[:, None]
    return nets.image_scale(x, 16).clamp(0, 1), torch.from_numpy(digits.target[:n]), [str(c) for c in range(classes)]


def small_trainer(tmp_path, **options):
    from models.lapgan.train import TrainConfig, Trainer

    images, labels, names = small_digits()
    config = TrainConfig(out_dir=str(tmp_path / "run"), sizes=(8, 12, 16), channels=1, coarse_hidden_g=64,
                         coarse_hidden_d=32, hidden_g=8, hidden_d=8, batch_size=32, normalize="global",
                         progress=False, sample_every=0, resume=False, **options)
    return Trainer(config, images, labels, names)


def test_a_few_steps_lower_each_levels_losses(tmp_path):
    from models.lapgan.train import level_pairs

    trainer = small_trainer(tmp_path, lr=0.05)
    for net in trainer.nets.values():        # the same D on every call: no dropout
        if hasattr(net, "dropout"):
            net.dropout.p = 0.0
    batch = trainer.dataset.images[:32]
    label = trainer.one_hot(trainer.dataset.labels[:32])
    for level, (condition, target) in enumerate(level_pairs(batch, trainer.sizes)):
        # D alone: its loss on the same real and generated halves falls
        torch.manual_seed(level)
        first = trainer.d_step(level, target, label, condition)
        for _ in range(6):
            torch.manual_seed(level)
            last = trainer.d_step(level, target, label, condition)
        assert last < first, (level, first, last)
        # G alone against the fixed D: its loss on the same noise falls
        torch.manual_seed(10 + level)
        first = trainer.g_step(level, target, label, condition)
        for _ in range(6):
            torch.manual_seed(10 + level)
            last = trainer.g_step(level, target, label, condition)
        assert last < first, (level, first, last)


def test_schedule_follows_eyescream():
    import types

    from models.lapgan.train import TrainConfig, Trainer

    config = TrainConfig()
    fake = types.SimpleNamespace(config=config, reference_epoch=10)
    assert Trainer.schedule(fake, 0) == (0.02, 0.0)
    lr, momentum = Trainer.schedule(fake, 25)                    # epoch 2
    assert lr == pytest.approx(0.02 / 1.00004 ** 2) and momentum == pytest.approx(0.0016)
    assert Trainer.schedule(fake, 10 * 10_000)[1] == 0.7


@pytest.mark.slow
def test_training_run_loads_as_weights_and_resumes(tmp_path):
    trainer = small_trainer(tmp_path, max_steps=3, log_every=1)
    summary = trainer.run()
    assert summary["step"] == 3 and summary["classes"] == 4
    pipe = registry.load("lapgan", weights=tmp_path / "run", device="cpu")
    torch.manual_seed(0)
    out = pipe(n=2, condition=ImageCondition(label=3), levels=True)
    assert out.images.shape == (2, 16, 16, 3) and [name for name, _ in out.levels] == ["8x8", "12x12", "16x16"]
    again = small_trainer(tmp_path, max_steps=5)
    again.config.resume = True
    assert again.run()["step"] == 5


def test_labels_come_from_class_folders(tmp_path):
    from PIL import Image

    from models.lapgan.train import read_labelled_folder

    for name, value in (("cat", 30), ("dog", 200)):
        (tmp_path / "set" / name).mkdir(parents=True)
        for i in range(2):
            Image.fromarray(np.full((10, 10, 3), value, np.uint8)).save(tmp_path / "set" / name / f"{i}.png")
    images, labels, names = read_labelled_folder(tmp_path / "set", 8)
    assert names == ["cat", "dog"] and labels.tolist() == [0, 0, 1, 1]
    assert images.shape == (4, 3, 8, 8) and abs(images[0].mean().item() - 30 / 255) < 0.01
    _, labels, names = read_labelled_folder(tmp_path / "set" / "cat", 8)
    assert labels is None and names == []


def test_train_command_needs_images():
    import argparse

    from models.errors import TalkingFaceError
    from models.lapgan.commands import COMMANDS

    with pytest.raises(TalkingFaceError, match="--images"):
        COMMANDS["train"](argparse.Namespace(images=None, out=None))


# ---------------------------------------------------------------------------------------
# The pipeline and the demo weights


def test_no_released_weights_is_said():
    with pytest.raises(WeightsMissing, match="released no weights"):
        LAPGANPipeline.from_pretrained("nowhere")


def test_demo_weights_sample_reproducibly():
    pipe = registry.load("lapgan", device="cpu")
    assert pipe.classes == 10 and pipe.sizes == [8, 16, 32]
    torch.manual_seed(3)
    a = pipe(n=2, condition=ImageCondition(label=7), levels=True)
    torch.manual_seed(3)
    b = pipe(n=2, condition=ImageCondition(label=7), levels=True)
    assert a.images.shape == (2, 32, 32, 3) and a.images.dtype == np.uint8
    assert np.array_equal(a.images, b.images)
    assert [name for name, _ in a.levels] == ["8x8", "16x16", "32x32"]
    assert [level.shape[1] for _, level in a.levels] == [8, 16, 32]
    assert np.array_equal(a.levels[-1][1], a.images)
    assert a.info["labels"] == [7, 7] and a.info["model"] == "lapgan"
    torch.manual_seed(4)
    c = pipe(n=2, condition=ImageCondition(label=7))
    assert not np.array_equal(a.images, c.images) and c.levels == []


def test_bad_conditions_are_refused():
    pipe = registry.load("lapgan", device="cpu")
    with pytest.raises(InvalidInput):
        pipe(n=1, condition=ImageCondition(text="a seven"))
    with pytest.raises(InvalidInput):
        pipe(n=1, condition=ImageCondition(vector=np.zeros(4, np.float32)))
    with pytest.raises(InvalidInput):
        pipe(n=1, condition=ImageCondition(label=10))
    with pytest.raises(InvalidInput):
        LAPGANPipeline.declared_options()["label"].parse(-1)
    unconditional = LAPGANPipeline([nets.CoarseGenerator(classes=0, hidden=8), nets.LevelGenerator(16, classes=0,
                                                                                                    hidden=4)],
                                   torch.zeros(1, 1, 1), torch.ones(1, 1, 1), device="cpu")
    with pytest.raises(InvalidInput, match="unconditional"):
        unconditional(n=1, condition=ImageCondition(label=1))
    torch.manual_seed(0)
    assert unconditional(n=3).images.shape == (3, 16, 16, 3)

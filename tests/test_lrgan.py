"""LR-GAN: reference equivalence, the compositing formula, training, the demo weights, the pipeline."""

import argparse
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from models import registry
from models.errors import InvalidInput, TalkingFaceError, WeightsMissing
from models.lrgan import commands
from models.lrgan.convert import convert_reference, generator_config
from models.lrgan.networks import LRGANDiscriminator, LRGANGenerator, clamp_pose, composite
from models.lrgan.pipeline import LRGANPipeline
from models.lrgan.train import TrainConfig, Trainer, discriminator_loss, generator_loss
from models.types import ImageCondition
from models.weights import WeightsInvalid

REFERENCE = Path(__file__).parent / "data" / "lrgan_reference.pt"


@pytest.fixture(scope="module")
def reference():
    return torch.load(REFERENCE, weights_only=True)


def reference_generator(reference, steps, path=None):
    c = reference["config"]
    return registry.load_network("lrgan", "generator", reference["netG"] if path is None else path,
                                 image_size=c["image_size"], ntimestep=steps, maxobjscale=c["maxobjscale"],
                                 nz=c["nz"], ngf=c["ngf"], nc=c["nc"], rot=c["rot"])


# ---------------------------------------------------------------------------------------
# The reference's networks


def test_reference_state_dict_loads_strictly_from_its_file(reference, tmp_path):
    path = tmp_path / "cifar10_netG_s_1_epoch_0.pth"
    torch.save({f"module.{k}": v for k, v in reference["netG"].items()}, path)  # DataParallel's prefix too
    net = reference_generator(reference, 2, path)
    assert not net.training
    assert set(net.state_dict()) == set(reference["netG"]) | {
        k.replace("running_mean", "num_batches_tracked") for k in reference["netG"] if k.endswith("running_mean")}
    assert torch.equal(net.Gtransform.bias, reference["netG"]["Gtransform.bias"].float())


def test_mismatched_state_dict_is_refused(reference):
    state = dict(reference["netG"])
    state.pop("Gfgm.0.bias")
    with pytest.raises(WeightsInvalid):
        registry.load_network("lrgan", "generator", state, nz=20, ngf=8)
    with pytest.raises(WeightsInvalid):
        registry.load_network("lrgan", "generator", reference["netG"], nz=20, ngf=16)


@pytest.mark.parametrize("steps", [2, 3])
def test_generator_matches_reference(reference, steps):
    run = reference[f"t{steps}"]
    net = reference_generator(reference, steps)
    with torch.no_grad():
        final, canvases, foregrounds, masks = net(run["noise"])
    assert len(canvases) == steps and len(foregrounds) == len(masks) == steps - 1
    assert final is canvases[-1]
    assert torch.allclose(torch.stack(canvases), run["canvases"], atol=1e-4, rtol=0)
    assert torch.allclose(torch.stack(foregrounds), run["fgimgs"], atol=1e-4, rtol=0)
    assert torch.allclose(torch.stack(masks), run["fgmasks"], atol=1e-4, rtol=0)
    # the foreground layers change the canvas: the compositing is exercised
    assert (canvases[-1] - canvases[0]).abs().max() > 0.1


def test_generator_matches_reference_in_train_mode(reference):
    net = reference_generator(reference, 3).train()
    with torch.no_grad():
        final, *_ = net(reference["t3"]["noise"])
    assert torch.allclose(final, reference["t3_train"]["final"], atol=1e-4, rtol=0)


def test_discriminator_matches_reference(reference):
    c = reference["config"]
    net = registry.load_network("lrgan", "discriminator", reference["netD"], image_size=c["image_size"],
                                ndf=c["ndf"], nc=c["nc"])
    with torch.no_grad():
        out = net(reference["t2"]["canvases"][-1])
    assert out.shape == (2, 1)
    assert torch.allclose(out, reference["t2"]["netD_out"], atol=1e-5, rtol=0)


def test_published_defaults():
    net = LRGANGenerator()
    assert net.config == dict(image_size=32, ntimestep=2, maxobjscale=1.2, nz=100, ngf=64, nc=3, rot=0.1)
    assert net.Gbgi[0].out_channels == 3 and net.lstmcell.hidden_size == 100
    # the pose layer starts at the identity scaled by maxobjscale (the reference's init)
    assert torch.equal(net.Gtransform.weight, torch.zeros(6, 100))
    assert net.Gtransform.bias.tolist() == pytest.approx([1.2, 0, 0, 0, 1.2, 0])
    assert LRGANDiscriminator().main[-2].in_channels == 256


# ---------------------------------------------------------------------------------------
# Formulas: the STNM compositor (Eq. 4) and the pose box


def stnm_per_pixel(canvas, fg, mask, theta):
    """The STNM kernel, one output pixel at a time: grid (y, x) = theta @ (row, col, 1) on [-1, 1]."""
    n, channels, height, width = canvas.shape
    out = torch.empty_like(canvas)
    for b in range(n):
        for i in range(height):
            for j in range(width):
                r, c = -1 + 2 * i / (height - 1), -1 + 2 * j / (width - 1)
                yf = float(theta[b, 0, 0] * r + theta[b, 0, 1] * c + theta[b, 0, 2])
                xf = float(theta[b, 1, 0] * r + theta[b, 1, 1] * c + theta[b, 1, 2])
                x, y = (xf + 1) * (width - 1) / 2, (yf + 1) * (height - 1) / 2
                x0, y0 = math.floor(x), math.floor(y)
                m, v = 0.0, torch.zeros(channels)
                for dy, dx in ((0, 0), (0, 1), (1, 0), (1, 1)):
                    yy, xx = y0 + dy, x0 + dx
                    if 0 <= yy < height and 0 <= xx < width:
                        weight = (1 - abs(x - xx)) * (1 - abs(y - yy))
                        m += weight * float(mask[b, 0, yy, xx])
                        v += weight * fg[b, :, yy, xx]
                out[b, :, i, j] = (1 - m) * canvas[b, :, i, j] + m * v
    return out


def test_composite_is_the_stnm_kernel_pixel_by_pixel():
    g = torch.Generator().manual_seed(0)
    canvas, fg = torch.rand(2, 3, 6, 7, generator=g) * 2 - 1, torch.rand(2, 3, 6, 7, generator=g) * 2 - 1
    mask = torch.rand(2, 1, 6, 7, generator=g)
    # a shrunk, sheared, shifted pose (part of the canvas outside the foreground) and an off-image one
    theta = torch.tensor([[[1.5, 0.2, 0.4], [-0.1, 1.3, -0.3]], [[1.0, 0.0, 3.0], [0.0, 1.0, 0.0]]])
    out = composite(canvas, fg, mask, theta)
    assert torch.allclose(out, stnm_per_pixel(canvas, fg, mask, theta), atol=1e-5)
    assert torch.equal(out[1], canvas[1])                  # nothing of the foreground lands: the canvas stays
    assert (out[0] - canvas[0]).abs().max() > 0.05


def test_identity_pose_blends_with_the_mask():
    canvas, fg, mask = torch.zeros(1, 3, 5, 5), torch.ones(1, 3, 5, 5), torch.full((1, 1, 5, 5), 0.25)
    out = composite(canvas, fg, mask, torch.tensor([[[1.0, 0, 0], [0, 1.0, 0]]]))
    assert torch.allclose(out, torch.full_like(out, 0.25))


def test_clamp_pose_box():
    pose = torch.tensor([[0.5, -1.0, 2.0, 0.05, 5.0, -0.5]])
    assert clamp_pose(pose, 1.2, 0.1).tolist()[0] == pytest.approx([1.2, -0.1, 1.0, 0.05, 2.4, -0.5])


def test_three_steps_need_equal_feature_depths():
    with pytest.raises(ValueError, match="ngf"):
        LRGANGenerator(ntimestep=3)(torch.randn(3, 2, 100))    # 64 background channels, 128 foreground


# ---------------------------------------------------------------------------------------
# Training


@pytest.fixture(scope="module")
def shapes_folder(tmp_path_factory):
    from models.common.images import write_demo_images

    return write_demo_images(tmp_path_factory.mktemp("shapes"), "shapes", 16, 24, seed=0)


TINY = dict(image_size=16, nz=8, ngf=4, ndf=4, batch_size=8, device="cpu", progress=False, sample_every=0)


def test_training_steps_lower_each_loss(shapes_folder, tmp_path):
    torch.manual_seed(0)
    trainer = Trainer(TrainConfig(data_dir=str(shapes_folder), out_dir=str(tmp_path / "run"), **TINY))
    g, d = trainer.generator.train(), trainer.discriminator.train()
    real = trainer.dataset.images[:8]
    noise = torch.randn(2, 8, 8)
    # the discriminator's loss on a fixed batch, under D steps alone
    with torch.no_grad():
        fake = g(noise)[0]
    before = discriminator_loss(d, real, fake)["d_loss"]
    for _ in range(5):
        d.zero_grad()
        discriminator_loss(d, real, fake)
        trainer.opt_d.step()
    d.zero_grad()
    assert discriminator_loss(d, real, fake)["d_loss"] < before
    # the generator's loss on fixed noise, under G steps alone
    before = generator_loss(d, g(noise)[0]).item()
    for _ in range(5):
        g.zero_grad()
        generator_loss(d, g(noise)[0]).backward()
        trainer.opt_g.step()
    assert generator_loss(d, g(noise)[0]).item() < before
    assert trainer.opt_d.defaults["lr"] == 2e-4 and trainer.opt_d.defaults["betas"] == (0.5, 0.999)


def test_training_run_loads_through_the_registry(shapes_folder, tmp_path):
    summary = commands.train(argparse.Namespace(images=str(shapes_folder), out=str(tmp_path / "run"), restart=False,
                                                quiet=True, max_steps=2, image_size=16, nz=8, ngf=4, ndf=4,
                                                batch_size=8, device="cpu", seed=0))
    assert summary["step"] == 2 and set(summary["losses"]) == {"g_loss", "d_loss", "d_real", "d_fake"}
    pipe = registry.load("lrgan", weights=tmp_path / "run", device="cpu")
    torch.manual_seed(1)
    assert pipe(n=3).images.shape == (3, 16, 16, 3)
    with pytest.raises(TalkingFaceError, match="--images"):
        commands.train(argparse.Namespace(images=None, out=str(tmp_path / "x"), restart=False, quiet=True))


# ---------------------------------------------------------------------------------------
# Weights: the demo folder, the reference's files


def test_demo_weights_sample_reproducibly():
    # no authors' files are released, so the registry falls back on the shipped demo folder
    assert registry.resolve_weights("lrgan", weights=None) == ("project", registry.spec("lrgan").demo)
    pipe = registry.load("lrgan", device="cpu")
    assert pipe.info["weights_dir"] == str(registry.spec("lrgan").demo)
    torch.manual_seed(0)
    first = pipe(n=2, levels=True)
    torch.manual_seed(0)
    again = pipe(n=2, levels=True)
    torch.manual_seed(1)
    other = pipe(n=2)
    assert first.images.shape == (2, 32, 32, 3) and first.images.dtype == np.uint8
    assert np.array_equal(first.images, again.images)
    assert not np.array_equal(first.images, other.images)
    assert [name for name, _ in first.levels] == ["background", "foreground 1"]
    assert np.array_equal(first.levels[-1][1], first.images)
    assert first.info["model"] == "lrgan" and first.info["device"] == "cpu"
    assert pipe(n=2, levels=False).levels == []


def test_bad_conditions_are_refused():
    pipe = LRGANPipeline(LRGANGenerator(image_size=8, nz=4, ngf=2), device="cpu")
    for condition in (ImageCondition(text="a bird"), ImageCondition(label=3),
                      ImageCondition(vector=np.zeros(4, np.float32))):
        with pytest.raises(InvalidInput):
            pipe(n=2, condition=condition)


def test_reference_file_loads_and_converts(reference, tmp_path):
    with pytest.raises(WeightsMissing, match="netG"):
        registry.load("lrgan", weights=tmp_path, device="cpu")
    torch.save(reference["netG"], tmp_path / "cifar10_netG_s_1_epoch_5.pth")
    config = generator_config(reference["netG"], "mnist-two")
    assert config == dict(image_size=32, nz=20, ngf=8, nc=3, ntimestep=3, maxobjscale=2.0, rot=0.3)
    pipe = registry.load("lrgan", weights=tmp_path, device="cpu")
    assert pipe.info["weights"] == "cifar10_netG_s_1_epoch_5.pth" and pipe.generator.ntimestep == 2
    out = convert_reference(tmp_path, tmp_path / "project")
    converted = registry.load("lrgan", weights=out, device="cpu")
    torch.manual_seed(2)
    a = pipe(n=2).images
    torch.manual_seed(2)
    assert np.array_equal(a, converted(n=2).images)

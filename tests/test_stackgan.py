"""StackGAN v1 / v2: equivalence with the authors' code, formulas, training, the pipeline and demo.

The reference tensors come from one run of the authors' model.py files on small seeded
configurations (tests/data/make_stackgan_reference.py).
"""

import json
import types
from pathlib import Path

import numpy as np
import pytest
import torch

from models import registry
from models.errors import InvalidInput, TalkingFaceError
from models.stackgan import networks as N
from models.stackgan.pipeline import RELEASES, StackGANPipeline
from models.stackgan.text import CharCNNRNN, ImageEncoder, encode_chars, matching_loss
from models.stackgan.train import (
    CaptionedImages,
    discriminator_loss,
    generator_loss,
    mean_covariance,
    weights_init,
)
from models.types import ImageCondition
from tests.seeded import seeded_state_dict

REFERENCE = Path(__file__).parent / "data" / "stackgan_reference.npz"
TOL = 1e-4


@pytest.fixture(scope="module")
def ref():
    data = np.load(REFERENCE)
    return {"arrays": data, "sizes": json.loads(str(data["sizes"])), "keys": json.loads(str(data["keys"]))}


def sub(image):
    step = image.shape[-1] // 32
    return image[:, :, ::step, ::step]


def seeded(system_network, module_prefix=False, **config):
    """registry.load_network with the seeded weights the reference used (optionally DataParallel keys)."""
    cls = registry._import(registry.spec("stackgan").networks[system_network].cls)
    state = seeded_state_dict(cls(**config).state_dict())
    if module_prefix:
        state = {"module." + k: v for k, v in state.items()}
    return registry.load_network("stackgan", system_network, state, **config)


def v1_config(size):
    return {"z_dim": size["Z_DIM"], "condition_dim": size["CONDITION_DIM"], "gf_dim": size["GF_DIM"],
            "text_dim": size["DIMENSION"]}


def v2_config(size, condition):
    return {"branch_num": size["BRANCH_NUM"], "z_dim": size["Z_DIM"], "embedding_dim": size["EMBEDDING_DIM"],
            "gf_dim": size["GF_DIM"], "r_num": size["R_NUM"], "b_condition": condition,
            "text_dim": size["DIMENSION"]}


def close(a, b):
    a = a.detach().numpy() if isinstance(a, torch.Tensor) else a
    assert a.shape == b.shape
    diff = float(np.abs(a - b).max())
    assert diff < TOL, diff
    return diff


# ---------------------------------------------------------------------------------------
# Equivalence with the authors' code


def test_v1_stage1_matches_reference(ref):
    a, size = ref["arrays"], ref["sizes"]["SMALL_V1"]
    net = seeded("v1_stage1", **v1_config(size))
    torch.manual_seed(ref["sizes"]["SEED"])
    noise = torch.empty(2, size["Z_DIM"]).normal_()
    close(noise, a["v1_stage1_noise"])
    with torch.no_grad():
        none, image, mu, logvar = net(torch.from_numpy(a["v1_text"]), noise)   # CA eps drawn inside
    assert none is None
    close(sub(image), a["v1_stage1_image"])
    close(mu, a["v1_stage1_mu"])
    close(logvar, a["v1_stage1_logvar"])


def test_v1_stage2_and_discriminators_match_reference(ref):
    a, size = ref["arrays"], ref["sizes"]["SMALL_V1"]
    net = seeded("v1_stage2", **v1_config(size), r_num=size["R_NUM"])
    torch.manual_seed(ref["sizes"]["SEED"] + 1)
    noise = torch.empty(2, size["Z_DIM"]).normal_()
    with torch.no_grad():
        low, image, mu, logvar = net(torch.from_numpy(a["v1_text"]), noise)
        assert image.shape[-1] == 256 and low.shape[-1] == 64
        close(sub(low), a["v1_stage2_low"])
        close(sub(image), a["v1_stage2_image"])
        close(mu, a["v1_stage2_mu"])
        d1 = seeded("v1_stage1_discriminator", df_dim=size["DF_DIM"], condition_dim=size["CONDITION_DIM"])
        close(d1.get_cond_logits(d1(low), mu), a["v1_d1_cond"])
        d2 = seeded("v1_stage2_discriminator", df_dim=size["DF_DIM"], condition_dim=size["CONDITION_DIM"])
        code = d2(image)
        close(d2.get_cond_logits(code, mu), a["v1_d2_cond"])
        close(d2.get_uncond_logits(code), a["v1_d2_uncond"])
    assert not any(p.requires_grad for p in net.STAGE1_G.parameters())    # Stage-I frozen, as the authors


@pytest.mark.parametrize("condition", [True, False])
def test_v2_matches_reference(ref, condition):
    a, size = ref["arrays"], ref["sizes"]["SMALL_V2"]
    tag = "cond" if condition else "uncond"
    net = seeded("v2", module_prefix=True, **v2_config(size, condition))     # DataParallel keys load
    torch.manual_seed(ref["sizes"]["SEED"] + 2)
    noise = torch.empty(2, size["Z_DIM"]).normal_()
    text = torch.from_numpy(a["v2_text"])
    with torch.no_grad():
        images, mu, logvar = net(noise, text if condition else None)
        assert [i.shape[-1] for i in images] == [64, 128, 256]
        for i, image in enumerate(images):
            close(sub(image), a[f"v2_{tag}_image{i}"])
        if condition:
            close(mu, a["v2_cond_mu"])
            close(logvar, a["v2_cond_logvar"])
        else:
            assert mu is None and logvar is None
        for i, image_size in enumerate((64, 128, 256)):
            d = seeded("v2_discriminator", size=image_size, df_dim=size["DF_DIM"],
                       embedding_dim=size["EMBEDDING_DIM"], b_condition=condition)
            outputs = d(images[i], mu)
            assert len(outputs) == (2 if condition else 1)
            for j, out in enumerate(outputs):
                close(out, a[f"v2_{tag}_d{image_size}_{j}"])


def test_published_shapes_are_the_references(ref):
    keys = ref["keys"]

    def shapes(net):
        return {k: list(v.shape) for k, v in net.state_dict().items()}

    assert shapes(N.Stage2Generator(**N.COCO_V1)) == keys["v1_stage2_full"]
    full = ref["sizes"]["FULL_V1"]
    assert shapes(N.Stage1Generator(full["Z_DIM"], full["CONDITION_DIM"], full["GF_DIM"], full["DIMENSION"])) \
        == keys["v1_stage1_full"]
    assert shapes(N.GNet(**N.BIRDS_V2)) == keys["v2_cond_full"]
    assert shapes(N.GNet(**N.LSUN_IMAGENET_V2)) == keys["v2_uncond_full"]


@pytest.mark.parametrize("network,config,key", [
    ("v1_stage2", N.COCO_V1, "v1_stage2_full"),
    ("v2", N.BIRDS_V2, "v2_cond_full"),
    ("v2", N.LSUN_IMAGENET_V2, "v2_uncond_full"),
])
def test_published_state_dicts_load_strictly(ref, network, config, key):
    """A state dict with the reference classes' keys and shapes at the published sizes (as the
    released files hold; v2's saved from DataParallel) loads strictly at the default sizes."""
    prefix = "module." if network == "v2" else ""
    state = {prefix + k: torch.zeros(shape) for k, shape in ref["keys"][key].items()}
    net = registry.load_network("stackgan", network, state, **config)
    assert sum(p.numel() for p in net.parameters()) > 1_000_000
    state.pop(next(iter(state)))
    with pytest.raises(TalkingFaceError):
        registry.load_network("stackgan", network, state, **config)


# ---------------------------------------------------------------------------------------
# Formulas


def test_kl_loss_is_the_mean_gaussian_kl():
    mu, logvar = torch.randn(5, 7), torch.randn(5, 7)
    q = torch.distributions.Normal(mu, (0.5 * logvar).exp())
    p = torch.distributions.Normal(torch.zeros_like(mu), torch.ones_like(mu))
    assert torch.allclose(N.kl_loss(mu, logvar), torch.distributions.kl_divergence(q, p).mean(), atol=1e-6)
    assert float(N.kl_loss(torch.zeros(3, 4), torch.zeros(3, 4))) == 0.0


def test_conditioning_augmentation_draws_stage1_then_stage2_noise():
    torch.manual_seed(0)
    net = N.Stage2Generator(z_dim=4, condition_dim=3, gf_dim=4, text_dim=5, r_num=1).eval()
    text, noise = torch.randn(2, 5), torch.randn(2, 4)
    torch.manual_seed(3)
    drawn = net(text, noise)
    torch.manual_seed(3)
    eps1, eps2 = torch.randn(2, 3), torch.randn(2, 3)
    given = net(text, noise, eps=(eps1, eps2))
    swapped = net(text, noise, eps=(eps2, eps1))
    assert torch.equal(drawn[1], given[1]) and not torch.allclose(drawn[1], swapped[1])
    c, mu, logvar = net.ca_net(text, eps=torch.zeros(2, 3))
    assert torch.equal(c, mu)                                    # c = mu + sigma * eps


def test_glu_halves_channels():
    x = torch.randn(2, 6, 3, 3)
    assert torch.allclose(N.GLU()(x), x[:, :3] * torch.sigmoid(x[:, 3:]))


def test_mean_covariance_matches_numpy():
    x = torch.randn(2, 3, 4, 5)
    mu, cov = mean_covariance(x)
    flat = x.view(2, 3, -1).numpy()
    for i in range(2):
        assert np.allclose(cov[i].numpy(), np.cov(flat[i], bias=True), atol=1e-5)
        assert np.allclose(mu[i, :, 0, 0].numpy(), flat[i].mean(1), atol=1e-6)


def test_matching_loss_prefers_matched_pairs():
    ids = torch.tensor([0, 1, 2])
    perfect = matching_loss(torch.eye(3), torch.eye(3), ids)
    assert float(perfect) == pytest.approx(2 * np.log(1 + 2 * np.exp(-5.0)), rel=1e-5)   # softmax of 5 x cosines
    swapped = matching_loss(torch.eye(3)[[1, 0, 2]], torch.eye(3), ids)
    assert float(swapped) > 5.0
    same = torch.tensor([0, 0, 0])                                       # one class: nothing to separate
    assert float(matching_loss(torch.randn(3, 4), torch.randn(3, 4), same)) == pytest.approx(0.0, abs=1e-6)
    scaled = matching_loss(3 * torch.eye(3), torch.eye(3), ids)         # cosines: the features' length is free
    assert torch.allclose(scaled, perfect)


def test_encode_chars_is_one_hot_and_cut():
    chars = encode_chars(["Ab!", "é z"], 2)
    assert chars.shape[2] == 2 and chars.sum(1).max() == 1
    assert chars[0, 0, 0] == 1 and chars[0, 1, 1] == 1                   # lower-cased, cut at 2
    assert chars[1, :, 0].argmax() == chars.shape[1] - 1                  # é dropped: " " first


# ---------------------------------------------------------------------------------------
# Training


def tiny_networks(condition=True):
    torch.manual_seed(0)
    g = N.GNet(2, 8, 4, 4, 1, condition, 6)
    ds = torch.nn.ModuleList([N.DNet(64, 2, 4, condition), N.DNet(128, 2, 4, condition)])
    g.apply(weights_init)
    ds.apply(weights_init)
    return g, ds


@pytest.mark.parametrize("condition", [True, False])
def test_discriminator_steps_lower_its_loss(condition):
    g, ds = tiny_networks(condition)
    reals = [torch.rand(6, 3, 64, 64) * 2 - 1, torch.rand(6, 3, 128, 128) * 2 - 1]
    text = torch.randn(6, 6)
    with torch.no_grad():
        fakes, mu, _ = g(torch.randn(6, 8), text if condition else None)
    opts = [torch.optim.Adam(d.parameters(), 2e-4, betas=(0.5, 0.999)) for d in ds]
    mask = torch.ones(6)

    def losses():
        return [discriminator_loss(d, r, r.roll(1, 0), f, mu, mask, 1.0) for d, r, f in zip(ds, reals, fakes)]

    first = losses()
    for _ in range(8):
        for opt, loss in zip(opts, losses()):
            opt.zero_grad()
            loss["d"].backward()
            opt.step()
    last = losses()
    for before, after in zip(first, last):
        for key in ("d", "d_real", "d_fake") + (("d_wrong",) if condition else ()):
            assert float(after[key]) < float(before[key]), key


def test_generator_steps_lower_its_loss():
    g, ds = tiny_networks(True)
    ds.eval()
    opt = torch.optim.Adam(g.parameters(), 2e-4, betas=(0.5, 0.999))
    z, text = torch.randn(6, 8), torch.randn(6, 6)

    def loss():
        torch.manual_seed(1)                                     # the same CA noise each time
        fakes, mu, logvar = g(z, text)
        return generator_loss(ds, fakes, mu, logvar, 1.0, 50.0, 2.0)

    first = loss()
    for _ in range(8):
        opt.zero_grad()
        loss()["g"].backward()
        opt.step()
    last = loss()
    for key in ("g", "g_adv", "kl"):
        assert float(last[key]) < float(first[key]), key


def test_text_encoder_steps_lower_the_matching_loss():
    torch.manual_seed(0)
    enc, img = CharCNNRNN(8, 8, 8, 32), ImageEncoder(8, 4)
    captions = ["a red disc", "a blue square", "a green disc", "a white square"]
    images = torch.rand(4, 3, 32, 32)
    chars, ids = encode_chars(captions, 32), torch.arange(4)
    opt = torch.optim.Adam(list(enc.parameters()) + list(img.parameters()), 2e-3)
    first = float(matching_loss(img(images), enc(chars), ids))
    for _ in range(20):
        opt.zero_grad()
        matching_loss(img(images), enc(chars), ids).backward()
        opt.step()
    assert float(matching_loss(img(images), enc(chars), ids)) < first


def test_captioned_images_pick_a_caption_per_epoch():
    data = CaptionedImages(torch.zeros(2, 3, 4, 4), [["a", "b", "c"], ["d"]], seed=0)
    assert data.names == ["a", "b", "c", "d"] and data[1]["caption"] == 3
    picks = set()
    for epoch in range(12):
        data.set_epoch(epoch)
        picks.add(data[0]["caption"])
    assert picks == {0, 1, 2}


@pytest.mark.slow
def test_train_command_run_loads_through_the_registry(tmp_path):
    from models.stackgan import commands, demo

    data = demo.write_captioned_shapes(tmp_path / "data", 8, seed=1)
    args = types.SimpleNamespace(images=str(data / "images"), captions=str(data / "captions.txt"),
                                 out=str(tmp_path / "run"), max_steps=2, time_budget=None, batch_size=4, lr=None,
                                 device="cpu", seed=0, restart=False, quiet=True, branch_num=2, gf_dim=4, df_dim=2,
                                 z_dim=8, embedding_dim=4, r_num=1, text_dim=8, encoder_steps=3)
    summary = commands.train(args)
    assert summary["step"] == 2 and summary["conditional"] and summary["captions"] == len(
        set((data / "captions.txt").read_text().split("\n")[i].split("\t")[1] for i in range(8)))
    pipe = registry.load("stackgan", weights=tmp_path / "run", device="cpu")
    out = pipe(n=2, condition=ImageCondition(text="a red disc on a black background"), levels=True)
    assert out.images.shape == (2, 128, 128, 3) and [lv.shape[1] for _, lv in out.levels] == [64, 128]
    # unconditional without captions; it refuses a caption
    args.captions, args.out = None, str(tmp_path / "uncond")
    assert not commands.train(args)["conditional"]
    pipe = registry.load("stackgan", weights=tmp_path / "uncond", device="cpu")
    assert pipe(n=1).images.shape == (1, 128, 128, 3)
    with pytest.raises(InvalidInput):
        pipe(n=1, condition=ImageCondition(text="a red disc"))


def test_train_command_needs_images():
    from models.stackgan import commands

    with pytest.raises(TalkingFaceError, match="--images"):
        commands.train(types.SimpleNamespace(images=None, out="x"))


# ---------------------------------------------------------------------------------------
# The pipeline and the demo weights


@pytest.fixture(scope="module")
def demo_pipe():
    if not (registry.spec("stackgan").demo / "config.json").is_file():
        pytest.skip("the demo weights are not built")
    kind, folder = registry.resolve_weights("stackgan", weights=registry.spec("stackgan").demo)
    assert kind == "project"
    return registry.load("stackgan", weights=folder, device="cpu")


def test_demo_samples_reproducibly(demo_pipe):
    condition = ImageCondition(text="a red disc on a dark blue background")
    torch.manual_seed(5)
    a = demo_pipe(n=2, condition=condition, levels=True)
    torch.manual_seed(5)
    b = demo_pipe(n=2, condition=condition, levels=True)
    torch.manual_seed(6)
    c = demo_pipe(n=2, condition=condition)
    assert a.images.shape == (2, 128, 128, 3) and a.images.dtype == np.uint8
    assert np.array_equal(a.images, b.images) and not np.array_equal(a.images, c.images)
    assert [name for name, _ in a.levels] == ["branch 1 64x64", "branch 2 128x128"]
    assert np.array_equal(a.levels[-1][1], a.images)
    assert a.info["variant"] == "demo" and a.info["condition"].startswith("project text encoder")
    assert a.info["text"] == condition.text and a.info["device"] == "cpu"


def test_demo_through_registry_default_is_reproducible():
    if not (registry.spec("stackgan").demo / "config.json").is_file():
        pytest.skip("the demo weights are not built")
    pipe = registry.load("stackgan", weights=registry.spec("stackgan").demo)
    torch.manual_seed(0)
    a = pipe(n=2, condition=ImageCondition(text="a yellow square on a black background"))
    torch.manual_seed(0)
    b = pipe(n=2, condition=ImageCondition(text="a yellow square on a black background"))
    assert np.array_equal(a.images, b.images)


def test_demo_vector_condition_is_the_embedding(demo_pipe):
    variant = demo_pipe.variants["demo"]
    text = "a white disc on a dark green background"
    with torch.no_grad():
        embedding = variant.text_encoder.encode([text])[0].numpy()
    torch.manual_seed(2)
    by_text = demo_pipe(n=2, condition=ImageCondition(text=text))
    torch.manual_seed(2)
    by_vector = demo_pipe(n=2, condition=ImageCondition(vector=embedding))
    assert np.array_equal(by_text.images, by_vector.images)
    assert by_vector.info["condition"] == "embedding given"


@pytest.mark.parametrize("condition,message", [
    (None, "needs a condition"),
    (ImageCondition(vector=np.zeros(5, np.float32)), "numbers"),
    (ImageCondition(vector=np.full(32, np.nan, np.float32)), "NaN"),
    (ImageCondition(label=2), "label"),
    (ImageCondition(text="a red disc", vector=np.zeros(32, np.float32)), "not both"),
    (ImageCondition(text="   "), "caption"),
])
def test_bad_conditions_are_invalid_input(demo_pipe, condition, message):
    with pytest.raises(InvalidInput, match=message):
        demo_pipe(n=1, condition=condition)


def test_unknown_variant_is_invalid_input(demo_pipe):
    with pytest.raises(InvalidInput, match="v2-dog"):
        demo_pipe(n=1, condition=ImageCondition(text="a red disc"), variant="v2-dog")
    with pytest.raises(InvalidInput):
        demo_pipe(n=1, condition=ImageCondition(text="a red disc"), variant="v3")


def test_missing_authors_files_are_named(tmp_path):
    with pytest.raises(TalkingFaceError, match="netG_210000.pth"):
        StackGANPipeline.from_pretrained(tmp_path)


@pytest.mark.slow
def test_authors_unconditional_file_loads_and_refuses_conditions(tmp_path):
    """A v2 LSUN/ImageNet generator saved as the authors' trainer saves it (DataParallel keys)."""
    torch.manual_seed(0)
    net = N.GNet(**N.LSUN_IMAGENET_V2)
    torch.save({"module." + k: v for k, v in net.state_dict().items()}, tmp_path / RELEASES["v2-church"][0])
    pipe = StackGANPipeline.from_pretrained(tmp_path, device="cpu")
    assert next(iter(pipe.variants)) == "v2-church"
    torch.manual_seed(1)
    out = pipe(n=1, levels=True)
    assert out.images.shape == (1, 256, 256, 3) and len(out.levels) == 3
    torch.manual_seed(1)
    with torch.no_grad():
        expected, _, _ = net.eval()(torch.empty(1, 100).normal_())
    assert np.abs(out.images.astype(int) - ((expected[-1].clamp(-1, 1) + 1) * 127.5).round()
                  .permute(0, 2, 3, 1).numpy()).max() <= 1
    with pytest.raises(InvalidInput, match="unconditional"):
        pipe(n=1, condition=ImageCondition(vector=np.zeros(1024, np.float32)), variant="v2-church")

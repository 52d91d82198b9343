"""DCGAN: the reference's files load strictly and give its outputs; the objectives' formulas;
a few steps of each objective lower its losses; runs and the demo weights sample reproducibly.

The reference tensors (tests/data/dcgan_reference.npz) come from one run of pytorch/examples'
dcgan/main.py (tests/data/make_dcgan_reference.py).
"""

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from models import registry
from models.common.images import demo_images, from_uint8, to_uint8
from models.dcgan import losses
from models.dcgan.networks import (
    Discriminator,
    Generator,
    ImprovedDiscriminator,
    InfoDiscriminator,
    MatchingAwareDiscriminator,
    MinibatchDiscrimination,
    TextConditionalGenerator,
)
from models.dcgan.pipeline import DCGANPipeline, generator_config
from models.dcgan.train import TrainConfig, Trainer, build_networks
from models.errors import InvalidInput
from models.types import ImageCondition
from models.weights import WeightsInvalid

REFERENCE = Path(__file__).parent / "data" / "dcgan_reference.npz"


@pytest.fixture(scope="module")
def reference():
    data = np.load(REFERENCE)
    nz, ngf, ndf, nc, size = (int(v) for v in data["sizes"])
    state = {net: {k[2:]: torch.from_numpy(data[k]) for k in data.files if k.startswith(net + "/")}
             for net in ("G", "D")}
    return {"data": data, "state": state, "nz": nz, "ngf": ngf, "ndf": ndf, "nc": nc, "size": size}


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# ---------------------------------------------------------------------------------------
# The reference's files


def test_generator_loads_reference_file_and_matches_its_output(reference, tmp_path):
    path = tmp_path / "netG_epoch_0.pth"
    torch.save(reference["state"]["G"], path)
    net = registry.load_network("dcgan", "generator", path, nz=reference["nz"], ngf=reference["ngf"],
                                nc=reference["nc"])
    data = reference["data"]
    z = torch.from_numpy(data["z"])
    with torch.no_grad():
        out = net(z)
        assert out.shape == (3, reference["nc"], 64, 64)
        # Running statistics barely moved in one step, so these outputs are near 0: compare tightly.
        assert np.abs(out.numpy() - data["G_out"]).max() < 1e-6
        # Batch statistics, as the reference draws its samples: outputs of a useful size.
        out = net.train()(z)
    assert np.abs(out.numpy() - data["G_out_train"]).max() < 1e-4
    assert np.abs(data["G_out_train"]).max() > 0.1      # the comparison is not between two blank images


def test_discriminator_loads_reference_file_and_matches_its_output(reference, tmp_path):
    path = tmp_path / "netD_epoch_0.pth"
    torch.save(reference["state"]["D"], path)
    net = registry.load_network("dcgan", "discriminator", path, nc=reference["nc"], ndf=reference["ndf"])
    data = reference["data"]
    x = torch.from_numpy(data["x"])
    with torch.no_grad():
        out = net(x)
        on_fake = net(torch.from_numpy(data["G_out"]))
        assert out.shape == (3,)
        assert np.abs(out.numpy() - data["D_out"]).max() < 1e-6
        assert np.abs(on_fake.numpy() - data["D_fake"]).max() < 1e-6
        out = net.train()(x)
    assert np.abs(out.numpy() - data["D_out_train"]).max() < 1e-4
    assert np.ptp(data["D_out_train"]) > 0.05


def test_data_parallel_prefix_is_accepted_and_wrong_sizes_are_refused(reference):
    prefixed = {"module." + k: v for k, v in reference["state"]["G"].items()}
    registry.load_network("dcgan", "generator", prefixed, nz=reference["nz"], ngf=reference["ngf"])
    with pytest.raises(WeightsInvalid):
        registry.load_network("dcgan", "generator", reference["state"]["G"], nz=reference["nz"], ngf=16)
    with pytest.raises(WeightsInvalid):
        registry.load_network("dcgan", "discriminator", reference["state"]["D"], ndf=reference["ndf"],
                              image_size=32)


def test_default_sizes_are_the_reference_command_line():
    generator, discriminator = Generator(), Discriminator()
    assert generator.main[0].weight.shape == (100, 512, 4, 4)
    assert generator.main[-2].weight.shape == (64, 3, 4, 4)
    assert discriminator.main[0].weight.shape == (64, 3, 4, 4)
    assert discriminator.main[-2].weight.shape == (1, 512, 4, 4)
    assert len(generator.main) == 14 and len(discriminator.main) == 13


def test_smaller_image_sizes_and_bad_ones():
    generator, discriminator = Generator(nz=8, ngf=4, nc=1, image_size=32), Discriminator(nc=1, ndf=4, image_size=32)
    image = generator(torch.randn(2, 8, 1, 1))
    assert image.shape == (2, 1, 32, 32)
    assert discriminator(image).shape == (2,)
    assert generator_config(generator.state_dict()) == generator.config
    with pytest.raises(InvalidInput):
        Generator(image_size=48)


def test_pipeline_reads_a_reference_folder_and_samples_with_the_global_seed(reference, tmp_path):
    torch.save(reference["state"]["G"], tmp_path / "netG_epoch_7.pth")
    pipe = registry.load("dcgan", weights=tmp_path, device="cpu")
    assert pipe.generator.config == {"nz": reference["nz"], "ngf": reference["ngf"], "nc": reference["nc"],
                                     "image_size": 64}
    torch.manual_seed(3)
    images = pipe(n=2).images
    torch.manual_seed(3)
    expected = to_uint8(pipe.generator(torch.randn(2, reference["nz"], 1, 1)))
    assert images.shape == (2, 64, 64, 3) and images.dtype == np.uint8
    np.testing.assert_array_equal(images, expected)
    # batch_norm="batch": the reference's sampling (batch statistics), running statistics kept.
    before = {k: v.clone() for k, v in pipe.generator.state_dict().items()}
    torch.manual_seed(3)
    batch = pipe(n=3, batch_norm="batch").images
    net = registry.load_network("dcgan", "generator", reference["state"]["G"], nz=reference["nz"],
                                ngf=reference["ngf"]).train()
    torch.manual_seed(3)
    with torch.no_grad():
        np.testing.assert_array_equal(batch, to_uint8(net(torch.randn(3, reference["nz"], 1, 1))))
    assert batch.std() > 3 > images.std()       # batch statistics undo the barely-trained running ones
    assert all(torch.equal(before[k], v) for k, v in pipe.generator.state_dict().items())
    assert not pipe.generator.training
    assert "netG_epoch_7.pth" in pipe.info["weights"]
    with pytest.raises(InvalidInput):
        pipe(n=1, condition=ImageCondition(label=1))
    with pytest.raises(InvalidInput):
        pipe(n=1, condition=ImageCondition(text="a bird"))


def test_a_folder_without_a_generator_names_the_file(tmp_path):
    from models.weights import WeightsMissing

    with pytest.raises(WeightsMissing, match="netG_epoch_24.pth"):
        registry.load("dcgan", weights=tmp_path)


# ---------------------------------------------------------------------------------------
# The objectives' formulas on hand-computed tensors


def test_gan_losses_are_bce_as_the_reference():
    real, fake = torch.tensor([0.9, 0.6]), torch.tensor([0.2, 0.5])
    expected_d = -(math.log(0.9) + math.log(0.6)) / 2 - (math.log(0.8) + math.log(0.5)) / 2
    assert losses.discriminator_loss(real, fake).item() == pytest.approx(expected_d, rel=1e-6)
    assert losses.generator_loss(fake).item() == pytest.approx(-(math.log(0.2) + math.log(0.5)) / 2, rel=1e-6)
    logits = torch.tensor([0.3, -1.2])
    assert losses.generator_loss(logits, logits=True).item() == pytest.approx(
        losses.generator_loss(torch.sigmoid(logits)).item(), rel=1e-5)


def test_feature_matching_is_the_squared_distance_of_the_means():
    real = torch.tensor([[1.0, 2.0], [3.0, 4.0]])           # mean (2, 3)
    fake = torch.tensor([[0.0, 0.0], [2.0, 2.0]])           # mean (1, 1)
    assert losses.feature_matching_loss(real, fake).item() == pytest.approx(1.0 + 4.0)


def test_minibatch_discrimination_on_three_samples():
    layer = MinibatchDiscrimination(in_features=2, kernels=2, kernel_dims=2)
    T = torch.tensor([[[1.0, 0.0], [0.5, -1.0]],
                      [[0.0, 2.0], [1.0, 1.0]]])             # (A=2, B=2, C=2)
    with torch.no_grad():
        layer.T.copy_(T)
    f = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    out = layer(f)
    # By hand: M_i = f_i T, c_b(i, j) = exp(-|M_ib - M_jb|_1), o_ib = sum over j (j = i included).
    M = [[[1.0, 0.0], [0.5, -1.0]], [[0.0, 2.0], [1.0, 1.0]], [[1.0, 2.0], [1.5, 0.0]]]
    expected = np.zeros((3, 2))
    for i in range(3):
        for b in range(2):
            expected[i, b] = sum(math.exp(-sum(abs(M[i][b][c] - M[j][b][c]) for c in range(2))) for j in range(3))
    assert out.shape == (3, 4)
    np.testing.assert_allclose(out[:, :2].detach().numpy(), f.numpy())
    np.testing.assert_allclose(out[:, 2:].detach().numpy(), expected, rtol=1e-6)
    # One sample alone is 1 (its own term) in every kernel; identical samples give n.
    np.testing.assert_allclose(layer(f[:1])[:, 2:].detach().numpy(), [[1.0, 1.0]])
    np.testing.assert_allclose(layer(f[:1].repeat(3, 1))[:, 2:].detach().numpy(), np.full((3, 2), 3.0), rtol=1e-6)


@pytest.mark.parametrize("divergence,t,activation,conjugate", [
    # (v, g_f(v), f*(g_f(v))) worked out from Table 2 of Nowozin et al. at v = 0.5.
    ("kl", 0.5, 0.5, math.exp(-0.5)),
    ("reverse-kl", 0.5, -math.exp(-0.5), -1 + 0.5),
    ("pearson", 0.5, 0.5, 0.25 * 0.25 + 0.5),
    ("hellinger", 0.5, 1 - math.exp(-0.5), (1 - math.exp(-0.5)) / math.exp(-0.5)),
    ("js", 0.5, math.log(2) - math.log(1 + math.exp(-0.5)),
     -math.log(2 - 2 / (1 + math.exp(-0.5)))),
    ("gan", 0.5, -math.log(1 + math.exp(-0.5)), -math.log(1 - 1 / (1 + math.exp(-0.5)))),
])
def test_fgan_activations_and_conjugates_of_table_2(divergence, t, activation, conjugate):
    v = torch.tensor([t], dtype=torch.float64)
    g = losses.ACTIVATIONS[divergence](v)
    assert g.item() == pytest.approx(activation, rel=1e-9)
    assert losses.CONJUGATES[divergence](g).item() == pytest.approx(conjugate, rel=1e-9)
    grid = torch.linspace(-3, 3, 13, dtype=torch.float64)
    np.testing.assert_allclose(losses.COMPOSED[divergence](grid).numpy(),
                               losses.CONJUGATES[divergence](losses.ACTIVATIONS[divergence](grid)).numpy(),
                               rtol=1e-9, atol=1e-12)
    assert torch.isfinite(losses.COMPOSED[divergence](torch.tensor([-60.0, 60.0]))).all()


def test_fgan_objective_reaches_the_divergence_at_the_optimal_critic():
    # P = (3/4, 1/4), Q = (1/2, 1/2) on two points, as equally weighted samples.
    p, q = np.array([0.75, 0.25]), np.array([0.5, 0.5])
    ratio = p / q

    def estimate(divergence, v_point):
        v = torch.tensor(v_point, dtype=torch.float64)
        return losses.fgan_objective(divergence, v[[0, 0, 0, 1]], v[[0, 1]]).item()

    # KL: T* = f'(p/q) = 1 + log(p/q), g_f the identity.
    assert estimate("kl", 1 + np.log(ratio)) == pytest.approx(float((p * np.log(ratio)).sum()), rel=1e-9)
    # Pearson chi^2: T* = 2 (p/q - 1).
    assert estimate("pearson", 2 * (ratio - 1)) == pytest.approx(float((q * (ratio - 1) ** 2).sum()), rel=1e-9)
    # GAN: F = E_P log D + E_Q log(1 - D) with D = sigmoid(V); at D* = p / (p + q) it is 2 JS - log 4.
    d_star = p / (p + q)
    m = (p + q) / 2
    js = 0.5 * (p * np.log(p / m)).sum() + 0.5 * (q * np.log(q / m)).sum()
    assert estimate("gan", np.log(d_star / (1 - d_star))) == pytest.approx(2 * js - math.log(4), rel=1e-9)
    # And the GAN divergence's F is minus the reference's discriminator BCE.
    v_real, v_fake = torch.tensor([0.3, -0.2]), torch.tensor([1.1, -0.7])
    assert losses.fgan_discriminator_loss("gan", v_real, v_fake).item() == pytest.approx(
        losses.discriminator_loss(torch.sigmoid(v_real), torch.sigmoid(v_fake)).item(), rel=1e-5)


def test_infogan_bound_by_hand():
    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0]])
    indices = torch.tensor([0, 0])
    mean, log_var = torch.tensor([[0.5], [0.0]]), torch.tensor([[0.0], [math.log(4.0)]])
    cont = torch.tensor([[0.0], [1.0]])
    ce = -(math.log(math.exp(2) / (math.exp(2) + 1)) + math.log(1 / (1 + math.e))) / 2
    nll = ((0.5 * math.log(2 * math.pi) + 0.125) + (0.5 * math.log(2 * math.pi) + 0.5 * math.log(4) + 1 / 8)) / 2
    bound = losses.mutual_information_bound(logits, indices, mean, log_var, cont)
    assert bound.item() == pytest.approx(math.log(2) + math.log(2) - ce - nll, rel=1e-6)
    loss = losses.information_loss(logits, indices, mean, log_var, cont, lambda_cat=1.0, lambda_cont=0.1)
    assert loss.item() == pytest.approx(ce + 0.1 * nll, rel=1e-6)
    torch.manual_seed(0)
    index, one_hot, codes = losses.sample_codes(5, 4, 3, label=2)
    assert (index == 2).all() and (one_hot.argmax(1) == 2).all() and one_hot.sum().item() == 5
    assert codes.shape == (5, 3) and codes.abs().max() <= 1


def test_matching_aware_loss_and_interpolation_by_hand():
    s_real, s_wrong, s_fake = torch.tensor([2.0]), torch.tensor([0.0]), torch.tensor([-1.0])
    expected = math.log(1 + math.exp(-2.0)) + 0.5 * (math.log(2.0) + math.log(1 + math.exp(-1.0)))
    assert losses.matching_aware_discriminator_loss(s_real, s_wrong, s_fake).item() == pytest.approx(expected,
                                                                                                     rel=1e-6)
    h1, h2 = torch.tensor([[1.0, 3.0]]), torch.tensor([[3.0, -1.0]])
    np.testing.assert_allclose(losses.interpolate_embeddings(h1, h2).numpy(), [[2.0, 1.0]])
    batch = torch.arange(6.0).view(3, 2)
    assert torch.equal(losses.wrong_embeddings(batch)[0], batch[2])


def test_heads_shapes():
    x = torch.randn(4, 1, 16, 16)
    info = InfoDiscriminator(nc=1, ndf=4, image_size=16, categories=3, continuous=2)
    probability, logits, mean, log_var = info(x)
    assert probability.shape == (4,) and logits.shape == (4, 3) and mean.shape == log_var.shape == (4, 2)
    assert set(Discriminator(1, 4, 16).state_dict()) <= set(info.state_dict())
    improved = ImprovedDiscriminator(nc=1, ndf=4, image_size=16, kernels=5, kernel_dims=3)
    assert improved(x).shape == (4,) and improved.features(x).shape == (4, 8 * 16)
    generator = TextConditionalGenerator(nz=6, ngf=4, nc=1, image_size=16, embedding_dim=10, projected_dim=5)
    embedding = torch.randn(4, 10)
    fake = generator(torch.randn(4, 6, 1, 1), embedding)
    assert fake.shape == (4, 1, 16, 16)
    assert MatchingAwareDiscriminator(nc=1, ndf=4, image_size=16, embedding_dim=10, projected_dim=5)(
        fake, embedding).shape == (4,)


# ---------------------------------------------------------------------------------------
# Training


@pytest.fixture(scope="module")
def digits():
    return from_uint8(demo_images("digits", 16, 32, seed=0), 1)


def small_config(tmp_path, objective, **options):
    if objective == "gan-int-cls":
        labels = np.random.default_rng(0).normal(size=(10, 12)).astype(np.float32)
        options.setdefault("embeddings", str(tmp_path / "embeddings.npy"))
        np.save(options["embeddings"], labels[np.arange(32) % 10])
    return TrainConfig(data_dir=str(tmp_path), out_dir=str(tmp_path / f"run-{objective}"), objective=objective,
                       image_size=16, nc=1, nz=8, ngf=8, ndf=8, batch_size=16, sample_every=0, log_every=1,
                       progress=False, lr=1e-3, categories=3, continuous=2, kernels=4, kernel_dims=3, **options)


OBJECTIVES = [("gan", {}), ("improved", {}), ("infogan", {}), ("gan-int-cls", {})] + [
    ("fgan", {"divergence": d}) for d in losses.DIVERGENCES]


@pytest.mark.parametrize("objective,options", OBJECTIVES, ids=[o + "-" + "".join(v.values()) for o, v in OBJECTIVES])
def test_each_objective_lowers_its_losses(tmp_path, digits, objective, options):
    torch.manual_seed(0)
    trainer = Trainer(small_config(tmp_path, objective, **options), images=digits)
    real = digits[:16]
    embedding = trainer.dataset.embeddings[:16] if trainer.dataset.embeddings is not None else None
    inputs = trainer.draw_inputs(16, embedding=embedding)
    fake = trainer.generate(inputs).detach()

    # The discriminator's steps (G fixed) lower D's loss on this batch ...
    before = trainer.discriminator_objective(real, inputs, fake)[0].item()
    for _ in range(4):
        trainer._update(trainer.opt_d, trainer.discriminator_objective(real, inputs, fake)[0])
    after = trainer.discriminator_objective(real, inputs, fake)[0].item()
    assert after < before, (objective, before, after)

    # ... and the generator's steps (D fixed, its batch statistics from this batch) lower G's.
    torch.manual_seed(1)
    before = trainer.generator_objective(real, inputs, trainer.generate(inputs))[0].item()
    for _ in range(4):
        torch.manual_seed(1)
        trainer._update(trainer.opt_g, trainer.generator_objective(real, inputs, trainer.generate(inputs))[0])
    torch.manual_seed(1)
    after = trainer.generator_objective(real, inputs, trainer.generate(inputs))[0].item()
    assert after < before, (objective, before, after)


@pytest.mark.parametrize("objective", ["gan", "infogan", "gan-int-cls"])
def test_a_run_loads_and_samples_reproducibly(tmp_path, digits, objective):
    config = small_config(tmp_path, objective, max_steps=2)
    summary = Trainer(config, images=digits).run()
    assert summary["step"] == 2 and summary["objective"] == objective
    pipe = registry.load("dcgan", weights=config.out_dir, device="cpu")
    assert pipe.objective == objective
    condition = {"gan": ImageCondition(), "infogan": ImageCondition(label=1, vector=[0.5, -0.5]),
                 "gan-int-cls": ImageCondition(vector=np.ones(12, np.float32))}[objective]
    torch.manual_seed(5)
    first = pipe(n=3, condition=condition)
    torch.manual_seed(5)
    again = pipe(n=3, condition=condition)
    np.testing.assert_array_equal(first.images, again.images)
    assert first.images.shape == (3, 16, 16, 3) and first.info["objective"] == objective


def test_conditions_the_weights_do_not_take_or_need_are_refused(tmp_path, digits):
    pipes = {}
    for objective in ("gan", "infogan", "gan-int-cls"):
        config = small_config(tmp_path, objective, max_steps=1)
        Trainer(config, images=digits).run()
        pipes[objective] = registry.load("dcgan", weights=config.out_dir, device="cpu")
    assert set(DCGANPipeline.conditions()) == {"label", "vector"}
    bad = [("gan", ImageCondition(label=0), "take no label"), ("gan", ImageCondition(vector=[1.0]), "take no vector"),
           ("infogan", ImageCondition(label=3), "from 0 to 2"), ("infogan", ImageCondition(vector=[1.0]), "2 numbers"),
           ("gan-int-cls", ImageCondition(), "need a text embedding"),
           ("gan-int-cls", ImageCondition(vector=np.ones(5)), "12 numbers"),
           ("gan-int-cls", ImageCondition(label=1, vector=np.ones(12)), "take no label")]
    for objective, condition, message in bad:
        with pytest.raises(InvalidInput, match=message):
            pipes[objective](n=2, condition=condition)
    # InfoGAN's codes steer the image: another label gives another image from the same noise.
    torch.manual_seed(0)
    one = pipes["infogan"](n=2, condition=ImageCondition(label=0)).images
    torch.manual_seed(0)
    other = pipes["infogan"](n=2, condition=ImageCondition(label=2)).images
    assert not np.array_equal(one, other)


def test_training_needs_images_and_embeddings(tmp_path):
    with pytest.raises(InvalidInput, match="embeddings"):
        TrainConfig(data_dir=str(tmp_path), out_dir=str(tmp_path / "run"), objective="gan-int-cls")
    with pytest.raises(InvalidInput, match="objective"):
        TrainConfig(data_dir=str(tmp_path), out_dir=str(tmp_path / "run"), objective="wgan")
    from models.dcgan import train as training

    with pytest.raises(InvalidInput):
        training.train(tmp_path, tmp_path / "run")
    generator, discriminator = build_networks(TrainConfig(data_dir=".", out_dir=".", objective="infogan",
                                                          nz=10, categories=4, continuous=3, image_size=16))
    assert generator.nz == 17 and discriminator.categories == 4


# ---------------------------------------------------------------------------------------
# The demo weights


def test_demo_weights_sample_reproducibly():
    kind, folder = registry.resolve_weights("dcgan", None)
    if kind != "project" or folder != registry.spec("dcgan").demo:
        pytest.skip("authors' files found in the weights folder")
    pipe = registry.load("dcgan", device="cpu")
    torch.manual_seed(0)
    first = pipe(n=2)
    torch.manual_seed(0)
    again = pipe(n=2)
    np.testing.assert_array_equal(first.images, again.images)
    assert first.images.shape == (2, 32, 32, 3)
    assert first.images.std() > 10                  # not a blank image
    assert sum(p.stat().st_size for p in Path(folder).iterdir()) < 3 * 2 ** 20
    with pytest.raises(InvalidInput):
        pipe(n=1, condition=ImageCondition(label=1))


def test_train_command_needs_images_and_writes_a_loadable_run(tmp_path):
    import argparse

    from models.common.images import write_demo_images
    from models.dcgan import commands
    from models.errors import TalkingFaceError

    shared = dict(out=str(tmp_path / "run"), max_steps=1, time_budget=None, batch_size=8, lr=None, device="cpu",
                  seed=0, restart=False, quiet=True, data=None)
    own = {a.dest: a.default for a in commands.COMMANDS["train"].arguments}
    with pytest.raises(TalkingFaceError, match="--images"):
        commands.train(argparse.Namespace(**shared, **own))
    images = write_demo_images(tmp_path / "digits", "digits", 16, count=16)
    own.update(images=str(images), image_size=16, channels=1, ngf=4, ndf=4, objective="fgan", divergence="kl")
    result = commands.train(argparse.Namespace(**shared, **own))
    assert result["step"] == 1 and result["objective"] == "fgan" and result["images"] == 16
    pipe = registry.load("dcgan", weights=result["out_dir"], device="cpu")
    assert pipe.objective == "fgan" and pipe(n=2).images.shape == (2, 16, 16, 3)


@pytest.mark.slow
def test_build_demo_writes_a_small_scored_folder(tmp_path):
    from models.dcgan import demo

    report = demo.build_demo(tmp_path / "demo", work_dir=tmp_path / "work", steps=2, progress=False)
    assert report["steps"] == 2 and report["config"] == demo.DEMO_CONFIG
    assert set(report["samples"]) == {"mean_top_probability", "classes_found", "class_counts"}
    assert report["real_digits"]["mean_top_probability"] > 0.9      # the classifier does read real digits
    assert {"config.json", "generator.safetensors", "SHA256SUMS", "REPORT.json", "example.png"} <= {
        p.name for p in (tmp_path / "demo").iterdir()}
    assert report["files_bytes"] < 3 * 2 ** 20
    pipe = registry.load("dcgan", weights=tmp_path / "demo", device="cpu")
    assert pipe.generator.config["image_size"] == 32 and pipe.info["objective"] == "gan"

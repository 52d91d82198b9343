"""S^2-GAN: the Torch7 converter against the Lua graphs' semantics, formulas, training steps,
the demo weights through the registry, and clear errors.

The reference outputs (tests/data/ssgan_reference.npz) come from a NumPy run of the Lua
graphs on the weights of tests/data/ssgan_tiny.net (tests/data/make_ssgan_reference.py),
written in Torch7's own serialisation.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pytest
import torch

from models import registry
from models.errors import InvalidInput, TalkingFaceError
from models.ssgan import convert
from models.ssgan import networks as nets
from models.ssgan import train as training
from models.ssgan.pipeline import SSGANPipeline
from models.types import ImageCondition
from models.weights import WeightsInvalid, WeightsMissing
from tests.data import make_ssgan_reference as lua

DATA = Path(__file__).parent / "data"
TINY_FILE = DATA / "ssgan_tiny.net"


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def reference():
    return dict(np.load(DATA / "ssgan_reference.npz"))


@pytest.fixture(scope="module")
def converted():
    return convert.load_torch_file(TINY_FILE)


# ---------------------------------------------------------------------------------------
# The converter and the networks against the Lua graphs


def _outputs(networks, ref):
    t = {k: torch.from_numpy(v) for k, v in ref.items()}
    with torch.no_grad():
        return {
            "structure": networks["structure"](t["z"]),
            "structure_discriminator": networks["structure_discriminator"](t["structure_normals"]),
            "style": networks["style"](t["z2"], t["normals"]),
            "style_discriminator": networks["style_discriminator"](t["image"], t["normals"]),
            "fcn": networks["fcn"](t["fcn_input"]),
        }


def test_converted_networks_match_the_lua_graphs(converted, reference):
    outputs = _outputs(converted, reference)
    assert set(outputs) == set(convert.NETWORK_CLASSES)
    for name, out in outputs.items():
        expected = reference[name]
        assert out.shape == expected.shape, name
        scale = max(1.0, float(np.abs(expected).max()))
        diff = float(np.abs(out.numpy() - expected).max())
        assert diff < 1e-3 * scale, f"{name}: max abs difference {diff}"
    # the structure's normals are unit vectors, the FCN's rows log-probabilities
    assert torch.allclose(outputs["structure"].norm(dim=1), torch.ones(1), atol=1e-5)
    assert torch.allclose(outputs["fcn"].exp().sum(1), torch.ones(1), atol=1e-5)


def test_converted_state_dicts_load_strictly_through_the_registry(converted):
    for name, network in converted.items():
        state = network.state_dict()
        loaded = registry.load_network("ssgan", name, state, **network.config)
        assert not loaded.training
        for key, value in loaded.state_dict().items():
            assert torch.equal(value, state[key]), (name, key)
        with pytest.raises(WeightsInvalid):
            registry.load_network("ssgan", name, {k: v for k, v in state.items() if not k.endswith("bias")},
                                  **network.config)


def test_configs_inferred_from_the_file(converted):
    t = lua.TINY
    assert converted["structure"].config == {"noise_dim": t["noise_dim"], "base_channels": t["width"],
                                             "image_size": t["structure_size"]}
    assert converted["style"].config["image_size"] == t["style_size"]
    assert converted["structure_discriminator"].config["image_size"] == t["structure_size"]
    assert converted["style_discriminator"].config["image_size"] == t["style_size"]
    assert converted["fcn"].config == {"num_classes": t["fcn_classes"], "channels": list(t["fcn_channels"])}


@pytest.mark.parametrize("cuda", [False, True])
def test_full_convolution_weight_layout_in_a_sequential(tmp_path, cuda):
    """A plain nn.Sequential: SpatialFullConvolution's (in, out, kh, kw) weights, stride 2, padding 1
    (Float or Cuda tensors: the authors saved their models from the GPU)."""
    rng = np.random.default_rng(3)
    full = lua.full_conv(rng, 3, 5, 4, 2, 1)
    bn = lua.batch_norm(rng, 5)
    lua.write_t7(tmp_path / "seq.t7", {"G": lua.T7Object("nn.Sequential", {"modules": [full, bn]})}, cuda=cuda)
    assert (b"torch.CudaTensor" in (tmp_path / "seq.t7").read_bytes()) == cuda
    table = convert.read_torch_file(tmp_path / "seq.t7")
    ours = torch.nn.Sequential(torch.nn.ConvTranspose2d(3, 5, 4, 2, 1), torch.nn.BatchNorm2d(5)).eval()
    ours.load_state_dict(convert.convert_network(table["G"], ours), strict=True)
    x = rng.normal(0, 1, (2, 3, 5, 6))
    expected = lua.np_batch_norm(lua.np_full_conv(x, full), bn)
    with torch.no_grad():
        out = ours(torch.from_numpy(x).float()).numpy()
    assert out.shape == expected.shape == (2, 5, 10, 12)
    assert np.abs(out - expected).max() < 1e-4


def test_converter_refuses_a_module_that_does_not_fit(tmp_path):
    rng = np.random.default_rng(4)
    wrong = lua.T7Object("nn.Sequential", {"modules": [lua.conv(rng, 3, 5, 3, 1, 1)]})
    lua.write_t7(tmp_path / "wrong.t7", {"G": wrong})
    table = convert.read_torch_file(tmp_path / "wrong.t7")
    with pytest.raises(WeightsInvalid, match="kH/kW|shape|parameterised"):
        convert.convert_network(table["G"], torch.nn.Sequential(torch.nn.Conv2d(3, 5, 5, 1, 2)))
    with pytest.raises(WeightsInvalid, match="where the network has"):
        convert.convert_network(table["G"], torch.nn.Sequential(torch.nn.ConvTranspose2d(3, 5, 3, 1, 1)))
    (tmp_path / "junk.net").write_bytes(b"not torch")
    with pytest.raises(WeightsInvalid):
        convert.load_torch_file(tmp_path / "junk.net")


def test_convert_files_and_authors_folder_give_the_same_images(tmp_path):
    out = convert.convert_files(TINY_FILE, tmp_path / "converted")
    authors = tmp_path / "authors"
    authors.mkdir()
    (authors / "joint_SSGAN.net").write_bytes(TINY_FILE.read_bytes())
    images = []
    for folder in (out, authors):
        pipe = registry.load("ssgan", weights=folder, device="cpu")
        torch.manual_seed(5)
        images.append(pipe(n=3).images)
    assert images[0].shape == (3, 16, 16, 3)
    assert np.array_equal(images[0], images[1])


# ---------------------------------------------------------------------------------------
# Formulas


def test_normalisation_resampling_and_torch_dropout():
    x = torch.randn(2, 3, 5, 5)
    unit = nets.normalize_normals(x)
    assert torch.allclose(unit.norm(dim=1), torch.ones(1), atol=1e-6)
    up = nets.resample_normals(unit, 9)
    assert up.shape == (2, 3, 9, 9)
    # corners aligned (nn.SpatialReSampling): the corner pixels are the input's
    assert torch.allclose(up[..., 0, 0], unit[..., 0, 0], atol=1e-6)
    assert torch.allclose(up[..., -1, -1], unit[..., -1, -1], atol=1e-6)
    drop = nets.TorchSpatialDropout(0.2).eval()
    assert torch.allclose(drop(x), 0.8 * x)
    drop.train()
    y = drop(torch.ones(4, 6, 3, 3))
    assert set(y.unique().tolist()) <= {0.0, 1.0}       # no rescaling in training
    assert (y.amax((2, 3)) == y.amin((2, 3))).all()     # whole channels


def test_margin_rule_and_warmup():
    assert training.margin_rule(0.5, 0.5) == (True, True)
    assert training.margin_rule(0.2, 0.5) == (False, True)          # D too good on the real half
    assert training.margin_rule(0.5, 0.8) == (True, False)          # D too bad: G rests
    assert training.margin_rule(0.2, 0.8) == (True, True)           # both stopped: both go
    assert [training.warmup_factor(i) for i in (0, 9, 10, 29, 30)] == [50, 50, 5, 5, 1]


def test_codebook_and_normal_classes():
    codebook = torch.from_numpy(training.default_codebook(40))
    assert codebook.shape == (40, 3)
    assert torch.allclose(codebook.norm(dim=1), torch.ones(1), atol=1e-5)
    assert (codebook[:, 2] >= 0).all()
    normals = codebook[[3, 17]][:, :, None, None].expand(2, 3, 8, 8)
    labels = training.normal_classes(normals, codebook, 2)
    assert labels.tolist() == [3] * 4 + [17] * 4


def test_network_sizes_follow_the_published_shapes():
    g = nets.StructureGenerator()
    assert g(torch.rand(1, 100, 1, 1)).shape == (1, 3, 72, 72)
    d = nets.StructureDiscriminator().eval()
    assert d(torch.rand(2, 3, 72, 72)).shape == (2, 1)
    style = nets.StyleGenerator(base_channels=8)
    assert style(torch.rand(1, 100, 1, 1), torch.rand(1, 3, 128, 128)).shape == (1, 3, 128, 128)
    fcn = nets.NormalFCN(channels=(8, 8, 8, 8, 8, 8, 8))
    assert fcn(torch.rand(1, 3, 512, 512)).shape == (32 * 32, 40)


# ---------------------------------------------------------------------------------------
# Training


@pytest.fixture(scope="module")
def rooms(tmp_path_factory):
    from models.ssgan.data import write_scenes

    return write_scenes(tmp_path_factory.mktemp("rooms"), 24, 16, seed=1)


def _trainer(stage, rooms, tmp_path, **extra):
    torch.manual_seed(0)
    images, normals = rooms
    config = training.TrainConfig(normals_dir=str(normals), out_dir=str(tmp_path / stage), stage=stage,
                                  images_dir=str(images), batch_size=8, base_channels=4, structure_size=16,
                                  image_size=16, fcn_channels=(4, 4, 4, 4, 4, 8, 4), lr=2e-3, progress=False,
                                  sample_every=0, seed=0, **extra)
    trainer = training.Trainer(config)
    trainer.step = 100          # past the Lua adam's warm-up
    return trainer


def _freeze(trainer, optimizer):
    step = trainer._adam_step
    trainer._adam_step = lambda opt, net, update: None if opt is optimizer else step(opt, net, update)


def _batch(trainer):
    return {k: v[:8] for k, v in {"normals": trainer.dataset.normals, "image": trainer.dataset.images}.items()
            if v is not None}


@pytest.mark.parametrize("stage", ["structure", "style"])
def test_adversarial_steps_lower_each_loss(stage, rooms, tmp_path):
    trainer = _trainer(stage, rooms, tmp_path)
    batch = _batch(trainer)
    trainer.config.margin = 0.0                  # always update what is not frozen
    z = torch.rand(8, trainer.config.noise_dim, 1, 1) * 2 - 1
    normals = batch["normals"]

    def losses():
        with torch.no_grad():
            trainer.g.eval()
            trainer.d.eval()
            fake = trainer.g(z, normals) if stage == "style" else trainer.g(z)
            real = trainer.d(batch["image"], normals) if stage == "style" else trainer.d(normals)
            out = trainer.d(fake, normals) if stage == "style" else trainer.d(fake)
            d_loss = float(training._bce(real, 1.0) + training._bce(out, 0.0))
            return d_loss, float(training._bce(out, 1.0))

    d_before, _ = losses()
    _freeze(trainer, trainer.opt_g)
    for _ in range(6):
        trainer.train_step(batch)
    d_after, g_before = losses()
    assert d_after < d_before
    trainer._adam_step = training.Trainer._adam_step.__get__(trainer)
    _freeze(trainer, trainer.opt_d)
    for _ in range(6):
        trainer.train_step(batch)
    assert losses()[1] < g_before


def test_fcn_steps_lower_the_nll_and_guide_the_style_generator(rooms, tmp_path):
    fcn_trainer = _trainer("fcn", rooms, tmp_path, max_steps=8)
    batch = _batch(fcn_trainer)
    first = fcn_trainer.train_step(batch)["fcn_nll"]
    for _ in range(6):
        last = fcn_trainer.train_step(batch)["fcn_nll"]
    assert last < first
    fcn_trainer.save_checkpoint()
    style = _trainer("style", rooms, tmp_path, fcn_run=str(tmp_path / "fcn"))
    assert "fcn_nll" in style.train_step(batch)
    assert not any(p.requires_grad for p in style.fcn.parameters())


def test_full_run_exports_a_folder_the_registry_loads(rooms, tmp_path):
    images, normals = rooms
    summary = training.train(images, normals, tmp_path / "run", joint=True, batch_size=8, base_channels=4,
                             stage_steps={"structure": 2, "fcn": 2, "style": 2, "joint": 2}, structure_size=16,
                             image_size=16, fcn_channels=(4, 4, 4, 4, 4, 8, 4), progress=False, sample_every=0)
    assert {k: v["step"] for k, v in summary["stages"].items()} == {"structure": 2, "fcn": 2, "style": 2, "joint": 2}
    assert set(summary["stages"]["joint"]["losses"]) >= {"d_bce", "d1_bce", "g_bce", "g1_bce"}
    joint_style = training.load_run_network(tmp_path / "run" / "joint", "style")
    exported = registry.load("ssgan", weights=tmp_path / "run", device="cpu").pick()[1].style
    assert all(torch.equal(a, b) for a, b in zip(joint_style.state_dict().values(), exported.state_dict().values()))
    pipe = registry.load("ssgan", weights=tmp_path / "run", device="cpu")
    torch.manual_seed(0)
    out = pipe(n=2, levels=True)
    assert out.images.shape == (2, 16, 16, 3)


def test_train_command_needs_images():
    from models.ssgan.commands import COMMANDS

    args = argparse.Namespace(images=None, normals="x", out="y")
    with pytest.raises(TalkingFaceError, match="--images"):
        COMMANDS["train"].run(args)


# ---------------------------------------------------------------------------------------
# The demo weights and the pipeline


def test_demo_weights_sample_reproducibly():
    kind, folder = registry.resolve_weights("ssgan", None)
    if kind != "project":
        pytest.skip("authors' weights are installed here; the demo is not what registry.load picks")
    assert folder == registry.DEMO_WEIGHTS / "ssgan"
    pipe = registry.load("ssgan", device="cpu")
    torch.manual_seed(0)
    first = pipe(n=2, levels=True)
    torch.manual_seed(0)
    second = pipe(n=2)
    torch.manual_seed(1)
    other = pipe(n=2)
    assert first.images.shape == (2, 32, 32, 3) and first.images.dtype == np.uint8
    assert [name for name, _ in first.levels] == ["normals", "image"]
    assert np.array_equal(first.levels[1][1], first.images)
    assert np.array_equal(first.images, second.images)
    assert not np.array_equal(first.images, other.images)
    assert first.info["weights"] == "ssgan-demo" and first.info["device"] == "cpu"
    # the normals level is (n + 1) / 2 of unit normals: its decoded vectors have unit length
    decoded = first.levels[0][1].astype(np.float32) / 127.5 - 1
    assert np.abs(np.linalg.norm(decoded, axis=-1) - 1).mean() < 0.05


def test_bad_conditions_and_options_are_refused():
    pipe = registry.load("ssgan", device="cpu")
    for condition in (ImageCondition(text="a room"), ImageCondition(label=1), ImageCondition(vector=np.ones(3))):
        with pytest.raises(InvalidInput):
            pipe(n=1, condition=condition)
    with pytest.raises(InvalidInput, match="variant"):
        pipe(n=1, variant="nofcn")
    with pytest.raises(InvalidInput):
        pipe(n=1, batch_statistics=True)
    assert SSGANPipeline.declared_options()["variant"].choices == ("joint", "fcn", "nofcn")


def test_missing_authors_files_are_named(tmp_path):
    (tmp_path / "FCN.net").write_bytes(b"")
    with pytest.raises(WeightsMissing, match="joint_SSGAN.net"):
        SSGANPipeline.from_pretrained(tmp_path)


def test_graph_with_nngraph_input_and_output_nodes_converts_the_same(tmp_path):
    """nngraph's dummy input node feeds both inputs, its output node follows the last module."""
    rng = np.random.default_rng(6)
    graph = lua.lua_style_g(rng, 5, 2, 16)
    nodes = graph.fields["forwardnodes"]
    inputs = [n for n in nodes if n.fields["data"]["module"].classname == "nn.Identity"]
    innode = lua.T7Object("nngraph.Node", {"data": {"mapindex": []}, "children": list(inputs)})
    outnode = lua.T7Object("nngraph.Node", {"data": {"mapindex": [nodes[-1].fields["data"]]}, "children": []})
    nodes[-1].fields["children"].append(outnode)
    with_dummies = lua.T7Object("nn.gModule", {**graph.fields, "forwardnodes": [innode, *nodes, outnode]})
    lua.write_t7(tmp_path / "style.net", {"G": with_dummies, "G_plain": graph})
    table = convert.read_torch_file(tmp_path / "style.net")
    assert convert.entries(table) == {"style": table["G"]}
    ours = nets.StyleGenerator(**convert.infer_config("style", table["G"]))
    state = convert.convert_network(table["G"], ours)
    plain = convert.convert_network(table["G_plain"], nets.StyleGenerator(**ours.config))
    assert state.keys() == plain.keys() and all(torch.equal(state[k], plain[k]) for k in state)

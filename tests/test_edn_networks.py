"""Everybody Dance Now networks: pix2pixHD's checkpoint format loads strictly, outputs match the authors'.

tests/data/edn_reference.npz holds inputs, the outputs of the authors' modules and their
state-dict keys and shapes (made by tests/data/make_edn_reference.py) with the seeded
weights of tests/seeded.py, which are rebuilt here; also the key lists of the networks
the authors' ``Pix2PixHDModel.initialize`` builds for the README's commands.
"""

import functools
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn

from models.edn.networks import (
    NETWORKS,
    FaceBox,
    FaceDiscriminator,
    FaceResidualGenerator,
    FaceUnetGenerator,
    GlobalGenerator,
    LocalEnhancer,
    MultiscaleDiscriminator,
    Vgg19Features,
    add_face_residual,
    blank_previous_frame,
    chain_generator_input,
    crop_face,
    face_generator_input,
    init_weights,
    norm_layer_for,
    synthesize_frame,
    torchvision_vgg19_features,
)
from models.weights import WeightsInvalid, load_weights, read_state_dict
from tests.seeded import seeded_state_dict

REFERENCE = np.load(Path(__file__).parent / "data" / "edn_reference.npz")

# Reference case -> our network at the reduced widths the reference script used.
CASES = {
    "global": lambda: GlobalGenerator(ngf=4, n_downsample_global=4, n_blocks_global=2),
    "global_batch": lambda: GlobalGenerator(ngf=4, n_downsample_global=3, n_blocks_global=2, norm="batch"),
    "local": lambda: LocalEnhancer(ngf=4, n_downsample_global=3, n_blocks_global=2, n_local_enhancers=1,
                                   n_blocks_local=2),
    "local2": lambda: LocalEnhancer(ngf=2, n_downsample_global=2, n_blocks_global=1, n_local_enhancers=2,
                                    n_blocks_local=1),
    "face": lambda: FaceResidualGenerator(ngf=4, n_downsample_global=3, n_blocks_global=2),
    "face_unet": lambda: FaceUnetGenerator(ngf=4),
    "discriminator": lambda: MultiscaleDiscriminator(ndf=4, n_layers_D=3, num_D=3),
    "discriminator_plain": lambda: MultiscaleDiscriminator(ndf=4, n_layers_D=2, norm="batch", num_D=2,
                                                           no_ganFeat_loss=True),
    "discriminator_sigmoid": lambda: MultiscaleDiscriminator(ndf=4, n_layers_D=2, num_D=2, no_lsgan=True,
                                                             no_ganFeat_loss=True),
    "discriminator_sigmoid_feat": lambda: MultiscaleDiscriminator(ndf=4, n_layers_D=2, num_D=2, no_lsgan=True),
    "face_discriminator": lambda: FaceDiscriminator(),
    "vgg19": lambda: Vgg19Features(),
}
GENERATORS = ["global", "global_batch", "local", "local2", "face", "face_unet"]
DISCRIMINATORS = ["discriminator", "discriminator_plain", "discriminator_sigmoid", "discriminator_sigmoid_feat"]
BATCH_NORM = ["global_batch", "face_unet", "discriminator_plain", "face_discriminator"]

# The networks of the README's training commands (as Pix2PixHDModel.initialize builds
# them) -> our constructors with their defaults.
PUBLISHED = {
    "global_stage.G": lambda: GlobalGenerator(),
    "global_stage.D": lambda: MultiscaleDiscriminator(num_D=2),
    "local_stage.G": lambda: LocalEnhancer(),
    "local_stage.D": lambda: MultiscaleDiscriminator(),
    "face_stage.G": lambda: LocalEnhancer(),
    "face_stage.D": lambda: MultiscaleDiscriminator(),
    "face_stage.Dface": lambda: FaceDiscriminator(),
    "face_stage.Gface": lambda: FaceResidualGenerator(),
    "face_unet_stage.Gface": lambda: FaceUnetGenerator(),
    "face_unet_stage.Dface": lambda: FaceDiscriminator(),
}


def ref(key):
    value = REFERENCE[key]
    if value.dtype == np.uint8:        # labels as the loader's 8-bit pixels
        return torch.from_numpy(value).float() / 255
    return torch.from_numpy(value.astype(np.float32))


def key_list(state_dict):
    return [f"{k} {tuple(v.shape)}" for k, v in state_dict.items()]


def assert_matches(value, key):
    expected = ref(key)
    assert value.shape == expected.shape, key
    torch.testing.assert_close(value, expected, atol=1e-4, rtol=1e-4, msg=key)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    # On the shared 2-core machines two threads contend with other processes.
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@functools.cache
def seeded(name):
    return seeded_state_dict(CASES[name]().state_dict())


def loaded(name, checkpoint=None):
    """Our network of ``name`` with the seeded weights, strictly loaded, in eval mode."""
    net = CASES[name]()
    load_weights(net, seeded(name) if checkpoint is None else checkpoint, name=name)
    return net.eval()


def generator_input(name):
    return chain_generator_input(ref(f"{name}.label"), ref(f"{name}.previous"))


# ------------------------------------------------------------------ keys and shapes

@pytest.mark.parametrize("name", CASES)
def test_state_dict_keys_and_shapes_are_the_authors(name):
    with torch.device("meta"):
        assert key_list(CASES[name]().state_dict()) == [str(k) for k in REFERENCE[f"{name}.keys"]]


@pytest.mark.parametrize("name", PUBLISHED)
def test_defaults_are_the_published_configuration(name):
    # Built on the meta device: the key lists of 180M-parameter generators, no memory.
    with torch.device("meta"):
        assert key_list(PUBLISHED[name]().state_dict()) == [str(k) for k in REFERENCE[f"{name}.keys"]]


def test_every_registry_name_builds_the_published_network():
    assert set(NETWORKS) >= {"global", "local", "face", "discriminator", "face_discriminator"}
    with torch.device("meta"):
        assert key_list(NETWORKS["global"]().state_dict()) == list(REFERENCE["global_stage.G.keys"])
        assert key_list(NETWORKS["local"]().state_dict()) == list(REFERENCE["face_stage.G.keys"])
        assert key_list(NETWORKS["face"]().state_dict()) == list(REFERENCE["face_stage.Gface.keys"])
        assert key_list(NETWORKS["face_unet"]().state_dict()) == list(REFERENCE["face_unet_stage.Gface.keys"])
        assert key_list(NETWORKS["discriminator"]().state_dict()) == list(REFERENCE["face_stage.D.keys"])
        assert key_list(NETWORKS["face_discriminator"]().state_dict()) == list(REFERENCE["face_stage.Dface.keys"])


# ------------------------------------------------------------------ outputs

@pytest.mark.parametrize("name", GENERATORS)
def test_generator_outputs_match_the_authors(name):
    net = loaded(name)
    with torch.no_grad():
        assert_matches(net(generator_input(name)), f"{name}.out")
        if name in BATCH_NORM:      # the authors' test script leaves the networks in training mode
            assert_matches(net.train()(generator_input(name)), f"{name}.train_out")


@pytest.mark.parametrize("name", DISCRIMINATORS)
def test_discriminator_outputs_match_the_authors(name):
    net = loaded(name)
    modes = [("out", net.eval)] + ([("train_out", net.train)] if name in BATCH_NORM else [])
    for prefix, set_mode in modes:
        set_mode()
        with torch.no_grad():
            result = net(ref(f"{name}.x"))
        expected = sorted(k for k in REFERENCE.files if k.startswith(f"{name}.{prefix}"))
        assert [f"{name}.{prefix}{i}_{j}" for i, scale in enumerate(result) for j in range(len(scale))] == expected
        for i, scale in enumerate(result):
            for j, value in enumerate(scale):
                assert_matches(value, f"{name}.{prefix}{i}_{j}")


def test_face_discriminator_matches_the_authors():
    net = loaded("face_discriminator")
    with torch.no_grad():
        assert_matches(net(ref("face_discriminator.x")), "face_discriminator.out")
        assert_matches(net.train()(ref("face_discriminator.x")), "face_discriminator.train_out")


def test_reference_outputs_depend_on_the_weights():
    # Guards the tests above: perturbing one inner layer must move the output past tolerance
    # (not by scaling: instance norm undoes that).
    state = dict(seeded("local"))
    key = "model1_2.0.conv_block.5.weight"
    state[key] = state[key] + 0.01 * torch.randn(state[key].shape, generator=torch.Generator().manual_seed(0))
    net = loaded("local", state)
    with torch.no_grad():
        assert (net(generator_input("local")) - ref("local.out")).abs().max() > 1e-3


# ------------------------------------------------------------------ pix2pixHD's checkpoint files

@pytest.mark.parametrize("name", ["local", "face", "face_unet", "discriminator", "face_discriminator"])
def test_save_network_files_load_strictly(name, tmp_path):
    # BaseModel.save_network: torch.save(network.cpu().state_dict(), '<epoch>_net_<label>.pth').
    path = tmp_path / "latest_net_G.pth"
    torch.save(seeded(name), path)
    net = loaded(name, path)
    for key, value in seeded(name).items():
        assert torch.equal(net.state_dict()[key], value), key


def test_checkpoints_of_pytorch_before_0_4_load():
    # BatchNorm had no num_batches_tracked before PyTorch 0.4; DataParallel adds module.
    old = {"module." + k: v for k, v in seeded("face_discriminator").items() if not k.endswith("num_batches_tracked")}
    net = loaded("face_discriminator", old)
    with torch.no_grad():
        assert_matches(net(ref("face_discriminator.x")), "face_discriminator.out")


def test_wrong_keys_or_shapes_are_refused_in_one_line():
    renamed = dict(seeded("face"))
    renamed["model.99.weight"] = renamed.pop("model.1.weight")
    with pytest.raises(WeightsInvalid, match="does not fit FaceResidualGenerator") as caught:
        loaded("face", renamed)
    assert "\n" not in str(caught.value)
    with pytest.raises(WeightsInvalid, match="does not fit LocalEnhancer.*Unexpected key"):   # a global-stage file
        load_weights(CASES["local"](), seeded("global"))
    misshapen = dict(seeded("face"), **{"model.1.bias": torch.zeros(5)})
    with pytest.raises(WeightsInvalid, match="size mismatch for model.1.bias"):
        loaded("face", misshapen)


# ------------------------------------------------------------------ VGG-19

def torchvision_vgg19_layout():
    """Keys and shapes of torchvision's vgg19() state dict (configuration E), on the meta device."""
    widths = [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512, "M"]
    layout, index, channels = {}, 0, 3
    for v in widths:
        if v != "M":
            layout[f"features.{index}.weight"] = (v, channels, 3, 3)
            layout[f"features.{index}.bias"] = (v,)
            channels, index = v, index + 2
        else:
            index += 1
    for index, (n_out, n_in) in zip((0, 3, 6), [(4096, 512 * 7 * 7), (4096, 4096), (1000, 4096)]):
        layout[f"classifier.{index}.weight"], layout[f"classifier.{index}.bias"] = (n_out, n_in), (n_out,)
    return {k: torch.empty(shape, device="meta") for k, shape in layout.items()}


def test_vgg19_takes_torchvision_keys_up_to_relu5_1():
    layout = torchvision_vgg19_layout()
    kept = torchvision_vgg19_features(layout)
    with torch.device("meta"):
        ours = Vgg19Features().state_dict()
    assert key_list(kept) == key_list(ours) == [str(k) for k in REFERENCE["vgg19.keys"]]
    assert max(int(k.split(".")[1]) for k in kept) == 28


def test_vgg19_refuses_other_layouts():
    layout = torchvision_vgg19_layout()
    with pytest.raises(WeightsInvalid, match="missing features.28.bias"):
        torchvision_vgg19_features({k: v for k, v in layout.items() if k != "features.28.bias"})
    with pytest.raises(WeightsInvalid, match="unexpected features.1.running_mean"):    # a vgg19_bn file
        torchvision_vgg19_features(dict(layout, **{"features.1.running_mean": torch.empty(64, device="meta")}))


def test_vgg19_file_loads_and_matches_the_authors_slices(tmp_path):
    # A torchvision-format file (features past relu5_1 included) with the seeded weights.
    path = tmp_path / "vgg19-dcbb9e9d.pth"
    extra = {f"features.{i}.weight": torch.randn(512, 512, 3, 3) * 0.01 for i in (30, 32, 34)}
    torch.save(dict(seeded("vgg19"), **extra), path)
    net = load_weights(Vgg19Features(), torchvision_vgg19_features(read_state_dict(path))).eval()
    assert not any(p.requires_grad for p in net.parameters())
    x, y = ref("vgg19.x"), ref("vgg19.y")
    with torch.no_grad():
        fx, fy = net(x), net(y)
    assert_matches(fx[0][:, :8], "vgg19.relu1_first8")
    for i, value in enumerate(fx[1:], 2):
        assert_matches(value, f"vgg19.relu{i}")
    # pix2pixHD's VGGLoss: sum_i w_i * L1(vgg(x)_i, vgg(y)_i).
    weights = [1 / 32, 1 / 16, 1 / 8, 1 / 4, 1.0]
    loss = sum(w * nn.functional.l1_loss(a, b) for w, a, b in zip(weights, fx, fy))
    assert_matches(loss.reshape(1), "vgg19.loss")


# ------------------------------------------------------------------ inference steps

def test_chained_inference_with_face_residual_matches_the_authors():
    # test_fullts.py: zeros for the first frame, then each output (face residual added).
    generator, face_generator = loaded("global"), loaded("face")
    box = FaceBox(*REFERENCE["chain.face_box"][0].tolist())
    labels, expected = ref("chain.labels"), ref("chain.frames")
    # Each step from the authors' previous frame: fed back unclamped, a frame's float
    # rounding (1e-4 here) grows about tenfold a frame, so whole chains differ between CPUs.
    previous = [blank_previous_frame(labels[0]), *expected[:-1]]
    with torch.no_grad():
        frames = [synthesize_frame(generator, label, before, face_generator, box)
                  for label, before in zip(labels, previous)]
    assert_matches(torch.stack(frames), "chain.frames")
    assert torch.stack(frames).abs().max() > 1       # the face box leaves [-1, 1]; fed back unclamped


def test_generator_input_is_label_then_previous_frame():
    label, previous = torch.rand(2, 3, 8, 16), torch.rand(2, 3, 8, 16) * 2 - 1
    x = chain_generator_input(label, previous)
    assert x.shape == (2, 6, 8, 16)
    assert torch.equal(x[:, :3], label) and torch.equal(x[:, 3:], previous)
    blank = blank_previous_frame(label)
    assert blank.shape == (2, 3, 8, 16) and not blank.any()


def test_face_box_is_rows_then_columns():
    box = FaceBox.from_text("19 147 328 456\n")
    assert box == (19, 147, 328, 456) and (box.top, box.bottom, box.left, box.right) == (19, 147, 328, 456)
    image = torch.arange(512 * 1024.0).reshape(1, 1, 512, 1024)
    crop = crop_face(image, box)
    assert crop.shape == (1, 1, 128, 128) and crop[0, 0, 0, 0] == 19 * 1024 + 328
    with pytest.raises(ValueError, match="four integers"):
        FaceBox.from_text("1 2 3")


def test_face_residual_changes_only_the_box():
    box = FaceBox(2, 6, 4, 12)
    label, generated = torch.rand(1, 3, 8, 16), torch.rand(1, 3, 8, 16)
    face_input = face_generator_input(label, generated, box)
    assert face_input.shape == (1, 6, 4, 8)
    assert torch.equal(face_input[:, :3], label[:, :, 2:6, 4:12])          # the label, not the chained input
    assert torch.equal(face_input[:, 3:], generated[:, :, 2:6, 4:12])
    residual = torch.full((1, 3, 4, 8), 0.5)
    before = generated.clone()
    out = add_face_residual(generated, residual, box)
    assert torch.equal(generated, before)                                    # a copy
    assert torch.allclose(out[:, :, 2:6, 4:12], before[:, :, 2:6, 4:12] + 0.5)
    out[:, :, 2:6, 4:12] = before[:, :, 2:6, 4:12]
    assert torch.equal(out, before)


def test_synthesize_frame_without_face_generator_is_the_generator():
    net = loaded("global")
    label, previous = ref("global.label"), ref("global.previous")
    with torch.no_grad():
        assert torch.equal(synthesize_frame(net, label, previous), net(chain_generator_input(label, previous)))
    with pytest.raises(ValueError, match="face box"):
        synthesize_frame(net, label, previous, face_generator=net)


# ------------------------------------------------------------------ options and training

def test_norm_choice():
    instance, batch = norm_layer_for("instance")(8), norm_layer_for("batch")(8)
    assert isinstance(instance, nn.InstanceNorm2d) and not list(instance.parameters())
    assert not instance.track_running_stats
    assert isinstance(batch, nn.BatchNorm2d) and batch.affine
    with pytest.raises(ValueError, match="instance, batch"):
        norm_layer_for("group")


def test_constructors_apply_pix2pixhd_initialisation():
    torch.manual_seed(0)
    net = init_weights(GlobalGenerator(ngf=8, n_downsample_global=2, n_blocks_global=1, norm="batch"))
    convs = torch.cat([m.weight.flatten() for m in net.modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))])
    scales = torch.cat([m.weight for m in net.modules() if isinstance(m, nn.BatchNorm2d)])
    assert abs(convs.std().item() - 0.02) < 0.002 and abs(scales.mean().item() - 1) < 0.01
    assert FaceDiscriminator(ndf=8).facemodel[0].weight.std().item() < 0.03


def test_reduced_networks_train_end_to_end():
    # One step of the temporal GAN: two chained frames, both discriminators, every
    # generator and discriminator parameter that the authors use gets a gradient.
    torch.manual_seed(0)
    generator = LocalEnhancer(ngf=4, n_downsample_global=2, n_blocks_global=1, n_blocks_local=1)
    face_generator = FaceResidualGenerator(ngf=4, n_downsample_global=2, n_blocks_global=1)
    netd, face_d = MultiscaleDiscriminator(ndf=4, num_D=2), FaceDiscriminator(ndf=4)
    labels, box = torch.rand(2, 1, 3, 32, 64), FaceBox(8, 24, 24, 40)
    frame0 = synthesize_frame(generator, labels[0], blank_previous_frame(labels[0]), face_generator, box)
    frame1 = synthesize_frame(generator, labels[1], frame0, face_generator, box)
    scores = netd(torch.cat((labels[0], labels[1], frame0, frame1), 1))
    face_score = face_d(face_generator_input(labels[1], frame1, box))
    loss = sum(((s[-1] - 1) ** 2).mean() for s in scores) + ((face_score - 1) ** 2).mean()
    loss.backward()
    for net in (generator, face_generator, netd, face_d):
        assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in net.parameters()), type(net).__name__

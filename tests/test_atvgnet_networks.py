"""ATVGnet networks: the authors' checkpoint format loads strictly, outputs match theirs.

tests/data/atvgnet_reference.npz holds inputs and the outputs of the authors' modules
(made by tests/data/make_atvgnet_reference.py) with the seeded weights of
tests/seeded.py, which are rebuilt here.
"""

from pathlib import Path

import numpy as np
import pytest
import torch

from models import registry
from models.atvgnet.networks import ATNet, GLDiscriminator, VGNet
from models.weights import WeightsInvalid
from tests.legacy_pickle import save_legacy
from tests.seeded import seeded_state_dict

REFERENCE = np.load(Path(__file__).parent / "data" / "atvgnet_reference.npz")
CASES = {
    "atnet": (ATNet, ["example_landmark", "audio"], ["out"]),
    "vgnet": (VGNet, ["image", "landmarks", "example_landmark"],
              ["frames", "attention", "color", "landmark_attention"]),
    "discriminator": (GLDiscriminator, ["xs", "example_landmark"], ["score", "landmarks"]),
}


def ref(key):
    return torch.from_numpy(REFERENCE[key].astype(np.float32))


@pytest.fixture(scope="module")
def seeded():
    return {name: seeded_state_dict(cls().state_dict()) for name, (cls, _, _) in CASES.items()}


@pytest.mark.parametrize("name", CASES)
def test_outputs_match_the_authors_modules(name, seeded):
    _, inputs, outputs = CASES[name]
    net = registry.load_network("atvgnet", name, seeded[name])
    with torch.no_grad():
        result = net(*[ref(f"{name}.{i}") for i in inputs])
    result = result if isinstance(result, tuple) else (result,)
    assert len(result) == len(outputs)
    for key, value in zip(outputs, result):
        expected = ref(f"{name}.{key}")
        assert value.shape == expected.shape, key
        torch.testing.assert_close(value, expected, atol=1e-4, rtol=1e-4, msg=f"{name}.{key}")


def test_reference_outputs_depend_on_the_weights(seeded):
    # Guards the test above: perturbing one deep layer must move the outputs past tolerance.
    state = dict(seeded["vgnet"])
    state["generator1.4.conv_block.0.weight"] = state["generator1.4.conv_block.0.weight"] * 1.1
    net = registry.load_network("atvgnet", "vgnet", state)
    with torch.no_grad():
        frames = net(ref("vgnet.image"), ref("vgnet.landmarks"), ref("vgnet.example_landmark"))[2]
    assert (frames - ref("vgnet.color")).abs().max() > 1e-3


@pytest.mark.parametrize("name", ["atnet", "vgnet"])
def test_legacy_python2_dataparallel_file_loads_strictly(name, seeded, tmp_path):
    path = tmp_path / f"{name}.pth"
    save_legacy(seeded[name], path)
    assert not __import__("zipfile").is_zipfile(path)
    net = registry.load_network("atvgnet", name, path)
    loaded = net.state_dict()
    assert set(loaded) == set(seeded[name])
    for key, value in seeded[name].items():
        assert torch.equal(loaded[key], value), key
    assert not net.training


def test_file_saved_before_num_batches_tracked_existed_loads(seeded, tmp_path):
    old = {k: v for k, v in seeded["vgnet"].items() if not k.endswith("num_batches_tracked")}
    path = tmp_path / "generator_23.pth"
    save_legacy(old, path)
    net = registry.load_network("atvgnet", "vgnet", path)
    assert torch.equal(net.state_dict()["generator_color.0.weight"], old["generator_color.0.weight"])


def test_missing_or_misshapen_keys_are_refused(seeded, tmp_path):
    state = dict(seeded["atnet"])
    del state["lstm_fc.0.bias"]
    with pytest.raises(WeightsInvalid, match="does not fit ATNet"):
        registry.load_network("atvgnet", "atnet", state)
    state = dict(seeded["atnet"], **{"lstm_fc.0.bias": torch.zeros(7)})
    with pytest.raises(WeightsInvalid):
        registry.load_network("atvgnet", "atnet", state)


class Exploit:
    def __reduce__(self):
        return (print, ("this must never run",))


@pytest.mark.parametrize("zip_format", [True, False])
def test_files_holding_code_are_refused(zip_format, tmp_path, capsys):
    path = tmp_path / "evil.pth"
    torch.save({"module.lstm_fc.0.bias": Exploit()}, path, _use_new_zipfile_serialization=zip_format)
    with pytest.raises(WeightsInvalid, match="cannot read"):
        registry.load_network("atvgnet", "atnet", path)
    assert "must never run" not in capsys.readouterr().out


def test_atnet_in_pieces_with_carried_state_equals_whole(seeded):
    net = registry.load_network("atvgnet", "atnet", seeded["atnet"])
    torch.manual_seed(1)
    example, audio = torch.randn(1, 6), torch.randn(1, 11, 28, 12) * 10
    with torch.no_grad():
        whole = net(example, audio)
        first, state = net.step(example, audio[:, :4])
        second, _ = net.step(example, audio[:, 4:], state)
    torch.testing.assert_close(torch.cat([first, second], 1), whole, atol=1e-5, rtol=1e-5)


def test_vgnet_frames_are_independent_at_batch_one(seeded):
    # The authors' ConvGRU runs along the batch axis, so at batch 1 a frame does not
    # depend on its neighbours: generating in chunks cannot change the video.
    net = registry.load_network("atvgnet", "vgnet", seeded["vgnet"])
    image, landmarks = ref("vgnet.image")[:1], ref("vgnet.landmarks")[:1]
    example = ref("vgnet.example_landmark")[:1]
    with torch.no_grad():
        both = net(image, landmarks, example)[0]
        second = net(image, landmarks[:, 1:], example)[0]
    torch.testing.assert_close(both[:, 1:], second, atol=1e-5, rtol=1e-5)


def test_reduced_width_networks_run():
    at, vg = ATNet(width=8).eval(), VGNet(ngf=8).eval()
    with torch.no_grad():
        assert at(torch.randn(1, 6), torch.randn(1, 3, 28, 12)).shape == (1, 3, 6)
        out = vg(torch.rand(1, 3, 128, 128), torch.randn(1, 3, 136), torch.randn(1, 136))
    assert [tuple(o.shape) for o in out] == [(1, 3, 3, 128, 128), (1, 3, 1, 128, 128),
                                             (1, 3, 3, 128, 128), (1, 3, 1, 32, 32)]


def test_unknown_names_are_clear():
    from models.errors import UnknownModel
    with pytest.raises(UnknownModel, match="unknown model"):
        registry.load_network("nope", "atnet", None)
    with pytest.raises(UnknownModel, match="has no network"):
        registry.load_network("atvgnet", "nope", None)

"""DAVS networks: the authors' checkpoint format loads strictly, outputs match theirs.

tests/data/davs_reference.npz holds inputs, the outputs of the authors' modules and their
state-dict keys and shapes (made by tests/data/make_davs_reference.py) with the seeded
weights of tests/seeded.py, which are rebuilt here.
"""

import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from models import registry
from models.davs.networks import (
    Decoder,
    DomainDiscriminator,
    IdentityEncoder,
    IdWordClassifier,
    LipFeatureEncoder,
    MfccEncoder,
    SequenceDiscriminator,
    WordClassifier,
    expand_identity,
)
from models.weights import WeightsInvalid
from tests.legacy_pickle import py2_pickle
from tests.seeded import seeded_state_dict

REFERENCE = np.load(Path(__file__).parent / "data" / "davs_reference.npz")
CLASSES = {
    "id_encoder": IdentityEncoder, "decoder": Decoder, "mfcc_encoder": MfccEncoder,
    "lip_feature_encoder": LipFeatureEncoder, "sequence_discriminator": SequenceDiscriminator,
    "word_classifier": WordClassifier, "domain_discriminator": DomainDiscriminator,
    "id_word_classifier": IdWordClassifier,
}
# Registry name -> (inputs, outputs) as stored by the reference script.
CASES = {
    "mfcc_encoder": (["x"], ["out"]),
    "lip_feature_encoder": (["x"], ["out"]),
    "sequence_discriminator": (["input", "audio"], ["patch", "score"]),
    "word_classifier": (["x"], ["logits"]),
    "domain_discriminator": (["x"], ["prob"]),
    "id_word_classifier": (["x"], ["logits"]),
}
RELEASED = {"id_encoder": "ID_encoder", "decoder": "Decoder", "mfcc_encoder": "mfcc_encoder",
            "lip_feature_encoder": "lip_feature_encoder"}
SMALL = {
    "id_encoder": {"base_channels": 8, "feature_length": 32},
    "decoder": {"feature_length": 32, "base_channels": 8, "id_skip_channels": 40},
    "mfcc_encoder": {"base_channels": 8, "feature_length": 32},
    "lip_feature_encoder": {"base_channels": 8, "feature_length": 32},
}


def ref(key):
    value = REFERENCE[key]
    if value.dtype == np.uint8:        # frames stored as the loaders' 8-bit pixels
        return torch.from_numpy(value).float() / 255
    return torch.from_numpy(value.astype(np.float32))


def assert_matches(value, key):
    expected = ref(key)
    assert value.shape == expected.shape, key
    torch.testing.assert_close(value, expected, atol=1e-4, rtol=1e-4, msg=key)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    # On the shared 2-core machines, two threads contend with other processes and run
    # these convolutions several times slower than one.
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def seeded():
    return {name: seeded_state_dict(cls().state_dict()) for name, cls in CLASSES.items()}


def authors_format(state_dict):
    """As nn.DataParallel under PyTorch 0.2 saved it: ``module.`` keys, no num_batches_tracked."""
    return {"module." + k: v for k, v in state_dict.items() if not k.endswith("num_batches_tracked")}


@pytest.mark.parametrize("name", CLASSES)
def test_state_dict_keys_and_shapes_are_the_authors(name, seeded):
    expected = [str(k) for k in REFERENCE[f"{name}.keys"]]
    ours = [f"{k} {tuple(v.shape)}" for k, v in seeded[name].items()]
    assert ours == expected


def test_id_encoder_and_decoder_match_the_authors_modules(seeded):
    encoder = registry.load_network("davs", "id_encoder", seeded["id_encoder"])
    decoder = registry.load_network("davs", "decoder", seeded["decoder"])
    with torch.no_grad():
        id_feature = encoder(ref("id_encoder.x"))
        frame = decoder(id_feature, ref("decoder.mouth_feature"))
    assert isinstance(id_feature, list) and len(id_feature) == 5
    for key, value in zip(["pid", "net4", "net3", "net2"], id_feature):
        assert_matches(value, f"id_encoder.{key}")
    assert_matches(id_feature[4][:, :16], "id_encoder.net1_first16")
    assert_matches(frame, "decoder.frame")


@pytest.mark.parametrize("name", CASES)
def test_outputs_match_the_authors_modules(name, seeded):
    inputs, outputs = CASES[name]
    net = registry.load_network("davs", name, seeded[name])
    with torch.no_grad():
        result = net(*[ref(f"{name}.{i}") for i in inputs])
    result = result if isinstance(result, list) else [result]
    assert len(result) == len(outputs)
    for key, value in zip(outputs, result):
        assert_matches(value, f"{name}.{key}")


def test_reference_outputs_depend_on_the_weights(seeded):
    # Guards the tests above: perturbing one inner layer must move the outputs past tolerance.
    state = dict(seeded["mfcc_encoder"])
    key = "model2.conv2.weight"
    state[key] = state[key] * 1.01
    net = registry.load_network("davs", "mfcc_encoder", state)
    with torch.no_grad():
        out = net(ref("mfcc_encoder.x"))
    assert (out - ref("mfcc_encoder.out")).abs().max() > 1e-3


def save_authors_checkpoint(seeded, path, python2):
    checkpoint = {"step": 101, "epoch": 101}
    checkpoint.update({entry: authors_format(seeded[name]) for name, entry in RELEASED.items()})
    extra = {"pickle_module": py2_pickle} if python2 else {}
    torch.save(checkpoint, path, pickle_protocol=2, _use_new_zipfile_serialization=False, **extra)


@pytest.fixture(scope="module")
def small_seeded():
    return {name: seeded_state_dict(CLASSES[name](**config).state_dict()) for name, config in SMALL.items()}


@pytest.mark.parametrize("python2", [False, True])
def test_released_checkpoint_format_loads_each_network_strictly(python2, small_seeded, tmp_path):
    # The released file's layout (reduced widths keep the file small; the keys are the same).
    path = tmp_path / "101_DAVS_checkpoint.pth.tar"
    save_authors_checkpoint(small_seeded, path, python2)
    assert not zipfile.is_zipfile(path)
    for name in RELEASED:
        net = registry.load_network("davs", name, path, **SMALL[name])
        assert not net.training
        loaded = net.state_dict()
        assert set(loaded) == set(small_seeded[name])
        for key, value in small_seeded[name].items():
            assert torch.equal(loaded[key], value), key


def test_full_width_checkpoint_dict_loads_in_memory(seeded):
    checkpoint = {"step": 1, "epoch": 101}
    checkpoint.update({entry: authors_format(seeded[name]) for name, entry in RELEASED.items()})
    for name in RELEASED:
        net = registry.load_network("davs", name, checkpoint)
        some_key = next(iter(seeded[name]))
        assert torch.equal(net.state_dict()[some_key], seeded[name][some_key])


def one_line_error(name, checkpoint, match, **config):
    with pytest.raises(WeightsInvalid, match=match) as caught:
        registry.load_network("davs", name, checkpoint, **config)
    assert "\n" not in str(caught.value)


def test_wrong_keys_shapes_or_entries_are_refused_in_one_line(small_seeded, tmp_path):
    path = tmp_path / "ckpt.pth.tar"
    good = {entry: authors_format(small_seeded[name]) for name, entry in RELEASED.items()}

    renamed = dict(good["ID_encoder"])
    renamed["module.block1.conv01_c.weight"] = renamed.pop("module.block1.conv01_a.weight")
    torch.save(dict(good, ID_encoder=renamed), path, _use_new_zipfile_serialization=False)
    one_line_error("id_encoder", path, "does not fit IdentityEncoder.*conv01_", **SMALL["id_encoder"])

    misshapen = dict(good["Decoder"], **{"module.conv7_2.bias": torch.zeros(4)})
    torch.save(dict(good, Decoder=misshapen), path, _use_new_zipfile_serialization=False)
    one_line_error("decoder", path, "does not fit Decoder.*size mismatch", **SMALL["decoder"])

    without = {k: v for k, v in good.items() if k != "mfcc_encoder"}
    torch.save(without, path, _use_new_zipfile_serialization=False)
    one_line_error("mfcc_encoder", path, "no state dict under 'mfcc_encoder'", **SMALL["mfcc_encoder"])

    # A full-width checkpoint into a reduced network: a shape error, not a crash.
    one_line_error("lip_feature_encoder", {"lip_feature_encoder": authors_format(
        seeded_state_dict(LipFeatureEncoder().state_dict()))}, "size mismatch", **SMALL["lip_feature_encoder"])


def test_frames_folded_into_the_batch_give_the_per_frame_results(small_seeded):
    # The authors call the decoder once per frame; one call on B*T rows must agree.
    encoder = registry.load_network("davs", "id_encoder", small_seeded["id_encoder"], **SMALL["id_encoder"])
    decoder = registry.load_network("davs", "decoder", small_seeded["decoder"], **SMALL["decoder"])
    torch.manual_seed(0)
    faces, words = ref("id_encoder.x").expand(2, -1, -1, -1), torch.randn(2, 3, 32)
    with torch.no_grad():
        id_feature = encoder(faces)
        folded = decoder(expand_identity(id_feature, 3), words.flatten(0, 1)).unflatten(0, (2, 3))
        one_by_one = torch.stack([decoder(id_feature, words[:, t]) for t in range(3)], 1)
        single = decoder(expand_identity(encoder(faces[:1]), 3), words[0])     # the one-face view
    torch.testing.assert_close(folded, one_by_one, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(single, one_by_one[0], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("image_size", [256, 128])
def test_reduced_networks_shapes(image_size):
    s = image_size
    encoder = IdentityEncoder(base_channels=8, feature_length=32, image_size=s).eval()
    decoder = Decoder(feature_length=32, base_channels=8, id_skip_channels=40, image_size=s).eval()
    lips = LipFeatureEncoder(base_channels=8, feature_length=32, image_size=s).eval()
    mfcc = MfccEncoder(base_channels=8, feature_length=32).eval()
    netd = SequenceDiscriminator(frames=6, ndf=8, image_size=s).eval()
    words, domain = WordClassifier(frames=12, feature_length=32, hidden=16, num_words=10), DomainDiscriminator(32)
    id_words = IdWordClassifier(feature_channels=16, frames=3, hidden=8, num_words=10, image_size=s).eval()
    with torch.no_grad():
        id_feature = encoder(torch.rand(1, 3, 3, s, s))              # (B, T, 3, S, S) folds
        assert [tuple(x.shape) for x in id_feature] == [
            (3, 32), (3, 32, s // 32, s // 32), (3, 80, s // 16, s // 16), (3, 40, s // 8, s // 8),
            (3, 16, s // 4, s // 4)]
        lip_wid = lips(torch.rand(1, 3, 3, s, s))
        audio_wid = mfcc(torch.randn(1, 3, 1, 20, 12))
        assert lip_wid.shape == audio_wid.shape == (1, 3, 32)
        assert lips(torch.rand(2, 3, s, s)).shape == (2, 1, 32)
        assert decoder(id_feature, audio_wid[0]).shape == (3, 3, s, s)
        patch, score = netd(torch.rand(1, 18, s, s), torch.randn(1, 6, 20, 12))
        assert patch.shape == (1, 1, s // 8 - 2, s // 8 - 2) and score.shape == (1, 1)
        assert words(torch.randn(2, 12, 32)).shape == (2, 10)
        assert domain(torch.randn(2, 12, 32)).shape == (24, 1)
        assert id_words(id_feature[4]).shape == (1, 10)


def test_reduced_networks_train_end_to_end():
    # One backward pass through encoder, decoder and both wid encoders: every parameter
    # that the authors use gets a gradient.
    encoder = IdentityEncoder(base_channels=4, feature_length=16, image_size=128)
    decoder = Decoder(feature_length=16, base_channels=8, id_skip_channels=20, image_size=128)
    mfcc = MfccEncoder(base_channels=4, feature_length=16)
    face, audio = torch.rand(2, 3, 128, 128), torch.randn(2, 1, 1, 20, 12)
    frame = decoder(encoder(face), mfcc(audio)[:, 0])
    (frame - face).abs().mean().backward()
    assert encoder.block42.conv42_a.weight.grad.abs().sum() > 0
    assert mfcc.model2.bn1.weight.grad.abs().sum() > 0
    assert 0 <= frame.min() and frame.max() <= 1


def test_unknown_network_is_clear():
    from models.errors import UnknownModel
    with pytest.raises(UnknownModel, match="has no network"):
        registry.load_network("davs", "nope", None)

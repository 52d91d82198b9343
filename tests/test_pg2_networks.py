"""PG2 networks: the PyTorch port's checkpoints load strictly, outputs match the port's.

tests/data/pg2_reference.npz holds inputs, the outputs of the port's modules in reduced
sizes and the state-dict keys and shapes of those and of the published configurations
(made by tests/data/make_pg2_reference.py) with the seeded weights of tests/seeded.py
(with ReLU gain: ``seeded_port_state_dict``), which are rebuilt here.
"""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from models.pg2.networks import (
    DEEPFASHION,
    MARKET,
    NETWORKS,
    ImageDiscriminator,
    ImageRefinementGenerator,
    PoseIntegrationGenerator,
)
from models.weights import WeightsInvalid, load_weights
from tests.data.make_pg2_reference import seeded_port_state_dict

REFERENCE = np.load(Path(__file__).parent / "data" / "pg2_reference.npz")
# Reference case -> (registry network name, input names in forward order).
CASES = {
    "g1": ("g1", ["condition_img", "target_pose"]),
    "g1_square": ("g1", ["condition_img", "target_pose"]),
    "g2": ("g2", ["condition_image", "stage1_image"]),
    "g2_no_skip_out": ("g2", ["condition_image", "stage1_image"]),
    "discriminator": ("discriminator", ["x"]),
    "discriminator_df": ("discriminator", ["x"]),
}


def pixels(key):
    """A stored uint8 map as the port's loaders give it: [-1, 1]."""
    return torch.from_numpy(REFERENCE[key]).float() / 127.5 - 1


def config_of(case):
    return json.loads(str(REFERENCE[f"{case}.config"]))


def keys_and_shapes(state_dict):
    return [f"{k} {tuple(v.shape)}" for k, v in state_dict.items()]


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    # Two threads on the shared 2-core machines run these small convolutions slower than one.
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def save_port_checkpoint(state_dict, path):
    """As the port's ignite ``ModelCheckpoint(save_as_state_dict=True)`` writes it: a plain state dict."""
    torch.save(dict(state_dict), path)
    return path


@pytest.mark.parametrize("dataset, configs", [("market", MARKET), ("deepfashion", DEEPFASHION)])
@pytest.mark.parametrize("name", ["g1", "g2", "discriminator"])
def test_published_configs_have_the_ports_keys_and_shapes(dataset, configs, name):
    net = NETWORKS[name](**configs[name])
    assert keys_and_shapes(net.state_dict()) == [str(k) for k in REFERENCE[f"{dataset}.{name}.keys"]]


def test_defaults_are_the_market_1501_sizes():
    for name, cls in NETWORKS.items():
        assert keys_and_shapes(cls().state_dict()) == keys_and_shapes(cls(**MARKET[name]).state_dict())
        assert {k: v for k, v in cls().config.items() if k != "tf_padding"} == \
            {k: tuple(v) if isinstance(v, list) else v for k, v in MARKET[name].items()}


@pytest.mark.parametrize("case", CASES)
def test_port_checkpoint_loads_strictly_and_outputs_match(case, tmp_path):
    name, inputs = CASES[case]
    net = NETWORKS[name](**config_of(case))
    assert keys_and_shapes(net.state_dict()) == [str(k) for k in REFERENCE[f"{case}.keys"]]
    path = save_port_checkpoint(seeded_port_state_dict(net.state_dict()), tmp_path / f"network_{name}_1000.pth")
    load_weights(net, path, name=path.name).eval()
    with torch.no_grad():
        out = net(*[pixels(f"{case}.{i}") for i in inputs])
    expected = torch.from_numpy(REFERENCE[f"{case}.output"])
    assert out.shape == expected.shape
    assert (out - expected).abs().max().item() < 1e-4


def test_data_parallel_prefixes_load(tmp_path):
    net = ImageRefinementGenerator(**config_of("g2"))
    state = {"module." + k: v for k, v in seeded_port_state_dict(net.state_dict()).items()}
    load_weights(net, state)


def test_checkpoint_of_another_size_is_refused_with_a_clear_error():
    small = seeded_port_state_dict(PoseIntegrationGenerator(**config_of("g1")).state_dict())
    with pytest.raises(WeightsInvalid, match="PoseIntegrationGenerator"):
        load_weights(PoseIntegrationGenerator(**config_of("g1_square")), small)


def test_outputs_depend_on_inner_weights():
    # Guards the comparisons above: perturbing one inner layer moves the output past tolerance.
    config = config_of("g2")
    state = seeded_port_state_dict(ImageRefinementGenerator(**config).state_dict())
    state["encoder.1.conv.0.weight"] = state["encoder.1.conv.0.weight"] * 1.01
    net = load_weights(ImageRefinementGenerator(**config), state).eval()
    with torch.no_grad():
        out = net(pixels("g2.condition_image"), pixels("g2.stage1_image"))
    assert (out - torch.from_numpy(REFERENCE["g2.output"])).abs().max().item() > 1e-4


def test_tf_padding_keeps_keys_and_shifts_the_stride_2_sampling():
    config = config_of("g1")
    port, tf = PoseIntegrationGenerator(**config), PoseIntegrationGenerator(**config, tf_padding=True)
    assert keys_and_shapes(port.state_dict()) == keys_and_shapes(tf.state_dict())
    state = seeded_port_state_dict(port.state_dict())
    port.load_state_dict(state)
    tf.load_state_dict(state)
    inputs = pixels("g1.condition_img"), pixels("g1.target_pose")
    with torch.no_grad():
        assert (port(*inputs) - tf(*inputs)).abs().max().item() > 1e-3
    # The discriminator's TF form adds the convolution biases of the authors' tflib.
    extra = set(ImageDiscriminator(tf_padding=True).state_dict()) - set(ImageDiscriminator().state_dict())
    assert extra == {f"main.{i}.bias" for i in (0, 2, 5, 8)}

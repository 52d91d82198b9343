"""PG2 conversion of the authors' TensorFlow checkpoints: the V2 reader and the networks.

tests/data/pg2_reference.npz holds, for small versions of the authors' TF generators and
discriminators (made by tests/data/make_pg2_reference.py --tf from their ``models.py``,
``models256.py`` and ``wgan_gp.py``), the ``.index`` file TF's ``Saver`` wrote, the inputs
and TF's outputs. The ``.data`` file is rebuilt here from the seeds the variables were
given (``seeded_tf_variable``).
"""

import json
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from models.common.pipeline import load_project_networks, read_project
from models.pg2.convert import (
    checkpoint_prefix,
    convert_tf_checkpoint,
    convert_tf_networks,
    read_tf_checkpoint,
    read_tf_index,
)
from models.pg2.networks import NETWORKS, ImageRefinementGenerator, PoseIntegrationGenerator
from models.weights import WeightsInvalid, WeightsMissing, load_weights
from tests.data.make_pg2_reference import TF_STEP, seeded_tf_variable

REFERENCE = np.load(Path(__file__).parent / "data" / "pg2_reference.npz")
GENERATOR_CASES = ["tf_market", "tf_deepfashion"]
DISCRIMINATOR_CASES = ["tf_discriminator", "tf_discriminator_df"]


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def pixels(key):
    return torch.from_numpy(REFERENCE[key]).float() / 127.5 - 1


def nchw(key):
    return torch.from_numpy(REFERENCE[key]).permute(0, 3, 1, 2)


def assert_close(ours, theirs):
    assert ours.shape == theirs.shape
    torch.testing.assert_close(ours, theirs, atol=1e-4, rtol=1e-4)


def write_tf_checkpoint(case, directory):
    """The checkpoint TF wrote for ``case``: its ``.index`` as stored, its ``.data`` from the seeds."""
    prefix = Path(directory) / "model.ckpt-12800"
    index = Path(f"{prefix}.index")
    index.write_bytes(REFERENCE[f"{case}.index"].tobytes())
    entries, num_shards = read_tf_index(index)
    assert num_shards == 1
    data, end = bytearray(), 0
    for entry in sorted(entries.values(), key=lambda e: e.offset):
        assert entry.offset == end, "TF lays the tensors out back to back"
        if entry.name == "step":
            value = np.array(TF_STEP, np.int32)
        else:
            value = seeded_tf_variable(entry.name, entry.shape).astype(np.float32)
        assert value.nbytes == entry.size and value.shape == entry.shape
        data += value.astype(value.dtype.newbyteorder("<")).tobytes()
        end += entry.size
    Path(f"{prefix}.data-00000-of-00001").write_bytes(bytes(data))
    return prefix


@pytest.fixture(scope="module")
def tf_checkpoints(tmp_path_factory):
    folders = {}
    for case in GENERATOR_CASES + DISCRIMINATOR_CASES:
        folders[case] = write_tf_checkpoint(case, tmp_path_factory.mktemp(case))
    return folders


# ---------------------------------------------------------------------------------------
# The V2 reader


def test_reader_reads_the_index_tensorflow_wrote(tf_checkpoints):
    arrays = read_tf_checkpoint(tf_checkpoints["tf_market"])
    assert arrays["step"].dtype == np.int32 and int(arrays["step"]) == TF_STEP
    kernel = arrays["Pose_AE/G/Conv/weights"]
    assert kernel.shape == (3, 3, 21, 2) and kernel.dtype == np.float32
    np.testing.assert_array_equal(kernel, seeded_tf_variable("Pose_AE/G/Conv/weights", (3, 3, 21, 2)))
    # The trainer's optimiser state is there too: Adam slots of every variable, beta powers.
    assert "UAEnoFC/G/Conv_3/weights/Adam_1" in arrays and "beta1_power" in arrays
    assert len(arrays) == len(read_tf_index(f"{tf_checkpoints['tf_market']}.index")[0])


def test_reader_reads_only_the_selected_variables(tf_checkpoints):
    arrays = read_tf_checkpoint(tf_checkpoints["tf_discriminator"], select=lambda n: n.endswith("Filters"))
    assert sorted(arrays) == [f"Discriminator.{k}/Discriminator.{k}.Filters" for k in range(1, 5)]


def test_checkpoint_is_found_from_its_folder_index_or_data_file(tf_checkpoints, tmp_path):
    prefix = tf_checkpoints["tf_market"]
    assert checkpoint_prefix(prefix) == prefix
    assert checkpoint_prefix(f"{prefix}.index") == prefix
    assert checkpoint_prefix(f"{prefix}.data-00000-of-00001") == prefix
    assert checkpoint_prefix(prefix.parent) == prefix                    # the only .index there
    (prefix.parent / "checkpoint").write_text(f'model_checkpoint_path: "{prefix.name}"\n'
                                              f'all_model_checkpoint_paths: "{prefix.name}"\n')
    assert checkpoint_prefix(prefix.parent) == prefix


def _varint(n):
    out = bytearray()
    while True:
        out.append((n & 0x7F) | (0x80 if n > 0x7F else 0))
        n >>= 7
        if not n:
            return bytes(out)


def _field(number, value):
    """One protobuf field: an int (varint) or bytes (length-delimited)."""
    if isinstance(value, int):
        return _varint(number << 3) + _varint(value)
    return _varint(number << 3 | 2) + _varint(len(value)) + value


def _block(entries, restart_interval):
    """A LevelDB table block: prefix-compressed entries, restart points, no compression."""
    out, restarts, previous = bytearray(), [], b""
    for i, (key, value) in enumerate(entries):
        shared = 0
        if i % restart_interval:
            while shared < min(len(key), len(previous)) and key[shared] == previous[shared]:
                shared += 1
        else:
            restarts.append(len(out))
        out += _varint(shared) + _varint(len(key) - shared) + _varint(len(value)) + key[shared:] + value
        previous = key
    restarts = restarts or [0]
    return bytes(out) + struct.pack(f"<{len(restarts)}I", *restarts) + struct.pack("<I", len(restarts))


def write_v2_checkpoint(prefix, tensors, num_shards=2, per_block=2, restart_interval=2):
    """A V2 checkpoint written from the format's description, in several blocks and shards.

    ``tensors``: {name: array or (TF dtype enum, shape, raw bytes)}.
    """
    dtypes = {np.dtype(np.float32): 1, np.dtype(np.int64): 9, np.dtype(np.float16): 19}
    shards = [bytearray() for _ in range(num_shards)]
    entries = [(b"", _field(1, num_shards) + _field(3, _field(1, 1)))]   # header: shards, version
    for i, name in enumerate(sorted(tensors)):
        value = tensors[name]
        dtype, shape, raw = value if isinstance(value, tuple) else (dtypes[value.dtype], value.shape,
                                                                    value.tobytes())
        shard = shards[i % num_shards]
        shape_proto = b"".join(_field(2, _field(1, d)) for d in shape)
        entry = _field(1, dtype) + _field(2, shape_proto) + (_field(3, i % num_shards) if i % num_shards else b"")
        entry += (_field(4, len(shard)) if len(shard) else b"") + _field(5, len(raw))
        entries.append((name.encode(), entry))
        shard += raw
    table, index = bytearray(), []
    for start in range(0, len(entries), per_block):
        chunk = entries[start:start + per_block]
        block = _block(chunk, restart_interval)
        index.append((chunk[-1][0], _varint(len(table)) + _varint(len(block))))
        table += block + b"\0" + b"\0\0\0\0"           # trailer: no compression, (unchecked) CRC
    meta_handle = _varint(len(table)) + _varint(len(_block([], 1)))
    table += _block([], 1) + b"\0\0\0\0\0"
    index_block = _block(index, 1)
    index_handle = _varint(len(table)) + _varint(len(index_block))
    table += index_block + b"\0\0\0\0\0"
    footer = (meta_handle + index_handle).ljust(40, b"\0") + struct.pack("<Q", 0xDB4775248B80FB57)
    Path(f"{prefix}.index").write_bytes(bytes(table + footer))
    for i, shard in enumerate(shards):
        Path(f"{prefix}.data-{i:05d}-of-{num_shards:05d}").write_bytes(bytes(shard))


def test_reader_reads_several_blocks_and_shards(tmp_path):
    rng = np.random.default_rng(0)
    tensors = {
        "G/conv/weights": rng.standard_normal((3, 3, 4, 5)).astype(np.float32),
        "G/conv/biases": rng.standard_normal(5).astype(np.float32),
        "G/conv_1/weights": rng.standard_normal((1, 1, 5, 2)).astype(np.float32),
        "G/conv_10/weights": rng.standard_normal((2, 2)).astype(np.float32),
        "global_step": np.array(123456789012, np.int64),
        "scale": np.array(0.5, np.float16),
        "empty": np.zeros((0, 3), np.float32),
        "name_table": (7, (2,), b"\x01a\x01b"),              # DT_STRING: skipped
    }
    write_v2_checkpoint(tmp_path / "ckpt", tensors)
    arrays = read_tf_checkpoint(tmp_path / "ckpt")
    assert sorted(arrays) == sorted(k for k in tensors if k != "name_table")
    for name, value in arrays.items():
        assert value.dtype == tensors[name].dtype and value.shape == tensors[name].shape
        np.testing.assert_array_equal(value, tensors[name])


def test_reader_refuses_what_is_not_a_checkpoint(tmp_path, tf_checkpoints):
    (tmp_path / "x.index").write_bytes(b"\0" * 100)
    with pytest.raises(WeightsInvalid, match="not a TensorFlow checkpoint"):
        read_tf_checkpoint(tmp_path / "x")
    with pytest.raises(WeightsMissing):
        read_tf_checkpoint(tmp_path / "absent")
    damaged = tmp_path / "damaged"
    Path(f"{damaged}.index").write_bytes(Path(f"{tf_checkpoints['tf_market']}.index").read_bytes())
    Path(f"{damaged}.data-00000-of-00001").write_bytes(b"\0" * 100)
    with pytest.raises(WeightsInvalid, match="truncated"):
        read_tf_checkpoint(damaged)


# ---------------------------------------------------------------------------------------
# TF's forward pass in numpy (NHWC, HWIO, "SAME"), written from the authors' models.py


def conv_same(x, kernel, bias, stride=1):
    """tf.nn.conv2d(x, kernel, stride, "SAME") + bias: the odd padding pixel bottom/right."""
    kh, kw = kernel.shape[:2]
    pads = []
    for size, k in ((x.shape[1], kh), (x.shape[2], kw)):
        total = max((-(-size // stride) - 1) * stride + k - size, 0)
        pads.append((total // 2, total - total // 2))
    x = np.pad(x, [(0, 0), *pads, (0, 0)])
    windows = np.lib.stride_tricks.sliding_window_view(x, (kh, kw), axis=(1, 2))[:, ::stride, ::stride]
    return np.einsum("nhwcij,ijco->nhwo", windows, kernel) + bias


def numpy_tf_g1(tf_vars, x, pose, repeat_num):
    """GeneratorCNN_Pose_UAEAfterResidual (ReLU, no noise) on NHWC float64 inputs."""
    names = iter(["Conv"] + [f"Conv_{k}" for k in range(1, 6 * repeat_num)])
    relu = lambda t: np.maximum(t, 0)

    def conv(t, stride=1):
        scope = f"Pose_AE/G/{next(names)}"
        return conv_same(t, tf_vars[f"{scope}/weights"], tf_vars[f"{scope}/biases"], stride)

    h = relu(conv(np.concatenate([x, pose], -1)))
    skips = []
    for i in range(repeat_num):
        h = relu(conv(relu(conv(h)))) + h
        skips.append(h)
        if i < repeat_num - 1:
            h = relu(conv(h, 2))
    n, rows, cols, _ = h.shape
    h = h.reshape(n, -1) @ tf_vars["Pose_AE/G/fully_connected/weights"] + tf_vars["Pose_AE/G/fully_connected/biases"]
    h = h @ tf_vars["Pose_AE/G/fully_connected_1/weights"] + tf_vars["Pose_AE/G/fully_connected_1/biases"]
    h = h.reshape(n, rows, cols, -1)
    for i in range(repeat_num):
        h = np.concatenate([h, skips[repeat_num - 1 - i]], -1)
        h = relu(conv(relu(conv(h)))) + h
        if i < repeat_num - 1:
            h = relu(conv(h.repeat(2, axis=1).repeat(2, axis=2)))
    return conv(h)


def test_numpy_reference_of_tf_g1_matches_tensorflow_and_the_converted_g1(tf_checkpoints):
    case = "tf_market"
    tf_vars = {k: v.astype(np.float64) for k, v in read_tf_checkpoint(tf_checkpoints[case]).items()
               if v.dtype == np.float32}
    x, pose = (pixels(f"{case}.{k}").permute(0, 2, 3, 1).double().numpy() for k in ("x", "pose_target"))
    reference = numpy_tf_g1(tf_vars, x, pose, json.loads(str(REFERENCE[f"{case}.config"]))["repeat_num"])
    np.testing.assert_allclose(reference, REFERENCE[f"{case}.g1"], atol=1e-4, rtol=1e-4)

    g1 = convert_tf_networks(read_tf_checkpoint(tf_checkpoints[case]))["g1"]
    with torch.no_grad():
        ours = g1(pixels(f"{case}.x"), pixels(f"{case}.pose_target"))
    assert_close(ours, torch.from_numpy(reference).float().permute(0, 3, 1, 2))


# ---------------------------------------------------------------------------------------
# Converted networks against the authors' TF code


@pytest.mark.parametrize("case", GENERATOR_CASES)
def test_converted_generators_match_the_authors_tf_generators(case, tf_checkpoints):
    size = json.loads(str(REFERENCE[f"{case}.config"]))
    networks = convert_tf_networks(read_tf_checkpoint(tf_checkpoints[case]))
    assert sorted(networks) == ["g1", "g2"]
    g1, g2 = networks["g1"].eval(), networks["g2"].eval()
    assert g1.config["image_size"] == tuple(size["image"]) and g1.config["num_repeat"] == size["repeat_num"]
    assert g1.config["channels_base"] == size["hidden_num"] and g1.config["middle_features_dim"] == size["z_num"]
    assert g2.config["num_repeat"] == size["repeat_num"] - 2
    # Market-1501's G2 (UAE_noFC_After2Noise) leaves out the first block's skip connection.
    assert g2.config["num_skip_out_connect"] == (1 if case == "tf_market" else 0)
    with torch.no_grad():
        stage1 = g1(pixels(f"{case}.x"), pixels(f"{case}.pose_target"))
        diff_map = g2(pixels(f"{case}.x"), nchw(f"{case}.g1"))
    assert_close(stage1, nchw(f"{case}.g1"))
    assert_close(diff_map, nchw(f"{case}.diff_map"))


def test_port_padding_does_not_reproduce_tf(tf_checkpoints):
    # Guards the test above: the same weights with the port's symmetric padding differ.
    case = "tf_market"
    networks = convert_tf_networks(read_tf_checkpoint(tf_checkpoints[case]))
    for name, cls in (("g1", PoseIntegrationGenerator), ("g2", ImageRefinementGenerator)):
        config = dict(networks[name].config, tf_padding=False)
        networks[name] = load_weights(cls(**config), networks[name].state_dict()).eval()
    with torch.no_grad():
        stage1 = networks["g1"](pixels(f"{case}.x"), pixels(f"{case}.pose_target"))
        diff_map = networks["g2"](pixels(f"{case}.x"), nchw(f"{case}.g1"))
    assert (stage1 - nchw(f"{case}.g1")).abs().max() > 1e-2
    assert (diff_map - nchw(f"{case}.diff_map")).abs().max() > 1e-3


@pytest.mark.parametrize("case", DISCRIMINATOR_CASES)
def test_converted_discriminator_matches_the_authors_in_train_mode(case, tf_checkpoints):
    # tflib's batch norm always uses batch statistics: PyTorch's train mode.
    d = convert_tf_networks(read_tf_checkpoint(tf_checkpoints[case]))["discriminator"]
    assert d.config["market_or_DF"] == (case == "tf_discriminator") and d.config["channel_base"] == 2
    with torch.no_grad():
        logits = d.train()(pixels(f"{case}.x"))
    assert_close(logits.squeeze(1), torch.from_numpy(REFERENCE[f"{case}.logits"]))


def test_convert_tf_checkpoint_writes_a_project_weights_folder(tf_checkpoints, tmp_path):
    # One file with all three networks, as the authors' trainer saves them, as a .npz too.
    tf_vars = {**read_tf_checkpoint(tf_checkpoints["tf_market"]),
               **read_tf_checkpoint(tf_checkpoints["tf_discriminator"])}
    np.savez(tmp_path / "pg2.npz", **tf_vars)
    out = convert_tf_checkpoint(tmp_path / "pg2.npz", tmp_path / "converted")
    config = read_project(out)
    assert config["model"] == "pg2" and config["step"] == TF_STEP and config["dataset"] == "Market-1501"
    assert all(config[name]["tf_padding"] for name in NETWORKS)
    networks = load_project_networks(out, NETWORKS, config)
    with torch.no_grad():
        stage1 = networks["g1"].eval()(pixels("tf_market.x"), pixels("tf_market.pose_target"))
        logits = networks["discriminator"].train()(pixels("tf_discriminator.x"))
    assert_close(stage1, nchw("tf_market.g1"))
    assert_close(logits.squeeze(1), torch.from_numpy(REFERENCE["tf_discriminator.logits"]))

    only_generators = convert_tf_checkpoint(tf_checkpoints["tf_deepfashion"], tmp_path / "df")
    config = read_project(only_generators)
    assert config["dataset"] == "DeepFashion" and "discriminator" not in config
    assert not (only_generators / "discriminator.safetensors").exists()

"""The authors' TensorFlow checkpoints -> PG2 networks (``models.pg2.networks``).

The authors (charliememory/Pose-Guided-Person-Image-Generation, TensorFlow 1.4) release
``model.ckpt-<step>`` checkpoints of ``tf.train.Saver``: the V2 format, an ``.index``
file naming every variable and a ``.data-00000-of-00001`` file holding their bytes. They
are read here without TensorFlow (``read_tf_checkpoint``); a ``.npz`` of
``{variable name: array}`` is accepted too, e.g. written where TF is installed with::

    reader = tf.train.load_checkpoint("model.ckpt-12800")
    np.savez("pg2.npz", **{n: reader.get_tensor(n) for n in reader.get_variable_to_shape_map()})

Variables, as the authors' ``trainer.py`` (``trainer256.py``) builds them:

    Pose_AE/G/Conv[_k]/{weights,biases}            G1 convolutions, in creation order
    Pose_AE/G/fully_connected[_1]/{weights,biases} G1 bottleneck (down, up)
    UAEnoFC/G/Conv[_k]/{weights,biases}            G2 convolutions, in creation order
    [scope/]Discriminator.<k>.{Filters,Biases}     D convolutions (tflib)
    Discriminator.BN<k>.{scale,offset,moving_mean,moving_variance}, Discriminator.Output.{W,b}
    step, g_lr, d_lr, .../Adam, .../Adam_1, beta*_power   (training state, not converted)

What differs from the port's layout, and what the conversion does about it:

* Kernels are HWIO (``[kh, kw, in, out]``): transposed to OIHW; dense weights are
  ``[in, out]``: transposed.
* G1 flattens its 8xWx(C) bottleneck map in NHWC order (h, w, c), PyTorch in NCHW order
  (c, h, w): ``down_fc``'s columns and ``up_fc``'s rows and bias are permuted.
* G2 reads ``concat([G1's image, condition image])``, the port
  ``cat([condition_image, stage1_image])``: the input channels of G2's first kernel are
  swapped.
* TF pads a stride-2 "SAME" convolution on the bottom/right only; the networks are built
  with ``tf_padding=True`` (``SamePaddingConv2d``), which reproduces it. That is recorded
  in the written ``config.json``, so the networks load back with it.
* The authors' discriminator convolutions have biases (the port's none): the TF form of
  ``ImageDiscriminator`` has them. It normalises with batch statistics, so run it in
  train mode to get the authors' logits; ``moving_mean`` / ``moving_variance`` (never
  updated by their code) become the running statistics.

Sizes are read from the checkpoint: G1's block count from its convolutions (six per
block), the image size from the bottleneck (the authors' map is always 8 rows high), G2's
skip connections from its decoder's input widths.
"""

import re
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from models.common.pipeline import save_project
from models.pg2.networks import ImageDiscriminator, ImageRefinementGenerator, PoseIntegrationGenerator
from models.weights import WeightsInvalid, WeightsMissing, load_weights

# ---------------------------------------------------------------------------------------
# Reading a TensorFlow V2 checkpoint (tensorflow/core/util/tensor_bundle) without TF

TABLE_MAGIC = 0xDB4775248B80FB57   # LevelDB's table magic number, used by TF's table format
FOOTER_BYTES = 48                 # two block handles padded to 40 bytes + the magic number
# tensorflow/core/framework/types.proto DataType -> numpy (others, e.g. strings, are skipped)
TF_DTYPES = {1: np.float32, 2: np.float64, 3: np.int32, 4: np.uint8, 5: np.int16, 6: np.int8, 9: np.int64,
             10: np.bool_, 17: np.uint16, 19: np.float16, 22: np.uint32, 23: np.uint64}


@dataclass(frozen=True)
class TensorEntry:
    """One variable of a V2 checkpoint's index (a ``BundleEntryProto``)."""

    name: str
    dtype: int          # TF DataType enum value
    shape: tuple
    shard_id: int
    offset: int         # byte offset in the data shard
    size: int           # bytes
    sliced: bool        # a partitioned variable (stored in slices; not read here)


def _varint(buf, pos):
    result = shift = 0
    while True:
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, pos
        shift += 7


def _proto_fields(buf):
    """(field number, value) of a serialised protobuf message: ints, or bytes for the rest."""
    pos = 0
    while pos < len(buf):
        key, pos = _varint(buf, pos)
        number, wire_type = key >> 3, key & 7
        if wire_type == 0:
            value, pos = _varint(buf, pos)
        elif wire_type == 1:
            value, pos = buf[pos:pos + 8], pos + 8
        elif wire_type == 2:
            length, pos = _varint(buf, pos)
            value, pos = buf[pos:pos + length], pos + length
        elif wire_type == 5:
            value, pos = buf[pos:pos + 4], pos + 4
        else:
            raise ValueError(f"unsupported protobuf wire type {wire_type}")
        yield number, value


def _block_entries(table, handle, path):
    """(key, value) of the table block at ``handle`` (offset, size): prefix-compressed keys."""
    offset, size = handle
    if offset + size + 5 > len(table):
        raise WeightsInvalid(f"{path} is truncated")
    if table[offset + size] != 0:       # the block trailer: compression type, then a CRC
        raise WeightsInvalid(f"{path} has compressed blocks, which TF never writes for a checkpoint index")
    block = table[offset:offset + size]
    num_restarts = struct.unpack_from("<I", block, size - 4)[0]
    end = size - 4 * (num_restarts + 1)
    pos, key = 0, b""
    while pos < end:
        shared, pos = _varint(block, pos)
        non_shared, pos = _varint(block, pos)
        value_length, pos = _varint(block, pos)
        key = key[:shared] + block[pos:pos + non_shared]
        pos += non_shared
        yield key, block[pos:pos + value_length]
        pos += value_length


def _block_handle(buf, pos=0):
    offset, pos = _varint(buf, pos)
    size, pos = _varint(buf, pos)
    return (offset, size), pos


def _tensor_entry(name, value):
    fields = {"dtype": 0, "shape": (), "shard_id": 0, "offset": 0, "size": 0, "sliced": False}
    for number, field in _proto_fields(value):
        if number == 1:
            fields["dtype"] = field
        elif number == 2:     # TensorShapeProto: repeated Dim dim = 2 {int64 size = 1}
            dims = [dict(_proto_fields(dim)).get(1, 0) for n, dim in _proto_fields(field) if n == 2]
            fields["shape"] = tuple(dims)
        elif number in (3, 4, 5):
            fields[{3: "shard_id", 4: "offset", 5: "size"}[number]] = field
        elif number == 7:
            fields["sliced"] = True
    return TensorEntry(name=name, **fields)


def read_tf_index(path):
    """The variables listed in a V2 checkpoint's ``.index`` file and its shard count.

    Returns:
        ``({name: TensorEntry}, num_shards)``. Raises ``WeightsInvalid`` for a file that is
        not a TF table, a big-endian checkpoint, or a damaged one.
    """
    path = Path(path)
    table = path.read_bytes()
    if len(table) < FOOTER_BYTES or struct.unpack_from("<Q", table, len(table) - 8)[0] != TABLE_MAGIC:
        raise WeightsInvalid(f"{path} is not a TensorFlow checkpoint index (V2)")
    footer = table[-FOOTER_BYTES:]
    _, pos = _block_handle(footer)        # the meta-index block: empty in a checkpoint
    index_handle, _ = _block_handle(footer, pos)
    entries, num_shards = {}, 1
    try:
        for _, handle_bytes in _block_entries(table, index_handle, path):
            for key, value in _block_entries(table, _block_handle(handle_bytes)[0], path):
                if key == b"":          # the BundleHeaderProto
                    header = dict(_proto_fields(value))
                    num_shards = header.get(1, 1)
                    if header.get(2, 0) != 0:
                        raise WeightsInvalid(f"{path} is a big-endian checkpoint")
                    continue
                name = key.decode()
                entries[name] = _tensor_entry(name, value)
    except (IndexError, struct.error, ValueError, UnicodeDecodeError) as exc:
        raise WeightsInvalid(f"{path} is damaged: {exc}") from exc
    return entries, num_shards


def checkpoint_prefix(src):
    """The V2 prefix (``.../model.ckpt-12800``) of a prefix, an ``.index`` / ``.data-*`` file or a folder.

    A folder is resolved through its ``checkpoint`` file (``model_checkpoint_path``), else
    its one ``.index`` file.
    """
    src = Path(src)
    if src.is_dir():
        state = src / "checkpoint"
        if state.is_file():
            match = re.search(r'^model_checkpoint_path:\s*"(.*)"', state.read_text(), re.M)
            if match:
                prefix = Path(match.group(1))
                return prefix if prefix.is_absolute() else src / prefix.name
        indexes = sorted(src.glob("*.index"))
        if len(indexes) != 1:
            raise WeightsMissing(f"{src} holds {len(indexes)} checkpoint .index files; name one")
        return indexes[0].with_suffix("")
    if src.suffix == ".index":
        return src.with_suffix("")
    match = re.match(r"(.*)\.data-\d{5}-of-\d{5}$", src.name)
    return src.with_name(match.group(1)) if match else src


def read_tf_checkpoint(src, select=None):
    """{variable name: numpy array} of a TF V2 checkpoint, or of a ``.npz`` of such arrays.

    Args:
        src: a checkpoint prefix, its ``.index`` / ``.data-*`` file, a folder holding it,
            or a ``.npz``.
        select: optional predicate on names; only those variables are read (skips the
            optimiser's slots, three times the size of the weights).

    Variables of dtypes without a fixed width (strings) and partitioned variables are left
    out. The data's CRC32C checksums are not verified; sizes and shapes are.
    """
    src = Path(src)
    select = select or (lambda name: True)
    if src.suffix == ".npz":
        if not src.is_file():
            raise WeightsMissing(f"{src} not found")
        with np.load(src, allow_pickle=False) as arrays:
            return {k: arrays[k] for k in arrays.files if select(k)}
    prefix = checkpoint_prefix(src)
    index = Path(f"{prefix}.index")
    if not index.is_file():
        raise WeightsMissing(f"TF checkpoint index {index} not found")
    entries, num_shards = read_tf_index(index)
    arrays, shards = {}, {}
    try:
        for name, entry in entries.items():
            if not select(name) or entry.sliced or entry.dtype not in TF_DTYPES:
                continue
            dtype = np.dtype(TF_DTYPES[entry.dtype]).newbyteorder("<")
            if entry.size != dtype.itemsize * int(np.prod(entry.shape)):
                raise WeightsInvalid(f"{index}: {name} has {entry.size} bytes for shape {entry.shape}")
            if entry.shard_id not in shards:
                data = Path(f"{prefix}.data-{entry.shard_id:05d}-of-{num_shards:05d}")
                if not data.is_file():
                    raise WeightsMissing(f"TF checkpoint data {data} not found")
                shards[entry.shard_id] = open(data, "rb")
            shard = shards[entry.shard_id]
            shard.seek(entry.offset)
            raw = shard.read(entry.size)
            if len(raw) != entry.size:
                raise WeightsInvalid(f"{shard.name} is truncated at {name}")
            arrays[name] = np.frombuffer(raw, dtype).reshape(entry.shape).astype(dtype.newbyteorder("="))
    finally:
        for shard in shards.values():
            shard.close()
    return arrays


# ---------------------------------------------------------------------------------------
# TF variables -> the port's state dicts


def _numbered(tf_vars, scope, layer):
    """``[(weights, biases)]`` of ``<scope>/<layer>[_k]/...`` in creation order (k = 0, 1, ...)."""
    pattern = re.compile(rf"^{re.escape(scope)}/{layer}(?:_(\d+))?/(weights|biases)$")
    layers = {}
    for name, value in tf_vars.items():
        match = pattern.match(name)
        if match:
            layers.setdefault(int(match.group(1) or 0), {})[match.group(2)] = value
    if sorted(layers) != list(range(len(layers))) or any(len(v) != 2 for v in layers.values()):
        raise WeightsInvalid(f"the checkpoint's {scope}/{layer} variables are incomplete")
    return [(layers[k]["weights"], layers[k]["biases"]) for k in range(len(layers))]


def _conv(state, key, weights_biases):
    kernel, bias = weights_biases
    if kernel.ndim != 4:
        raise WeightsInvalid(f"{key}: expected an HWIO kernel, got shape {kernel.shape}")
    state[f"{key}.weight"] = torch.from_numpy(np.ascontiguousarray(kernel.transpose(3, 2, 0, 1)))
    state[f"{key}.bias"] = torch.from_numpy(np.ascontiguousarray(bias))


def convert_g1(tf_vars, scope="Pose_AE/G"):
    """G1's TF variables -> ``(constructor arguments, state dict)`` of ``PoseIntegrationGenerator``, or None.

    The authors' ``GeneratorCNN_Pose_UAEAfterResidual`` creates per block two 3x3
    convolutions (+ a stride-2 one, except the last) in the encoder and two 3x3 (+ a 1x1,
    except the last) in the decoder: with the first and the last, 6 per block.
    """
    convs = _numbered(tf_vars, scope, "Conv")
    if not convs:
        return None
    (down_w, down_b), (up_w, up_b) = _numbered(tf_vars, scope, "fully_connected")
    if len(convs) % 6:
        raise WeightsInvalid(f"{scope} has {len(convs)} convolutions; G1 has six per block")
    num_repeat = len(convs) // 6
    in_channels, channels_base = convs[0][0].shape[2:]
    z_dim = down_w.shape[1]
    rows = 8                     # min_fea_map_H of the authors' reshape, for both datasets
    cols = up_w.shape[1] // (rows * channels_base)
    scale = 2 ** (num_repeat - 1)
    config = {"in_channels": int(in_channels), "num_repeat": num_repeat, "middle_features_dim": int(z_dim),
              "channels_base": int(channels_base), "image_size": (rows * scale, cols * scale), "tf_padding": True}

    keys = ["start_conv.0"]
    for i in range(num_repeat):
        keys += [f"encoder.{i}.res.main.0", f"encoder.{i}.res.main.2"] + ([f"encoder.{i}.conv.0"]
                                                                         if i < num_repeat - 1 else [])
    decoder = []
    for i in range(num_repeat):
        decoder += [f"decoder.{i}.res.main.0", f"decoder.{i}.res.main.2"] + ([f"decoder.{i}.conv.0"]
                                                                           if i < num_repeat - 1 else [])
    keys += decoder + ["end_conv"]
    state = {}
    for key, conv in zip(keys, convs):
        _conv(state, key, conv)
    # NHWC flattening (h, w, c) -> NCHW flattening (c, h, w) on both sides of the bottleneck.
    width = down_w.shape[0] // (rows * cols)
    state["down_fc.weight"] = torch.from_numpy(np.ascontiguousarray(
        down_w.reshape(rows, cols, width, z_dim).transpose(3, 2, 0, 1).reshape(z_dim, -1)))
    state["down_fc.bias"] = torch.from_numpy(np.ascontiguousarray(down_b))
    state["up_fc.weight"] = torch.from_numpy(np.ascontiguousarray(
        up_w.reshape(z_dim, rows, cols, channels_base).transpose(3, 1, 2, 0).reshape(-1, z_dim)))
    state["up_fc.bias"] = torch.from_numpy(np.ascontiguousarray(
        up_b.reshape(rows, cols, channels_base).transpose(2, 0, 1).reshape(-1)))
    return config, state


def convert_g2(tf_vars, scope="UAEnoFC/G", image_channels=3):
    """G2's TF variables -> ``(constructor arguments, state dict)`` of ``ImageRefinementGenerator``, or None.

    ``UAE_noFC_After2Noise`` / ``UAE_noFC_AfterNoise``: the first convolution, per block
    two 3x3 (+ a stride-2 one, except the last) in the encoder and two 3x3 in the decoder,
    the last one: 5 per block + 1. Decoder blocks whose first convolution reads no skip map
    are the port's ``num_skip_out_connect``.
    """
    convs = _numbered(tf_vars, scope, "Conv")
    if not convs:
        return None
    if len(convs) < 6 or (len(convs) - 1) % 5:
        raise WeightsInvalid(f"{scope} has {len(convs)} convolutions; G2 has five per block and one more")
    num_repeat = (len(convs) - 1) // 5
    in_channels, channels_base = (int(c) for c in convs[0][0].shape[2:])
    keys = ["start_conv.0"]
    for i in range(num_repeat):
        keys += [f"encoder.{i}.main.0", f"encoder.{i}.main.2"] + ([f"encoder.{i}.conv.0"]
                                                                 if i < num_repeat - 1 else [])
    first_decoder = len(keys)
    for i in range(num_repeat):
        keys += [f"decoder.{i}.main.0", f"decoder.{i}.main.2"]
    keys.append("end_conv")
    no_skip = [convs[first_decoder + 2 * i][0].shape[2] == (num_repeat * channels_base if i == 0 else channels_base)
               for i in range(num_repeat)]
    num_skip_out_connect = sum(no_skip)
    config = {"in_channels": in_channels, "channels_base": channels_base, "num_repeat": num_repeat,
              "num_skip_out_connect": num_skip_out_connect, "tf_padding": True}
    state = {}
    for key, conv in zip(keys, convs):
        _conv(state, key, conv)
    # TF: concat([G1's image, condition image]); the port: cat([condition_image, stage1_image]).
    first = state["start_conv.0.weight"]
    state["start_conv.0.weight"] = torch.cat([first[:, image_channels:], first[:, :image_channels]], dim=1)
    return config, state


_TFLIB = re.compile(r"(?:^|/)Discriminator\.(\d+|BN\d+|Output)\.(Filters|Biases|scale|offset|moving_mean|"
                    r"moving_variance|W|b)$")


def convert_discriminator(tf_vars):
    """The tflib DCGAN discriminator's variables -> ``(constructor arguments, state dict)``, or None.

    ``Discriminator.<k>`` is convolution k (``main.0``, ``main.2``, ``main.5``, ...),
    ``Discriminator.BN<k>`` the batch norm after it, ``Discriminator.Output`` the dense layer.
    """
    params = {}
    for name, value in tf_vars.items():
        match = _TFLIB.search(name)
        if match:
            params[(match.group(1), match.group(2))] = value
    if not params:
        return None
    convs = sorted(int(layer) for layer, kind in params if kind == "Filters")
    if convs != list(range(1, len(convs) + 1)) or len(convs) not in (4, 5):
        raise WeightsInvalid(f"the checkpoint's discriminator has convolutions {convs}; expected 1-4 or 1-5")
    first = params[("1", "Filters")]
    config = {"in_channels": int(first.shape[2]), "channel_base": int(first.shape[3]),
              "market_or_DF": len(convs) == 4, "tf_padding": True}
    state = {}
    try:
        for k in convs:
            index = 0 if k == 1 else 3 * (k - 1) - 1
            _conv(state, f"main.{index}", (params[(str(k), "Filters")], params[(str(k), "Biases")]))
            if k > 1:
                bn = f"main.{3 * (k - 1)}"
                for ours, theirs in (("weight", "scale"), ("bias", "offset"), ("running_mean", "moving_mean"),
                                     ("running_var", "moving_variance")):
                    state[f"{bn}.{ours}"] = torch.from_numpy(np.ascontiguousarray(params[(f"BN{k}", theirs)]))
                state[f"{bn}.num_batches_tracked"] = torch.tensor(0)
        state["fc.weight"] = torch.from_numpy(np.ascontiguousarray(params[("Output", "W")].T))
        state["fc.bias"] = torch.from_numpy(np.ascontiguousarray(params[("Output", "b")]))
    except KeyError as exc:
        raise WeightsInvalid(f"the checkpoint's discriminator lacks {exc.args[0]}") from exc
    return config, state


def _is_network_variable(name):
    last = name.rsplit("/", 1)[-1]
    return last in ("weights", "biases") and name.startswith(("Pose_AE/", "UAEnoFC/")) or bool(_TFLIB.search(name))


def convert_tf_networks(tf_vars):
    """{"g1", "g2", "discriminator": network} of those the variables hold, with ``tf_padding=True``.

    Each network is loaded strictly; ``WeightsInvalid`` when the variables hold none.
    """
    classes = {"g1": (PoseIntegrationGenerator, convert_g1), "g2": (ImageRefinementGenerator, convert_g2),
               "discriminator": (ImageDiscriminator, convert_discriminator)}
    networks = {}
    for name, (cls, convert) in classes.items():
        converted = convert(tf_vars)
        if converted is None:
            continue
        config, state = converted
        networks[name] = load_weights(cls(**config), state, name=f"converted {name}")
    if not networks:
        raise WeightsInvalid("the checkpoint holds none of PG2's networks (Pose_AE/G, UAEnoFC/G, Discriminator.*)")
    return networks


def _dataset(networks):
    """Market-1501 (128x64 G1, G2 without the first skip, four-convolution D) or DeepFashion."""
    if "g1" in networks:
        height, width = networks["g1"].config["image_size"]
        market = height != width
    elif "discriminator" in networks:
        market = networks["discriminator"].config["market_or_DF"]
    else:
        market = networks["g2"].config["num_skip_out_connect"] == 1
    return "Market-1501" if market else "DeepFashion"


def convert_tf_checkpoint(src, out_dir, name=None):
    """Convert the authors' TF checkpoint into a project weights folder.

    Args:
        src: ``model.ckpt-<step>`` (prefix, ``.index`` or ``.data-*`` file, or the folder
            with its ``checkpoint`` file) or a ``.npz`` of ``{TF variable name: array}``.
        out_dir: the folder to write: ``config.json`` (each network's constructor
            arguments, ``tf_padding`` true), ``g1.safetensors``, ``g2.safetensors`` and,
            when the checkpoint has it, ``discriminator.safetensors``, and ``SHA256SUMS``
            (``models.common.pipeline.save_project``; read back with ``read_project`` and
            ``load_project_networks(out_dir, NETWORKS, config)``).
        name: what the weights are called in reports; by default from the dataset and step.

    Returns:
        The folder.
    """
    tf_vars = read_tf_checkpoint(src, select=lambda n: _is_network_variable(n) or n == "step")
    networks = convert_tf_networks(tf_vars)
    step = int(tf_vars["step"]) if "step" in tf_vars else None
    dataset = _dataset(networks)
    if name is None:
        name = f"PG2 {dataset}, the authors' TF checkpoint" + (f" (step {step})" if step is not None else "")
    # The authors' networks read ``pg2_pose_map``'s {-1, 1} discs (models.pg2.pipeline).
    extra = {"source": "authors' TensorFlow checkpoint (charliememory/Pose-Guided-Person-Image-Generation)",
             "dataset": dataset, "step": step, "pose_encoding": "authors"}
    return save_project(out_dir, "pg2", networks, name=name, extra=extra)

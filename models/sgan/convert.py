"""The reference's Lasagne ``.npz`` parameter files -> SGAN's PyTorch networks.

    talkingface weights convert --model sgan cifar/pretrained/generator.npz --out weights/sgan-cifar
    talkingface weights convert --model sgan logs/sgan_joint/ --out weights/sgan-mnist   # a run folder

The reference saves ``np.savez(file, *LL.get_all_param_values(layer))``: ``arr_0, arr_1, ...``
in the order Lasagne's ``get_all_layers`` visits the layers (inputs of a ``ConcatLayer`` in
order, each fully before the next) and, within a layer, the order its parameters were
added: ``W, b`` for a dense or convolution layer; ``W`` alone for one wrapped by
``nn.batch_norm`` (which removes the bias), followed by the ``BatchNormLayer``'s ``b, g,
avg_batch_mean, avg_batch_var``. What each file holds, told apart by its number of arrays:

==========================================  =======  ============================================
file                                        arrays   networks
==========================================  =======  ============================================
``{mnist,cifar}/pretrained/encoder.npz``    8        E (conv1, conv2, fc3, fc4)
``gen1_params_epochN.npz`` (MNIST run)      12       G1 (concat(z1, y) -> 512 -> 512 -> 256)
``gen1_params_epochN.npz`` (CIFAR run)      22       G1 with the z1 and y embeddings
``gen0_params_epochN.npz``                  27 / 32  G0 (MNIST: one z0 embedding, CIFAR: two)
``cifar/pretrained/generator.npz``          54       G1 then G0 (``get_all_param_values`` of G0's
                                                     last layer, whose input holds G1)
==========================================  =======  ============================================

The layouts (see ``models.sgan.networks``): a dense ``W`` is (in, out), transposed for
``nn.Linear``; a ``Conv2DDNNLayer`` kernel (cross-correlation) is kept; a ``Deconv2DLayer``
kernel (incoming, outgoing, 5, 5), the transpose of Theano's true convolution, is flipped
in both spatial axes for ``nn.ConvTranspose2d``. Every array's shape is checked and every
array must be used.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import torch

from models.errors import InvalidInput
from models.sgan.networks import DeconvBN, DenseBN, Encoder, Generator0, Generator1
from models.weights import WeightsInvalid

G1_COUNTS = (12, 22)      # MNIST, CIFAR-10
G0_COUNTS = (27, 32)
ENCODER_COUNT = 8
NUM_CLASSES = 10          # MNIST and CIFAR-10; a G1 without label embedding needs it to split z1 from y


# ---------------------------------------------------------------------------------------
# Reading the files


def read_npz(path) -> list[np.ndarray]:
    """The arrays of a reference ``.npz`` in ``get_all_param_values`` order (``arr_0``, ``arr_1``, ...)."""
    path = Path(path)
    if not path.is_file():
        raise InvalidInput(f"{path} not found")
    try:
        with np.load(path, allow_pickle=False) as data:
            names = list(data.files)
            if all(re.fullmatch(r"arr_\d+", n) for n in names):
                names.sort(key=lambda n: int(n[4:]))
            arrays = [np.asarray(data[n], dtype=np.float32) for n in names]
    except (OSError, ValueError) as exc:
        raise WeightsInvalid(f"cannot read {path} as a numpy .npz file: {exc}") from exc
    if not arrays:
        raise WeightsInvalid(f"{path} holds no arrays")
    return arrays


class _Arrays:
    """The arrays of one file, taken in order into a state dict with shape checks."""

    def __init__(self, arrays, name):
        self.arrays, self.name, self.index, self.state = list(arrays), name, 0, {}

    def take(self, shape) -> torch.Tensor:
        if self.index >= len(self.arrays):
            raise WeightsInvalid(f"{self.name}: {len(self.arrays)} arrays are too few for this network")
        array = self.arrays[self.index]
        if tuple(array.shape) != tuple(shape):
            raise WeightsInvalid(f"{self.name}: arr_{self.index} has shape {tuple(array.shape)}, "
                                 f"expected {tuple(shape)}")
        self.index += 1
        return torch.from_numpy(np.ascontiguousarray(array))

    def dense(self, prefix, linear: torch.nn.Linear):
        """A DenseLayer: W (in, out) -> weight (out, in); then b when the layer keeps one."""
        self.state[f"{prefix}.weight"] = self.take((linear.in_features, linear.out_features)).t().contiguous()
        if linear.bias is not None:
            self.state[f"{prefix}.bias"] = self.take((linear.out_features,))

    def conv(self, prefix, conv: torch.nn.Conv2d):
        """A Conv2DDNNLayer (flip_filters=False): W (out, in, kh, kw) as it is, then b."""
        self.state[f"{prefix}.weight"] = self.take(conv.weight.shape)
        self.state[f"{prefix}.bias"] = self.take(conv.bias.shape)

    def deconv(self, prefix, layer: torch.nn.ConvTranspose2d):
        """A Deconv2DLayer: W (in, out, kh, kw) of a true convolution's transpose -> flipped; then b."""
        self.state[f"{prefix}.weight"] = torch.flip(self.take(layer.weight.shape), dims=(2, 3)).contiguous()
        if layer.bias is not None:
            self.state[f"{prefix}.bias"] = self.take(layer.bias.shape)

    def batch_norm(self, prefix, bn):
        """A BatchNormLayer: b, g, avg_batch_mean, avg_batch_var."""
        n = bn.num_features
        self.state[f"{prefix}.bias"] = self.take((n,))
        self.state[f"{prefix}.weight"] = self.take((n,))
        self.state[f"{prefix}.running_mean"] = self.take((n,))
        self.state[f"{prefix}.running_var"] = self.take((n,))
        self.state[f"{prefix}.num_batches_tracked"] = torch.tensor(0)

    def dense_bn(self, prefix, block: DenseBN):
        self.dense(f"{prefix}.linear", block.linear)
        self.batch_norm(f"{prefix}.bn", block.bn)

    def deconv_bn(self, prefix, block: DeconvBN):
        self.deconv(f"{prefix}.deconv", block.deconv)
        self.batch_norm(f"{prefix}.bn", block.bn)

    def done(self):
        if self.index != len(self.arrays):
            raise WeightsInvalid(f"{self.name}: {len(self.arrays) - self.index} arrays left over after "
                                 f"arr_{self.index - 1}; the file is not this network")


# ---------------------------------------------------------------------------------------
# One network from its arrays


def encoder_config(arrays) -> dict:
    """Encoder sizes read from the shapes of an ``encoder.npz``."""
    if len(arrays) != ENCODER_COUNT or arrays[0].ndim != 4 or arrays[4].ndim != 2:
        raise WeightsInvalid(f"an encoder file holds {ENCODER_COUNT} arrays (conv1, conv2, fc3, fc4 W and b)")
    c2 = arrays[2].shape[0]
    side = int(round((arrays[4].shape[0] / c2) ** 0.5))
    return dict(in_channels=int(arrays[0].shape[1]), image_size=(side * 2 + 4) * 2 + 4,
                channels=[int(arrays[0].shape[0]), int(c2)], feature_dim=int(arrays[4].shape[1]),
                num_classes=int(arrays[6].shape[1]))


def convert_encoder(arrays, name="encoder.npz") -> Encoder:
    """E from the reference's ``enc_layers`` parameters."""
    net = Encoder(**encoder_config(arrays))
    reader = _Arrays(arrays, name)
    for prefix in ("conv1", "conv2"):
        reader.conv(prefix, getattr(net, prefix))
    for prefix in ("fc3", "fc4"):
        reader.dense(prefix, getattr(net, prefix))
    reader.done()
    net.load_state_dict(reader.state, strict=True)
    return net.eval()


def g1_config(arrays) -> dict:
    """G1 sizes from its arrays (the first 13 or 22 of a file)."""
    if len(arrays) >= 22 and arrays[5].ndim == 2 and arrays[10].ndim == 2 and \
            arrays[10].shape[0] == arrays[0].shape[1] + arrays[5].shape[1]:
        # CIFAR-10: embed z1 (W + BN), embed y (W + BN), then concat
        return dict(z_dim=int(arrays[0].shape[0]), num_classes=int(arrays[5].shape[0]),
                    feature_dim=int(arrays[20].shape[1]), hidden=int(arrays[10].shape[1]),
                    z_embed=int(arrays[0].shape[1]), y_embed=int(arrays[5].shape[1]))
    return dict(z_dim=int(arrays[0].shape[0]) - NUM_CLASSES, num_classes=NUM_CLASSES,
                feature_dim=int(arrays[10].shape[1]), hidden=int(arrays[0].shape[1]), z_embed=0, y_embed=0)


def fill_g1(reader: _Arrays, net: Generator1):
    if net.embed_z is not None:
        reader.dense_bn("embed_z", net.embed_z)
        reader.dense_bn("embed_y", net.embed_y)
    reader.dense_bn("fc1", net.fc1)
    reader.dense_bn("fc2", net.fc2)
    reader.dense("fc3", net.fc3)


def g0_config(arrays) -> dict:
    """G0 sizes from its arrays (27 for MNIST, 32 for CIFAR-10)."""
    n_embed = (len(arrays) - 22) // 5
    if len(arrays) != 22 + 5 * n_embed or n_embed < 1:
        raise WeightsInvalid(f"a G0 file holds 22 + 5 k arrays, not {len(arrays)}")
    z_embed = [int(arrays[5 * i].shape[1]) for i in range(n_embed)]
    fc = arrays[5 * n_embed]
    deconvs = [arrays[5 * n_embed + 5 * (i + 1)] for i in range(4)]
    base_channels = int(deconvs[0].shape[0])
    base_size = int(round((fc.shape[1] / base_channels) ** 0.5))
    return dict(z_dim=int(arrays[0].shape[0]), feature_dim=int(fc.shape[0]) - z_embed[-1], z_embed=z_embed,
                base_channels=base_channels, base_size=base_size,
                channels=[int(d.shape[1]) for d in deconvs[:3]], out_channels=int(deconvs[3].shape[1]))


def fill_g0(reader: _Arrays, net: Generator0):
    for i, block in enumerate(net.embed_z):
        reader.dense_bn(f"embed_z.{i}", block)
    reader.dense_bn("fc", net.fc)
    for prefix in ("deconv1", "deconv2", "deconv3"):
        reader.deconv_bn(prefix, getattr(net, prefix))
    reader.deconv("deconv4", net.deconv4)


def convert_g1(arrays, name="gen1_params.npz") -> Generator1:
    """G1 from the reference's ``gen1_layers`` parameters."""
    net = Generator1(**g1_config(arrays))
    reader = _Arrays(arrays, name)
    fill_g1(reader, net)
    reader.done()
    net.load_state_dict(reader.state, strict=True)
    return net.eval()


def convert_g0(arrays, name="gen0_params.npz") -> Generator0:
    """G0 from the reference's ``gen0_layers`` parameters (without G1's)."""
    net = Generator0(**g0_config(arrays))
    reader = _Arrays(arrays, name)
    fill_g0(reader, net)
    reader.done()
    net.load_state_dict(reader.state, strict=True)
    return net.eval()


def convert_file(path) -> dict:
    """{network name: network} of one reference ``.npz``, told apart by its number of arrays."""
    arrays, name = read_npz(path), Path(path).name
    count = len(arrays)
    if count == ENCODER_COUNT and arrays[0].ndim == 4:
        return {"encoder": convert_encoder(arrays, name)}
    if count in G1_COUNTS and arrays[0].ndim == 2 and all(a.ndim <= 2 for a in arrays):
        return {"g1": convert_g1(arrays, name)}
    if count in G0_COUNTS:
        return {"g0": convert_g0(arrays, name)}
    if count - G1_COUNTS[1] in G0_COUNTS:                   # cifar/pretrained/generator.npz: G1, then G0
        split = G1_COUNTS[1]
        return {"g1": convert_g1(arrays[:split], f"{name} (G1 part)"),
                "g0": convert_g0(arrays[split:], f"{name} (G0 part)")}
    raise WeightsInvalid(f"{name} holds {count} arrays: not an SGAN encoder ({ENCODER_COUNT}), G1 "
                         f"({' or '.join(map(str, G1_COUNTS))}), G0 ({' or '.join(map(str, G0_COUNTS))}) "
                         "or CIFAR-10 generator (54) file")


def source_files(source) -> list[Path]:
    """The ``.npz`` files to convert: ``source`` itself, or a folder's ``encoder.npz``,
    ``generator.npz`` and the last epoch's ``gen1_params_epochN.npz`` / ``gen0_params_epochN.npz``."""
    source = Path(source)
    if source.is_file():
        return [source]
    if not source.is_dir():
        raise InvalidInput(f"{source} is neither an .npz file nor a folder")
    files = [source / n for n in ("encoder.npz", "generator.npz") if (source / n).is_file()]
    for stem in ("gen1", "gen0"):
        epochs = {}
        for path in source.glob(f"{stem}_params_epoch*.npz"):
            match = re.fullmatch(rf"{stem}_params_epoch(\d+)\.npz", path.name)
            if match:
                epochs[int(match.group(1))] = path
        if epochs:
            files.append(epochs[max(epochs)])
    if not files:
        raise InvalidInput(f"{source} holds no SGAN parameter file (encoder.npz, generator.npz, "
                           "gen1_params_epochN.npz, gen0_params_epochN.npz)")
    return files


def convert_source(source) -> tuple[dict, list[str]]:
    """({network name: network}, [file names]) of every SGAN file at ``source``."""
    networks, names = {}, []
    for path in source_files(source):
        for key, net in convert_file(path).items():
            if key in networks:
                raise InvalidInput(f"two files at {source} hold {key}; convert them one folder at a time")
            networks[key] = net
        names.append(path.name)
    return networks, names


def dataset_of(networks) -> str:
    """"cifar10" for RGB 32 x 32 networks, else "mnist"."""
    g0 = networks.get("g0")
    channels = g0.config["out_channels"] if g0 is not None else networks["encoder"].config["in_channels"]
    return "cifar10" if channels == 3 else "mnist"


def convert(source, out_dir) -> Path:
    """The reference's files at ``source`` -> a project weights folder ``out_dir`` (``save_project``).

    The folder samples (``registry.load("sgan", weights=out_dir)``) when it holds G1 and G0.
    """
    from models.common.pipeline import save_project

    networks, names = convert_source(source)
    return save_project(out_dir, "sgan", networks, name=f"converted from {', '.join(names)}",
                        extra={"dataset": dataset_of(networks), "source_files": names})

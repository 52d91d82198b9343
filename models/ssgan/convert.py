"""The authors' Torch7 model files -> this project's networks.

The released models (``ssgan_models/*.net`` of github.com/xiaolonw/ss-gan, README) are
``torch.save`` files of a Lua table ``{G = gModule, D = gModule, FCN = gModule, G1 = ...,
opt = ...}`` holding nngraph graphs of ``nn`` (or ``cunn``) modules, with float or CUDA
tensors. ``torchfile`` reads that serialisation without Lua; this module walks each graph
and copies the weights of its parameterised modules (``SpatialConvolution``,
``SpatialFullConvolution``, ``SpatialBatchNormalization``, ``Linear``) in order onto the
corresponding layers of ``models.ssgan.networks``, checking every module's type, shape and
(where the file records them) its kernel, stride and padding. Parameter-free modules
(ReLU, LeakyReLU, Tanh, Sigmoid, dropout, JoinTable, Normalize, Transpose, View ...) carry
nothing to copy; the networks reproduce them.

The order of an nngraph's modules: the graph's topological order (``forwardnodes``), with
the branches before a ``JoinTable`` taken one after the other, z's branch (the one that
starts with a full convolution) first, then the layers after the join. That is the order
of the parameters of ``StyleGenerator`` (``noise_branch``, ``normal_branch``, ``trunk``);
the other networks are single chains. A plain ``nn.Sequential`` is taken in its order.

Files by entry:

=================  =========================================  ==========================
entry              network                                     file(s)
=================  =========================================  ==========================
``G1``             ``structure`` (StructureGenerator)          joint_SSGAN.net
``D1``             ``structure_discriminator``                 the joint run's D file
``G`` one input    ``structure``                               Structure_GAN.net
``D`` 72 x 72      ``structure_discriminator``                 Structure_GAN.net
``G`` two inputs   ``style`` (StyleGenerator)                  Style_GAN_nofcn.net, joint_Style_GAN.net, joint_SSGAN.net
``D`` two inputs   ``style_discriminator``                     the Style-GAN files
``FCN``            ``fcn`` (NormalFCN)                         FCN.net, joint_Style_GAN.net
=================  =========================================  ==========================

Batch normalisation saved by the nn of early 2016 keeps ``running_std`` (1 / sqrt(var + eps))
instead of ``running_var``; both are read.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from models.errors import InvalidInput
from models.ssgan import networks as nets
from models.weights import WeightsInvalid, WeightsMissing

# Torch7 class names -> the kind of layer they are (cudnn's and the MM variants included).
CONV = {"nn.SpatialConvolution", "nn.SpatialConvolutionMM", "cudnn.SpatialConvolution"}
FULL_CONV = {"nn.SpatialFullConvolution", "cudnn.SpatialFullConvolution"}
BATCH_NORM = {"nn.SpatialBatchNormalization", "cudnn.SpatialBatchNormalization"}
LINEAR = {"nn.Linear"}
JOIN = {"nn.JoinTable"}
PARAMETERISED = CONV | FULL_CONV | BATCH_NORM | LINEAR

NETWORK_CLASSES = {
    "structure": nets.StructureGenerator,
    "structure_discriminator": nets.StructureDiscriminator,
    "style": nets.StyleGenerator,
    "style_discriminator": nets.StyleDiscriminator,
    "fcn": nets.NormalFCN,
}


# ---------------------------------------------------------------------------------------
# Reading torchfile's objects


def _table(obj):
    """The Lua table behind a torchfile object (its fields), or ``obj`` itself."""
    import torchfile

    return obj._obj if isinstance(obj, torchfile.TorchObject) else obj


def _get(obj, key, default=None):
    """A field of a Torch object or a Lua table read by torchfile (its keys may be bytes)."""
    if obj is None:
        return default
    table = _table(obj)
    if not isinstance(table, dict):
        return default
    for k in (key, key.encode()):
        if k in table:
            return table[k]
    return default


def typename(obj) -> str:
    """The Torch class name of ``obj`` ("" for a plain table or value)."""
    import torchfile

    if not isinstance(obj, torchfile.TorchObject):
        return ""
    name = obj.torch_typename()
    return name.decode() if isinstance(name, bytes) else str(name or "")


def _as_list(value) -> list:
    if value is None:
        return []
    if isinstance(value, list):
        return value
    table = _table(value)
    if isinstance(table, dict):   # a Lua array torchfile could not turn into a list
        return [table[k] for k in sorted(k for k in table if isinstance(k, int))]
    return []


def read_torch_file(path) -> dict:
    """The top-level table of a Torch7 file, keys as str; WeightsInvalid when unreadable."""
    import torchfile

    path = Path(path)
    if not path.is_file():
        raise WeightsMissing(f"Torch7 model file {path} not found")
    try:
        top = torchfile.load(str(path))
    except Exception as exc:  # any unreadable file is the user's to fix
        raise WeightsInvalid(f"cannot read {path} as a Torch7 file: {exc}") from exc
    table = _table(top)
    if not isinstance(table, dict):
        raise WeightsInvalid(f"{path} holds a {typename(top) or type(top).__name__}, not a table of networks")
    return {(k.decode() if isinstance(k, bytes) else str(k)): v for k, v in table.items()}


def _graph_order(graph) -> list:
    """The parameterised modules of an nngraph gModule in conversion order (see the module docstring)."""
    nodes = _as_list(_get(graph, "forwardnodes"))
    index = {id(node): i for i, node in enumerate(nodes)}
    parents = {id(node): [] for node in nodes}
    for node in nodes:
        for child in _as_list(_get(node, "children")):
            if id(child) in parents:
                parents[id(child)].append(node)

    def module(node):
        return _get(_get(node, "data"), "module")

    # After a join: any node one of whose ancestors (or itself) has several inputs.
    joined: dict[int, bool] = {}
    heads: dict[int, int] = {}
    for node in nodes:                                   # nodes are topologically sorted
        ups = parents[id(node)]
        joined[id(node)] = len(ups) > 1 or typename(module(node)) in JOIN or any(joined[id(p)] for p in ups)
        # The branch of a node before the join: the first node of its chain (a root, or a child
        # of a node that fans out).
        if not ups or len(_as_list(_get(ups[0], "children"))) > 1:
            heads[id(node)] = index[id(node)]
        else:
            heads[id(node)] = heads[id(ups[0])]
    branches: dict[int, list] = {}
    trunk = []
    for node in nodes:
        m = module(node)
        if m is None or typename(m) not in PARAMETERISED:
            continue
        (trunk if joined[id(node)] else branches.setdefault(heads[id(node)], [])).append(m)
    # z's branch (starting with a full convolution) first, the others in graph order.
    ordered = sorted(branches.values(), key=lambda mods: typename(mods[0]) not in FULL_CONV)
    return [m for branch in ordered for m in branch] + trunk


def torch_modules(network) -> list:
    """The parameterised modules of a Torch network (gModule, Sequential or one module), in order."""
    if _get(network, "forwardnodes") is not None:
        return _graph_order(network)
    if typename(network) in PARAMETERISED:
        return [network]
    found = []
    for child in _as_list(_get(network, "modules")):
        found.extend(torch_modules(child))
    return found


def has_join(network) -> bool:
    """Whether a Torch network concatenates two inputs (the Style-GAN's G and D)."""
    if _get(network, "forwardnodes") is not None:
        return any(typename(_get(_get(n, "data"), "module")) in JOIN for n in _as_list(_get(network, "forwardnodes")))
    return any(typename(m) in JOIN or has_join(m) for m in _as_list(_get(network, "modules")))


def _array(value, what) -> np.ndarray:
    if not isinstance(value, np.ndarray) or value.size == 0:
        raise WeightsInvalid(f"{what} holds no tensor")
    return np.ascontiguousarray(value, dtype=np.float32)


# ---------------------------------------------------------------------------------------
# Torch modules -> our layers


def our_layers(network: nn.Module) -> list[nn.Module]:
    """The parameterised layers of one of our networks, in conversion order."""
    return [m for m in network.modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.BatchNorm2d, nn.Linear))]


def _check_hyper(module, layer, what):
    """Kernel, stride and padding recorded in the Torch module match ours (where recorded)."""
    if not isinstance(layer, (nn.Conv2d, nn.ConvTranspose2d)):
        return
    for fields, ours in ((("kH", "kW"), layer.kernel_size), (("dH", "dW"), layer.stride),
                         (("padH", "padW"), layer.padding)):
        theirs = tuple(_get(module, f) for f in fields)
        if all(v is not None for v in theirs) and tuple(int(v) for v in theirs) != tuple(ours):
            raise WeightsInvalid(f"{what}: {'/'.join(fields)} {theirs} where the network has {tuple(ours)}")


def layer_state(module, layer: nn.Module, what: str) -> dict[str, torch.Tensor]:
    """The state of ``layer`` (ours) from the Torch ``module``, type and shapes checked."""
    kind = typename(module)
    expected = {nn.Conv2d: CONV, nn.ConvTranspose2d: FULL_CONV, nn.BatchNorm2d: BATCH_NORM, nn.Linear: LINEAR}
    if kind not in expected[type(layer)]:
        raise WeightsInvalid(f"{what} is a {kind} where the network has a {type(layer).__name__}")
    _check_hyper(module, layer, what)
    state = {}
    own = layer.state_dict()
    for name in ("weight", "bias"):
        value = _array(_get(module, name), f"{what}.{name}")
        if value.size != own[name].numel():
            raise WeightsInvalid(f"{what}.{name} has shape {value.shape} where the network needs "
                                 f"{tuple(own[name].shape)}")
        # SpatialConvolutionMM of old keeps its weight as (out, in * kh * kw): same memory order.
        state[name] = torch.from_numpy(value.reshape(tuple(own[name].shape)).copy())
    if isinstance(layer, nn.BatchNorm2d):
        eps = float(_get(module, "eps", 1e-5))
        mean = _array(_get(module, "running_mean"), f"{what}.running_mean")
        var = _get(module, "running_var")
        if isinstance(var, np.ndarray) and var.size:
            var = _array(var, f"{what}.running_var")
        else:   # nn before mid-2016: running_std holds 1 / sqrt(var + eps)
            std = _array(_get(module, "running_std"), f"{what}.running_std or running_var")
            var = 1.0 / np.square(std) - eps
        for name, value in (("running_mean", mean), ("running_var", var)):
            if value.size != own[name].numel():
                raise WeightsInvalid(f"{what}.{name} has {value.size} values where the network needs "
                                     f"{own[name].numel()}")
            state[name] = torch.from_numpy(np.asarray(value, dtype=np.float32).reshape(own[name].shape).copy())
        state["num_batches_tracked"] = torch.zeros((), dtype=torch.long)
        if abs(eps - layer.eps) > 1e-12:
            layer.eps = eps
    return state


def convert_network(torch_network, network: nn.Module, what="network") -> dict[str, torch.Tensor]:
    """The state dict of ``network`` (ours) from a Torch network read by torchfile.

    Every parameterised module is matched in order; their counts must agree.
    """
    theirs = torch_modules(torch_network)
    ours = our_layers(network)
    if len(theirs) != len(ours):
        raise WeightsInvalid(f"{what} has {len(theirs)} parameterised modules where {type(network).__name__} "
                             f"has {len(ours)}")
    names = {id(m): name for name, m in network.named_modules()}
    state = {}
    for i, (module, layer) in enumerate(zip(theirs, ours)):
        for key, value in layer_state(module, layer, f"{what} module {i + 1} ({typename(module)})").items():
            state[f"{names[id(layer)]}.{key}"] = value
    return state


# ---------------------------------------------------------------------------------------
# Sizes from the file


def infer_config(kind: str, torch_network) -> dict:
    """The constructor arguments of network ``kind`` that fit the Torch network's shapes."""
    modules = torch_modules(torch_network)
    if not modules:
        raise WeightsInvalid(f"the {kind} network holds no parameterised module")
    weights = [np.asarray(_get(m, "weight")) for m in modules]
    if kind == "structure":
        noise_dim, width, k = weights[0].shape[0], weights[0].shape[1], weights[0].shape[2]
        return {"noise_dim": int(noise_dim), "base_channels": int(width // 2), "image_size": int(8 * k)}
    if kind == "style":
        noise_dim, width, k = weights[0].shape[0], weights[0].shape[1], weights[0].shape[2]
        return {"noise_dim": int(noise_dim), "base_channels": int(width), "image_size": int(16 * k)}
    if kind in ("structure_discriminator", "style_discriminator"):
        width = int(weights[0].shape[0])
        in_features = int(weights[-1].reshape(weights[-1].shape[0], -1).shape[1])
        factor = 8 if kind == "structure_discriminator" else 16
        side = int(round((in_features / (2 * width)) ** 0.5)) * factor
        config = {"base_channels": width, "image_size": side}
        if kind == "structure_discriminator":
            config["in_channels"] = int(np.prod(weights[0].shape[1:]) // 25)
        return config
    if kind == "fcn":
        convs = [w for m, w in zip(modules, weights) if typename(m) not in BATCH_NORM]
        channels = [int(w.shape[0]) for w in convs[:-2]] + [int(convs[-2].shape[1])]
        return {"num_classes": int(convs[-1].shape[0]), "channels": channels}
    raise InvalidInput(f"unknown network {kind!r}")


def entries(table: dict) -> dict[str, object]:
    """{our network name: Torch network} of a file's top-level table (see the module docstring)."""
    found = {}
    for key, value in table.items():
        if key == "G1":
            found["structure"] = value
        elif key == "D1":
            found["structure_discriminator"] = value
        elif key == "G":
            found["style" if has_join(value) else "structure"] = value
        elif key == "D":
            found["style_discriminator" if has_join(value) else "structure_discriminator"] = value
        elif key == "FCN":
            found["fcn"] = value
    return found


def load_torch_file(path, only=None) -> dict[str, nn.Module]:
    """{name: network in eval mode} of every network in one of the authors' Torch7 files.

    ``only``: the names wanted (others are skipped); a wanted one the file lacks is an error.
    """
    table = read_torch_file(path)
    found = entries(table)
    if not found:
        raise WeightsInvalid(f"{Path(path).name} holds no S^2-GAN network (entries: {', '.join(sorted(table))})")
    networks = {}
    for name, torch_network in found.items():
        if only is not None and name not in only:
            continue
        with torch.random.fork_rng(devices=[]):    # building draws initial weights: keep the caller's RNG
            network = NETWORK_CLASSES[name](**infer_config(name, torch_network))
        state = convert_network(torch_network, network, f"{Path(path).name}:{name}")
        network.load_state_dict(state, strict=True)
        networks[name] = network.eval()
    missing = [n for n in (only or ()) if n not in networks]
    if missing:
        raise WeightsInvalid(f"{Path(path).name} holds no {', '.join(missing)} network")
    return networks


def convert_files(sources, out_dir, name="authors") -> Path:
    """The authors' ``.net`` files (or a folder of them) -> a project weights folder.

    Later files do not replace a network an earlier one gave: list ``joint_SSGAN.net`` first
    to keep its jointly trained pair.
    """
    from models.common.pipeline import save_project

    files = []
    for source in [sources] if isinstance(sources, (str, Path)) else sources:
        source = Path(source)
        if source.is_dir():
            from models.ssgan.pipeline import RELEASE_ORDER
            files += [source / f for f in RELEASE_ORDER if (source / f).is_file()]
        else:
            files.append(source)
    if not files:
        raise WeightsMissing(f"no S^2-GAN Torch7 file in {sources}")
    networks, origin = {}, {}
    for file in files:
        for key, network in load_torch_file(file).items():
            if key not in networks:
                networks[key], origin[key] = network, file.name
    return save_project(out_dir, "ssgan", networks, name=name, extra={"converted_from": origin})

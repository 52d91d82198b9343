"""The authors' pickled GRAN models -> a project weights folder, without Theano.

The reference saves its whole model object (``save_the_weight(model, ...)``: Python 2's
``cPickle.dump(model, f, protocol=2)`` of a ``gran.GRAN``): the ``GRAN`` instance holds
``dis_network`` (``convnet_cuda32.convnet32`` ...) and ``gen_network``
(``recGenI32.RecGenI32`` ...), whose layers (``L0a``, ``L1`` ...: ``Batch_Norm_layer``,
``Deconv_layer``, ``Conv_layer``, ``BN_Conv_layer``) hold Theano shared variables
(``TensorSharedVariable``, or ``CudaNdarraySharedVariable`` on a GPU). A shared variable
keeps its value in ``container.storage[0]``: a numpy array, or for a GPU variable the
result of ``theano.sandbox.cuda.type.CudaNdarray_unpickler(numpy_array)``, which is
pickled with the array itself. So the arrays can be read without Theano.

``load_pickle`` does so with a restricted unpickler: the reference's own classes and
Theano's classes become inert stubs that only keep their pickled state, the two CUDA
unpicklers give back their numpy array, numpy's array reconstruction and a few built-in
containers are allowed, and any other global refuses the file (nothing else is ever
imported or called). ``state_dicts`` walks the stubs: a state-dict key is the attribute
path of an array (``gen_network.L2.W`` -> generator ``L2.W``).
"""

from __future__ import annotations

import io
import math
import pickle
import re
from collections import OrderedDict
from pathlib import Path

import numpy as np
import torch

from models.common.pipeline import save_project
from models.errors import WeightsMissing
from models.gran.networks import GRANDiscriminator, GRANGenerator
from models.weights import WeightsInvalid

# Modules of the reference whose classes a pickled model holds.
REFERENCE_MODULES = {
    "gran", "recGanI", "recGenI28", "recGenI32", "recGenI64", "recGenI128", "convnet_cuda28", "convnet_cuda32",
    "convnet_cuda64", "convnet_cuda128", "batch_norm_layer", "batch_norm_conv_layer", "conv_layer", "deconv",
    "optimize_gan", "__main__",
}
LAYER = re.compile(r"^L\d+[ab]?$")
ARRAY_NAMES = ("W", "zbias", "eta", "beta", "stat_mean", "stat_std", "b", "c", "hbias", "W_y")


class PickledStub:
    """An object of a class the unpickler does not import: it keeps the pickled state only."""

    def __init__(self, *args, **kwargs):
        self.__dict__["_args"] = args

    def __setstate__(self, state):
        if isinstance(state, tuple) and len(state) == 2:     # (dict, slots) of __reduce_ex__
            state = {**(state[0] or {}), **(state[1] or {})}
        if isinstance(state, dict):
            self.__dict__.update({str(k): v for k, v in state.items()})
        else:
            self.__dict__["_state"] = state


def _array_unpickler(array, *_):
    """``CudaNdarray_unpickler(npa)`` / ``GpuArray_unpickler(npa, ctx_name)``: the array itself."""
    return np.asarray(array)


def _reconstructor(cls, base, state=None):
    # copyreg._reconstructor of protocols 0 and 1, for the allowed classes only.
    if base is not object:
        raise pickle.UnpicklingError(f"refusing to rebuild {cls!r} from {base!r}")
    obj = cls.__new__(cls)
    return obj


_STUBS: dict = {}


def _stub(module, name):
    key = f"{module}.{name}"
    if key not in _STUBS:
        _STUBS[key] = type(name, (PickledStub,), {"__module__": "gran_pickle." + module})
    return _STUBS[key]


class RestrictedUnpickler(pickle.Unpickler):
    """Reads the reference's pickles: stubs for its classes and Theano's, numpy arrays, no code."""

    def find_class(self, module, name):
        if name in ("CudaNdarray_unpickler", "GpuArray_unpickler") and module.startswith("theano"):
            return _array_unpickler
        if module == "theano" or module.startswith("theano.") or module in REFERENCE_MODULES:
            return _stub(module, name)
        if module.startswith("numpy") and module.endswith("multiarray"):
            if name == "_reconstruct":
                return np.zeros(1).__reduce__()[0]
            if name == "scalar":
                return np.float32(0).__reduce__()[0]
        if module == "numpy" and name in ("ndarray", "dtype"):
            return getattr(np, name)
        if module.startswith("numpy.random"):
            return _stub(module, name)                      # the model's RandomState: not needed
        if module in ("copy_reg", "copyreg") and name == "_reconstructor":
            return _reconstructor
        if module in ("__builtin__", "builtins") and name in ("object", "set", "frozenset", "list", "dict", "tuple"):
            return {"object": object, "set": set, "frozenset": frozenset, "list": list, "dict": dict,
                    "tuple": tuple}[name]
        if module == "_codecs" and name == "encode":        # bytes as protocol 2 writes them from Python 3
            import codecs

            return codecs.encode
        if module == "collections" and name == "OrderedDict":
            return OrderedDict
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a GRAN pickle")


def load_pickle(path_or_bytes):
    """The pickled model as stubs (see the module docstring); WeightsInvalid when it cannot be read."""
    if isinstance(path_or_bytes, bytes):
        data = path_or_bytes
    else:
        path = Path(path_or_bytes)
        if path.is_dir():
            found = sorted(path.glob("*.save"))
            if not found:
                raise WeightsMissing(f"{path} holds no GRAN model pickle (*.save)")
            path = found[0]
        if not path.is_file():
            raise WeightsMissing(f"{path} not found: the authors' GRAN model pickle (*.save) is needed")
        data = path.read_bytes()
    try:
        return RestrictedUnpickler(io.BytesIO(data), encoding="latin1").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError) as exc:
        raise WeightsInvalid(f"not a GRAN model pickle the converter can read: {exc}") from exc


def shared_value(variable) -> np.ndarray | None:
    """The numpy value of a pickled Theano shared variable (or a bare array); None for anything else."""
    if isinstance(variable, np.ndarray):
        return variable
    container = getattr(variable, "container", None)
    storage = getattr(container, "storage", None)
    if isinstance(storage, list) and storage and isinstance(storage[0], np.ndarray):
        return storage[0]
    return None


def _arrays(obj, prefix="") -> dict:
    out = {}
    for name in ARRAY_NAMES:
        value = shared_value(obj.__dict__.get(name))
        if value is not None:
            out[prefix + name] = torch.from_numpy(np.array(value, dtype=np.float32))
    return out


def network_state_dict(network) -> OrderedDict:
    """{``L2.W``: tensor, ...} of one pickled network (``gen_network`` or ``dis_network``)."""
    if not isinstance(network, PickledStub):
        raise WeightsInvalid("the pickle holds no GRAN network where one was expected")
    state = OrderedDict(_arrays(network))
    for name, layer in sorted(network.__dict__.items()):
        if LAYER.match(name) and isinstance(layer, PickledStub):
            state.update(_arrays(layer, f"{name}."))
    return state


def state_dicts(model) -> tuple[OrderedDict, OrderedDict, int | None]:
    """(generator state dict, discriminator state dict, num_steps) of a pickled ``GRAN``."""
    if not isinstance(model, PickledStub) or "gen_network" not in model.__dict__:
        raise WeightsInvalid("the pickle holds no GRAN model (no gen_network)")
    generator = network_state_dict(model.gen_network)
    discriminator = network_state_dict(model.dis_network) if "dis_network" in model.__dict__ else OrderedDict()
    steps = model.__dict__.get("num_steps", model.gen_network.__dict__.get("num_steps"))
    return generator, discriminator, None if steps is None else int(steps)


def _indices(state, test):
    return sorted({int(k.split(".")[0][1:]) for k in state if re.match(r"^L\d+\.", k) and test(k.split(".")[0])})


def generator_config(state, num_steps=None) -> dict:
    """``GRANGenerator`` arguments that fit a generator state dict."""
    try:
        z_dim = state["L0a.W"].shape[0]
        decoder = _indices(state, lambda layer: f"{layer}.b" in state)
        encoder = _indices(state, lambda layer: layer != "L1" and f"{layer}.b" not in state)
        widths = [state[f"L{i}.W"].shape[0] for i in decoder]
        channels = state[f"L{decoder[-1]}.W"].shape[1]
        first_size = math.isqrt(state["L1.W"].shape[1] // widths[0])
        return {"z_dim": int(z_dim), "widths": [int(w) for w in widths], "channels": int(channels),
                "first_size": int(first_size), "num_steps": int(num_steps or 5),
                "encoder_bias": f"L{encoder[0]}.c" in state, "encoder_start": int(encoder[0]),
                "kernel_size": int(state[f"L{decoder[0]}.W"].shape[-1])}
    except (KeyError, IndexError, ZeroDivisionError) as exc:
        raise WeightsInvalid(f"the generator's arrays do not make a GRAN generator ({exc})") from exc


def discriminator_config(state) -> dict:
    """``GRANDiscriminator`` arguments that fit a discriminator state dict."""
    try:
        convs = _indices(state, lambda layer: True)
        widths = [int(state[f"L{i}.W"].shape[1]) for i in convs]
        final = math.isqrt(state["W"].shape[0] // widths[-1])
        return {"channels": int(state["L1.W"].shape[0]), "widths": widths, "image_size": int(final * 2 ** len(convs)),
                "num_hid": int(state["W"].shape[1]), "num_class": int(state["W_y"].shape[1]),
                "kernel_size": int(state["L1.W"].shape[-1])}
    except (KeyError, IndexError, ZeroDivisionError) as exc:
        raise WeightsInvalid(f"the discriminator's arrays do not make a GRAN discriminator ({exc})") from exc


def networks_from_pickle(path) -> dict:
    """{"generator": GRANGenerator, "discriminator": GRANDiscriminator (when pickled)} loaded strictly."""
    from models import weights as weights_lib

    generator_state, discriminator_state, steps = state_dicts(load_pickle(path))
    networks = {"generator": weights_lib.load_weights(GRANGenerator(**generator_config(generator_state, steps)),
                                                      dict(generator_state), f"{Path(path).name} (generator)")}
    if discriminator_state:
        networks["discriminator"] = weights_lib.load_weights(
            GRANDiscriminator(**discriminator_config(discriminator_state)), dict(discriminator_state),
            f"{Path(path).name} (discriminator)")
    return networks


def convert_pickle(path, out_dir) -> Path:
    """The authors' pickled model ``path`` -> a project weights folder ``out_dir``."""
    networks = networks_from_pickle(path)
    return save_project(out_dir, "gran", networks, name=f"the authors' {Path(path).name}",
                        extra={"source": str(Path(path).name), "image_size": networks["generator"].image_size})

"""Reduced-precision (int8) inference on the CPU: what the systems' int8 paths share.

Static post-training quantisation with PyTorch's x86 backend (``torch.ao.quantization``, FX
graph mode): a network's heavy convolutional parts are traced, observed on calibration
inputs the pipeline itself makes from the bundled example (``examples/face.jpg`` and
``examples/speech.wav``), and converted to int8 modules (weights int8 per output channel,
activations uint8 per tensor; convolution, batch norm and ReLU fused). Everything else of
the network stays fp32. The fp32 networks are never changed: the int8 ones are copies.

A pipeline takes ``precision``:

* ``"fp32"``: the networks as loaded (what the faithfulness tests hold);
* ``"int8"``: the int8 copies, on the CPU only;
* ``"auto"``: int8 where it is measured to pay, fp32 elsewhere (``resolve_precision``).

On x86 CPUs without VNNI (AVX2 only) an int8 multiply-add takes about as many instructions
as an fp32 one (``vpmaddubsw`` + ``vpmaddwd`` + add against FMAs); measured on such a CPU
(one thread, CPU seconds a frame), int8 VG-net was 6 % faster than fp32 and the int8 DAVS
decoder 5 % slower (``talkingface bench atvgnet|davs --precision both``), so ``auto`` keeps
fp32 there and picks int8 only where the CPU has the int8 dot-product instructions
(AVX512-VNNI, AVX-VNNI or AMX), where no measurement was made here.
"""

from __future__ import annotations

import copy
import logging
import warnings
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING

from models.errors import TalkingFaceError

if TYPE_CHECKING:       # torch is imported where it is used: the command line reads PRECISIONS without it
    import torch.nn as nn

__all__ = ["PRECISIONS", "BACKEND", "InvalidPrecision", "CalibrationDone", "bench_argument", "calibration_example",
           "capture_inputs", "check_precision", "int8_pays", "quantize_module", "quantize_submodules",
           "resolve_precision"]

log = logging.getLogger(__name__)

PRECISIONS = ("fp32", "int8", "auto")
BACKEND = "x86"                 # torch.backends.quantized engine: fbgemm or oneDNN per operator


class InvalidPrecision(TalkingFaceError, ValueError):
    """A ``precision`` that is not one of ``PRECISIONS``, or int8 asked where it cannot run."""


class CalibrationDone(Exception):
    """Raised by ``capture_inputs``'s hook once enough inputs are captured: stops the run there."""


def bench_argument():
    """The ``--precision`` flag of ``talkingface bench MODEL`` for a model with an int8 path."""
    from models.common.commands import argument

    return argument("--precision", choices=[*PRECISIONS, "both"], default="fp32",
                    help="fp32 (default), int8, auto, or both: fp32 and int8 side by side, with int8's PSNR and "
                         "lip-sync against fp32 on the bundled example")


def check_precision(precision) -> str:
    """``precision`` lower-cased if it is one of ``PRECISIONS``, else ``InvalidPrecision``."""
    value = str(precision).strip().lower() if precision is not None else ""
    if value not in PRECISIONS:
        raise InvalidPrecision(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    return value


def int8_pays() -> bool:
    """Whether this CPU has int8 dot-product instructions (VNNI or AMX), where int8 outruns fp32."""
    import torch

    cpu = getattr(torch, "cpu", None)
    checks = ("_is_vnni_supported", "_is_amx_tile_supported")
    return any(bool(getattr(cpu, name, lambda: False)()) for name in checks)


def resolve_precision(precision, device) -> str:
    """The precision a pipeline on ``device`` runs at: "fp32" or "int8".

    Args:
        precision: "fp32", "int8" or "auto" (``check_precision``).
        device: the pipeline's ``torch.device``.

    Raises:
        InvalidPrecision: an unknown value, or "int8" on a device other than the CPU (the
            int8 kernels are CPU kernels; CUDA has fp16 autocast instead).
    """
    import torch

    precision = check_precision(precision)
    on_cpu = torch.device(device).type == "cpu"
    if precision == "int8":
        if not on_cpu:
            raise InvalidPrecision(f"precision int8 runs on the CPU only, not on {device} (use fp32, or fp16 there)")
        if BACKEND not in torch.backends.quantized.supported_engines:
            raise InvalidPrecision(f"this PyTorch build has no {BACKEND} quantized engine for int8")
        return "int8"
    if precision == "auto":
        return "int8" if on_cpu and BACKEND in torch.backends.quantized.supported_engines and int8_pays() else "fp32"
    return "fp32"


def calibration_example():
    """``(photo, voice)``: the bundled example the int8 networks are calibrated on (16-kHz mono voice)."""
    from models.common.demo import read_example

    return read_example()


def capture_inputs(module: nn.Module, run: Callable[[], object], limit: int) -> list[tuple]:
    """The positional inputs of ``module``'s first ``limit`` calls while ``run()`` runs.

    The hook stops ``run`` (``CalibrationDone``) before the ``limit``-th call computes, so
    a pipeline can be driven just far enough to produce its networks' inputs.
    """
    captured = []

    def hook(_, args):
        captured.append(tuple(_detach(a) for a in args))
        if len(captured) >= limit:
            raise CalibrationDone

    handle = module.register_forward_pre_hook(hook)
    try:
        run()
    except CalibrationDone:
        pass
    finally:
        handle.remove()
    if not captured:
        raise RuntimeError(f"calibration produced no inputs for {type(module).__name__}")
    return captured


def _detach(value):
    import torch

    if isinstance(value, torch.Tensor):
        return value.detach().clone()
    if isinstance(value, (list, tuple)):
        return type(value)(_detach(v) for v in value)
    return value


def _qconfig_mapping(skip):
    """The x86 backend's default mapping with min-max activation observers and ``skip`` left fp32.

    The default histogram observers search for clipping ranges; on the calibration sets
    here (tens of frames) they took most of a minute at load for no measured gain in PSNR.
    """
    import torch
    from torch.ao.quantization import MinMaxObserver, QConfig, get_default_qconfig_mapping
    from torch.ao.quantization.observer import HistogramObserver

    torch.backends.quantized.engine = BACKEND
    mapping = get_default_qconfig_mapping(BACKEND)

    def min_max(qconfig):
        if qconfig is None or getattr(qconfig.activation, "p", None) is None:
            return qconfig
        if qconfig.activation.p.func is not HistogramObserver:
            return qconfig
        return QConfig(activation=MinMaxObserver.with_args(**qconfig.activation.p.keywords), weight=qconfig.weight)

    mapping.set_global(min_max(mapping.global_qconfig))
    for kind, qconfig in list(mapping.object_type_qconfigs.items()):
        mapping.set_object_type(kind, min_max(qconfig))
    for kind in skip:
        mapping.set_object_type(kind, None)
    return mapping


def _prepare(module, mapping):
    import torch.fx.config
    from torch.ao.quantization.quantize_fx import prepare_fx

    # prepare_fx asks for example inputs but uses them only for standalone modules: the
    # calibration run is what the observers see. The tracer would record the Python stack
    # of every node it makes, for error messages: a third of a network's load time.
    saved = torch.fx.config.do_not_emit_stack_traces
    torch.fx.config.do_not_emit_stack_traces = True
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return prepare_fx(module, mapping, example_inputs=())
    finally:
        torch.fx.config.do_not_emit_stack_traces = saved


def _convert(module):
    from torch.ao.quantization.quantize_fx import convert_fx

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return convert_fx(module)


def quantize_module(module: nn.Module, calibration: Sequence[tuple], skip: Iterable[type] = ()) -> nn.Module:
    """An int8 copy of ``module`` (traceable by ``torch.fx``), calibrated on ``calibration``.

    Args:
        module: an fp32 module in eval mode; not changed.
        calibration: tuples of positional inputs, each one call of ``module``.
        skip: module types or functions (``torch.cat``) left in fp32.

    Returns:
        A ``GraphModule`` taking and returning float tensors.
    """
    import torch

    prepared = _prepare(copy.deepcopy(module).eval(), _qconfig_mapping(skip))
    with torch.inference_mode():
        for args in calibration:
            prepared(*args)
    return _convert(prepared)


def quantize_submodules(network: nn.Module, names: Sequence[str], calibrate: Callable[[nn.Module], object],
                        skip: Iterable[type] = ()) -> nn.Module:
    """A copy of ``network`` whose submodules ``names`` are int8, calibrated by ``calibrate(copy)``.

    Each named submodule must be traceable by ``torch.fx``; it is observed while
    ``calibrate`` runs the whole copy (so every part sees the inputs the network gives it)
    and then converted. The rest of ``network`` and its ``forward`` are unchanged.
    """
    import torch

    mapping = _qconfig_mapping(skip)
    network = copy.deepcopy(network).eval()
    for name in names:
        _set_submodule(network, name, _prepare(network.get_submodule(name), mapping))
    with torch.inference_mode():
        calibrate(network)
    for name in names:
        _set_submodule(network, name, _convert(network.get_submodule(name)))
    return network


def _set_submodule(root: nn.Module, name: str, module: nn.Module):
    parent, _, child = name.rpartition(".")
    setattr(root.get_submodule(parent) if parent else root, child, module)

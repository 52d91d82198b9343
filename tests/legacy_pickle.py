"""Write checkpoint files the way PyTorch 0.4 under Python 2 did.

The authors' released files predate the zip format of PyTorch 1.6 and were pickled by
Python 2, whose ``str`` is a byte string (SHORT_BINSTRING / BINSTRING opcodes) rather
than the unicode strings Python 3 writes. ``save_legacy`` reproduces both traits so
tests can check that such files load with ``torch.load(weights_only=True)``.
"""

import pickle
import struct
import types
from collections import OrderedDict

import torch


class Py2Pickler(pickle._Pickler):
    """Pickles ``str`` as Python 2 byte strings."""

    def save_str(self, obj):
        data = obj.encode("latin-1")
        if len(data) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(data)]) + data)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(data)) + data)
        self.memoize(obj)

    dispatch = dict(pickle._Pickler.dispatch)
    dispatch[str] = save_str


def _dump(obj, file, protocol=2):
    Py2Pickler(file, protocol).dump(obj)


py2_pickle = types.SimpleNamespace(Pickler=Py2Pickler, dump=_dump, __name__="py2_pickle")


def save_legacy(state_dict, path, prefix="module."):
    """Save like ``torch.save(nn.DataParallel(net).state_dict(), path)`` did in PyTorch 0.4."""
    prefixed = OrderedDict((prefix + k, v) for k, v in state_dict.items())
    torch.save(prefixed, path, pickle_module=py2_pickle, pickle_protocol=2,
               _use_new_zipfile_serialization=False)

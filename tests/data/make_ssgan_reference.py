"""Torch7 model files in the authors' layout, and the outputs the Lua graphs give on them.

The S^2-GAN reference (github.com/xiaolonw/ss-gan) is Torch7 / Lua: nothing of it runs
here. What the tests check instead:

1. ``write_t7``: a minimal writer of Torch7's binary serialisation (``torch.save`` of
   tables, nn modules, nngraph nodes, Float tensors and storages; shared objects written
   once and referenced by index, as Torch does). ``torchfile`` reads what it writes.
2. ``lua_*_graph``: the nngraph gModules of ``structure-gan/train.lua``,
   ``style-gan-fcn/train_gan.lua`` and ``train_fcn.lua`` rebuilt as Torch objects (nodes
   with ``data.module`` and ``children``, ``forwardnodes`` in a topological order that
   interleaves the Style-GAN's two input branches), small widths, seeded random weights.
3. ``forward_*``: those graphs run in NumPy with Torch's layer semantics
   (SpatialFullConvolution's (in, out, kh, kw) weights scattered with stride and padding,
   floor-mode max-pooling, nn.Normalize's eps, SpatialDropout's test-time (1 - p)), in
   evaluation mode. No PyTorch is involved, so the comparison is independent of the
   networks under test.

Run (no argument is needed: the reference code is not executed)::

    python tests/data/make_ssgan_reference.py [REFERENCE_CHECKOUT]

writes ``tests/data/ssgan_tiny.net`` (a Structure-GAN G and D, a Style-GAN G and D, an
FCN, as the authors' ``{G1=, D1=, G=, D=, FCN=}`` table) and ``tests/data/ssgan_reference.npz``
(inputs and outputs).
"""

from __future__ import annotations

import struct
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
TINY = {"noise_dim": 7, "width": 4, "structure_size": 16, "style_size": 16,
        "fcn_channels": (5, 6, 7, 7, 6, 8, 5), "fcn_classes": 6, "fcn_size": 64}


# ---------------------------------------------------------------------------------------
# Torch7 serialisation


class T7Object:
    """A Torch class instance: its class name and its fields (a dict written as a Lua table)."""

    def __init__(self, classname, fields=None):
        self.classname = classname
        self.fields = {} if fields is None else fields


class T7Writer:
    """``torch.save`` in binary mode: type tags, object indices for shared references."""

    NIL, NUMBER, STRING, TABLE, TORCH, BOOLEAN = 0, 1, 2, 3, 4, 5

    def __init__(self, f, cuda=False):
        self.f = f
        self.index = {}
        self.prefix = "torch.Cuda" if cuda else "torch.Float"   # a model saved from the GPU: CudaTensor

    def int(self, v):
        self.f.write(struct.pack("<i", v))

    def long(self, v):
        self.f.write(struct.pack("<q", v))

    def string(self, s):
        data = s.encode() if isinstance(s, str) else s
        self.int(len(data))
        self.f.write(data)

    def obj(self, value):
        if value is None:
            self.int(self.NIL)
        elif isinstance(value, bool):
            self.int(self.BOOLEAN)
            self.int(1 if value else 0)
        elif isinstance(value, (int, float)):
            self.int(self.NUMBER)
            self.f.write(struct.pack("<d", float(value)))
        elif isinstance(value, str):
            self.int(self.STRING)
            self.string(value)
        elif isinstance(value, (dict, list, T7Object, np.ndarray)):
            self.int(self.TORCH if isinstance(value, (T7Object, np.ndarray)) else self.TABLE)
            key = id(value)
            if key in self.index:
                self.int(self.index[key][0])
                return
            self.index[key] = (len(self.index) + 1, value)   # keep the object alive: ids stay unique
            self.int(self.index[key][0])
            if isinstance(value, np.ndarray):
                self.tensor(value)
            elif isinstance(value, T7Object):
                self.string("V 1")
                self.string(value.classname)
                self.obj(value.fields)
            else:
                items = list(enumerate(value, 1)) if isinstance(value, list) else list(value.items())
                self.int(len(items))
                for k, v in items:
                    self.obj(k)
                    self.obj(v)
        else:
            raise TypeError(f"cannot write {type(value).__name__}")

    def tensor(self, array):
        array = np.ascontiguousarray(array, dtype=np.float32)
        self.string("V 1")
        self.string(self.prefix + "Tensor" if self.prefix == "torch.Float" else "torch.CudaTensor")
        self.int(array.ndim)
        for s in array.shape:
            self.long(s)
        for s in np.array(array.strides) // 4:
            self.long(int(s))
        self.long(1)                          # storage offset, 1-based
        self.int(self.TORCH)                  # the storage, an object of its own
        self.int(len(self.index) + 1)
        self.index[("storage", len(self.index))] = (len(self.index) + 1, array)
        self.string("V 1")
        self.string(self.prefix + "Storage")
        self.long(array.size)
        self.f.write(array.tobytes())


def write_t7(path, value, cuda=False):
    """Write ``value`` (dicts, lists, numbers, strings, arrays, ``T7Object``) as a Torch7 file
    (tensors as ``torch.CudaTensor`` with ``cuda``, as a model saved from the GPU)."""
    with open(path, "wb") as f:
        T7Writer(f, cuda).obj(value)


# ---------------------------------------------------------------------------------------
# nn modules with seeded weights


def conv(rng, cin, cout, k, s=1, p=0, mm=False):
    w = rng.normal(0, 0.3, (cout, cin, k, k)).astype(np.float32)
    return T7Object("nn.SpatialConvolution", {
        "weight": w.reshape(cout, -1) if mm else w, "bias": rng.normal(0, 0.1, cout).astype(np.float32),
        "nInputPlane": cin, "nOutputPlane": cout, "kW": k, "kH": k, "dW": s, "dH": s, "padW": p, "padH": p,
        "train": False})


def full_conv(rng, cin, cout, k, s=1, p=0):
    return T7Object("nn.SpatialFullConvolution", {
        "weight": rng.normal(0, 0.3, (cin, cout, k, k)).astype(np.float32),   # Torch: (in, out, kh, kw)
        "bias": rng.normal(0, 0.1, cout).astype(np.float32), "nInputPlane": cin, "nOutputPlane": cout,
        "kW": k, "kH": k, "dW": s, "dH": s, "padW": p, "padH": p, "adjW": 0, "adjH": 0, "train": False})


def batch_norm(rng, c, legacy=False):
    var = rng.uniform(0.5, 2.0, c).astype(np.float32)
    fields = {"weight": rng.normal(1, 0.2, c).astype(np.float32), "bias": rng.normal(0, 0.2, c).astype(np.float32),
              "running_mean": rng.normal(0, 0.3, c).astype(np.float32), "eps": 1e-5, "momentum": 0.1,
              "affine": True, "train": False}
    if legacy:
        fields["running_std"] = (1.0 / np.sqrt(var + 1e-5)).astype(np.float32)
    else:
        fields["running_var"] = var
    return T7Object("nn.SpatialBatchNormalization", fields)


def linear(rng, cin, cout):
    return T7Object("nn.Linear", {"weight": rng.normal(0, 0.05, (cout, cin)).astype(np.float32),
                                  "bias": rng.normal(0, 0.1, cout).astype(np.float32), "train": False})


def simple(name, **fields):
    return T7Object(name, {"train": False, **fields})


# ---------------------------------------------------------------------------------------
# nngraph gModules


class Graph:
    """Builds an nngraph gModule: nodes ``{data = {module, mapindex}, children}``."""

    def __init__(self):
        self.nodes = []

    def node(self, module, *parents):
        node = T7Object("nngraph.Node", {"data": {"module": module, "mapindex": [p.fields["data"] for p in parents]},
                                         "children": [], "id": len(self.nodes) + 1, "visited": False,
                                         "marked": False})
        for p in parents:
            p.fields["children"].append(node)
        self.nodes.append(node)
        return node

    def chain(self, start, modules):
        node = start
        for m in modules:
            node = self.node(m, node)
        return node

    def gmodule(self, order=None):
        nodes = self.nodes if order is None else order
        modules = [n.fields["data"]["module"] for n in nodes if n.fields["data"]["module"] is not None]
        return T7Object("nn.gModule", {"forwardnodes": nodes, "modules": modules, "train": False})


def bn_relu(rng, c, leaky=False, legacy=False):
    act = simple("nn.LeakyReLU", negval=0.2, inplace=True) if leaky else simple("nn.ReLU", inplace=True)
    return [batch_norm(rng, c, legacy), act]


def lua_structure_g(rng, nz, c, size, legacy=False):
    g = Graph()
    x = g.node(simple("nn.Identity"))
    layers = [full_conv(rng, nz, c * 2, size // 8), *bn_relu(rng, c * 2, legacy=legacy),
              full_conv(rng, c * 2, c * 2, 4, 2, 1), *bn_relu(rng, c * 2),
              conv(rng, c * 2, c * 2, 3, 1, 1), *bn_relu(rng, c * 2),
              conv(rng, c * 2, c * 4, 3, 1, 1), *bn_relu(rng, c * 4),
              conv(rng, c * 4, c * 8, 3, 1, 1), *bn_relu(rng, c * 8),
              conv(rng, c * 8, c * 8, 3, 1, 1), *bn_relu(rng, c * 8, True),
              full_conv(rng, c * 8, c * 4, 4, 2, 1), *bn_relu(rng, c * 4, True),
              conv(rng, c * 4, c * 2, 3, 1, 1), *bn_relu(rng, c * 2, True),
              full_conv(rng, c * 2, c, 4, 2, 1), *bn_relu(rng, c, True),
              conv(rng, c, 3, 5, 1, 2), simple("nn.Tanh"),
              simple("nn.Transpose"), simple("nn.View"), simple("nn.Normalize", p=2, eps=1e-10),
              simple("nn.View"), simple("nn.Transpose")]
    g.chain(x, layers)
    return g.gmodule()


def lua_discriminator(rng, cin, c, size, joint):
    g = Graph()
    if joint:
        x, cond = g.node(simple("nn.Identity")), g.node(simple("nn.Identity"))
        start = g.node(simple("nn.JoinTable", dimension=2), x, cond)
    else:
        start = g.node(simple("nn.Identity"))
    factor = 16 if joint else 8
    lrelu = simple("nn.LeakyReLU", negval=0.2)
    layers = [conv(rng, cin, c, 5, 2, 2), lrelu,
              conv(rng, c, c * 2, 5, 2 if joint else 1, 2), lrelu,
              conv(rng, c * 2, c * 4, 3, 2, 1), lrelu, simple("nn.SpatialDropout", p=0.2),
              conv(rng, c * 4, c * 8, 3, 2, 1), lrelu, simple("nn.SpatialDropout", p=0.2),
              conv(rng, c * 8, c * 2, 3, 1, 1), lrelu,
              simple("nn.Reshape"), simple("nn.Dropout", p=0.5), linear(rng, c * 2 * (size // factor) ** 2, 1),
              simple("nn.Sigmoid")]
    g.chain(start, layers)
    return g.gmodule()


def lua_style_g(rng, nz, c, size):
    g = Graph()
    x_i, x_c = g.node(simple("nn.Identity")), g.node(simple("nn.Identity"))
    # Interleave the two branches' nodes in forwardnodes: the converter must not rely on
    # either branch coming first.
    normal = [conv(rng, 3, c, 5, 2, 2), *bn_relu(rng, c), conv(rng, c, c * 2, 5, 2, 2), *bn_relu(rng, c * 2)]
    noise = [full_conv(rng, nz, c, size // 16), *bn_relu(rng, c), full_conv(rng, c, c, 4, 2, 1), *bn_relu(rng, c),
             full_conv(rng, c, c, 4, 2, 1), *bn_relu(rng, c)]
    a, b = x_c, x_i
    normal_nodes, noise_nodes = [], []
    for i in range(max(len(normal), len(noise))):
        if i < len(normal):
            a = g.node(normal[i], a)
            normal_nodes.append(a)
        if i < len(noise):
            b = g.node(noise[i], b)
            noise_nodes.append(b)
    joined = g.node(simple("nn.JoinTable", dimension=2), a, b)    # JoinTable({r2, ri3})
    trunk = [conv(rng, c * 3, c * 4, 3, 1, 1), *bn_relu(rng, c * 4), conv(rng, c * 4, c * 8, 3, 2, 1),
             *bn_relu(rng, c * 8), conv(rng, c * 8, c * 8, 3, 1, 1), *bn_relu(rng, c * 8, True),
             full_conv(rng, c * 8, c * 4, 4, 2, 1), *bn_relu(rng, c * 4, True),
             full_conv(rng, c * 4, c * 2, 4, 2, 1), *bn_relu(rng, c * 2, True),
             full_conv(rng, c * 2, c, 4, 2, 1), *bn_relu(rng, c, True), conv(rng, c, 3, 5, 1, 2), simple("nn.Tanh")]
    g.chain(joined, trunk)
    return g.gmodule()


def lua_fcn(rng, channels, classes):
    c1, c2, c3, c4, c5, c6, c7 = channels
    g = Graph()
    pool = simple("nn.SpatialMaxPooling", kW=3, kH=3, dW=2, dH=2)
    layers = [conv(rng, 3, c1, 11, 4, 68, mm=True), *bn_relu(rng, c1, True), pool,
              conv(rng, c1, c2, 5, 1, 2), *bn_relu(rng, c2), pool,
              conv(rng, c2, c3, 3, 1, 1), *bn_relu(rng, c3), conv(rng, c3, c4, 3, 1, 1), *bn_relu(rng, c4),
              conv(rng, c4, c5, 3, 1, 1), *bn_relu(rng, c5), pool,
              conv(rng, c5, c6, 6, 1, 1), *bn_relu(rng, c6), full_conv(rng, c6, c7, 4, 2, 1), *bn_relu(rng, c7),
              conv(rng, c7, classes, 3, 1, 1), simple("nn.Transpose"), simple("nn.View"), simple("nn.LogSoftMax")]
    g.chain(g.node(simple("nn.Identity")), layers)
    return g.gmodule()


# ---------------------------------------------------------------------------------------
# The Lua graphs' forward pass in NumPy (evaluation mode)


def np_conv(x, m):
    f = m.fields
    w = f["weight"].reshape(f["nOutputPlane"], f["nInputPlane"], f["kH"], f["kW"]).astype(np.float64)
    s, p, k = f["dW"], f["padW"], f["kW"]
    x = np.pad(x, ((0, 0), (0, 0), (p, p), (p, p)))
    oh = (x.shape[2] - k) // s + 1
    ow = (x.shape[3] - k) // s + 1
    out = np.zeros((x.shape[0], w.shape[0], oh, ow))
    for ky in range(k):
        for kx in range(k):
            patch = x[:, :, ky: ky + s * (oh - 1) + 1: s, kx: kx + s * (ow - 1) + 1: s]
            out += np.einsum("bihw,oi->bohw", patch, w[:, :, ky, kx])
    return out + f["bias"][None, :, None, None]


def np_full_conv(x, m):
    """Torch SpatialFullConvolution: out[o, y*s - p + ky, x*s - p + kx] += in[i, y, x] * W[i, o, ky, kx]."""
    f = m.fields
    w = f["weight"].astype(np.float64)
    s, p, k = f["dW"], f["padW"], f["kW"]
    b, _, h, wd = x.shape
    canvas = np.zeros((b, w.shape[1], (h - 1) * s + k, (wd - 1) * s + k))
    for ky in range(k):
        for kx in range(k):
            canvas[:, :, ky: ky + s * (h - 1) + 1: s, kx: kx + s * (wd - 1) + 1: s] += np.einsum(
                "bihw,io->bohw", x, w[:, :, ky, kx])
    oh, ow = (h - 1) * s - 2 * p + k, (wd - 1) * s - 2 * p + k
    return canvas[:, :, p: p + oh, p: p + ow] + f["bias"][None, :, None, None]


def np_batch_norm(x, m):
    f = m.fields
    var = f["running_var"] if "running_var" in f else 1.0 / f["running_std"].astype(np.float64) ** 2 - f["eps"]
    scale = f["weight"] / np.sqrt(var + f["eps"])
    return (x - f["running_mean"][None, :, None, None]) * scale[None, :, None, None] + f["bias"][None, :, None, None]


def np_max_pool(x, k=3, s=2):
    oh, ow = (x.shape[2] - k) // s + 1, (x.shape[3] - k) // s + 1
    out = np.full((x.shape[0], x.shape[1], oh, ow), -np.inf)
    for ky in range(k):
        for kx in range(k):
            out = np.maximum(out, x[:, :, ky: ky + s * (oh - 1) + 1: s, kx: kx + s * (ow - 1) + 1: s])
    return out


def np_chain(x, modules):
    """Run a chain of the Lua modules above (the View / Transpose pairs are handled by their users)."""
    for m in modules:
        name = m.classname
        if name == "nn.SpatialConvolution":
            x = np_conv(x, m)
        elif name == "nn.SpatialFullConvolution":
            x = np_full_conv(x, m)
        elif name == "nn.SpatialBatchNormalization":
            x = np_batch_norm(x, m)
        elif name == "nn.ReLU":
            x = np.maximum(x, 0)
        elif name == "nn.LeakyReLU":
            x = np.where(x > 0, x, 0.2 * x)
        elif name == "nn.Tanh":
            x = np.tanh(x)
        elif name == "nn.Sigmoid":
            x = 1 / (1 + np.exp(-x))
        elif name == "nn.SpatialDropout":
            x = x * (1 - m.fields["p"])                  # Torch: scaled at test time
        elif name == "nn.Reshape":
            x = x.reshape(x.shape[0], -1)
        elif name == "nn.Linear":
            x = x @ m.fields["weight"].T.astype(np.float64) + m.fields["bias"]
        elif name == "nn.SpatialMaxPooling":
            x = np_max_pool(x)
        elif name == "nn.Normalize":                     # over channels (the Transpose/View pair around it)
            x = x / np.sqrt((x ** 2).sum(axis=1, keepdims=True) + m.fields["eps"])
        elif name == "nn.LogSoftMax":
            x = x.transpose(0, 2, 3, 1).reshape(-1, x.shape[1])
            x = x - x.max(axis=1, keepdims=True)
            x = x - np.log(np.exp(x).sum(axis=1, keepdims=True))
        elif name in ("nn.Identity", "nn.Dropout", "nn.Transpose", "nn.View"):
            pass
        else:
            raise ValueError(name)
    return x


def node_modules(graph, skip=()):
    return [m for m in graph.fields["modules"] if m.classname not in ("nn.Identity",) + tuple(skip)]


def forward_style_g(graph, z, normals):
    """The Style-GAN G graph: each branch's chain, JoinTable({normals, z}), then the trunk."""
    nodes = graph.fields["forwardnodes"]
    join = next(n for n in nodes if n.fields["data"]["module"].classname == "nn.JoinTable")
    branches = []
    for parent_data in join.fields["data"]["mapindex"]:
        chain = []
        node = next(n for n in nodes if n.fields["data"] is parent_data)
        while node.fields["data"]["module"].classname != "nn.Identity":
            chain.insert(0, node.fields["data"]["module"])
            node = next(n for n in nodes if n.fields["data"] is node.fields["data"]["mapindex"][0])
        branches.append(chain)
    normal_branch, noise_branch = branches
    joined = np.concatenate([np_chain(normals, normal_branch), np_chain(z, noise_branch)], axis=1)
    trunk, node = [], join
    while node.fields["children"]:
        node = node.fields["children"][0]
        trunk.append(node.fields["data"]["module"])
    return np_chain(joined, trunk)


def main(argv):
    rng = np.random.default_rng(20160315)
    t = TINY
    nz, c = t["noise_dim"], t["width"]
    structure_g = lua_structure_g(rng, nz, c, t["structure_size"], legacy=True)
    structure_d = lua_discriminator(rng, 3, c, t["structure_size"], joint=False)
    style_g = lua_style_g(rng, nz, c, t["style_size"])
    style_d = lua_discriminator(rng, 6, c, t["style_size"], joint=True)
    fcn = lua_fcn(rng, t["fcn_channels"], t["fcn_classes"])
    write_t7(HERE / "ssgan_tiny.net", {"G1": structure_g, "D1": structure_d, "G": style_g, "D": style_d,
                                       "FCN": fcn, "opt": {"noiseDim": nz, "scale": t["style_size"]}})

    z = rng.uniform(-1, 1, (2, nz, 1, 1))
    z2 = rng.uniform(-1, 1, (2, nz, 1, 1))
    normals = rng.normal(0, 1, (2, 3, t["style_size"], t["style_size"]))
    normals /= np.linalg.norm(normals, axis=1, keepdims=True)
    image = rng.uniform(-1, 1, (2, 3, t["style_size"], t["style_size"]))
    fcn_input = rng.uniform(-1, 1, (2, 3, t["fcn_size"], t["fcn_size"]))
    structure_normals = rng.normal(0, 1, (2, 3, t["structure_size"], t["structure_size"]))
    structure_normals /= np.linalg.norm(structure_normals, axis=1, keepdims=True)
    # the inputs as stored (float32), so that the outputs are those of the stored inputs
    z, z2, normals, image, fcn_input, structure_normals = (
        x.astype(np.float32).astype(np.float64) for x in (z, z2, normals, image, fcn_input, structure_normals))
    np.savez_compressed(
        HERE / "ssgan_reference.npz",
        z=z.astype(np.float32), z2=z2.astype(np.float32), normals=normals.astype(np.float32),
        image=image.astype(np.float32), fcn_input=fcn_input.astype(np.float32),
        structure_normals=structure_normals.astype(np.float32),
        structure=np_chain(z, node_modules(structure_g)).astype(np.float32),
        structure_discriminator=np_chain(structure_normals, node_modules(structure_d)).astype(np.float32),
        style=forward_style_g(style_g, z2, normals).astype(np.float32),
        style_discriminator=np_chain(np.concatenate([image, normals], 1),
                                     node_modules(style_d, ("nn.JoinTable",))).astype(np.float32),
        fcn=np_chain(fcn_input, node_modules(fcn)).astype(np.float32),
    )


if __name__ == "__main__":
    main(sys.argv[1:])

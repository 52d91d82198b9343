"""GRAN: the networks against a NumPy transcription of the authors' Theano layers, the canvas
recursion against the paper's formula, the pickle converter, training, the pipeline and the
demo weights."""

import pickle
import sys
import types

import numpy as np
import pytest
import torch

from models import registry
from models.errors import InvalidInput, WeightsMissing
from models.gran import convert
from models.gran.networks import CONFIGS, GRANDiscriminator, GRANGenerator, sequential_drawing
from models.gran.pipeline import GRANPipeline
from models.gran.train import GRANAdam, TrainConfig, Trainer
from models.types import ImageCondition
from models.weights import WeightsInvalid
from tests.legacy_pickle import Py2Pickler

TINY_G = {"z_dim": 6, "widths": (8, 4), "channels": 3, "first_size": 4, "num_steps": 3}
TINY_D = {"channels": 3, "widths": (4, 4), "image_size": 16, "num_hid": 5}


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def randomise(module, seed=0):
    """Every parameter and buffer drawn at random (eta, beta, biases included), reproducibly."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, p in sorted(module.named_parameters()):
            p.copy_(torch.randn(p.shape, generator=generator) * 0.3)
    return module


# ---------------------------------------------------------------------------------------
# A NumPy transcription of the Theano code: batch_norm_layer, BN_Conv_layer / Conv_layer
# (dnn_conv, conv_mode 'conv': the kernel flipped), Deconv_layer (GpuDnnConvGradI: the
# gradient of that convolution with respect to its input), written from the definitions.


def np_act(x, kind):
    return {"relu": lambda v: (v + abs(v)) / 2.0, "tanh": np.tanh, "linear": lambda v: v,
            "sigmoid": lambda v: 1 / (1 + np.exp(-v))}[kind](x)


def np_bn(z, axes):
    return (z - z.mean(axis=axes, keepdims=True)) / (z.std(axis=axes, keepdims=True) + 1e-6)


def np_bn_linear(x, p, prefix, kind):
    z = np_bn(x @ p[prefix + "W"] + p[prefix + "zbias"], 0)
    return np_act(p[prefix + "eta"] * z + p[prefix + "beta"], kind)


def np_true_conv(x, kernel, stride=2, pad=2):
    """cuDNN CONVOLUTION mode: out[o, y, x] = sum in_pad[i, s y + u, s x + v] K[o, i, k-1-u, k-1-v]."""
    b, _, h, w = x.shape
    k = kernel.shape[-1]
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    ho, wo = (h + 2 * pad - k) // stride + 1, (w + 2 * pad - k) // stride + 1
    out = np.zeros((b, kernel.shape[0], ho, wo))
    flipped = kernel[:, :, ::-1, ::-1]
    for y in range(ho):
        for x_ in range(wo):
            patch = xp[:, :, stride * y:stride * y + k, stride * x_:stride * x_ + k]
            out[:, :, y, x_] = np.einsum("biuv,oiuv->bo", patch, flipped)
    return out


def np_conv_grad_input(g, kernel, stride=2, pad=2):
    """d/d(img) of sum(G * true_conv(img, K)), img twice G's size (GpuDnnConvGradI)."""
    b, _, h, w = g.shape
    k = kernel.shape[-1]
    out = np.zeros((b, kernel.shape[1], 2 * h + 2 * pad, 2 * w + 2 * pad))
    flipped = kernel[:, :, ::-1, ::-1]
    for y in range(h):
        for x_ in range(w):
            out[:, :, stride * y:stride * y + k, stride * x_:stride * x_ + k] += np.einsum(
                "bo,oiuv->biuv", g[:, :, y, x_], flipped)
    return out[:, :, pad:pad + 2 * h, pad:pad + 2 * w]


def np_bn_conv(x, p, prefix, kind):
    h = np_true_conv(x, p[prefix + "W"].transpose(1, 0, 2, 3))        # W.dimshuffle(1, 0, 2, 3)
    h = np_bn(h, (0, 2, 3))
    return np_act(p[prefix + "eta"][None, :, None, None] * h + p[prefix + "beta"][None, :, None, None], kind)


def np_generator(p, z, steps, widths, first_size, encoder_bias=True, encoder_start=None):
    depth = len(widths)
    start = depth + 2 if encoder_start is None else encoder_start
    h_c, updates = np.zeros_like(z), []
    for _ in range(steps):
        h = np.concatenate([np_bn_linear(z, p, "L0a.", "tanh"), h_c], axis=1)
        h = np_bn_linear(h, p, "L1.", "relu").reshape(len(z), widths[0], first_size, first_size)
        for i in range(depth):
            name = f"L{2 + i}."
            h = np_conv_grad_input(h, p[name + "W"]) + p[name + "b"][None, :, None, None]
            h = np_act(h, "linear" if i == depth - 1 else "relu")
        updates.append(h)
        for i in reversed(range(depth)):
            name = f"L{start + i}."
            if i == 0 and encoder_bias:
                h = np_act(np_true_conv(h, p[name + "W"].transpose(1, 0, 2, 3)) + p[name + "c"][None, :, None, None],
                           "relu")
            else:
                h = np_bn_conv(h, p, name, "relu")
        h_c = np_bn_linear(h.reshape(len(z), -1), p, "L0b.", "tanh")
    return np_act(np.sum(updates, axis=0), "sigmoid"), updates


def np_discriminator(p, x, layers):
    h = x
    for i in range(layers):
        h = np_bn_conv(h, p, f"L{i + 1}.", "relu")
    h = np.tanh(h.reshape(len(x), -1) @ p["W"] + p["hbias"])
    return np_act(h @ p["W_y"], "sigmoid")


def numpy_state(module):
    return {k: v.detach().double().numpy() for k, v in module.state_dict().items()}


# ---------------------------------------------------------------------------------------
# Networks


def test_generator_matches_numpy_transcription_of_theano_layers():
    torch.manual_seed(0)
    generator = randomise(GRANGenerator(**TINY_G)).double()
    z = torch.randn(5, TINY_G["z_dim"], dtype=torch.float64)
    image, updates = generator(z)
    ref_image, ref_updates = np_generator(numpy_state(generator), z.numpy(), 3, TINY_G["widths"], 4)
    assert image.shape == (5, 3, 16, 16) and len(updates) == 3
    for ours, theirs in zip(updates, ref_updates):
        np.testing.assert_allclose(ours.detach().numpy(), theirs, atol=1e-9, rtol=1e-7)
    np.testing.assert_allclose(image.detach().numpy(), ref_image, atol=1e-10)


def test_mnist_style_generator_and_discriminator_match_numpy():
    # MNIST's layout: 7x7 first map, batch-normalised encoder named from L5, one channel.
    config = {"z_dim": 4, "widths": (6, 3), "channels": 1, "first_size": 7, "num_steps": 2,
              "encoder_bias": False, "encoder_start": 5}
    generator = randomise(GRANGenerator(**config), 1).double()
    assert sorted({k.split(".")[0] for k in generator.state_dict()}) == ["L0a", "L0b", "L1", "L2", "L3", "L5", "L6"]
    z = torch.randn(4, 4, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    image, _ = generator(z)
    ref, _ = np_generator(numpy_state(generator), z.numpy(), 2, (6, 3), 7, encoder_bias=False, encoder_start=5)
    assert image.shape == (4, 1, 28, 28)
    np.testing.assert_allclose(image.detach().numpy(), ref, atol=1e-10)

    discriminator = randomise(GRANDiscriminator(channels=1, widths=(4, 3), image_size=28, num_hid=5), 3).double()
    assert discriminator.W.shape == (3 * 7 * 7, 5)
    x = torch.rand(4, 1, 28, 28, dtype=torch.float64)
    np.testing.assert_allclose(discriminator(x).detach().numpy(),
                               np_discriminator(numpy_state(discriminator), x.numpy(), 2), atol=1e-10)


def test_published_sizes_match_the_reference_shapes():
    torch.set_default_device("meta")          # shapes only: no memory, no initialisation time
    try:
        check_published_shapes()
    finally:
        torch.set_default_device("cpu")


def check_published_shapes():
    cifar = GRANGenerator(**CONFIGS["cifar10"]["generator"])
    shapes = {k: tuple(v.shape) for k, v in cifar.state_dict().items()}
    assert shapes["L0a.W"] == (100, 100) and shapes["L1.W"] == (200, 1024 * 16) and shapes["L0b.W"] == (16384, 100)
    assert shapes["L2.W"] == (1024, 512, 5, 5) and shapes["L4.W"] == (256, 3, 5, 5) and shapes["L4.b"] == (3,)
    assert shapes["L5.W"] == (512, 1024, 5, 5) and shapes["L5.c"] == (1024,) and shapes["L7.W"] == (3, 256, 5, 5)
    assert shapes["L7.eta"] == (256,) and "L7.stat_mean" in shapes and "L5.eta" not in shapes
    lsun = GRANGenerator(**CONFIGS["lsun"]["generator"])
    assert lsun.image_size == 64 and tuple(lsun.L2.W.shape) == (172, 1376, 5, 5) and tuple(lsun.L6.W.shape) == (
        1376, 172, 5, 5)
    d = GRANDiscriminator(**CONFIGS["cifar10"]["discriminator"])
    assert tuple(d.L1.W.shape) == (3, 1024, 5, 5) and tuple(d.W.shape) == (4096, 100) and tuple(d.W_y.shape) == (100, 1)
    assert tuple(GRANDiscriminator(**CONFIGS["lsun"]["discriminator"]).W.shape) == (172 * 16, 100)


def test_canvas_recursion_is_the_papers_formula():
    generator = randomise(GRANGenerator(**TINY_G), 4)
    z = torch.randn(6, 6)
    image, updates = generator(z, num_steps=4)
    # Direct: h_c,0 = 0; dC_t = decode(z, h_c,t-1) with the same z; h_c,t = encode(dC_t); x = sigmoid(sum dC_t).
    h_c, direct = torch.zeros(6, 6), []
    for _ in range(4):
        direct.append(generator.decode(z, h_c))
        h_c = generator.encode(direct[-1])
        assert direct[-1].shape == (6, 3, 16, 16) and h_c.shape == (6, 6)
    for ours, theirs in zip(updates, direct):
        torch.testing.assert_close(ours, theirs)
    torch.testing.assert_close(image, torch.sigmoid(direct[0] + direct[1] + direct[2] + direct[3]))
    drawn = sequential_drawing(updates)
    assert len(drawn) == 4
    torch.testing.assert_close(drawn[1], torch.sigmoid(updates[0] + updates[1]))
    torch.testing.assert_close(drawn[-1], image)
    assert not torch.allclose(updates[0], updates[1])          # the encoded canvas changes the next update


def test_registry_builds_networks_and_loads_state_dicts_strictly():
    net = registry.load_network("gran", "generator", None, **TINY_G)
    state = randomise(GRANGenerator(**TINY_G), 5).state_dict()
    loaded = registry.load_network("gran", "generator", dict(state), **TINY_G)
    torch.testing.assert_close(loaded.L2.W, state["L2.W"])
    assert net.training is False
    with pytest.raises(WeightsInvalid):
        registry.load_network("gran", "generator", {k: v for k, v in state.items() if k != "L0b.W"}, **TINY_G)


# ---------------------------------------------------------------------------------------
# The authors' pickles


def _fake_modules(monkeypatch):
    """Classes named as the reference's and Theano's, registered where pickle looks for them."""
    classes = {}

    def package(module):
        parts = module.split(".")
        for i in range(1, len(parts) + 1):          # parents too: pickle imports the module by name
            name = ".".join(parts[:i])
            if not getattr(sys.modules.get(name), "_gran_test", False):
                fake = types.ModuleType(name)
                fake._gran_test = True
                monkeypatch.setitem(sys.modules, name, fake)
        return sys.modules[module]

    def define(module, name):
        mod = package(module)
        cls = type(name, (), {"__module__": module})
        setattr(mod, name, cls)
        classes[name] = cls
        return cls

    for module, name in (("gran", "GRAN"), ("recGenI32", "RecGenI32"), ("convnet_cuda32", "convnet32"),
                         ("batch_norm_layer", "Batch_Norm_layer"), ("deconv", "Deconv_layer"),
                         ("conv_layer", "Conv_layer"), ("batch_norm_conv_layer", "BN_Conv_layer"),
                         ("theano.tensor.sharedvar", "TensorSharedVariable"), ("theano.gof.link", "Container"),
                         ("theano.tensor.type", "TensorType"),
                         ("theano.sandbox.cuda.var", "CudaNdarraySharedVariable")):
        define(module, name)
    cuda_type = package("theano.sandbox.cuda.type")

    def CudaNdarray_unpickler(npa):  # noqa: N802 -- Theano's name
        return npa

    CudaNdarray_unpickler.__module__ = "theano.sandbox.cuda.type"
    CudaNdarray_unpickler.__qualname__ = "CudaNdarray_unpickler"
    cuda_type.CudaNdarray_unpickler = CudaNdarray_unpickler

    class GpuArray:                  # pickles as CudaNdarray_unpickler(numpy array), as Theano's copyreg does
        def __init__(self, array):
            self.array = array

        def __reduce__(self):
            return (CudaNdarray_unpickler, (self.array,))

    classes["GpuArray"] = GpuArray
    return classes


def _theano_model(classes, generator, discriminator, num_steps, gpu=True):
    """An object graph shaped as a pickled gran.GRAN: layers holding shared variables."""
    def shared(array, name):
        variable = classes["CudaNdarraySharedVariable" if gpu else "TensorSharedVariable"]()
        container = classes["Container"]()
        value = classes["GpuArray"](array) if gpu else array
        container.__dict__.update(storage=[value], readonly=False, strict=False, name=name)
        tensor_type = classes["TensorType"]()
        tensor_type.__dict__.update(dtype="float32", broadcastable=(False,) * array.ndim)
        variable.__dict__.update(container=container, name=name, type=tensor_type, owner=None, index=None, tag=None)
        return variable

    def network(cls, state):
        net = cls()
        layers = {}
        for key, tensor in state.items():
            array = tensor.numpy().astype(np.float32)
            if "." in key:
                layer, attr = key.split(".")
                kind = {"b": "Deconv_layer", "c": "Conv_layer", "zbias": "Batch_Norm_layer"}
                layers.setdefault(layer, classes["BN_Conv_layer"]())
                for marker, cls_name in kind.items():
                    if f"{layer}.{marker}" in state:
                        layers[layer].__class__ = classes[cls_name]
                layers[layer].__dict__[attr] = shared(array, attr)
            else:
                net.__dict__[key] = shared(array, key)
        net.__dict__.update(layers)
        net.__dict__.update(num_steps=num_steps, nkerns=np.array([8, 4, 2, 3]), params=list(layers))
        return net

    model = classes["GRAN"]()
    model.__dict__.update(gen_network=network(classes["RecGenI32"], generator.state_dict()),
                          dis_network=network(classes["convnet32"], discriminator.state_dict()),
                          num_steps=num_steps)
    return model


@pytest.mark.parametrize("gpu", [True, False])
def test_converter_reads_a_theano_pickle_without_theano(tmp_path, monkeypatch, gpu):
    classes = _fake_modules(monkeypatch)
    generator = randomise(GRANGenerator(**TINY_G), 6)
    discriminator = randomise(GRANDiscriminator(**TINY_D), 7)
    path = tmp_path / "gran_param_cifar10_ts5_2.save"
    with open(path, "wb") as f:
        Py2Pickler(f, 2).dump(_theano_model(classes, generator, discriminator, num_steps=3, gpu=gpu))
    for name in list(sys.modules):        # the reader must not need them
        if name.startswith("theano") or name in ("gran", "recGenI32", "convnet_cuda32"):
            monkeypatch.delitem(sys.modules, name)

    out = convert.convert_pickle(path, tmp_path / "converted")
    pipe = registry.load("gran", weights=out, device="cpu")
    assert pipe.generator.config["num_steps"] == 3 and pipe.generator.config["widths"] == [8, 4]
    z = torch.randn(4, 6)
    torch.testing.assert_close(pipe.generator(z)[0], generator(z)[0])
    networks = convert.networks_from_pickle(path)
    for key, value in discriminator.state_dict().items():
        torch.testing.assert_close(networks["discriminator"].state_dict()[key], value)
    # The authors' folder itself (the .save file) loads too.
    authors = GRANPipeline.from_pretrained(tmp_path, device="cpu")
    torch.testing.assert_close(authors.generator(z)[0], generator(z)[0])


def test_converter_refuses_other_classes(tmp_path):
    evil = tmp_path / "evil.save"
    evil.write_bytes(b"cos\nsystem\n(S'echo hacked'\ntR.")
    with pytest.raises(WeightsInvalid, match="refusing"):
        convert.load_pickle(evil)
    with pytest.raises(WeightsInvalid):
        convert.state_dicts(convert.load_pickle(pickle.dumps({"W": np.zeros(2)}, protocol=2)))


def test_missing_authors_pickle_names_the_files(tmp_path):
    with pytest.raises(WeightsMissing, match="not found"):
        convert.convert_pickle(tmp_path / "absent.save", tmp_path / "out")
    with pytest.raises(Exception, match="gran_param_cifar10_ts5_2.save"):
        GRANPipeline.from_pretrained(tmp_path)


# ---------------------------------------------------------------------------------------
# Training


def tiny_trainer(tmp_path, **options):
    images = torch.rand(16, 3, 16, 16) * 2 - 1
    config = TrainConfig(data_dir="", out_dir=str(tmp_path / "run"), generator={}, image_size=16,
                         widths=[8, 4], d_widths=[4, 4], z_dim=6, num_hid=5, num_steps=2, batch_size=8,
                         progress=False, sample_every=0, **options)
    return Trainer(config, images=images)


def test_adam_is_the_authors_update():
    p = torch.nn.Parameter(torch.tensor([1.0, -2.0]))
    opt = GRANAdam([p], lr=0.1)
    m = v = np.zeros(2)
    expected = np.array([1.0, -2.0])
    for t, g in ((1, np.array([0.5, -1.0])), (2, np.array([0.2, 0.3]))):
        p.grad = torch.tensor(g, dtype=torch.float32)
        opt.step()
        b1 = 1 - 0.9 * 1e-8 ** (t - 1)
        m = b1 * g + (1 - b1) * m
        v = 0.001 * g ** 2 + 0.999 * v
        expected = expected - 0.1 * (m / (1 - 0.9 ** t)) / (np.sqrt(v / (1 - 0.999 ** t)) + 1e-8)
        np.testing.assert_allclose(p.detach().numpy(), expected, rtol=1e-5)


def test_a_few_steps_lower_each_loss(tmp_path):
    torch.manual_seed(0)
    trainer = tiny_trainer(tmp_path, lr_g=1e-2, lr_d=1e-2)
    real = trainer.dataset.images[:8]
    z = torch.randn(8, 6)
    before = trainer.d_cost(real, z)[0].item()
    for _ in range(5):
        trainer.opt_d.zero_grad()
        trainer.d_cost(real, z)[0].backward()
        trainer.opt_d.step()
    assert trainer.d_cost(real, z)[0].item() < before
    g_before = trainer.g_cost(z).item()
    for _ in range(5):
        trainer.opt_g.zero_grad()
        trainer.g_cost(z).backward()
        trainer.opt_g.step()
    assert trainer.g_cost(z).item() < g_before


def test_training_run_loads_as_weights(tmp_path):
    trainer = tiny_trainer(tmp_path, max_steps=2)
    summary = trainer.run()
    assert summary["step"] == 2 and set(summary["losses"]) >= {"d_loss", "g_loss"}
    assert trainer.config.lr_g == 1e-4 and trainer.config.lr_d == 4e-5 and trainer.config.weight_decay == 5e-6
    pipe = registry.load("gran", weights=tmp_path / "run", device="cpu")
    torch.manual_seed(1)
    assert pipe(n=3).images.shape == (3, 16, 16, 3)


def test_train_command_needs_images():
    from argparse import Namespace

    from models.gran.train import from_args

    with pytest.raises(InvalidInput, match="--images"):
        from_args(Namespace(images=None, out="x"))


# ---------------------------------------------------------------------------------------
# The pipeline and the demo weights


def test_demo_weights_sample_reproducibly_with_levels():
    pipe = registry.load("gran", device="cpu")
    assert "demo" in pipe.info["weights"]
    torch.manual_seed(3)
    first = pipe(n=2, levels=True)
    torch.manual_seed(3)
    again = pipe(n=2, levels=True)
    assert first.images.shape == (2, 32, 32, 3) and first.images.dtype == np.uint8
    np.testing.assert_array_equal(first.images, again.images)
    steps = pipe.generator.num_steps
    assert [name for name, _ in first.levels] == [f"step {t} of {steps}" for t in range(1, steps + 1)]
    np.testing.assert_array_equal(first.levels[-1][1], first.images)
    assert not np.array_equal(first.levels[0][1], first.images)
    assert first.images.std() > 5                             # not a flat image
    torch.manual_seed(4)
    assert not np.array_equal(pipe(n=2).images, first.images)
    assert pipe(n=1, steps=1).info["steps"] == 1


def test_bad_conditions_and_options_are_refused():
    pipe = GRANPipeline(GRANGenerator(**TINY_G), device="cpu")
    for condition in (ImageCondition(text="a bird"), ImageCondition(label=1), ImageCondition(vector=np.zeros(4))):
        with pytest.raises(InvalidInput, match="takes no"):
            pipe(n=1, condition=condition)
    with pytest.raises(InvalidInput):
        pipe(n=1, steps=0)
    with pytest.raises(InvalidInput):
        pipe(n=1, batch=1)

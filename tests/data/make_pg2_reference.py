"""Make tests/data/pg2_reference.npz by running the reference PG2 code once.

Usage:  python tests/data/make_pg2_reference.py PORT [--tf AUTHORS]

PORT is a checkout of budui/Human-Pose-Transfer (the PyTorch port). Only its
``implementations/PG2/model.py`` (and the ``helper/weights_init.py`` it imports) is loaded,
as it is: neither needs a shim, nor pytorch-ignite, which only the port's trainers use.
Every network, in reduced sizes (``SMALL``), gets the seeded weights of
``tests/seeded.py`` (with ReLU gain: ``seeded_port_state_dict``); the file stores the
inputs, the outputs and the list of state-dict keys and shapes, also of the published
configurations (``FULL``), never weights.
``tests/test_pg2_networks.py`` rebuilds the weights and compares.

AUTHORS is a checkout of charliememory/Pose-Guided-Person-Image-Generation (TensorFlow
1.4, Python 2). With ``--tf`` (in an environment with ``tensorflow`` and ``tf_slim``) the
script also builds the authors' generators (``models.py``, ``models256.py``) and
discriminators (``wgan_gp.py``) in small sizes, gives every variable the weights of
``seeded_tf_variable``, saves them with ``tf.train.Saver`` (a V2 checkpoint, as the
authors' trainer writes) and stores the checkpoint's ``.index`` file (names, shapes and
offsets only; ``tests/test_pg2_convert.py`` rebuilds the ``.data`` file from the seeds)
with the inputs and outputs (the committed file was made with tensorflow-cpu 2.21 and
tf_slim 1.1; the tests need these entries, so regenerate it with ``--tf``). Shims, and
why each reproduces what the authors ran:

* ``tensorflow`` is ``tensorflow.compat.v1`` in graph mode, with ``tf.contrib.slim``,
  ``tf.contrib.layers`` and ``tf.contrib.framework`` taken from ``tf_slim`` (the same
  layers, split out of TF 1.x's contrib).
* ``utils_wgan`` (imported by ``models.py``, used by none of the generators) and the
  data and plotting modules ``wgan_gp.py`` imports (``sklearn.datasets``,
  ``tflib.save_images``, ``tflib.small_imagenet``, ``tflib.plot``) are empty modules.
* ``models.py`` halves the map height with ``min_fea_map_H/2``, an int in Python 2; it
  is compiled with ``//``. Its ``np.prod`` widths are ``numpy.int64``, an ``int`` in
  Python 2 but not in 3, which ``tf_slim.fully_connected`` refuses: they are passed as
  ``int``.
* ``tflib/__init__.py`` and ``tflib/ops/batchnorm.py`` hold Python 2 ``print``
  statements (in functions the discriminator never calls); they are compiled with
  ``print(...)`` instead, and ``xrange`` is ``range``.
* TF's CPU kernels refuse NCHW convolutions and batch norms, which tflib asks for;
  ``tf.nn.conv2d`` and ``tf.nn.fused_batch_norm`` run them in NHWC between two
  transposes (the same arithmetic).
"""

import argparse
import json
import re
import sys
import tempfile
import types
import zlib
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent.parent))
from tests.seeded import seeded_state_dict  # noqa: E402

# Reduced sizes as the port's constructor arguments, with the input size (H, W) and batch.
SMALL = {
    "g1": ({"in_channels": 21, "num_repeat": 3, "middle_features_dim": 8, "channels_base": 4,
            "image_size": [32, 16]}, (32, 16)),
    "g1_square": ({"in_channels": 21, "num_repeat": 4, "middle_features_dim": 6, "channels_base": 2,
                   "image_size": [64, 64]}, (64, 64)),
    "g2": ({"in_channels": 6, "channels_base": 4, "num_repeat": 3, "num_skip_out_connect": 1}, (32, 16)),
    "g2_no_skip_out": ({"in_channels": 6, "channels_base": 3, "num_repeat": 2, "num_skip_out_connect": 0},
                       (32, 32)),
    "discriminator": ({"in_channels": 3, "channel_base": 2, "market_or_DF": True}, (128, 64)),
    "discriminator_df": ({"in_channels": 3, "channel_base": 2, "market_or_DF": False}, (256, 256)),
}
BATCH = 2
# The published configurations (models.pg2.networks.MARKET / DEEPFASHION), checked by keys.
FULL = {
    "market": {
        "g1": {"in_channels": 21, "num_repeat": 5, "middle_features_dim": 64, "channels_base": 128,
               "image_size": [128, 64]},
        "g2": {"in_channels": 6, "channels_base": 128, "num_repeat": 3, "num_skip_out_connect": 1},
        "discriminator": {"in_channels": 3, "channel_base": 64, "market_or_DF": True},
    },
    "deepfashion": {
        "g1": {"in_channels": 21, "num_repeat": 6, "middle_features_dim": 64, "channels_base": 128,
               "image_size": [256, 256]},
        "g2": {"in_channels": 6, "channels_base": 128, "num_repeat": 4, "num_skip_out_connect": 0},
        "discriminator": {"in_channels": 3, "channel_base": 64, "market_or_DF": False},
    },
}
# The authors' TF networks in small sizes: G1 needs an 8-row map after repeat_num - 1
# halvings (their reshape is fixed at 8x4, resp. 8x8), so 64x32 / 64x64 with repeat_num 4.
TF_GENERATORS = {
    "tf_market": {"image": (64, 32), "repeat_num": 4, "hidden_num": 2, "z_num": 8},
    "tf_deepfashion": {"image": (64, 64), "repeat_num": 4, "hidden_num": 2, "z_num": 8},
}
TF_DISCRIMINATORS = {"tf_discriminator": {"image": (128, 64), "dim": 2},
                     "tf_discriminator_df": {"image": (256, 256), "dim": 2}}
TF_STEP = 12800      # the value of the authors' ``step`` variable in the saved checkpoint


def seeded_port_state_dict(state_dict):
    """tests/seeded.py's weights with ReLU gain: its kernels keep the signal's scale through
    linear layers, so through ReLUs it halves at every layer and the deep layers of G2
    would hardly show in the output; sqrt(2) times (He) keeps them visible."""
    return {k: v * 2 ** 0.5 if v.dim() > 1 else v for k, v in seeded_state_dict(state_dict).items()}


def seeded_tf_variable(name, shape):
    """The stand-in value of the TF variable ``name``: seeded by its name, as tests/seeded.py.

    Kernels (HWIO) and matrices ([in, out]) are He-scaled (ReLU gain) over all but the
    last axis; batch-norm scales and variances are near one, other vectors near zero.
    """
    gen = torch.Generator().manual_seed(zlib.crc32(name.encode()))
    shape = tuple(int(s) for s in shape)
    if len(shape) <= 1:
        base = 1.0 if name.endswith(("scale", "moving_variance")) else 0.0
        return (base + 0.1 * torch.randn(shape, generator=gen)).numpy()
    fan_in = int(np.prod(shape[:-1]))
    return (torch.randn(shape, generator=gen) * (2 / fan_in) ** 0.5).numpy()


def blocky(shape, block, generator):
    """uint8 maps of constant ``block``x``block`` squares (the tests map them to [-1, 1])."""
    low = torch.randint(0, 256, (*shape[:-2], shape[-2] // block, shape[-1] // block), dtype=torch.uint8,
                        generator=generator)
    return low.repeat_interleave(block, -2).repeat_interleave(block, -1)


def to_unit(pixels):
    return pixels.float() / 127.5 - 1


def keys_and_shapes(net):
    return np.array([f"{k} {tuple(v.shape)}" for k, v in net.state_dict().items()])


def port_reference(port_dir, data):
    sys.path.insert(0, str(port_dir))
    from implementations.PG2 import model as port
    classes = {"g1": port.Generator1, "g2": port.Generator2, "discriminator": port.Discriminator}
    for dataset, configs in FULL.items():
        for name, config in configs.items():
            data[f"{dataset}.{name}.keys"] = keys_and_shapes(classes[name](**config))

    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for case, (config, (h, w)) in SMALL.items():
            net = classes[case.split("_")[0] if case.startswith("g") else "discriminator"](**config)
            net.load_state_dict(seeded_port_state_dict(net.state_dict()))
            net.eval()
            data[f"{case}.config"] = np.array(json.dumps(config))
            data[f"{case}.keys"] = keys_and_shapes(net)
            block = 8 if h >= 128 else 4 if h >= 64 else 2
            if case.startswith("g1"):
                data[f"{case}.condition_img"] = blocky((BATCH, 3, h, w), block, gen)
                data[f"{case}.target_pose"] = blocky((BATCH, 18, h, w), block, gen)
                data[f"{case}.output"] = net(to_unit(data[f"{case}.condition_img"]),
                                             to_unit(data[f"{case}.target_pose"]))
            elif case.startswith("g2"):
                data[f"{case}.condition_image"] = blocky((BATCH, 3, h, w), block, gen)
                data[f"{case}.stage1_image"] = blocky((BATCH, 3, h, w), block, gen)
                data[f"{case}.output"] = net(to_unit(data[f"{case}.condition_image"]),
                                             to_unit(data[f"{case}.stage1_image"]))
            else:
                data[f"{case}.x"] = blocky((BATCH, 3, h, w), block, gen)
                data[f"{case}.output"] = net(to_unit(data[f"{case}.x"]))


# ---------------------------------------------------------------------------------------
# The authors' TensorFlow code


def install_tf_shims(authors_dir):
    import tensorflow.compat.v1 as tf
    import tf_slim

    tf.disable_v2_behavior()
    slim = types.SimpleNamespace(**{k: v for k, v in vars(tf_slim).items() if not k.startswith("__")})
    slim.fully_connected = lambda x, num_outputs, **kwargs: tf_slim.fully_connected(x, int(num_outputs), **kwargs)
    tf.contrib = types.SimpleNamespace(slim=slim, layers=tf_slim.layers, framework=tf_slim)
    sys.modules["tensorflow"] = tf
    for name in ("utils_wgan", "sklearn", "sklearn.datasets"):
        sys.modules[name] = types.ModuleType(name)

    conv2d, fused_batch_norm = tf.nn.conv2d, tf.nn.fused_batch_norm
    to_nhwc, to_nchw = (lambda t: tf.transpose(t, [0, 2, 3, 1])), (lambda t: tf.transpose(t, [0, 3, 1, 2]))

    def conv2d_nhwc(input, filter, strides, padding, data_format="NHWC", **kwargs):
        if data_format != "NCHW":
            return conv2d(input, filter, strides, padding, data_format=data_format, **kwargs)
        strides = [strides[0], strides[2], strides[3], strides[1]]
        return to_nchw(conv2d(to_nhwc(input), filter, strides, padding, data_format="NHWC", **kwargs))

    def fused_batch_norm_nhwc(x, scale, offset, *args, data_format="NHWC", **kwargs):
        if data_format != "NCHW":
            return fused_batch_norm(x, scale, offset, *args, data_format=data_format, **kwargs)
        y, mean, var = fused_batch_norm(to_nhwc(x), scale, offset, *args, data_format="NHWC", **kwargs)
        return to_nchw(y), mean, var
    tf.nn.conv2d, tf.nn.fused_batch_norm = conv2d_nhwc, fused_batch_norm_nhwc

    import builtins
    builtins.xrange = range
    sys.path.insert(0, str(authors_dir))
    py2_print = re.compile(r"^(\s*)print (.+)$", re.M)

    def load_py2(module_name, path, package=False):
        module = types.ModuleType(module_name)
        module.__file__ = str(authors_dir / path)
        if package:
            module.__path__ = [str((authors_dir / path).parent)]
        sys.modules[module_name] = module
        source = py2_print.sub(r"\1print(\2)", (authors_dir / path).read_text())
        exec(compile(source, module.__file__, "exec"), module.__dict__)
        return module
    load_py2("tflib", "tflib/__init__.py", package=True)
    import tflib.ops
    tflib.ops.batchnorm = load_py2("tflib.ops.batchnorm", "tflib/ops/batchnorm.py")
    for name in ("tflib.save_images", "tflib.small_imagenet", "tflib.plot"):
        sys.modules[name] = types.ModuleType(name)
    return tf


def load_py2_division(authors_dir, module_name):
    """``<module_name>.py`` with ``min_fea_map_H/2`` as Python 2 computed it (int / int -> int)."""
    module = types.ModuleType(module_name)
    module.__file__ = str(authors_dir / f"{module_name}.py")
    sys.modules[module_name] = module
    source = Path(module.__file__).read_text().replace("min_fea_map_H/2", "min_fea_map_H//2")
    exec(compile(source, module.__file__, "exec"), module.__dict__)
    return module


def seed_and_save(tf, session, path):
    """Give every variable its seeded value (``step``: TF_STEP), save a V2 checkpoint."""
    for var in tf.global_variables():
        name = var.op.name
        if var.dtype.base_dtype == tf.int32:
            var.load(TF_STEP, session)
        else:
            var.load(seeded_tf_variable(name, var.shape.as_list()), session)
    tf.train.Saver(write_version=tf.train.SaverDef.V2).save(session, str(path), write_meta_graph=False)
    return Path(f"{path}.index").read_bytes()


def tf_reference(authors_dir, data):
    tf = install_tf_shims(authors_dir)
    authors_models = load_py2_division(authors_dir, "models")
    authors_models256 = load_py2_division(authors_dir, "models256")
    import wgan_gp

    gen = torch.Generator().manual_seed(1)
    scratch = Path(tempfile.mkdtemp())
    builders = {"tf_market": authors_models.GeneratorCNN_Pose_UAEAfterResidual_UAEnoFCAfter2Noise,
                "tf_deepfashion": authors_models256.GeneratorCNN_Pose_UAEAfterResidual_UAEnoFCAfterNoise_256}
    for case, size in TF_GENERATORS.items():
        h, w = size["image"]
        data[f"{case}.x"] = blocky((BATCH, 3, h, w), 4, gen)                   # NCHW pixels
        data[f"{case}.pose_target"] = blocky((BATCH, 18, h, w), 4, gen)
        graph = tf.Graph()
        with graph.as_default(), tf.Session(graph=graph) as session:
            x = tf.placeholder(tf.float32, (None, h, w, 3))
            pose = tf.placeholder(tf.float32, (None, h, w, 18))
            # As the authors' trainer builds it: ReLU, no noise, a step variable, Adam slots.
            g1, diff_map, g1_vars, g2_vars = builders[case](
                x, pose, 3, size["z_num"], size["repeat_num"], size["hidden_num"], "NHWC",
                activation_fn=tf.nn.relu, noise_dim=0)
            tf.Variable(0, name="step", trainable=False)
            loss = tf.reduce_mean(tf.abs(g1)) + tf.reduce_mean(tf.abs(diff_map))
            tf.train.AdamOptimizer(2e-5, beta1=0.5).minimize(loss, var_list=g1_vars + g2_vars)
            session.run(tf.global_variables_initializer())
            data[f"{case}.index"] = np.frombuffer(seed_and_save(tf, session, scratch / case), np.uint8)
            feed = {x: to_unit(data[f"{case}.x"]).permute(0, 2, 3, 1).numpy(),
                    pose: to_unit(data[f"{case}.pose_target"]).permute(0, 2, 3, 1).numpy()}
            data[f"{case}.g1"], data[f"{case}.diff_map"] = session.run([g1, diff_map], feed)   # NHWC
            data[f"{case}.config"] = np.array(json.dumps(size))

    for case, size in TF_DISCRIMINATORS.items():
        h, w = size["image"]
        data[f"{case}.x"] = blocky((BATCH, 3, h, w), 8, gen)
        graph = tf.Graph()
        with graph.as_default(), tf.Session(graph=graph) as session:
            sys.modules["tflib"].delete_all_params()     # tflib keeps variables in a module dict
            images = tf.placeholder(tf.float32, (None, 3, h, w))
            critic = wgan_gp.WGAN_GP(MODE="dcgan", DIM=size["dim"], BATCH_SIZE=BATCH)
            build = critic.DCGANDiscriminator if h == 128 else critic.DCGANDiscriminator_256
            logits = build(images, input_dim=3, dim=size["dim"])
            session.run(tf.global_variables_initializer())
            data[f"{case}.index"] = np.frombuffer(seed_and_save(tf, session, scratch / case), np.uint8)
            data[f"{case}.logits"] = session.run(logits, {images: to_unit(data[f"{case}.x"]).numpy()})
            data[f"{case}.config"] = np.array(json.dumps(size))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("port", type=Path, help="checkout of budui/Human-Pose-Transfer")
    parser.add_argument("--tf", type=Path, help="checkout of charliememory/Pose-Guided-Person-Image-Generation")
    args = parser.parse_args()
    torch.manual_seed(0)
    data = {}
    port_reference(args.port.resolve(), data)
    if args.tf is not None:
        tf_reference(args.tf.resolve(), data)
    arrays = {}
    for key, value in data.items():
        arrays[key] = value.numpy() if isinstance(value, torch.Tensor) else value
        if arrays[key].dtype.kind == "f":
            arrays[key] = arrays[key].astype(np.float32)
    np.savez_compressed(HERE / "pg2_reference.npz", **arrays)
    for key, value in arrays.items():
        if value.dtype.kind == "f":
            print(f"{key:36s} {str(value.shape):20s} |max| {np.abs(value).max():.4g}")


if __name__ == "__main__":
    main()

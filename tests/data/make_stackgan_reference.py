"""Make tests/data/stackgan_reference.npz by running the authors' StackGAN code once.

Usage:  python tests/data/make_stackgan_reference.py V1_CHECKOUT V2_CHECKOUT

V1_CHECKOUT is a checkout of hanzhanggit/StackGAN-Pytorch, V2_CHECKOUT one of
hanzhanggit/StackGAN-v2; only their ``code/model.py`` and ``code/miscc/config.py`` are
loaded. Shims, and why each leaves the arithmetic unchanged:

* ``easydict`` (the configs' container) is replaced by a small attribute dict;
* ``torchvision`` (imported by v2's ``model.py`` for the Inception scorer only, which is
  never built) is an empty module with an empty ``models`` submodule;
* ``cfg.CUDA`` is False, so the CA noise is drawn by ``torch.FloatTensor(...).normal_()``
  on the CPU, the authors' own branch for a CPU run.

The configuration is set before ``model.py`` is imported (``NEXT_STAGE_G`` binds its
``R_NUM`` default at import, as the authors' ``main.py`` does after ``cfg_from_file``).
Each network, in reduced sizes (``SMALL_*``), gets the seeded weights of
``tests/seeded.py`` and runs in eval mode on seeded inputs after ``torch.manual_seed``;
the file stores the inputs, the outputs (every image subsampled to 32 x 32, to stay
small) and the state-dict keys and shapes of the reduced and of the published
configurations, never weights. ``tests/test_stackgan.py`` rebuilds the weights and compares.
"""

import argparse
import json
import sys
import types
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent.parent))
from tests.seeded import seeded_state_dict  # noqa: E402

OUT = HERE / "stackgan_reference.npz"
BATCH = 2
SEED = 1234
# v1: cfg Z_DIM, GAN.CONDITION_DIM, GAN.GF_DIM, GAN.DF_DIM, GAN.R_NUM, TEXT.DIMENSION
SMALL_V1 = {"Z_DIM": 8, "CONDITION_DIM": 6, "GF_DIM": 8, "DF_DIM": 2, "R_NUM": 2, "DIMENSION": 12}
FULL_V1 = {"Z_DIM": 100, "CONDITION_DIM": 128, "GF_DIM": 192, "DF_DIM": 96, "R_NUM": 2, "DIMENSION": 1024}
# v2: cfg TREE.BRANCH_NUM, GAN.Z_DIM, GAN.EMBEDDING_DIM, GAN.GF_DIM, GAN.DF_DIM, GAN.R_NUM, TEXT.DIMENSION
SMALL_V2 = {"BRANCH_NUM": 3, "Z_DIM": 8, "EMBEDDING_DIM": 6, "GF_DIM": 8, "DF_DIM": 2, "R_NUM": 2, "DIMENSION": 12}
FULL_V2 = {"BRANCH_NUM": 3, "Z_DIM": 100, "EMBEDDING_DIM": 128, "GF_DIM": 64, "DF_DIM": 64, "R_NUM": 2,
           "DIMENSION": 1024}


class AttrDict(dict):
    """What ``easydict.EasyDict`` does for the configs: keys as attributes, nested."""

    def __getattr__(self, key):
        try:
            return self[key]
        except KeyError:
            raise AttributeError(key) from None

    def __setattr__(self, key, value):
        self[key] = value


def install_shims():
    easydict = types.ModuleType("easydict")
    easydict.EasyDict = AttrDict
    sys.modules["easydict"] = easydict
    torchvision = types.ModuleType("torchvision")
    torchvision.models = types.ModuleType("torchvision.models")
    sys.modules["torchvision"] = torchvision
    sys.modules["torchvision.models"] = torchvision.models


def import_reference(checkout, configure):
    """``model`` of one checkout's ``code/``, with ``configure(cfg)`` applied before its import."""
    for name in [m for m in sys.modules if m == "model" or m == "miscc" or m.startswith("miscc.")]:
        del sys.modules[name]
    code = str(Path(checkout) / "code")
    sys.path.insert(0, code)
    try:
        from miscc.config import cfg
        cfg.CUDA = False
        configure(cfg)
        import model
    finally:
        sys.path.remove(code)
    return model, cfg


def shapes(module) -> dict:
    return {k: list(v.shape) for k, v in module.state_dict().items()}


def seeded(module):
    module.load_state_dict(seeded_state_dict(module.state_dict()))
    return module.eval()


def sub(image):
    """An image output subsampled to 32 x 32 (every 2nd pixel of 64 x 64, every 8th of 256 x 256)."""
    step = image.shape[-1] // 32
    return image[:, :, ::step, ::step]


def v1_reference(checkout, out: dict, keys: dict):
    def configure(size):
        def apply(cfg):
            cfg.Z_DIM = size["Z_DIM"]
            cfg.GAN.CONDITION_DIM, cfg.GAN.GF_DIM = size["CONDITION_DIM"], size["GF_DIM"]
            cfg.GAN.DF_DIM, cfg.GAN.R_NUM, cfg.TEXT.DIMENSION = size["DF_DIM"], size["R_NUM"], size["DIMENSION"]
        return apply

    model, cfg = import_reference(checkout, configure(FULL_V1))
    keys["v1_stage2_full"] = shapes(model.STAGE2_G(model.STAGE1_G()))
    keys["v1_stage1_full"] = shapes(model.STAGE1_G())
    configure(SMALL_V1)(cfg)
    size = SMALL_V1
    text = torch.randn(BATCH, size["DIMENSION"], generator=torch.Generator().manual_seed(7))
    out["v1_text"] = text.numpy()
    with torch.no_grad():
        stage1 = seeded(model.STAGE1_G())
        torch.manual_seed(SEED)
        noise = torch.FloatTensor(BATCH, size["Z_DIM"]).normal_(0, 1)
        _, image, mu, logvar = stage1(text, noise)
        out.update(v1_stage1_noise=noise.numpy(), v1_stage1_image=sub(image).numpy(), v1_stage1_mu=mu.numpy(),
                   v1_stage1_logvar=logvar.numpy())
        keys["v1_stage1"] = shapes(stage1)

        stage2 = seeded(model.STAGE2_G(model.STAGE1_G()))
        torch.manual_seed(SEED + 1)
        noise = torch.FloatTensor(BATCH, size["Z_DIM"]).normal_(0, 1)
        low, image, mu, logvar = stage2(text, noise)
        out.update(v1_stage2_noise=noise.numpy(), v1_stage2_low=sub(low).numpy(), v1_stage2_image=sub(image).numpy(),
                   v1_stage2_mu=mu.numpy(), v1_stage2_logvar=logvar.numpy())
        keys["v1_stage2"] = shapes(stage2)

        d1 = seeded(model.STAGE1_D())
        code = d1(low)
        out["v1_d1_cond"] = d1.get_cond_logits(code, mu).numpy()
        keys["v1_d1"] = shapes(d1)
        d2 = seeded(model.STAGE2_D())
        code = d2(image)
        out["v1_d2_cond"] = d2.get_cond_logits(code, mu).numpy()
        out["v1_d2_uncond"] = d2.get_uncond_logits(code).numpy()
        keys["v1_d2"] = shapes(d2)


def v2_reference(checkout, out: dict, keys: dict):
    def configure(size, condition):
        def apply(cfg):
            cfg.TREE.BRANCH_NUM, cfg.GAN.Z_DIM = size["BRANCH_NUM"], size["Z_DIM"]
            cfg.GAN.EMBEDDING_DIM, cfg.GAN.GF_DIM, cfg.GAN.DF_DIM = (size["EMBEDDING_DIM"], size["GF_DIM"],
                                                                     size["DF_DIM"])
            cfg.GAN.R_NUM, cfg.TEXT.DIMENSION, cfg.GAN.B_CONDITION = size["R_NUM"], size["DIMENSION"], condition
        return apply

    for condition, tag in ((True, "cond"), (False, "uncond")):
        model, cfg = import_reference(checkout, configure(FULL_V2, condition))
        keys[f"v2_{tag}_full"] = shapes(model.G_NET())
        model, cfg = import_reference(checkout, configure(SMALL_V2, condition))
        size = SMALL_V2
        text = torch.randn(BATCH, size["DIMENSION"], generator=torch.Generator().manual_seed(8))
        with torch.no_grad():
            net = seeded(model.G_NET())
            torch.manual_seed(SEED + 2)
            noise = torch.FloatTensor(BATCH, size["Z_DIM"]).normal_(0, 1)
            images, mu, logvar = net(noise, text if condition else None)
            out[f"v2_{tag}_noise"] = noise.numpy()
            for i, image in enumerate(images):
                out[f"v2_{tag}_image{i}"] = sub(image).numpy()
            keys[f"v2_{tag}"] = shapes(net)
            if condition:
                out.update(v2_text=text.numpy(), v2_cond_mu=mu.numpy(), v2_cond_logvar=logvar.numpy())
            for i, d_class in enumerate((model.D_NET64, model.D_NET128, model.D_NET256)):
                d = seeded(d_class())
                logits = d(images[i], mu) if condition else d(images[i])
                for j, value in enumerate(logits):
                    out[f"v2_{tag}_d{64 << i}_{j}"] = value.numpy()
                keys[f"v2_{tag}_d{64 << i}"] = shapes(d)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("v1", help="checkout of hanzhanggit/StackGAN-Pytorch")
    parser.add_argument("v2", help="checkout of hanzhanggit/StackGAN-v2")
    args = parser.parse_args()
    install_shims()
    torch.set_num_threads(1)
    out, keys = {}, {}
    v1_reference(args.v1, out, keys)
    v2_reference(args.v2, out, keys)
    out["sizes"] = np.array(json.dumps({"SMALL_V1": SMALL_V1, "SMALL_V2": SMALL_V2, "FULL_V1": FULL_V1,
                                        "FULL_V2": FULL_V2, "BATCH": BATCH, "SEED": SEED}))
    out["keys"] = np.array(json.dumps(keys))
    np.savez_compressed(OUT, **{k: v.astype(np.float32) if v.dtype.kind == "f" else v for k, v in out.items()})
    print(f"wrote {OUT} ({OUT.stat().st_size} bytes)")  # noqa: T201


if __name__ == "__main__":
    main()

"""Reference tensors of pytorch/examples ``dcgan/main.py`` for tests/test_dcgan.py.

    python tests/data/make_dcgan_reference.py /path/to/pytorch-examples-checkout

1. The reference script itself is run once, for one batch (``--dataset fake --dry-run``,
   4 images of 64x64, nz 16, ngf = ndf = 4, seed 1), so that it writes ``netG_epoch_0.pth``
   and ``netD_epoch_0.pth`` after one optimisation step (batch-norm running statistics no
   longer at their initial values). torchvision is not installed here: a stand-in module
   gives the script its ``FakeData`` (seeded random images in [0, 1]), ``transforms`` and
   a ``save_image`` that writes nothing; the networks, losses and optimisers are untouched.
2. The script's own ``Generator`` and ``Discriminator`` classes (its source, executed
   with its global sizes) load those files and run on a seeded z and a seeded image
   batch: in eval mode (running statistics), then in training mode, as the script itself
   draws its sample grids (batch statistics; the only outputs far from 0 and 0.5 after
   one step, since the running variances barely moved from 1).

Writes tests/data/dcgan_reference.npz: both state dicts (``G/<key>``, ``D/<key>``), the
inputs ``z`` and ``x``, the eval-mode outputs ``G_out``, ``D_out``, ``D_fake`` (D on
``G_out``) and the training-mode ones ``G_out_train``, ``D_out_train``, with the sizes.
"""

import ast
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import numpy as np
import torch

NZ, NGF, NDF, NC, SIZE = 16, 4, 4, 3, 64

STAND_IN = {
    "torchvision/__init__.py": "from . import datasets, transforms, utils\n",
    "torchvision/datasets.py": textwrap.dedent("""
        import torch

        class FakeData(torch.utils.data.Dataset):
            def __init__(self, image_size, transform=None, size=4):
                generator = torch.Generator().manual_seed(123)
                self.images = torch.rand(size, *image_size, generator=generator)

            def __len__(self):
                return len(self.images)

            def __getitem__(self, index):
                return self.images[index], 0
        """),
    "torchvision/transforms.py": "def ToTensor():\n    return None\n",
    "torchvision/utils.py": "def save_image(*args, **kwargs):\n    pass\n",
}


def reference_classes(main_py: Path) -> dict:
    """``weights_init``, ``Generator`` and ``Discriminator`` of main.py, defined with its sizes."""
    tree = ast.parse(main_py.read_text())
    keep = [node for node in tree.body if isinstance(node, (ast.ClassDef, ast.FunctionDef))]
    scope = {"torch": torch, "nn": torch.nn, "nz": NZ, "ngf": NGF, "ndf": NDF, "nc": NC}
    exec(compile(ast.Module(body=keep, type_ignores=[]), str(main_py), "exec"), scope)
    return scope


def main(checkout):
    main_py = Path(checkout) / "dcgan" / "main.py"
    out = Path(__file__).resolve().parent / "dcgan_reference.npz"
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for name, text in STAND_IN.items():
            (tmp / name).parent.mkdir(parents=True, exist_ok=True)
            (tmp / name).write_text(text)
        subprocess.run([sys.executable, str(main_py), "--dataset", "fake", "--dry-run", "--batchSize", "4",
                        "--imageSize", str(SIZE), "--nz", str(NZ), "--ngf", str(NGF), "--ndf", str(NDF),
                        "--workers", "0", "--manualSeed", "1", "--outf", str(tmp / "run")],
                       check=True, env={"PYTHONPATH": str(tmp), "PATH": "/usr/bin:/bin"}, cwd=tmp)
        state_g = torch.load(tmp / "run" / "netG_epoch_0.pth", map_location="cpu", weights_only=True)
        state_d = torch.load(tmp / "run" / "netD_epoch_0.pth", map_location="cpu", weights_only=True)

    scope = reference_classes(main_py)
    net_g, net_d = scope["Generator"](1), scope["Discriminator"](1)
    net_g.load_state_dict(state_g)
    net_d.load_state_dict(state_d)
    net_g.eval()
    net_d.eval()
    generator = torch.Generator().manual_seed(7)
    z = torch.randn(3, NZ, 1, 1, generator=generator)
    x = torch.rand(3, NC, SIZE, SIZE, generator=generator) * 2 - 1
    with torch.no_grad():
        g_out, d_out = net_g(z), net_d(x)
        d_fake = net_d(g_out)
        net_g.train()
        net_d.train()
        g_train, d_train = net_g(z), net_d(x)
    arrays = {f"G/{k}": v.numpy() for k, v in state_g.items()}
    arrays.update({f"D/{k}": v.numpy() for k, v in state_d.items()})
    arrays.update(z=z.numpy(), x=x.numpy(), G_out=g_out.numpy(), D_out=d_out.numpy(), D_fake=d_fake.numpy(),
                  G_out_train=g_train.numpy(), D_out_train=d_train.numpy(),
                  sizes=np.array([NZ, NGF, NDF, NC, SIZE]))
    np.savez_compressed(out, **arrays)
    print(f"wrote {out} ({out.stat().st_size} bytes)")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    main(sys.argv[1])

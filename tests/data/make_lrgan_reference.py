"""Reference tensors of jwyang/lr-gan.pytorch's generator for tests/test_lrgan.py.

    git clone https://github.com/jwyang/lr-gan.pytorch /tmp/lr-gan.pytorch
    python tests/data/make_lrgan_reference.py /tmp/lr-gan.pytorch

The reference's ``_netG`` (and ``_netD``) classes are taken from its train.py (their source,
executed with the script's globals: nz, ngf, ndf, nc, ntimestep, rot, opt.maxobjscale) and
run once on the CPU, on seeded weights. What modern PyTorch and a machine without CUDA need
is patched, nothing else:

* ``.cuda()`` is removed from the source (the LSTM's zero state is made on the CPU);
* the grid generator ``AffineGridGen`` is the reference's own ``AffineGridGenFunction``
  (functions/gridgen.py), whose ``forward`` is called directly: legacy autograd functions
  can no longer be called;
* the compositor ``STNM`` is a CUDA extension (github.com/jwyang/stnm.pytorch,
  ``stnm_cuda_kernel.cu``) that cannot be built here; ``ReferenceSTNM`` below re-implements
  its kernel's semantics: BHWD tensors, a grid of (y, x) source coordinates in [-1, 1] with
  ``(x + 1) * (W - 1) / 2`` pixel positions, bilinear weights from the top-left corner,
  corners outside the foreground reading 0 (image and mask), and
  ``out = (1 - m) * canvas + m * v``.

The weights (``nz`` 20, ``ngf`` 8, ``ndf`` 8, 32 x 32, three channels) are the reference's
initialisation, then seeded random values for the pose layer (zero at initialisation) and the
batch-norm statistics and affine parameters, rounded to float16 so that they are stored
exactly. One state dict serves both runs: the reference builds the same layers whatever
``ntimestep`` is. The generator runs in eval mode for 2 and 3 steps (and in train mode for 3
steps, batch statistics), on seeded noise of a batch of 2.

Writes tests/data/lrgan_reference.pt (``torch.load(weights_only=True)``): ``netG`` and
``netD`` state dicts (float16), ``config``, and per run ``noise``, ``canvases`` (the last is the
final image), ``fgimgs``, ``fgmasks``, the discriminator's output ``netD_out`` on the 2-step
images, and ``t3_train["final"]`` (3 steps in train mode, on the 3-step run's noise).
"""

import ast
import sys
from pathlib import Path
from types import SimpleNamespace

import torch
from torch import nn

NZ, NGF, NDF, NC, SIZE, MAXOBJSCALE, ROT = 20, 8, 8, 3, 32, 1.2, 0.1


class ReferenceSTNM(nn.Module):
    """The STNM kernel's forward, written out with gathers (canvas, fgimg, fggrid, fgmask in BHWD)."""

    def forward(self, canvas, fgimg, fggrid, fgmask):
        batch, height, width, channels = fgimg.shape
        yf, xf = fggrid[..., 0], fggrid[..., 1]                       # (B, H, W) each
        xcoord = (xf + 1) * (width - 1) / 2
        ycoord = (yf + 1) * (height - 1) / 2
        x0, y0 = torch.floor(xcoord), torch.floor(ycoord)
        wx, wy = 1 - (xcoord - x0), 1 - (ycoord - y0)                  # weights of the top-left corner
        x0, y0 = x0.long(), y0.long()
        b = torch.arange(batch).view(batch, 1, 1).expand(batch, height, width)

        def read(image, y, x):
            inside = (x >= 0) & (x <= width - 1) & (y >= 0) & (y <= height - 1)
            values = image[b, y.clamp(0, height - 1), x.clamp(0, width - 1)]       # (B, H, W, C)
            return values * inside.unsqueeze(-1).to(values.dtype)

        def sample(image):
            return (wx * wy).unsqueeze(-1) * read(image, y0, x0) \
                + ((1 - wx) * wy).unsqueeze(-1) * read(image, y0, x0 + 1) \
                + (wx * (1 - wy)).unsqueeze(-1) * read(image, y0 + 1, x0) \
                + ((1 - wx) * (1 - wy)).unsqueeze(-1) * read(image, y0 + 1, x0 + 1)

        m = sample(fgmask)                                             # (B, H, W, 1)
        v = sample(fgimg)
        return (1 - m) * canvas + m * v


def reference_scope(checkout: Path, ntimestep: int) -> dict:
    """``weights_init``, ``_netG`` and ``_netD`` of train.py, defined with the script's globals."""
    sys.path.insert(0, str(checkout))
    from functions.gridgen import AffineGridGenFunction   # the reference's grid, pure torch

    class AffineGridGen(nn.Module):
        def __init__(self, height, width, lr=1, aux_loss=False):
            super().__init__()
            self.f = AffineGridGenFunction(height, width, lr=lr)

        def forward(self, theta):
            return self.f.forward(theta)

    source = (checkout / "train.py").read_text().replace(".cuda()", "")
    tree = ast.parse(source)
    keep = [node for node in tree.body if isinstance(node, (ast.ClassDef, ast.FunctionDef))]
    scope = {"torch": torch, "nn": nn, "Variable": torch.autograd.Variable, "STNM": ReferenceSTNM,
             "AffineGridGen": AffineGridGen, "nz": NZ, "ngf": NGF, "ndf": NDF, "nc": NC,
             "ntimestep": ntimestep, "rot": ROT, "opt": SimpleNamespace(maxobjscale=MAXOBJSCALE)}
    exec(compile(ast.Module(body=keep, type_ignores=[]), str(checkout / "train.py"), "exec"), scope)
    return scope


def seeded_weights(net: nn.Module, seed: int) -> dict:
    """The reference's initial weights with random pose and batch-norm values, float16-exact."""
    generator = torch.Generator().manual_seed(seed)

    def randn(tensor):
        return torch.randn(tensor.shape, generator=generator)

    with torch.no_grad():
        for name, module in net.named_modules():
            if name == "Gtransform":
                module.weight.add_(0.3 * randn(module.weight))
                module.bias.add_(0.3 * randn(module.bias))
            elif isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d)):
                module.weight.copy_(1 + 0.2 * randn(module.weight))
                module.bias.copy_(0.2 * randn(module.bias))
                module.running_mean.copy_(0.2 * randn(module.running_mean))
                module.running_var.copy_(0.5 + torch.rand(module.running_var.shape, generator=generator))
        for tensor in net.state_dict().values():
            if tensor.is_floating_point():
                tensor.copy_(tensor.half().float())
    return {k: v.clone() for k, v in net.state_dict().items()}


def run(net, noise):
    final, canvases, fgimgs, fgmasks = net(noise)
    assert final is canvases[-1]
    return {"canvases": torch.stack([c.detach() for c in canvases]),
            "fgimgs": torch.stack([f.detach() for f in fgimgs]), "fgmasks": torch.stack([m.detach() for m in fgmasks])}


def main(checkout):
    checkout = Path(checkout)
    torch.manual_seed(0)
    scope2 = reference_scope(checkout, 2)
    net_g = scope2["_netG"](1, SIZE)
    net_d = scope2["_netD"](1, SIZE)
    state_g = seeded_weights(net_g, 1)
    state_d = seeded_weights(net_d, 2)

    out = {"config": {"image_size": SIZE, "nz": NZ, "ngf": NGF, "ndf": NDF, "nc": NC, "maxobjscale": MAXOBJSCALE,
                      "rot": ROT},
           "netG": {k: v.half() if v.is_floating_point() else v for k, v in state_g.items()},
           "netD": {k: v.half() if v.is_floating_point() else v for k, v in state_d.items()}}
    generator = torch.Generator().manual_seed(3)
    for steps in (2, 3):
        scope = scope2 if steps == 2 else reference_scope(checkout, steps)
        net = scope["_netG"](1, SIZE)
        net.load_state_dict(state_g)
        noise = torch.randn(steps, 2, NZ, generator=generator)
        with torch.no_grad():
            out[f"t{steps}"] = {"noise": noise, **run(net.eval(), noise)}
            if steps == 2:
                net_d.load_state_dict(state_d)
                out["t2"]["netD_out"] = net_d.eval()(out["t2"]["canvases"][-1])
            if steps == 3:
                out["t3_train"] = {"final": net.train()(noise)[0]}
    path = Path(__file__).resolve().parent / "lrgan_reference.pt"
    torch.save(out, path)
    print(f"wrote {path} ({path.stat().st_size // 1024} KiB)")   # noqa: T201


if __name__ == "__main__":
    main(sys.argv[1])

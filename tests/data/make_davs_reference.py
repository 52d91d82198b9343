"""Make tests/data/davs_reference.npz by running the authors' DAVS modules once.

Usage:  python tests/data/make_davs_reference.py PATH/TO/Talking-Face-Generation-DAVS

PATH is a checkout of Hangz-nju-cuhk/Talking-Face-Generation-DAVS. Its ``network/``
modules were written for Python 2 and PyTorch 0.2; the shims below let them run
unchanged on the CPU under Python 3 and a current PyTorch (nothing of them is copied
here). Every network gets the seeded weights of ``tests/seeded.py``; the file stores the
inputs, the outputs and the list of state-dict keys and shapes of each authors' module
(so that parameters the forward pass never touches are checked too), never weights.
``tests/test_davs_networks.py`` rebuilds the weights and compares.

Shims, and why each reproduces what the authors ran:

* ``sys.argv`` is emptied while importing: ``IdentityEncoder.py``, ``FAN_feature_
  extractor.py`` and ``Discriminator_networks.py`` parse the command line at import.
* ``Options.py`` declares ``--resume`` and ``--disfc_length`` twice (with equal
  defaults), which argparse refuses; conflicts are resolved to the same values.
* ``IdentityEncoder.py`` writes ``str(01)``, a Python 2 octal literal equal to 1; its
  source is compiled with ``str(1)`` in its place.
* PyTorch 0.2's bilinear upsampling (``nn.Upsample``, ``F.upsample``) aligned corners;
  today's default does not, so bilinear calls get ``align_corners=True``.
* PyTorch 0.2's ``BatchNorm1d`` only checked the channel count and normalised any input
  over dimension 1; ``mfcc_encoder_alter`` relies on that with a 4-D tensor, so the
  dimension check is relaxed (the arithmetic is untouched).
* ``ID_dis32.forward`` reads ``self.config``, which its constructor never sets; it is set
  to the options the module was built with.
"""

import argparse
import sys
import types
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent.parent))
from tests.seeded import seeded_state_dict  # noqa: E402


def install_shims():
    sys.argv = sys.argv[:1]
    parser_init = argparse.ArgumentParser.__init__

    def resolving(self, *args, **kwargs):
        kwargs.setdefault("conflict_handler", "resolve")
        parser_init(self, *args, **kwargs)
    argparse.ArgumentParser.__init__ = resolving

    interpolate = F.interpolate

    def upsample_0_2(input, size=None, scale_factor=None, mode="nearest", align_corners=None):
        if mode == "bilinear" and align_corners is None:
            align_corners = True
        return interpolate(input, size, scale_factor, mode, align_corners)
    F.upsample = upsample_0_2
    upsample_init = nn.Upsample.__init__

    def upsample_module_0_2(self, size=None, scale_factor=None, mode="nearest", align_corners=None, **kwargs):
        if mode == "bilinear" and align_corners is None:
            align_corners = True
        upsample_init(self, size, scale_factor, mode, align_corners, **kwargs)
    nn.Upsample.__init__ = upsample_module_0_2

    def check_channels_only(self, input):
        if input.dim() < 2:
            raise ValueError("expected at least 2-D input")
    nn.BatchNorm1d._check_input_dim = check_channels_only


def import_authors(code_dir):
    sys.path.insert(0, str(code_dir))
    import network  # noqa: F401  (the package the modules below belong to)
    source = (code_dir / "network" / "IdentityEncoder.py").read_text()
    identity = types.ModuleType("network.IdentityEncoder")
    identity.__file__ = str(code_dir / "network" / "IdentityEncoder.py")
    exec(compile(source.replace("str(01)", "str(1)"), identity.__file__, "exec"), identity.__dict__)
    sys.modules["network.IdentityEncoder"] = identity
    import Options
    import network.Decoder_networks as decoder
    import network.Discriminator_networks as discriminators
    import network.FAN_feature_extractor as fan
    import network.mfcc_networks as mfcc
    import network.networks as networks
    return types.SimpleNamespace(identity=identity, decoder=decoder, fan=fan, mfcc=mfcc,
                                 networks=networks, discriminators=discriminators,
                                 opt=Options.Config().parse())


def seeded(net, data, name):
    """``net`` in eval mode with the seeded weights; its keys and shapes go into ``data``."""
    state = net.state_dict()
    net.load_state_dict(seeded_state_dict(state))
    data[f"{name}.keys"] = np.array([f"{k} {tuple(v.shape)}" for k, v in state.items()])
    return net.eval()


def blocky_image(shape, block=8):
    """uint8 frames of constant ``block``x``block`` squares: real pixel values that compress well."""
    low = torch.randint(0, 256, (*shape[:-2], shape[-2] // block, shape[-1] // block), dtype=torch.uint8)
    return low.repeat_interleave(block, -2).repeat_interleave(block, -1)


def main(code_dir):
    install_shims()
    authors = import_authors(code_dir)
    opt = authors.opt            # the training options: image 256, MFCC 20x12, 12/20/6 frames
    torch.manual_seed(0)
    data = {}
    to_float = lambda u8: u8.float() / 255  # noqa: E731  (the loaders' image / 255)

    with torch.no_grad():
        encoder = seeded(authors.identity.IdentityEncoder(opt), data, "id_encoder")
        data["id_encoder.x"] = blocky_image((1, 3, 256, 256))
        id_feature = encoder(to_float(data["id_encoder.x"]))
        for name, value in zip(["pid", "net4", "net3", "net2"], id_feature):
            data[f"id_encoder.{name}"] = value
        data["id_encoder.net1_first16"] = id_feature[4][:, :16]    # the 64x64 map is 1 MB whole

        decoder = seeded(authors.decoder.Decoder(opt), data, "decoder")
        data["decoder.mouth_feature"] = torch.randn(1, 256)
        data["decoder.frame"] = decoder(id_feature, data["decoder.mouth_feature"])

        mfcc = seeded(authors.mfcc.mfcc_encoder_two(opt), data, "mfcc_encoder")
        data["mfcc_encoder.x"] = torch.randn(2, 3, 1, 20, 12) * 5
        data["mfcc_encoder.out"] = mfcc(data["mfcc_encoder.x"])

        lips = seeded(authors.fan.FanFusion(opt), data, "lip_feature_encoder")
        data["lip_feature_encoder.x"] = blocky_image((1, 2, 3, 256, 256))
        data["lip_feature_encoder.out"] = lips(to_float(data["lip_feature_encoder.x"]))

        frames = opt.sequence_length
        netd = seeded(authors.discriminators.Discriminator(3 * frames, use_sigmoid=opt.no_lsgan),
                      data, "sequence_discriminator")
        data["sequence_discriminator.input"] = blocky_image((1, 3 * frames, 256, 256))
        data["sequence_discriminator.audio"] = torch.randn(1, frames, 20, 12) * 5
        patch, score = netd(to_float(data["sequence_discriminator.input"]), data["sequence_discriminator.audio"])
        data["sequence_discriminator.patch"], data["sequence_discriminator.score"] = patch, score

        embeddings = torch.randn(2, opt.pred_length, 256)
        fusion = seeded(authors.networks.ModelFusion(opt), data, "word_classifier")
        data["word_classifier.x"] = embeddings
        data["word_classifier.logits"] = fusion(embeddings)

        domain = seeded(authors.networks.discriminator_audio(), data, "domain_discriminator")
        data["domain_discriminator.x"] = embeddings
        data["domain_discriminator.prob"] = domain(embeddings)

        id_words = seeded(authors.discriminators.ID_dis32(config=opt, feature_length=64), data,
                          "id_word_classifier")
        id_words.config = opt
        # The ID encoder's 64x64 maps of disfc_length frames; half-precision values in
        # 8x8 blocks so that the stored input stays small.
        low = torch.randn(1, opt.disfc_length * 64, 8, 8).half().float()
        data["id_word_classifier.x"] = low.repeat_interleave(8, -2).repeat_interleave(8, -1)
        data["id_word_classifier.logits"] = id_words(data["id_word_classifier.x"])

    arrays = {}
    for key, value in data.items():
        if isinstance(value, np.ndarray):
            arrays[key] = value
        elif value.dtype == torch.uint8:
            arrays[key] = value.numpy()
        elif key == "id_word_classifier.x":
            arrays[key] = value.numpy().astype(np.float16)
        else:
            arrays[key] = value.numpy().astype(np.float32)
    np.savez_compressed(HERE / "davs_reference.npz", **arrays)
    for key, value in arrays.items():
        if not key.endswith(".keys"):
            print(f"{key:40s} {str(value.shape):22s} {value.dtype}  |max| {np.abs(value.astype(np.float64)).max():.4g}")


if __name__ == "__main__":
    main(Path(sys.argv[1]).resolve())

"""SGAN: Huang, Li, Poursaeed, Hopcroft and Belongie, "Stacked Generative Adversarial Networks",
CVPR 2017 (reference code: xunhuang1995/SGAN, Theano / Lasagne).

A pretrained encoder E maps an image x to features h1 and a class y; top-down generators
invert it level by level, G1 (z1, y) -> h1 and G0 (h1, z0) -> x, each trained against its
discriminator with the adversarial, conditional and entropy losses. ``networks`` holds the
networks, ``convert`` reads the reference's ``.npz`` parameter files into them.
"""

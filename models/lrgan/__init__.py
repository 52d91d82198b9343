"""LR-GAN: Yang, Kannan, Batra and Parikh, "LR-GAN: Layered Recursive Generative Adversarial
Networks for Image Generation", ICLR 2017 (reference code: jwyang/lr-gan.pytorch, with the
STNM compositor of jwyang/stnm.pytorch).

A background, then foregrounds each with an appearance, a mask and an affine pose, pasted
on the canvas one step after another. ``networks`` holds the generator and discriminator,
``convert`` reads the reference's saved generators, ``pipeline`` draws images, ``train``
trains them.
"""

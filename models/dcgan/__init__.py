"""DCGAN: Radford, Metz and Chintala, ICLR 2016 (reference code: pytorch/examples, ``dcgan/``),
and the objectives of the direct family trained on its networks: the original GAN loss,
Improved GAN (feature matching, minibatch discrimination), InfoGAN, f-GAN and GAN-INT-CLS.

``networks`` holds the networks, ``losses`` the objectives, ``pipeline`` the sampler,
``train`` the training, ``demo`` and ``bench`` the demo weights and the benchmark.
"""

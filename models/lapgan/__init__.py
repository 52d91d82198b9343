"""LAPGAN: Denton, Chintala, Szlam and Fergus, "Deep Generative Image Models using a Laplacian
Pyramid of Adversarial Networks", NeurIPS 2015 (reference code: facebook/eyescream, Torch7).

A generator draws the coarsest image; at each finer pyramid level a conditional generator
draws the band-pass residual that the bilinearly enlarged coarser image lacks.
``networks`` holds the networks and the pyramid operators, ``pipeline`` the sampling,
``train`` the training, ``demo`` the demo weights. No weights were released, so there is
no converter.
"""

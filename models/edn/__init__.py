"""Everybody Dance Now: Chan, Ginosar, Zhou and Efros, ICCV 2019 (reference code:
carolineec/EverybodyDanceNow, built on NVIDIA/pix2pixHD).

A pose stick figure plus the previous generated frame go through a pix2pixHD generator
(global, then with a local enhancer); a second generator adds a residual to the 128x128
face box. ``networks`` holds the networks and the small functions that chain frames and
apply the face residual.
"""

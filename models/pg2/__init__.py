"""PG2: Ma et al., "Pose Guided Person Image Generation", NeurIPS 2017 (reference code:
charliememory/Pose-Guided-Person-Image-Generation in TensorFlow; budui/Human-Pose-Transfer,
a PyTorch port).

G1 draws the person of a condition image in a target pose (coarse); G2 draws a
difference map that refines it. ``networks`` holds the networks, ``convert`` reads the
authors' TensorFlow checkpoints into them.
"""

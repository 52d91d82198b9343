"""How well the authors' released SGAN MNIST encoder, converted, reads the bundled digits.

    python -m tests.data.check_sgan_encoder mnist/pretrained/encoder.npz

The digits are scikit-learn's, framed as MNIST (20 x 20 in 28 x 28). A faithful conversion
classifies most of them (85.5 % with the file of github.com/xunhuang1995/SGAN); with the
kernels flipped (a true convolution instead of Theano's correlation order) it would not.
The file is not part of the project, so this is a script, not a test.
"""

import sys

import torch

from models.sgan import convert
from models.sgan.demo import labelled_digits


def accuracy(path) -> float:
    encoder = convert.convert_file(path)["encoder"]
    images, labels = labelled_digits()
    x = torch.from_numpy(images).float().div(255)[:, None]
    with torch.no_grad():
        return float((encoder.classify(encoder(x)).argmax(1).numpy() == labels).mean())


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    sys.stdout.write(f"accuracy on the framed digits: {accuracy(sys.argv[1]):.3f}\n")

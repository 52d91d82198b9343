"""Score AT-net + VG-net on prepared clips the way the paper's evaluation does.

For each clip of a split (``talkingface data prepare`` format): the first frame and its
landmarks are the reference, AT-net turns the clip's MFCC windows into landmarks and
VG-net draws the frames, which are compared with the real ones by the scores both
systems share (``models.common.evaluate.score_clip``): PSNR and SSIM of the frames, LMD on
the mouth landmarks 48-67 (dlib's on the generated 128 x 128 crops, framed and enlarged by
``crop_landmarks``, against the clip's own), CPBD sharpness, and the lip-sync proxy of
mouth opening against the loudness of the audio.
"""

import numpy as np
import torch

from models.atvgnet import dataset
from models.atvgnet.pipeline import COMPONENT_SCALE
from models.common.evaluate import evaluate_clips, score_clip


@torch.inference_mode()
def generate_clip(atnet, vgnet, clip, pca_mean, pca_basis, scale_components=False, device="cpu", chunk=32):
    """Frames (uint8 (T, 128, 128, 3)) for a prepared clip, from its first frame and its audio.

    ``scale_components`` applies the authors' demo exaggeration of PCA components 1-5
    (what the inference pipeline does); the evaluation of the paper scores raw outputs.
    """
    mean = torch.as_tensor(pca_mean, dtype=torch.float32, device=device)
    basis = torch.as_tensor(pca_basis[:, :6], dtype=torch.float32, device=device)
    example = torch.as_tensor(clip["landmarks"][:1], device=device) * 5.0
    coefficients0 = (example - mean) @ basis
    example_landmark = coefficients0 @ basis.T + mean
    image = torch.as_tensor(clip["frames"][0], device=device).permute(2, 0, 1)[None].float() / 127.5 - 1
    frames, state = [], None
    total = len(clip["frames"])
    for start in range(0, total, chunk):
        stop = min(total, start + chunk)
        windows = np.stack([clip["mfcc"][4 * k: 4 * k + 28] for k in range(start, stop)])
        coefficients, state = atnet.step(coefficients0, torch.as_tensor(windows, device=device)[None], state)
        coefficients = coefficients[0]
        if scale_components:
            coefficients[:, 1:6] *= COMPONENT_SCALE.to(device)
        landmarks = coefficients @ basis.T + mean
        out = vgnet(image, landmarks[None], example_landmark)[0][0]
        frames.append(((out + 1) / 2 * 255).round().clamp(0, 255).byte().permute(0, 2, 3, 1).cpu().numpy())
    return np.concatenate(frames)


def evaluate(atnet, vgnet, data_dir, split="test", pca=None, scale_components=False, max_clips=None,
             device="cpu", progress=None):
    """{clip name: {metric: value}} over the prepared clips of ``split``.

    ``pca`` is ``(mean, basis)``; by default the dataset's own ``pca.npz``.
    """
    if pca is None:
        with np.load(f"{data_dir}/pca.npz") as arrays:
            pca = (arrays["mean"], arrays["basis"])
    atnet, vgnet = atnet.to(device).eval(), vgnet.to(device).eval()

    def score(name):
        clip = dataset.load_clip(data_dir, name)
        fake = generate_clip(atnet, vgnet, clip, *pca, scale_components=scale_components, device=device)
        return score_clip(clip["frames"], fake, clip["mouth"], clip["audio"])

    return evaluate_clips(dataset.list_clips(data_dir, split)[:max_clips], score, progress)

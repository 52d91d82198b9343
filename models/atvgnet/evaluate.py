"""Score AT-net + VG-net on prepared clips the way the paper's evaluation does.

For each clip of a split (``talkingface data prepare`` format): the first frame and its
landmarks are the reference, AT-net turns the clip's MFCC windows into landmarks and
VG-net draws the frames, which are compared with the real ones:

- PSNR and SSIM of the frames;
- LMD: mouth landmarks 48-67, from dlib on the generated frames, against the clip's own;
- CPBD sharpness of the generated frames;
- the lip-sync proxy: mouth opening on the generated frames vs the audio's loudness.
"""

import numpy as np
import torch

from models import metrics
from models.atvgnet import dataset
from models.atvgnet.pipeline import COMPONENT_SCALE
from models.perception import face as face_lib


PAD = 48


def crop_landmarks(frame, pad=PAD, zoom=2):
    """dlib's 68 landmarks of an aligned face crop (ATVGnet's 128x128 by default), or None.

    The face fills the crop edge to edge, where dlib's detector rarely fires; the crop is
    framed with a replicated border of ``pad`` pixels and scaled by ``zoom`` first.
    """
    import cv2
    framed = cv2.copyMakeBorder(np.ascontiguousarray(frame), pad, pad, pad, pad, cv2.BORDER_REPLICATE)
    if zoom != 1:
        framed = cv2.resize(framed, None, fx=zoom, fy=zoom, interpolation=cv2.INTER_LINEAR)
    boxes = face_lib.detect_faces(framed)
    if not boxes:
        return None
    return face_lib.landmarks68(framed, boxes[0]) / zoom - pad


def _mouths(frames, detector=crop_landmarks):
    """(T, 20, 2) dlib mouth landmarks, NaN for frames without a detected face."""
    out = np.full((len(frames), 20, 2), np.nan, np.float32)
    for i, frame in enumerate(frames):
        landmarks = detector(frame)
        if landmarks is not None:
            out[i] = landmarks[48:68]
    return out


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


def score_clip(real, fake, real_mouth, audio, sample_rate=16000, fps=25, detector=crop_landmarks):
    """PSNR, SSIM, LMD, CPBD and the lip-sync proxy of generated frames against real ones.

    ``detector`` finds the 68 landmarks of one generated frame (or None).
    """
    fake_mouth = _mouths(fake, detector)
    seen = ~np.isnan(fake_mouth).any(axis=(1, 2))
    gray = [np.asarray(face_lib.to_gray(f)) for f in fake]
    return {
        "psnr": metrics.psnr(real, fake),
        "ssim": float(np.mean([metrics.ssim(r, f) for r, f in zip(real, fake)])),
        "lmd": metrics.lmd(real_mouth[seen], fake_mouth[seen]) if seen.any() else float("nan"),
        "cpbd": float(np.mean([metrics.cpbd(g) for g in gray])),
        "lip_sync": metrics.lip_sync_proxy(fake, audio, sample_rate, fps, detector=detector),
        "frames": len(fake),
    }


def evaluate(atnet, vgnet, data_dir, split="test", pca=None, scale_components=False, max_clips=None,
             device="cpu", progress=None):
    """{clip name: {metric: value}} over the prepared clips of ``split``.

    ``pca`` is ``(mean, basis)``; by default the dataset's own ``pca.npz``.
    """
    if pca is None:
        with np.load(f"{data_dir}/pca.npz") as arrays:
            pca = (arrays["mean"], arrays["basis"])
    atnet, vgnet = atnet.to(device).eval(), vgnet.to(device).eval()
    names = dataset.list_clips(data_dir, split)[:max_clips]
    results = {}
    for i, name in enumerate(names):
        clip = dataset.load_clip(data_dir, name)
        fake = generate_clip(atnet, vgnet, clip, *pca, scale_components=scale_components, device=device)
        results[name] = score_clip(clip["frames"], fake, clip["mouth"], clip["audio"])
        if progress:
            progress(i + 1, len(names))
    return results

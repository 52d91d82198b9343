"""Write ``golden_frames.npz``: frames both talking-face systems draw on fixed inputs.

The shipped demo weights, ``examples/face.jpg`` and the first second of
``examples/speech.wav``; DAVS also in video mode, driven by ATVGnet's pasted-back clip,
and with one fine-tuning step. Every sixth frame is kept. ``test_golden_frames.py`` holds later code to
these frames, so that a refactoring cannot change what a model draws.

    python tests/data/make_golden_frames.py
"""

from pathlib import Path

import numpy as np
import torch

from models import TalkingFaceInput, registry
from service import media

ROOT = Path(__file__).resolve().parents[2]
SECONDS = 1.0
KEPT = slice(None, None, 6)     # frames kept of each clip: every sixth, to keep the file small


def golden_inputs():
    image = media.read_image(ROOT / "examples" / "face.jpg")
    audio = media.read_audio(ROOT / "examples" / "speech.wav", sample_rate=16000)
    return image, audio[: int(SECONDS * 16000)]


def draw_all():
    torch.manual_seed(0)
    image, audio = golden_inputs()
    atvgnet = registry.load("atvgnet", weights=str(ROOT / "weights/demo/atvgnet"), device="cpu")
    davs = registry.load("davs", weights=str(ROOT / "weights/demo/davs"), device="cpu")
    sample = TalkingFaceInput(image=image, audio=audio, sample_rate=16000)
    frames = {"atvgnet": atvgnet(sample).frames,
              "atvgnet_paste_back": atvgnet(sample, paste_back=True).frames}
    frames["davs_audio"] = davs(sample, finetune_steps=0).frames
    frames["davs_audio_finetune1"] = davs(sample, finetune_steps=1).frames
    driving = TalkingFaceInput(image=image, audio=audio, sample_rate=16000, video=frames["atvgnet_paste_back"])
    frames["davs_video"] = davs(driving, finetune_steps=0).frames
    return {name: clip[KEPT] for name, clip in frames.items()}


if __name__ == "__main__":
    frames = draw_all()
    out = Path(__file__).with_name("golden_frames.npz")
    np.savez_compressed(out, **frames)
    print(out, {k: v.shape for k, v in frames.items()}, f"{out.stat().st_size / 1e6:.1f} MB")

"""Score DAVS on prepared clips: generated frames against the real ones.

Zhou, Liu, Liu, Luo, Wang, "Talking Face Generation by Adversarially Disentangled
Audio-Visual Representation", AAAI 2019, https://arxiv.org/abs/1807.07860. The paper
compares generated frames with the real ones by PSNR and SSIM; the authors' repository
has no script for it (its ``evaluation.py`` scores word-ID retrieval), so the clip is
generated here as their test script generates a sample (``models.davs.pipeline``):

- the identity image A is the clip's first frame, made as the test loaders make it
  (``preprocess.identity_tensor``): the person's own face, as the authors evaluate;
- the word input is the clip's audio (its stored SyncNet MFCC block of every frame,
  ``mfcc.npy``) or, in video mode, the clip's own frames (the lip features of each);
- test-time fine-tuning of copies of E_p and the decoder, as the pipeline does it;
- every generated 256 x 256 frame is compared with the real frame the networks see at
  that size, ``[2:258, 2:258]`` of the stored 260 x 260 face (the loaders' offset).

The scores are those both systems share (``models.common.evaluate.score_clip``):
PSNR and SSIM of the frames; LMD on mouth landmarks 48-67, dlib's on the generated frames
against the clip's own (mapped into the 256 crop); CPBD sharpness; the lip-sync proxy of
mouth opening against the loudness of the audio that goes with the frames.

Example:

    >>> pipe = registry.load("davs", weights="weights", device="cpu")
    >>> results = evaluate(pipe, "data/davs", split="test", mode="audio")
    >>> print(metrics.format_table(results, add_mean=True))
"""

import functools

import numpy as np

from models.common.evaluate import crop_landmarks, evaluate_clips, score_clip
from models.davs import audio as davs_audio
from models.davs import dataset, preprocess
from models.davs.pipeline import AUDIO_WORD_SCALE, FINETUNE_OPTION, VIDEO_WORD_SCALE, Reference
from models.errors import InvalidInput

MODES = ("audio", "video")
CROP = slice(preprocess.OFFSET, preprocess.OFFSET + preprocess.FACE_SIZE)   # [2:258] of the 260 face
# A DAVS face does not fill its 256 crop as ATVGnet's does its 128 one: dlib finds it at
# this size (it upsamples once itself); a narrow border keeps a chin at the edge in view.
LANDMARK_PAD = 32
face_landmarks = functools.partial(crop_landmarks, pad=LANDMARK_PAD, zoom=1)


def real_faces(clip):
    """The real frames at the networks' size: uint8 (T, 256, 256, 3)."""
    return np.ascontiguousarray(clip["frames"][:, CROP, CROP])


def real_mouths(clip):
    """The clip's mouth landmarks 48-67 in the 256 crop: float32 (T, 20, 2)."""
    return clip["landmarks"][:, 48:68] - preprocess.OFFSET


def clip_audio(clip, first_frame=davs_audio.FIRST_FRAME):
    """The audio from the instant of the clip's first stored frame (video frame ``first_frame``)."""
    return clip["audio"][first_frame * davs_audio.SAMPLE_RATE // davs_audio.FPS:]


def _check_pipeline(pipe):
    size = getattr(pipe.id_encoder, "image_size", preprocess.FACE_SIZE)
    if size != preprocess.FACE_SIZE:
        raise InvalidInput(f"these networks draw {size}x{size} faces; the evaluation needs "
                           f"{preprocess.FACE_SIZE}x{preprocess.FACE_SIZE} ones (train with image_size 256)")


def generate_clip(pipe, clip, mode="audio", finetune_steps=None):
    """Frames (uint8 (T, 256, 256, 3)) for a prepared clip, from its first frame and its audio or frames.

    Args:
        pipe (`DAVSPipeline`): the networks; never changed (fine-tuning works on copies).
        clip (`dict`): ``models.davs.dataset.load_clip``'s arrays.
        mode (`str`, defaults to ``"audio"``): ``"audio"``: word-ID features from the
            clip's MFCC blocks (x1.5); ``"video"``: from its frames' lips (x0.8).
        finetune_steps (`int`, *optional*): test-time fine-tuning steps; None uses the
            pipeline's (5, the authors').

    Returns:
        `np.ndarray`: one generated frame for each real frame.
    """
    if mode not in MODES:
        raise InvalidInput(f"mode must be 'audio' or 'video', got {mode!r}")
    _check_pipeline(pipe)
    steps = pipe.finetune_steps if finetune_steps is None else FINETUNE_OPTION.parse(finetune_steps)
    faces = real_faces(clip)
    total = len(faces)
    # 1. Identity image A: the first frame, as the test loaders cut it.
    image = preprocess.identity_tensor(faces[0]).to(pipe.device)
    reference = Reference(photo=faces[0], face=faces[0], image=image, n_faces=1, paste_back=None)

    # 2. Word input of each frame, chunk by chunk; the fine-tuning steps' word features.
    def words(start, stop):
        if mode == "audio":
            return pipe.audio_words(clip["mfcc"][start:stop]) * AUDIO_WORD_SCALE
        return pipe.lip_words(preprocess.face_tensor(faces[start:stop])) * VIDEO_WORD_SCALE

    tuning = None
    if steps:
        # As the pipeline: audio step i takes the block of stored frame i (video frame 2 + i),
        # video mode the lips of A itself; both unscaled.
        tuning = (pipe.audio_words(clip["mfcc"][:max(1, min(steps, total))]) if mode == "audio"
                  else pipe.lip_words(image))
    # 3. Person-ID: fine-tuned copies, E_p(A) once. 4. Frames.
    identity = pipe.prepare_identity(reference, tuning, steps)
    return np.concatenate([pipe.decode(identity, words(start, min(start + pipe.chunk_frames, total)))
                           for start in range(0, total, pipe.chunk_frames)])


def score_frames(clip, fake, first_frame=davs_audio.FIRST_FRAME):
    """The scores of generated frames against the clip's real ones (``score_clip``)."""
    real = real_faces(clip)
    if fake.shape != real.shape:
        raise InvalidInput(f"{fake.shape[0]} generated frames of {fake.shape[1:]} for "
                           f"{real.shape[0]} real ones of {real.shape[1:]}")
    return score_clip(real, fake, real_mouths(clip), clip_audio(clip, first_frame),
                      sample_rate=davs_audio.SAMPLE_RATE, fps=davs_audio.FPS, detector=face_landmarks)


def evaluate(pipe, data_dir, split="test", mode="audio", finetune_steps=None, max_clips=None, progress=None):
    """{clip name: {metric: value}} over the prepared clips of ``split``.

    Args:
        pipe (`DAVSPipeline`): ``registry.load("davs", ...)`` or ``DAVSPipeline.with_networks``.
        data_dir: a ``talkingface data prepare --model davs`` folder.
        split (`str`, defaults to ``"test"``): ``"train"`` or ``"test"``.
        mode, finetune_steps: as ``generate_clip``.
        max_clips (`int`, *optional*): score only the first clips (sorted by name).
        progress (callable, *optional*): ``progress(done, total)`` after every clip.
    """
    manifest = dataset.load_manifest(data_dir)

    def score(name):
        clip = dataset.load_clip(data_dir, name)
        first_frame = manifest["videos"][name].get("first_frame", davs_audio.FIRST_FRAME)
        return score_frames(clip, generate_clip(pipe, clip, mode=mode, finetune_steps=finetune_steps), first_frame)

    return evaluate_clips(dataset.list_clips(data_dir, split)[:max_clips], score, progress)

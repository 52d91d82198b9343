"""DAVS inference: one face photo + speech, or + a driving video -> 25-fps talking-face frames.

Zhou, Liu, Liu, Luo, Wang, "Talking Face Generation by Adversarially Disentangled
Audio-Visual Representation", AAAI 2019, https://arxiv.org/abs/1807.07860. The steps of
the authors' test script (``test_all.py`` with ``Test_Gen_Models/Test_Audio_Model.py`` or
``Test_Video_Model.py``, data from ``Dataloader/Test_load_audio.py`` / ``Test_load_video.py``):

1. Face: dlib's 68 landmarks give the eye centres and the mouth centre, a similarity maps
   them onto the authors' template, the 260 x 260 crop is cut to ``[2:258]``
   (``preprocess.align_face``); the identity image A is made as the test loaders make it
   (``preprocess.identity_tensor``).
2. Word input. Audio mode: SyncNet MFCC of the 16-kHz audio, one 20 x 12 block per
   video frame (``audio.frame_blocks``). Video mode: every frame of the driving video
   aligned as the face (``preprocess.face_tensor``).
3. Test-time fine-tuning (``test_all.py`` runs ``test_train`` on the first five samples
   before testing): the person-ID encoder and the decoder are tuned to redraw A, with
   an L1 loss x4 (``lambda_A``) under a mask that is 1 everywhere but 0.001 on the mouth
   box (rows 170-233, columns 64-191), Adam with lr 2e-4 and betas (0.9, 0.999). The
   word feature of step ``i`` is the MFCC feature of audio block ``i`` (audio mode) or
   the lip feature of A itself (video mode), unscaled. ``set_test_input`` builds a new
   optimizer for every sample, so each of the five steps is a first Adam step: every
   weight moves by about lr times the sign of its gradient (the loss weight hardly
   matters).
4. Person-ID features E_p(A).
5. Word-ID features per frame: audio mode ``MfccEncoder`` x 1.5
   (``audio_sequence_generation``), video mode ``LipFeatureEncoder`` x 0.8
   (``video_sequence_generation``).
6. The decoder draws each frame in [0, 1]; ``uint8(x * 255)``, truncated
   (``util.tensor2im``).

Differences from the authors' script. None changes what the networks compute for a frame:

- E_p(A) is computed once per clip; the script recomputes it for every frame from the
  same image A. Frames are decoded in batches (batch norm in eval mode treats each
  sample alone): the same frames, two or more times faster.
- Fine-tuning works on copies of the two networks, so one loaded pipeline serves every
  request unchanged. The copies are tuned in eval mode (batch-norm statistics fixed):
  the script tunes its first identity with the networks in training mode, which also
  moves their running statistics, and the three others in eval mode (``test()`` sets it
  and nothing resets it); the latter is kept. ``finetune_steps`` sets the number of
  steps (5, the authors'; 0 switches fine-tuning off); step ``i`` of more than the clip
  has frames reuses block ``i mod T``.
- Audio mode gives every video frame a block, repeating the first or last MFCC frame
  where the 0.2-s window leaves the clip (``frame_blocks(pad=True)``), so the video lasts
  as long as the audio; ``savemfcc.m`` skips the first two frames and the last three.
- Video mode returns as many real frames as the driving video has: the authors' loader
  reads two frames fewer than its block holds, so their last two outputs are drawn from
  black images. The driving video's face is tracked: each frame is searched near the
  last face (``FaceTracker``), which is faster than a detection in the whole frame;
  frames before the first detected face take its alignment.
"""

import copy
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from models import weights as weights_lib
from models.common.device import pick_device
from models.common.pipeline import FeatureFrameStream, Option, TalkingFacePipeline, load_project_networks, read_project
from models.common.quantize import calibration_example, resolve_precision
from models.davs import audio as davs_audio
from models.davs import preprocess
from models.davs import quantize as davs_quantize
from models.davs.networks import Decoder, IdentityEncoder, LipFeatureEncoder, MfccEncoder, expand_identity
from models.errors import InvalidInput, NoFaceFound
from models.perception import face as face_lib
from models.perception.face import FaceTracker
from models.perception.paste import PasteBack
from models.types import TalkingFaceInput

AUDIO_WORD_SCALE = 1.5        # Test_Audio_Model.audio_sequence_generation
VIDEO_WORD_SCALE = 0.8        # Test_Video_Model.video_sequence_generation
FINETUNE_STEPS = 5            # test_all.py: `if i2 < 5: ... model.test_train()`
MAX_FINETUNE_STEPS = 20       # ~2 s a step on a CPU: a request may not hold a worker much longer
FINETUNE_OPTION = Option("finetune_steps", int, None, "test-time fine-tuning steps on the photo "
                         f"(default {FINETUNE_STEPS}, the authors'; 0: off)", minimum=0, maximum=MAX_FINETUNE_STEPS)
FINETUNE_LR = 2e-4            # Options_all --lr
FINETUNE_BETAS = (0.9, 0.999)     # --beta1 and Adam's default
FINETUNE_L1_WEIGHT = 4.0      # --lambda_A
MOUTH_ROWS, MOUTH_COLS = slice(170, 234), slice(64, 192)   # test_mask[:, :, 170:234, 64:192]
MOUTH_WEIGHT = 0.001          # the mask's value there (1 elsewhere)
MAX_LEADING_FRAMES = 250      # driving video: frames held while no face has been found yet,
MAX_LEADING_BYTES = 512 << 20     # and the memory they may take
NETWORKS = {                  # pipeline attribute -> (class, entry of the authors' checkpoint)
    "id_encoder": (IdentityEncoder, "ID_encoder"),
    "decoder": (Decoder, "Decoder"),
    "mfcc_encoder": (MfccEncoder, "mfcc_encoder"),
    "lip_feature_encoder": (LipFeatureEncoder, "lip_feature_encoder"),
}


@dataclass
class Reference:
    """Everything the pipeline derives from the photo, once per clip."""

    photo: np.ndarray          # the input RGB photo
    face: np.ndarray           # aligned 256x256 RGB face
    image: torch.Tensor        # A: the identity image, (1, 3, 256, 256) in [0, 1]
    n_faces: int
    paste_back: object         # callable (n, 256, 256, 3) -> (n, H, W, 3)


@dataclass
class Identity:
    """The person-ID side of one clip: the decoder to use and E_p(A), computed once."""

    decoder: torch.nn.Module
    features: list             # IdentityEncoder output for A, batch 1


class DAVSPipeline(TalkingFacePipeline):
    """Person-ID encoder + word-ID encoders -> decoder. Build with ``from_pretrained``,
    ``from_project`` or ``models.registry.load("davs")``.

    Args:
        id_encoder, decoder, mfcc_encoder, lip_feature_encoder: networks with weights
            loaded (``models.davs.networks``); moved to ``device`` and put in eval mode,
            their weights are never changed (fine-tuning works on copies).
        device: torch device or "auto".
        chunk_frames (int, optional): frames decoded per batch; bounds memory. Default 8
            on a CPU, 32 on CUDA.
        half: decode under fp16 autocast (CUDA only); fine-tuning stays in fp32.
        finetune_steps: test-time fine-tuning steps when a call does not say (5, the
            authors'; 0: off).
        info: what to report about the weights used.
        precision: "fp32", "int8" (the decoder and E_p quantised, CPU only; fine-tuned
            copies decode in fp32) or "auto" (``models.common.quantize.resolve_precision``).

    Example:
        ```py
        pipe = registry.load("davs")
        video = pipe(TalkingFaceInput(image=photo, audio=speech, sample_rate=16000))
        video = pipe(TalkingFaceInput(image=photo, audio=None, sample_rate=16000, video=frames))
        ```
    """

    name = "davs"
    fps = davs_audio.FPS
    sample_rate = davs_audio.SAMPLE_RATE
    lookahead_seconds = davs_audio.LOOKAHEAD / davs_audio.SAMPLE_RATE    # 0.135 s: the 0.2-s MFCC block
    accepts_video = True                      # lips can be read from a driving video
    can_stream = True                         # audio mode without fine-tuning: see ``streams``
    stream_options = {"finetune_steps": 0}    # without test-time fine-tuning: see ``streams``
    options = (FINETUNE_OPTION,)
    precisions = ("fp32", "int8")           # models.common.quantize: int8 on the CPU

    def __init__(self, id_encoder, decoder, mfcc_encoder, lip_feature_encoder, device="auto",
                 chunk_frames=None, half=False, finetune_steps=FINETUNE_STEPS, info=None, precision="fp32"):
        self.device = pick_device(device)
        self.id_encoder = _frozen(id_encoder, self.device)
        self.decoder = _frozen(decoder, self.device)
        self.mfcc_encoder = _frozen(mfcc_encoder, self.device)
        self.lip_feature_encoder = _frozen(lip_feature_encoder, self.device)
        self.chunk_frames = chunk_frames or (32 if self.device.type == "cuda" else 8)
        self.half = half and self.device.type == "cuda"
        self.finetune_steps = FINETUNE_OPTION.parse(finetune_steps)
        self.precision = resolve_precision(precision, self.device)
        self.tunable = (self.id_encoder, self.decoder)      # fp32: what fine-tuning starts from
        if self.precision == "int8":
            self.id_encoder, self.decoder = davs_quantize.quantize_networks(self, *calibration_example())
        self.info = dict(info or {}, model="davs", device=str(self.device), precision=self.precision)

    # -- construction -------------------------------------------------------------------
    @classmethod
    def from_pretrained(cls, directory, device="auto", verify=True, **options):
        """Load the authors' ``101_DAVS_checkpoint.pth.tar`` from ``directory``."""
        paths = weights_lib.require_all(cls.weight_files(), directory, verify)
        name, path = next(iter(paths.items()))
        checkpoint = weights_lib.read_state_dict(path)      # one read for the four entries
        networks = {attr: weights_lib.load_weights(net_cls(), checkpoint, f"{name}[{key!r}]", key=key)
                    for attr, (net_cls, key) in NETWORKS.items()}
        return cls(**networks, device=device, info={"weights": "authors (LRW)", "weights_dir": str(directory)},
                   **options)

    @classmethod
    def with_networks(cls, id_encoder, decoder, mfcc_encoder, lip_feature_encoder, device="auto", info=None,
                      **options):
        """A pipeline around given networks (random-initialised, reduced-width, just trained)."""
        return cls(id_encoder, decoder, mfcc_encoder, lip_feature_encoder, device=device,
                   info=info or {"weights": "given networks"}, **options)

    @classmethod
    def from_project(cls, directory, device="auto", verify=True, **options):
        """Load weights this project trained: see ``save_project`` for the folder's layout."""
        directory = Path(directory)
        config = read_project(directory, verify)
        networks = load_project_networks(directory, {attr: net_cls for attr, (net_cls, _) in NETWORKS.items()},
                                         config)
        info = {"weights": config.get("name", "project"), "weights_dir": str(directory)}
        return cls(**networks, device=device, info=info, **options)

    # -- steps ------------------------------------------------------------------------
    def prepare_reference(self, image, face_index=0) -> Reference:
        """Step 1: detect and align the face; the identity image A."""
        image = self.check_image(image)
        _, landmarks, n_faces = face_lib.find_face(image, face_index)
        face, matrix = preprocess.align_face(image, landmarks)
        return Reference(photo=image, face=face, image=preprocess.identity_tensor(face).to(self.device),
                         n_faces=n_faces, paste_back=PasteBack(image, matrix, preprocess.FACE_SIZE, feather=12.0))

    @torch.no_grad()
    def audio_words(self, blocks):
        """Word-ID features of MFCC blocks (n, 1, 20, 12) -> (n, F), unscaled."""
        blocks = torch.as_tensor(blocks, dtype=torch.float32, device=self.device)
        return self.mfcc_encoder(blocks)[:, 0].float()

    @torch.no_grad()
    def lip_words(self, faces):
        """Word-ID features of aligned faces, float (n, 3, 256, 256) in [0, 1] -> (n, F), unscaled."""
        return self.lip_feature_encoder(faces.to(self.device))[:, 0].float()

    def finetune(self, reference, words, steps):
        """Step 3: copies of E_p and the decoder tuned to redraw A; the shared ones stay as they are.

        ``words`` (k, F): the unscaled word feature of each step (step ``i`` takes row ``i mod k``).
        """
        id_encoder = copy.deepcopy(self.tunable[0]).requires_grad_(True)
        decoder = copy.deepcopy(self.tunable[1]).requires_grad_(True)
        parameters = list(id_encoder.parameters()) + list(decoder.parameters())
        image = reference.image
        mask = torch.ones_like(image)
        mask[:, :, MOUTH_ROWS, MOUTH_COLS] = MOUTH_WEIGHT
        with torch.enable_grad():
            for step in range(steps):
                # A new optimizer each step, as set_test_input builds one per sample.
                optimizer = torch.optim.Adam(parameters, lr=FINETUNE_LR, betas=FINETUNE_BETAS)
                fake = decoder(id_encoder(image), words[step % len(words)][None])
                loss = F.l1_loss(fake * mask, image * mask) * FINETUNE_L1_WEIGHT
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
        return id_encoder.requires_grad_(False), decoder.requires_grad_(False)   # inference from here

    def prepare_identity(self, reference, finetune_words=None, steps=0) -> Identity:
        """Steps 3-4: (fine-tuned) decoder and E_p(A), once per clip."""
        id_encoder, decoder = self.id_encoder, self.decoder
        if steps > 0:
            id_encoder, decoder = self.finetune(reference, finetune_words, steps)
        with torch.no_grad():
            features = [f.float() for f in id_encoder(reference.image)]
        return Identity(decoder=decoder, features=features)

    @torch.no_grad()
    def decode(self, identity, words):
        """Steps 5-6: scaled word features (n, F) -> uint8 frames (n, 256, 256, 3)."""
        features = expand_identity(identity.features, len(words))     # one A for every frame: a view
        with torch.autocast(self.device.type, enabled=self.half):
            frames = identity.decoder(features, words)
        return preprocess.tensor_to_images(frames.float())

    # -- driving input ----------------------------------------------------------------
    def _tuning_blocks(self, audio, steps, full_scale):
        """Audio mode: the MFCC blocks of the fine-tuning steps, those of the whole clip (scaled as
        ``full_scale`` says, ``audio.MfccBlockStream``), computed from the samples they read only.

        The authors' samples start at frame 2, the first with a whole block; step i takes sample i.
        """
        first = davs_audio.FIRST_FRAME
        stop = first + max(1, min(steps, davs_audio.video_frame_count(len(audio)) - first))
        blocks = davs_audio.MfccBlockStream(full_scale)
        blocks.push(audio[:davs_audio.SAMPLES_PER_FRAME * (stop - 1) + davs_audio.LOOKAHEAD])
        if blocks.ready() < stop:           # the clip ends within the look-ahead of the last step
            blocks.end()
        blocks.blocks(first)
        return blocks.blocks(stop)

    def aligned_video(self, video):
        """Video mode: the driving video's faces aligned as the photo's, uint8 chunks
        (n, 256, 256, 3), one face for every input frame, in order."""
        tracker, pending, held, count = FaceTracker(), [], 0, 0
        batch = []
        for frames in _frame_chunks(video, self.chunk_frames):
            for frame in frames:
                count += 1
                landmarks = tracker(frame)
                if landmarks is None:
                    pending.append(frame)
                    held += frame.nbytes
                    if len(pending) > MAX_LEADING_FRAMES or held > MAX_LEADING_BYTES:
                        raise NoFaceFound(f"no face found in the first {len(pending) / self.fps:.1f} s of the video")
                    continue
                for waiting in pending + [frame]:     # frames before the first face take its alignment
                    batch.append(preprocess.align_face(waiting, landmarks)[0])
                pending, held = [], 0
                while len(batch) >= self.chunk_frames:
                    yield np.stack(batch[:self.chunk_frames])
                    batch = batch[self.chunk_frames:]
        if count == 0:
            raise InvalidInput("the video has no frames")
        if pending:
            raise NoFaceFound("no face found in the video")
        while batch:
            yield np.stack(batch[:self.chunk_frames])
            batch = batch[self.chunk_frames:]

    # -- public -----------------------------------------------------------------------
    @classmethod
    def streams(cls, options: dict) -> bool:
        """Only a request without fine-tuning streams (``finetune_steps`` given as 0): the
        fine-tuning reads the voice's first blocks before the first frame can be drawn.
        Not given, the pipeline's default fine-tunes."""
        steps = options.get("finetune_steps")
        return cls.can_stream and steps is not None and FINETUNE_OPTION.parse(steps) == 0

    def open_stream(self, image_or_reference, *, face_index=0, paste_back=False, chunk_frames=None,
                    first_chunk_frames=None) -> "DAVSStream":
        """A ``FrameStream`` of this face speaking the 16-kHz samples pushed into it, without fine-tuning.

        Frame ``l`` reads the voice up to sample ``640 l + 2160`` (``audio.LOOKAHEAD``: its
        block ends 0.135 s past its start); frames are made ``chunk_frames`` at a time (the
        pipeline's by default) after a first chunk of ``first_chunk_frames`` (default: the
        same). The chunks are fixed by frame numbers, so any cut of the voice gives the same
        frames; with ``frame_chunks``' chunk size and no smaller first chunk they are exactly
        those of ``frame_chunks(..., finetune_steps=0)`` (other batch sizes may round a
        level differently here and there). The voice is taken in [-1, 1]
        (``audio.MfccBlockStream``).
        """
        reference = image_or_reference
        if isinstance(reference, np.ndarray):
            reference = self.prepare_reference(reference, face_index)
        return DAVSStream(self, reference, paste_back=paste_back, chunk_frames=chunk_frames or self.chunk_frames,
                          first_chunk_frames=first_chunk_frames)

    def frame_chunks(self, inputs: TalkingFaceInput, paste_back=False, progress=None, reference=None,
                     finetune_steps=None):
        """Yield uint8 RGB frame chunks (n, H, W, 3) in order; memory bounded per chunk.

        With ``inputs.video`` the lips follow the video (video mode), else the audio.
        ``progress(done, total)`` is called after fine-tuning and after every chunk;
        raising from it (for instance to cancel a job) stops the generation there.
        ``reference`` is ``prepare_reference``'s result when the caller already has it.
        ``finetune_steps`` overrides the pipeline's default for this call (0: none).
        In audio mode the clip goes through a ``DAVSStream`` one chunk's samples at a time.
        """
        # 1. Check inputs
        steps = self.finetune_steps if finetune_steps is None else FINETUNE_OPTION.parse(finetune_steps)
        video_mode = inputs.video is not None
        if not video_mode:
            audio = self.prepare_audio(inputs.audio, inputs.sample_rate)
        # 2. The face
        if reference is None:
            reference = self.prepare_reference(inputs.image, inputs.face_index)
        # 3.-6. Word input, fine-tuning, E_p(A), frames
        if video_mode:
            yield from self._video_frames(inputs.video, reference, steps, paste_back, progress)
        else:
            yield from self._audio_frames(audio, reference, steps, paste_back, progress)

    def _audio_frames(self, audio, reference, steps, paste_back, progress):
        """Audio mode: the clip's frame chunks, through ``DAVSStream`` with the (fine-tuned) identity."""
        # syncnet_mfcc's choice for the whole clip: a voice in [-1, 1] is scaled to 16-bit range.
        full_scale = bool(np.max(np.abs(audio)) <= 1)
        identity = None
        if steps:
            tuning_words = self.audio_words(self._tuning_blocks(audio, steps, full_scale))
            identity = self.prepare_identity(reference, tuning_words, steps)
        stream = DAVSStream(self, reference, paste_back=paste_back, chunk_frames=self.chunk_frames,
                            identity=identity, full_scale=full_scale)
        total = davs_audio.video_frame_count(len(audio), self.sample_rate)
        if progress is not None:
            progress(0, total or 1)
        for frames in stream.clip_chunks(audio, self.chunk_frames * davs_audio.SAMPLES_PER_FRAME):
            yield frames
            if progress is not None:
                progress(stream.frames_out, max(total, stream.frames_out))

    def _video_frames(self, video, reference, steps, paste_back, progress):
        """Video mode: the frame chunks of a driving video's lips."""
        expected = _expected_frames(video)
        chunks = (self.lip_words(preprocess.face_tensor(faces)) * VIDEO_WORD_SCALE
                  for faces in self.aligned_video(video))
        finetune_words = self.lip_words(reference.image) if steps else None
        identity = self.prepare_identity(reference, finetune_words, steps)
        done = 0
        if progress is not None:
            progress(0, expected or 1)
        for words in chunks:
            frames = self.decode(identity, words)
            done += len(frames)
            yield reference.paste_back(frames) if paste_back else frames
            if progress is not None:
                progress(done, max(expected or 0, done))

    def video_info(self, inputs):
        return dict(self.info, mode="video" if inputs.video is not None else "audio")


class DAVSStream(FeatureFrameStream):
    """DAVS's frames as the voice arrives (``DAVSPipeline.open_stream``).

    Each frame depends on its own 20 x 12 MFCC block only: the blocks come from
    ``audio.MfccBlockStream`` (the whole clip's), and the frames of a chunk (``chunk_end``:
    fixed by frame numbers) go through the MFCC encoder and the decoder together once all
    their blocks are ready (the last chunk at ``close``), so the frames do not depend on how
    the voice was cut. E_p(A) is computed once, here; without ``identity`` the networks are
    not fine-tuned.
    """

    def __init__(self, pipeline: DAVSPipeline, reference: Reference, paste_back=False, chunk_frames=8,
                 identity: Identity | None = None, full_scale=True, first_chunk_frames=None):
        super().__init__(davs_audio.MfccBlockStream(full_scale), reference, paste_back, pipeline.fps, chunk_frames,
                         first_chunk_frames)
        self.pipeline = pipeline
        self.identity = pipeline.prepare_identity(reference) if identity is None else identity

    def _make(self, stop):
        words = self.pipeline.audio_words(self.features.blocks(stop)) * AUDIO_WORD_SCALE
        return self.pipeline.decode(self.identity, words)


def _frozen(network, device):
    """The shared copy of a network: on the device, in eval mode (inference runs under no_grad).

    Its weights are stored channels-last, which makes the convolutions pick the
    channels-last kernels (the decoder runs about 20 % faster on the CPU, same numbers).
    """
    return network.to(device, memory_format=torch.channels_last).eval()


def _expected_frames(video):
    """Frames a driving video will yield, for progress: exact for arrays, else its estimate."""
    if isinstance(video, np.ndarray):
        return len(video)
    return getattr(video, "expected_frames", None)


def _frame_chunks(video, size):
    """Chunks of uint8 RGB frames (n, H, W, 3) from an array or an iterable of chunks."""
    if isinstance(video, np.ndarray):
        if video.ndim != 4 or video.shape[-1] != 3 or video.dtype != np.uint8:
            raise InvalidInput(f"the video must be uint8 RGB frames (T, H, W, 3), got {video.dtype} {video.shape}")
        for start in range(0, len(video), size):
            yield video[start:start + size]
        return
    for chunk in video:
        chunk = np.asarray(chunk)
        if chunk.ndim == 3:
            chunk = chunk[None]
        if chunk.ndim != 4 or chunk.shape[-1] != 3 or chunk.dtype != np.uint8:
            raise InvalidInput(f"video chunks must be uint8 RGB (n, H, W, 3), got {chunk.dtype} {chunk.shape}")
        yield chunk

"""ATVGnet inference: one face photo + speech -> 25-fps talking-face frames.

The steps of the authors' demo (``code/demo.py``), in order:

1. Face: dlib detection and 68 landmarks, the square crop (r = 0.64 h) resized to
   163x163, a similarity warp of points 27-44 onto the template, the 128x128 crop.
2. Example landmark: the authors' normalisation of the crop's landmarks, x5, projected
   on the first 6 PCA components and back (AT-net gets the 6 coefficients, VG-net the
   reconstruction).
3. Audio: 16-kHz MFCC with 1920 samples of silence at each end, one 28x12 window per
   video frame.
4. AT-net predicts 6 PCA coefficients per frame; components 1-5 are scaled by
   2 * (1.1, 1.2, 1.3, 1.4, 1.5) as the demo does, then mapped back to 136 coordinates.
5. VG-net draws each frame; outputs in [-1, 1] become ``(x + 1) / 2 * 255``. (The
   demo's per-frame min-max stretch brightens faces, ATVGnet issue 35, and is not used.)

Differences from the demo, none of which changes what the networks see:
the work runs in chunks of ``chunk_frames`` frames so memory does not grow with the
clip (AT-net's LSTM state is carried between chunks; VG-net treats frames
independently at batch 1, see ``networks.py``); a face whose crop leaves the photo is
zero-padded instead of failing; the largest face is used, not the first found; the
example landmark is taken from the photo's landmarks mapped into the crop instead of
a second detection in the crop, which cannot change it (see below).

For a single reference image the authors' normalisation returns the same landmark
whatever the face (``norm_landmarks`` subtracts the image's own shape parameters from
themselves). The released weights were trained and run that way, so it is kept.
"""

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from models import weights as weights_lib
from models.atvgnet import features, preprocess
from models.atvgnet.networks import ATNet, VGNet
from models.atvgnet.quantize import quantize_vgnet
from models.common.device import pick_device
from models.common.pipeline import FeatureFrameStream, TalkingFacePipeline, load_project_networks, read_project
from models.common.quantize import calibration_example, resolve_precision
from models.perception import face as face_lib
from models.perception.paste import PasteBack
from models.types import TalkingFaceInput

# The demo's exaggeration of PCA components 1-5 of AT-net's output.
COMPONENT_SCALE = 2 * torch.tensor([1.1, 1.2, 1.3, 1.4, 1.5])


@dataclass
class Reference:
    """Everything the pipeline derives from the photo, once per clip."""

    photo: np.ndarray          # the input RGB photo
    face: np.ndarray           # aligned 128x128 RGB crop
    landmarks: np.ndarray      # (68, 2) landmarks of the face in the crop
    image: torch.Tensor        # the crop as VG-net input, (1, 3, 128, 128) in [-1, 1]
    pca_coefficients: torch.Tensor   # (1, 6): AT-net's example landmark
    landmark: torch.Tensor     # (1, 136): VG-net's example landmark
    n_faces: int
    paste_back: object         # callable (n,128,128,3) -> (n,H,W,3)


class ATVGnetPipeline(TalkingFacePipeline):
    """AT-net -> VG-net cascade. Build with ``from_pretrained`` or ``models.registry.load``.

    Args:
        atnet, vgnet: networks with weights loaded.
        pca_basis: (136, 6) first PCA components of the normalised landmarks (x5 space).
        pca_mean: (136,) PCA mean.
        shape_arrays: ``mean_shape_img``, ``mean_shape_norm``, ``S``, ``base_68`` and
            optionally ``base_68_close`` (the authors' ``basics/`` arrays).
        device: torch device.
        chunk_frames: frames generated per step; bounds memory.
        half: run the networks under fp16 autocast (CUDA only).
        scale_components: apply the demo's x2(1.1..1.5) to PCA components 1-5 (on for the
            authors' weights, as their demo does; networks trained by this project were
            not trained for it).
        info: what to report about the weights used.
        precision: "fp32", "int8" (VG-net quantised, CPU only) or "auto"
            (``models.common.quantize.resolve_precision``).
    """

    name = "atvgnet"
    can_stream = True
    fps = features.FPS
    sample_rate = features.SAMPLE_RATE
    lookahead_seconds = features.LOOKAHEAD / features.SAMPLE_RATE    # 0.175 s: the MFCC windows
    precisions = ("fp32", "int8")           # models.common.quantize: int8 on the CPU

    def __init__(self, atnet, vgnet, pca_basis, pca_mean, shape_arrays, device="cpu",
                 chunk_frames=32, half=False, scale_components=True, info=None, precision="fp32"):
        self.device = pick_device(device)
        self.atnet = atnet.to(self.device).eval()
        self.vgnet = vgnet.to(self.device).eval()
        self.pca = torch.as_tensor(np.asarray(pca_basis, dtype=np.float32), device=self.device)
        self.mean = torch.as_tensor(np.asarray(pca_mean, dtype=np.float32).reshape(-1), device=self.device)
        self.shape_arrays = shape_arrays
        self.chunk_frames = chunk_frames
        self.half = half and self.device.type == "cuda"
        self.scale_components = scale_components
        self.precision = resolve_precision(precision, self.device)
        if self.precision == "int8":
            self.vgnet = quantize_vgnet(self, *calibration_example())
        self.info = dict(info or {}, model="atvgnet", device=str(self.device), precision=self.precision)

    # -- construction -------------------------------------------------------------------
    @classmethod
    def from_pretrained(cls, directory, device="auto", verify=True, **options):
        """Load the authors' files, under their released names, from ``directory``."""
        paths = weights_lib.require_all(cls.weight_files(), directory, verify)
        atnet = weights_lib.load_weights(ATNet(), paths["atnet_lstm_18.pth"], "atnet_lstm_18.pth")
        vgnet = weights_lib.load_weights(VGNet(), paths["generator_23.pth"], "generator_23.pth")
        return cls.with_networks(atnet, vgnet, directory, device=device, verify=verify,
                                 info={"weights": "authors (LRW)", "weights_dir": str(directory)}, **options)

    @classmethod
    def with_networks(cls, atnet, vgnet, directory, device="auto", verify=True, info=None, **options):
        """A pipeline around given networks, with the authors' arrays from ``directory``.

        For training runs and benchmarks with random-initialised or reduced-width networks.
        """
        arrays_needed = [f for f in cls.weight_files() if f.name.endswith(".npy")]
        paths = weights_lib.require_all(arrays_needed, directory, verify)
        arrays = {name[:-4]: np.load(path, allow_pickle=False) for name, path in paths.items() if path}
        shape_arrays = {k: arrays[k] for k in ("mean_shape_img", "mean_shape_norm", "S", "base_68")}
        shape_arrays["base_68_close"] = arrays.get("base_68_close")
        info = info or {"weights": "given networks", "weights_dir": str(directory)}
        return cls(atnet, vgnet, arrays["U_lrw1"][:, :6], arrays["mean_lrw1"], shape_arrays,
                   device=device, info=info, **options)

    @classmethod
    def from_project(cls, directory, device="auto", verify=True, **options):
        """Load weights this project trained (``talkingface weights build-demo`` or an export).

        The folder holds ``config.json``, ``atnet.safetensors``, ``vgnet.safetensors``,
        ``pca.npz`` (the dataset's PCA) and ``basics.npz`` (the normalisation and crop
        arrays the data was prepared with), and ``SHA256SUMS`` checked when ``verify``.
        """
        directory = Path(directory)
        config = read_project(directory, verify)
        networks = load_project_networks(directory, {"atnet": ATNet, "vgnet": VGNet}, config)
        with np.load(directory / "pca.npz") as pca, np.load(directory / "basics.npz") as basics:
            shape_arrays = {k: basics[k] for k in ("mean_shape_img", "mean_shape_norm", "S", "base_68")}
            shape_arrays["base_68_close"] = None
            mean, basis = pca["mean"], pca["basis"][:, :6]
        info = {"weights": config.get("name", "project"), "weights_dir": str(directory)}
        return cls(networks["atnet"], networks["vgnet"], basis, mean, shape_arrays, device=device,
                   scale_components=config.get("scale_components", False), info=info, **options)

    # -- steps ------------------------------------------------------------------------
    def prepare_reference(self, image, face_index=0) -> Reference:
        """Steps 1-2: detect, crop and align the face; the example landmark."""
        image = self.check_image(image)
        box, landmarks, n_faces = face_lib.find_face(image, face_index)
        roi, landmarks163, crop = preprocess.crop_face(image, box, landmarks)
        arrays = self.shape_arrays
        template = preprocess.choose_template(landmarks163, arrays["base_68"], arrays.get("base_68_close"))
        face, transform, landmarks128 = preprocess.align_face(roi, landmarks163, template)
        normalised, _ = preprocess.norm_landmarks(
            landmarks128, arrays["mean_shape_img"], arrays["mean_shape_norm"], arrays["S"])

        example = torch.as_tensor(normalised.reshape(1, 136), dtype=torch.float32, device=self.device)
        coefficients = (example * 5.0 - self.mean) @ self.pca
        image_tensor = torch.as_tensor(face, device=self.device).permute(2, 0, 1)[None].float() / 127.5 - 1
        return Reference(
            photo=image, face=face, landmarks=landmarks128, image=image_tensor, pca_coefficients=coefficients,
            landmark=coefficients @ self.pca.T + self.mean, n_faces=n_faces,
            paste_back=PasteBack(image, preprocess.face_transform(crop, transform), preprocess.FACE_SIZE,
                                 feather=8.0, bounds=crop.bounds))

    def too_short(self, audio):
        return features.num_frames(len(audio)) == 0

    @torch.inference_mode()
    def _generate(self, reference, windows, state):
        """Steps 4-5 for one chunk of MFCC windows -> (frames in [-1, 1], LSTM state)."""
        windows = torch.as_tensor(windows, device=self.device)[None]
        with torch.autocast(self.device.type, enabled=self.half):
            coefficients, state = self.atnet.step(reference.pca_coefficients, windows, state)
            coefficients = coefficients[0].float()
            if self.scale_components:
                coefficients[:, 1:6] *= COMPONENT_SCALE.to(self.device)
            landmarks = coefficients @ self.pca.T + self.mean
            frames = self.vgnet(reference.image, landmarks[None], reference.landmark)[0][0]
        return frames.float(), state

    # -- public -----------------------------------------------------------------------
    def open_stream(self, image_or_reference, *, face_index=0, paste_back=False, chunk_frames=None,
                    first_chunk_frames=None) -> "ATVGnetStream":
        """A ``FrameStream`` of this face speaking the 16-kHz samples pushed into it.

        Frame ``k`` is made once the samples up to 0.175 s past its time are in
        (``features.LOOKAHEAD``), ``chunk_frames`` frames at a time (the pipeline's
        ``chunk_frames`` by default) after a first chunk of ``first_chunk_frames``: the
        chunks, and so the frames, are exactly those of ``frame_chunks`` over the whole
        clip with the same chunk sizes.
        """
        reference = image_or_reference
        if isinstance(reference, np.ndarray):
            reference = self.prepare_reference(reference, face_index)
        return ATVGnetStream(self, reference, paste_back=paste_back, chunk_frames=chunk_frames or self.chunk_frames,
                             first_chunk_frames=first_chunk_frames)

    def frame_chunks(self, inputs: TalkingFaceInput, paste_back=False, progress=None, reference=None):
        """Yield uint8 RGB frame chunks (n, H, W, 3) in order; memory bounded per chunk.

        ``progress(done, total)`` is called after every chunk; raising from it (for
        instance to cancel a job) stops the generation at that chunk boundary.
        ``reference`` is ``prepare_reference``'s result when the caller already has it.
        The clip goes through ``open_stream`` one chunk's samples at a time.
        """
        audio = self.prepare_audio(inputs.audio, inputs.sample_rate)
        if reference is None:
            reference = self.prepare_reference(inputs.image, inputs.face_index)
        total = features.num_frames(len(audio))
        stream = self.open_stream(reference, paste_back=paste_back)
        for frames in stream.clip_chunks(audio, self.chunk_frames * features.SAMPLES_PER_FRAME):
            yield frames
            if progress is not None:
                progress(stream.frames_out, total)


class ATVGnetStream(FeatureFrameStream):
    """ATVGnet's frames as the voice arrives (``ATVGnetPipeline.open_stream``).

    The MFCC windows come from ``features.MfccStream`` (the whole clip's values) and go
    through AT-net a chunk at a time with its LSTM state carried, then VG-net.
    """

    def __init__(self, pipeline: ATVGnetPipeline, reference: Reference, paste_back=False, chunk_frames=32,
                 first_chunk_frames=None):
        super().__init__(features.MfccStream(), reference, paste_back, pipeline.fps, chunk_frames,
                         first_chunk_frames)
        self.pipeline = pipeline
        self._state = None

    def _make(self, stop):
        frames, self._state = self.pipeline._generate(self.reference, self.features.windows(stop), self._state)
        frames = ((frames + 1) / 2 * 255).round().clamp(0, 255).to(torch.uint8)
        return frames.permute(0, 2, 3, 1).cpu().numpy()

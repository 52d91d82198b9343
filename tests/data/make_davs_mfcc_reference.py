"""Make tests/data/davs_mfcc_reference.npz by running the DAVS authors' Matlab MFCC in Octave.

Usage:  python tests/data/make_davs_mfcc_reference.py PATH/TO/DAVS/preprocess

PATH is the ``preprocess/`` folder of a checkout of Hangz-nju-cuhk/Talking-Face-Generation-DAVS
(``mfcc.m``, ``trifbank.m``, ``vec2frames.m``, ``runmfcc.m``, ``savemfcc.m``). Needs GNU Octave
(``octave-cli`` on PATH, ``apt-get install octave``) and ``espeak-ng``; nothing of the authors'
code is copied: Octave adds PATH (a scratch checkout) to its load path and works in a
temporary folder.

Two clips go through it:

- ``speech``: a sentence from espeak-ng, resampled to 16 kHz and stored as int16. Octave reads
  it from a 16-bit wav with ``audioread`` (values / 32768, so ``mfcc.m`` scales them back by
  2^15), computes ``runmfcc`` with the options of ``save_mfccs.m`` and runs ``savemfcc.m``,
  whose ``<l>.bin`` files are read back as ``Dataloader/Test_load_audio.py`` reads them,
  ``np.fromfile(path).reshape(20, 12)``.
- ``synthetic``: a seeded chirp plus noise in 16-bit scale (not rescaled by ``mfcc.m``), of a
  length that is not a whole number of hops, passed to ``runmfcc`` as doubles.

The file stores the inputs, Octave's MFCC (13 x frames, c0 included), the smallest filterbank
energy of each frame (where it is at least 1, the port's mel floor does not act; where it is
0, Octave returns -inf / NaN) and the blocks with their frame indices.
"""

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from scipy.io import wavfile
from scipy.signal import resample_poly

HERE = Path(__file__).resolve().parent
OUT = HERE / "davs_mfcc_reference.npz"
TEXT = "Talking faces follow the words they hear."
SR = 16000

DRIVER = r"""
addpath('{preprocess}');
opt.fs = 16000; opt.Tw = 25; opt.Ts = 10; opt.alpha = 0.97;
opt.R = [300 3700]; opt.M = 13; opt.C = 13; opt.L = 22;

[speech, fs] = audioread('{work}/speech.wav');
[CC, FBE, frames] = runmfcc(speech, opt);
f = fopen('{work}/speech_mfcc.bin', 'wb'); fwrite(f, CC, 'double'); fclose(f);
f = fopen('{work}/speech_fbe_min.bin', 'wb'); fwrite(f, min(FBE, [], 1), 'double'); fclose(f);
mkdir('{work}/blocks');
savemfcc('{work}/speech.wav', '{work}/blocks');

f = fopen('{work}/synthetic.bin', 'rb'); synthetic = fread(f, Inf, 'double'); fclose(f);
[CC, FBE, frames] = runmfcc(synthetic, opt);
f = fopen('{work}/synthetic_mfcc.bin', 'wb'); fwrite(f, CC, 'double'); fclose(f);
f = fopen('{work}/synthetic_fbe_min.bin', 'wb'); fwrite(f, min(FBE, [], 1), 'double'); fclose(f);
"""


def speech_clip(work: Path) -> np.ndarray:
    """espeak-ng's sentence at 16 kHz, int16, with a microphone-like noise floor.

    espeak-ng's pauses are digital silence, where mfcc.m takes log(0); the seeded noise
    (sd 3 LSB) keeps every filter energy of this clip above 1, as in a recording.
    """
    subprocess.run(["espeak-ng", "-w", str(work / "espeak.wav"), TEXT], check=True)
    rate, samples = wavfile.read(work / "espeak.wav")
    g = np.gcd(rate, SR)
    speech = resample_poly(samples.astype(np.float64), SR // g, rate // g)
    speech += 3.0 * np.random.default_rng(1807).standard_normal(speech.shape[0])
    return np.clip(np.round(speech), -32768, 32767).astype(np.int16)


def synthetic_clip() -> np.ndarray:
    """0.77 s of a 200 Hz -> 3.5 kHz chirp with noise, 16-bit scale (max above 1).

    Samples 4000..5999 are exact zeros: the frames inside them show mfcc.m's log(0).
    """
    n = 12345
    t = np.arange(n) / SR
    rng = np.random.default_rng(2019)
    chirp = np.sin(2 * np.pi * (200 * t + 2150 * t**2))
    clip = np.round(8000 * chirp + 300 * rng.standard_normal(n))
    clip[4000:6000] = 0.0
    return clip


def read_matrix(path: Path, rows: int) -> np.ndarray:
    """A column-major float64 matrix written by Matlab's fwrite."""
    return np.fromfile(path, dtype=np.float64).reshape(-1, rows).T


def main(preprocess: Path) -> None:
    if shutil.which("octave-cli") is None:
        sys.exit("octave-cli not found: apt-get install octave")
    for name in ("mfcc.m", "trifbank.m", "vec2frames.m", "runmfcc.m", "savemfcc.m"):
        if not (preprocess / name).is_file():
            sys.exit(f"{name} is not in {preprocess}")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        speech = speech_clip(work)
        wavfile.write(work / "speech.wav", SR, speech)
        synthetic = synthetic_clip()
        synthetic.astype(np.float64).tofile(work / "synthetic.bin")
        (work / "driver.m").write_text(DRIVER.format(preprocess=preprocess.resolve(), work=work))
        subprocess.run(["octave-cli", "--no-gui", "--quiet", str(work / "driver.m")], check=True)
        version = subprocess.run(
            ["octave-cli", "--version"], capture_output=True, text=True, check=True
        ).stdout.splitlines()[0]

        frames = sorted(int(p.stem) for p in (work / "blocks").glob("*.bin"))
        blocks = np.stack(
            [np.fromfile(work / "blocks" / f"{k}.bin").reshape(20, 12) for k in frames]
        )
        data = {
            "speech": speech,
            "speech_mfcc": read_matrix(work / "speech_mfcc.bin", 13),
            "speech_fbe_min": np.fromfile(work / "speech_fbe_min.bin"),
            "speech_block_frames": np.asarray(frames, dtype=np.int64),
            "speech_blocks": blocks,
            "synthetic": synthetic.astype(np.int16),
            "synthetic_mfcc": read_matrix(work / "synthetic_mfcc.bin", 13),
            "synthetic_fbe_min": np.fromfile(work / "synthetic_fbe_min.bin"),
            "sample_rate": np.int64(SR),
            "generator": np.array(f"{version}; mfcc.m of Talking-Face-Generation-DAVS"),
        }
    np.savez_compressed(OUT, **data)
    for key, value in data.items():
        print(key, getattr(value, "shape", value))
    print(f"wrote {OUT} ({OUT.stat().st_size} bytes)")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    main(Path(sys.argv[1]))

"""The ``talkingface`` command: a playable MP4, and one clear line for each bad input."""

import json
import wave

import numpy as np
import pytest
from PIL import Image

from models.common.commands import Command, argument
from service import media
from service.cli import main
from tests.conftest import EXAMPLES


def write_wav(path, audio, sample_rate=16000):
    with wave.open(str(path), "wb") as f:
        f.setnchannels(1)
        f.setsampwidth(2)
        f.setframerate(sample_rate)
        f.writeframes((np.clip(audio, -1, 1) * 32767).astype("<i2").tobytes())
    return path


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    """Two seconds of the example sentence, 16 kHz."""
    audio = media.read_audio(EXAMPLES / "speech.wav", sample_rate=16000)[:32000]
    return write_wav(tmp_path_factory.mktemp("audio") / "clip.wav", audio)


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_generate_writes_h264_aac_mp4_of_the_audio_duration(seeded_project_dir, clip, tmp_path, capsys, ffprobe):
    out = tmp_path / "out.mp4"
    code, stdout, err = run(capsys, "generate", "--model", "atvgnet", "--image", EXAMPLES / "face.jpg",
                            "--audio", clip, "-o", out, "--weights", seeded_project_dir, "--device", "cpu")
    assert code == 0, err
    assert "wrote" in stdout
    info = media.probe(out)
    streams = {s["codec_type"]: s for s in info["streams"]}
    assert len(info["streams"]) == 2
    assert streams["video"]["codec_name"] == "h264" and streams["audio"]["codec_name"] == "aac"
    assert (streams["video"]["width"], streams["video"]["height"]) == (128, 128)
    assert streams["video"]["r_frame_rate"] == "25/1"
    video_seconds = float(streams["video"]["duration"])
    assert abs(video_seconds - 2.0) <= 1 / 25 + 1e-6
    assert abs(float(info["format"]["duration"]) - 2.0) <= 1 / 25 + 0.03   # AAC frame padding


def test_paste_back_keeps_the_photo_size(seeded_project_dir, clip, tmp_path, capsys, ffprobe):
    out = tmp_path / "full.mp4"
    code, _, err = run(capsys, "generate", "--image", EXAMPLES / "face.jpg", "--audio", clip, "-o", out,
                       "--weights", seeded_project_dir, "--paste-back", "-q")
    assert code == 0, err
    video = [s for s in media.probe(out)["streams"] if s["codec_type"] == "video"][0]
    assert (video["width"], video["height"]) == (512, 600)


def test_several_faces_use_the_largest_and_say_so(seeded_project_dir, tmp_path, capsys):
    photo = media.read_image(EXAMPLES / "face.jpg")
    small = np.asarray(Image.fromarray(photo).resize((384, 450)))
    canvas = np.zeros((600, 512 + 384, 3), np.uint8)
    canvas[:, :512], canvas[:450, 512:] = photo, small
    Image.fromarray(canvas).save(tmp_path / "two.png")
    audio = write_wav(tmp_path / "a.wav", 0.2 * np.sin(np.arange(8000) * 0.05))
    code, _, err = run(capsys, "generate", "--image", tmp_path / "two.png", "--audio", audio,
                       "-o", tmp_path / "o.mp4", "--weights", seeded_project_dir, "-q")
    assert code == 0, err
    assert "2 faces found" in err and "largest" in err and "--face-index" in err
    code, _, err = run(capsys, "generate", "--image", tmp_path / "two.png", "--audio", audio,
                       "-o", tmp_path / "o2.mp4", "--weights", seeded_project_dir, "--face-index", "5")
    assert code == 2 and "error:" in err and "2 face" in err


@pytest.fixture
def inputs(tmp_path):
    grey = tmp_path / "grey.png"
    Image.fromarray(np.full((200, 200, 3), 128, np.uint8)).save(grey)
    text = tmp_path / "notes.jpg"
    text.write_text("not an image at all")
    silent = write_wav(tmp_path / "silent.wav", np.zeros(16000))
    short = write_wav(tmp_path / "short.wav", 0.3 * np.sin(np.arange(3200) * 0.05))
    speech = write_wav(tmp_path / "speech.wav", 0.3 * np.sin(np.arange(16000) * 0.05))
    return {"grey": grey, "text": text, "silent": silent, "short": short, "speech": speech,
            "face": EXAMPLES / "face.jpg"}


@pytest.mark.parametrize("image, audio, message", [
    ("grey", "speech", "no face found"),
    ("text", "speech", "not an image"),
    ("face", "face", "not an audio"),
    ("face", "silent", "silent"),
    ("face", "short", "at least 0.3 s"),
])
def test_bad_inputs_give_one_line_and_exit_2(image, audio, message, inputs, seeded_project_dir, tmp_path, capsys):
    out = tmp_path / "never.mp4"
    code, stdout, err = run(capsys, "generate", "--image", inputs[image], "--audio", inputs[audio],
                            "-o", out, "--weights", seeded_project_dir)
    assert code == 2
    assert err.startswith("error: ") and message in err and err.count("\n") == 1
    assert "Traceback" not in err
    assert not out.exists()


def test_missing_weights_say_which_file_and_where(inputs, tmp_path, capsys):
    code, _, err = run(capsys, "generate", "--image", inputs["face"], "--audio", inputs["speech"],
                       "-o", tmp_path / "o.mp4", "--weights", tmp_path)
    assert code == 2
    assert "atnet_lstm_18.pth" in err and "generator_23.pth" in err and "weights/README.md" in err


def test_unknown_model(inputs, tmp_path, capsys):
    code, _, err = run(capsys, "generate", "--model", "nope", "--image", inputs["face"],
                       "--audio", inputs["speech"], "-o", tmp_path / "o.mp4")
    assert code == 2 and "unknown model 'nope'" in err


def test_models_lists_found_and_missing_files(authors_layout_dir, tmp_path, capsys):
    code, out, _ = run(capsys, "models", "--weights", authors_layout_dir)
    assert code == 0
    atvgnet = out.split("\ndavs ")[0]       # the other models' weights are not in that folder
    assert "atvgnet" in atvgnet and "found   atnet_lstm_18.pth" in atvgnet and "MISSING" not in atvgnet
    assert "MISSING 101_DAVS_checkpoint.pth.tar" in out
    code, out, _ = run(capsys, "models", "--weights", tmp_path)
    assert "MISSING generator_23.pth" in out and "lelechen63/ATVGnet" in out


def test_bench_prints_json(reference_dir, capsys):
    code, out, _ = run(capsys, "bench", "atvgnet", "--weights", reference_dir, "--random-weights",
                       "--device", "cpu", "--seconds", "1", "--repeats", "1")
    assert code == 0
    result = json.loads(out)
    for key in ("atnet_fps_batch1", "atnet_fps_batch16", "vgnet_fps_batch1", "vgnet_fps_batch16",
                "real_time_factor", "peak_rss_mib", "threads", "device"):
        assert key in result
    assert result["frames"] == 24 and result["weights"] == "random" and result["vgnet_fps_batch16"] > 0


def test_readme_example_runs_with_the_shipped_demo_weights(tmp_path, monkeypatch, capsys, ffprobe):
    # A fresh clone: no weights folder, no environment; the demo weights are used.
    monkeypatch.delenv("TALKINGFACE_WEIGHTS_DIR", raising=False)
    monkeypatch.chdir(tmp_path)
    code, out, err = run(capsys, "generate", "--image", EXAMPLES / "face.jpg", "--audio", EXAMPLES / "speech.wav",
                         "-o", "out.mp4", "-q")
    assert code == 0, err
    assert "weights: demo" in out
    info = media.probe(tmp_path / "out.mp4")
    assert "demo" in info["format"]["tags"]["comment"]
    assert sorted(s["codec_name"] for s in info["streams"]) == ["aac", "h264"]


# ---------------------------------------------------------------------------- flags from the models


@pytest.mark.parametrize("argv, message", [
    (["data", "prepare", "--model", "davs", "--videos", "v", "--out", "o", "--basics", "b"],
     "--basics applies to atvgnet, not davs"),
    (["data", "prepare", "--videos", "v", "--out", "o", "--labels", "folder"], "--labels applies to davs, not atvgnet"),
    (["train", "davs", "--data", "d", "--out", "o", "--stage", "atnet"],
     "--stage applies to atvgnet, pg2, edn and ssgan, not davs"),
    (["train", "atvgnet", "--data", "d", "--out", "o", "--image-size", "128"],
     "--image-size applies to davs, dcgan, gran, lrgan and ssgan, not atvgnet"),
    (["eval", "--model", "atvgnet", "--data", "d", "--run", "r"], "--run, --mode and --finetune-steps apply to davs"),
    (["weights", "build-demo", "--minutes", "3"], "--minutes applies to davs and edn, not atvgnet"),
    (["bench", "davs", "--memory", "10"], "--memory applies to atvgnet, not davs"),
    (["bench", "api", "--mode", "audio"], "--mode applies to davs, not api"),
])
def test_a_flag_of_another_model_is_one_line(argv, message, capsys):
    code, out, err = run(capsys, *argv)
    assert code == 2 and out == ""
    assert err.startswith("error: ") and message in err and err.count("\n") == 1


def test_each_model_s_flags_are_listed_under_its_name(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = capsys.readouterr().out
    text = text[text.index("options:"):]                 # past the usage line
    assert "atvgnet only:" in text and "davs only:" in text
    assert text.index("--data") < text.index("atvgnet only:") < text.index("davs only:") < text.index("--image-size")
    # A flag several models declare is listed once, under all of them, saying what it is to each.
    shared = text.index("atvgnet, pg2, edn and ssgan only:")
    assert shared < text.index("\n  --stage {") and text.count("\n  --stage {") == 1
    assert "atvgnet: which network to train" in " ".join(text[shared:].split())


class ToyPipeline:
    """Enough of a pipeline for the parser: what a request may carry."""

    accepts_video = False

    @classmethod
    def declared_options(cls):
        from models.common.pipeline import COMMON_OPTIONS, Option
        return {o.name: o for o in COMMON_OPTIONS + (Option("tint", int, 0, "grey levels added"),)}


def toy_train(args):
    return {"model": "toy", "steps": args.steps, "image_size": args.image_size, "data": args.data}


# The toy system's part of `talkingface` (its ModelSpec.commands names this module). --image-size
# is DAVS's too, without a default: the toy's own default must be the one the toy gets.
COMMANDS = {"train": Command(toy_train, (argument("--steps", type=int, default=3, help="toy steps"),
                                         argument("--image-size", type=int, default=64, help="toy side")),
                             help="a toy that trains nothing")}


@pytest.fixture
def toy():
    from models import registry
    from models.registry import ModelSpec
    registry.register(ModelSpec(name="toy", task="talking-face", paper="Toy, a test", pipeline=ToyPipeline,
                                commands=__name__))
    yield "toy"
    registry.unregister("toy")


def test_a_registered_model_brings_its_own_subcommand_flags(toy, capsys):
    code, out, err = run(capsys, "train", "toy", "--data", "d", "--out", "o")
    assert code == 0, err
    assert json.loads(out) == {"model": "toy", "steps": 3, "image_size": 64, "data": "d"}
    code, out, err = run(capsys, "train", "toy", "--data", "d", "--out", "o", "--steps", "5", "--image-size", "32")
    assert code == 0 and json.loads(out)["steps"] == 5 and json.loads(out)["image_size"] == 32
    code, _, err = run(capsys, "train", "atvgnet", "--data", "d", "--out", "o", "--steps", "5")
    assert code == 2 and "--steps applies to toy, not atvgnet" in err
    code, _, err = run(capsys, "train", "atvgnet", "--data", "d", "--out", "o", "--image-size", "32")
    assert code == 2 and "--image-size applies to davs, dcgan, gran, lrgan, ssgan and toy, not atvgnet" in err
    code, _, err = run(capsys, "generate", "--model", "atvgnet", "--image", "i", "--audio", "a", "-o", "o",
                       "--tint", "3")
    assert code == 2 and "--tint applies to toy, not atvgnet" in err


def test_commands_arguments_read_as_argparse_reads_them():
    arg = argument("-n", "--n-blocks", type=int, default=9, help="blocks")
    assert (arg.dest, arg.default, arg.name) == ("n_blocks", 9, "--n-blocks")
    assert argument("--whole-video", action="store_true").default is False
    assert Command("json:dumps")({"a": 1}) == '{"a": 1}'

"""What a newcomer sees of ``talkingface``: one ``error:`` line before any work, no traceback
on a closed pipe, plain help, and a models listing that says first what will run."""

import subprocess
import sys
import time

from service.cli import main
from tests.conftest import EXAMPLES

FACE, SPEECH = str(EXAMPLES / "face.jpg"), str(EXAMPLES / "speech.wav")


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_an_unwritable_output_is_refused_before_any_work(capsys, tmp_path):
    for output, message in ((tmp_path / "missing_dir" / "x.mp4", "does not exist"), (tmp_path, "is a folder")):
        start = time.monotonic()
        code, _, err = run(capsys, "generate", "--image", FACE, "--audio", SPEECH, "-o", output)
        assert code == 2 and err.startswith("error: cannot write ") and message in err and err.count("\n") == 1
        # Refused up front: no weights loaded, no frame drawn.
        assert time.monotonic() - start < 3
    assert not (tmp_path / "missing_dir").exists()


def test_missing_inputs_are_named_by_their_path_in_one_wording(capsys, tmp_path):
    image, audio = tmp_path / "nope.jpg", tmp_path / "nope.wav"
    _, _, err_image = run(capsys, "generate", "--image", image, "--audio", SPEECH, "-o", tmp_path / "a.mp4")
    _, _, err_audio = run(capsys, "generate", "--image", FACE, "--audio", audio, "-o", tmp_path / "b.mp4")
    assert err_image == f"error: cannot read {image}: no such file\n"
    assert err_audio == f"error: cannot read {audio}: no such file\n"


def test_stream_refusals_name_the_flags_a_model_streams_with(capsys, tmp_path):
    code, _, err = run(capsys, "generate", "--model", "davs", "--image", FACE, "--audio", SPEECH, "--stream",
                       "-o", tmp_path / "x.mp4")
    assert code == 2 and err == ("error: davs cannot stream its output with these options (it streams with "
                                 "--finetune-steps 0); leave out --stream\n")
    assert not list(tmp_path.iterdir())


def test_a_closed_pipe_is_not_an_error():
    process = subprocess.Popen([sys.executable, "-m", "service.cli", "models"], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE)
    process.stdout.close()          # the reader is gone before the first line, as `| head -0`
    _, err = process.communicate(timeout=120)
    assert process.returncode == 0 and b"Traceback" not in err and b"BrokenPipe" not in err


def test_help_is_plain_text(capsys):
    try:
        main(["--help"])
    except SystemExit as exit:
        assert exit.code == 0
    out = capsys.readouterr().out
    assert "``" not in out and "Talking-face video from a photo and a voice clip" in out


def test_models_says_first_what_runs_and_lists_the_authors_files_as_optional(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)                  # no ./weights: the shipped demo weights run
    monkeypatch.delenv("TALKINGFACE_WEIGHTS_DIR", raising=False)
    code, out, _ = run(capsys, "models")
    assert code == 0 and "MISSING" not in out
    atvgnet = out.split("\ndavs")[0]
    lines = atvgnet.splitlines()
    assert lines[1].startswith("  ready: uses project-trained weights in ") and "demo" in lines[1]
    assert "optional: for the paper quality" in lines[2] and "absent  atnet_lstm_18.pth" in atvgnet
    code, out, _ = run(capsys, "models", "--weights", tmp_path)
    assert "NOT READY: the authors' weights in" in out and "MISSING generator_23.pth" in out


def test_a_flag_several_models_declare_takes_each_models_own_choices(capsys, tmp_path):
    """``--stage`` is atnet|vgnet for atvgnet, g1|g2 for pg2, global|local|face for edn."""
    for model, stage in (("pg2", "g1"), ("edn", "global"), ("atvgnet", "atnet")):
        code, _, err = run(capsys, "train", model, "--stage", stage, "--data", tmp_path / "none", "--out",
                           tmp_path / "run")
        assert code == 2 and "--stage" not in err and "invalid choice" not in err, err
    code, _, err = run(capsys, "train", "atvgnet", "--stage", "g1", "--data", tmp_path / "none", "--out",
                       tmp_path / "run")
    assert code == 2 and err == "error: --stage of atvgnet is one of atnet, vgnet, not 'g1'\n"

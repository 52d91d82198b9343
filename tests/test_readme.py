"""The README's code blocks run as written from the clone root.

Python blocks run as they are. In shell blocks, ``talkingface generate``, ``models`` and
``sample`` run for real; the other ``talkingface`` lines, whose inputs are the reader's own (their
videos, a running server) or whose run is long (training, benchmarks), are parsed by the
real command line, so every subcommand and flag they use must exist (the training and
service tests run the same commands on small data). ``curl`` lines must name files that
exist. ``pip install`` lines are the set-up itself and ``talkingface serve`` is run by
``tests/test_e2e.py``.
"""

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from service.cli import build_parser, main

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()
BLOCKS = re.findall(r"^```(\w+)\n(.*?)^```", README, flags=re.S | re.M)
RUN = ("generate", "models", "sample")                        # talkingface subcommands run for real
PARSED_ONLY = ("serve", "bench", "data", "train", "eval", "weights", "jobs", "worker")


def shell_lines(block):
    """Commands of a shell block: continuations joined, comments dropped."""
    text = block.replace("\\\n", " ")
    for line in text.splitlines():
        line = re.sub(r"\s+#.*$", "", line).strip()
        if line and not line.startswith("#"):
            yield shlex.split(line)


@pytest.fixture
def clone_root(tmp_path, monkeypatch):
    """A folder that looks like the clone's root to the commands: the examples, no ./weights."""
    (tmp_path / "examples").symlink_to(ROOT / "examples")
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("TALKINGFACE_WEIGHTS_DIR", raising=False)
    return tmp_path


def test_the_readme_has_the_blocks_this_test_reads():
    languages = [language for language, _ in BLOCKS]
    assert languages.count("python") >= 1 and languages.count("bash") >= 4


def test_python_blocks_run(clone_root):
    for language, code in BLOCKS:
        if language == "python":
            done = subprocess.run([sys.executable, "-c", code], cwd=clone_root, capture_output=True, text=True,
                                  timeout=600, env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
            assert done.returncode == 0, done.stderr[-3000:]


def test_shell_blocks_run_or_parse(clone_root, capsys):
    seen = set()
    for language, code in BLOCKS:
        if language != "bash":
            continue
        for words in shell_lines(code):
            program, args = words[0], words[1:]
            if program == "talkingface":
                command = args[0]
                seen.add(command)
                if command in RUN:
                    assert main(args) == 0, capsys.readouterr().err
                else:
                    assert command in PARSED_ONLY, words
                    build_parser(command).parse_args(args)     # exits on an unknown flag or choice
            elif program == "curl":
                for field in (a for a in args if a.startswith(("image=@", "audio=@", "video=@"))):
                    assert (ROOT / field.split("@", 1)[1]).is_file(), field
            else:
                assert program in ("pip", "python"), words
    assert {"generate", "models", "serve", "train", "eval"} <= seen
    assert (clone_root / "out.mp4").is_file() and (clone_root / "davs.mp4").is_file()

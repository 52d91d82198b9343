"""The training base (models.common.train) on a toy system: loop, budgets, resume, files."""

import csv
import json
from dataclasses import dataclass

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from torch import nn
from torch.utils.data import Dataset

from models.common.train import (
    BaseTrainer,
    LoopConfig,
    LossLog,
    atomic_write,
    safetensors_step,
    save_safetensors,
    tile_grid,
)
from models.errors import InvalidInput


class Points(Dataset):
    """Ten seeded 4-vectors; ``set_epoch`` is recorded so the loop's calls can be checked."""

    def __init__(self):
        self.x = torch.from_numpy(np.random.default_rng(0).normal(size=(10, 4)).astype(np.float32))
        self.epochs = []

    def set_epoch(self, epoch):
        self.epochs.append(epoch)

    def __len__(self):
        return len(self.x)

    def __getitem__(self, index):
        return {"x": self.x[index], "index": index}


@dataclass
class ToyConfig(LoopConfig):
    data_dir: str
    out_dir: str


class ToyTrainer(BaseTrainer):
    """A regression with dropout (so only a restored RNG resumes exactly), 3 batches an epoch."""

    name = "toy"
    state_file = "toy.train.pt"
    shown_losses = ("loss",)

    def __init__(self, config):
        super().__init__(config)
        self.dataset = Points()
        self.batch_size, self.steps_per_epoch = 3, 3  # the 10th point is dropped (drop_last)
        torch.manual_seed(config.seed)
        self.net = nn.Sequential(nn.Linear(4, 8), nn.Dropout(0.5), nn.Linear(8, 1))
        self.opt_g = torch.optim.Adam(self.net.parameters(), lr=1e-2)

    @property
    def loss_names(self):
        return ("loss", "extra")

    def train_step(self, batch):
        loss = (self.net(batch["x"]) - 1).pow(2).mean()
        self.opt_g.zero_grad()
        loss.backward()
        self.opt_g.step()
        self.last_outputs = {"x": batch["x"]}
        return {"loss": loss.item()}  # "extra" never computed: its column stays empty

    def total_steps(self):
        return 2 * self.steps_per_epoch

    def checkpoint_networks(self):
        return {"toy.safetensors": self.net}

    def config_json(self):
        return {"model": "toy", **self.progress_entries(), **self.history_entries()}

    def save_samples(self, batch=None):
        tile = np.zeros((2, 2, 3), np.uint8)
        self.save_sample_grid(f"step_{self.step}.png", [[tile, tile]])


def _config(tmp_path, out="run", **overrides):
    options = dict(data_dir=str(tmp_path), out_dir=str(tmp_path / out), progress=False, log_every=1,
                   sample_every=0, device="cpu")
    options.update(overrides)
    return ToyConfig(**options)


def _log(folder):
    with open(folder / "log.csv", newline="") as f:
        return list(csv.DictReader(f))


def test_a_run_trains_the_full_schedule_and_writes_the_run_folder(tmp_path):
    trainer = ToyTrainer(_config(tmp_path, sample_every=3))
    summary = trainer.run()
    run = tmp_path / "run"
    assert summary["step"] == 6 and summary["stopped"] == "max_steps" and summary["out_dir"] == str(run)
    assert trainer.dataset.epochs == [0, 1]
    assert sorted(p.name for p in run.iterdir() if p.name != "tensorboard") == [
        "config.json", "log.csv", "samples", "toy.safetensors", "toy.train.pt"]
    assert sorted(p.name for p in (run / "samples").iterdir()) == ["step_3.png", "step_6.png"]
    assert safetensors_step(run / "toy.safetensors") == 6
    state = torch.load(run / "toy.train.pt", weights_only=True)
    assert state["step"] == 6 and state["optimizer_g"]["state"] and state["optimizer_d"] == {}
    config = json.loads((run / "config.json").read_text())
    assert config["step"] == 6 and config["epoch"] == 2.0 and config["data_dir"] == str(tmp_path.resolve())
    assert config["train"]["out_dir"] == str(run.resolve()) and config["train"]["log_every"] == 1
    assert [p["step"] for p in config["loss_history"]] == [1, 2, 3, 4, 5, 6]
    assert set(config["loss_summary"]) == {"loss"}
    rows = _log(run)
    assert list(rows[0]) == ["step", "time", "loss", "extra"]
    assert [int(r["step"]) for r in rows] == [1, 2, 3, 4, 5, 6] and all(r["extra"] == "" for r in rows)


def test_a_resumed_run_equals_an_uninterrupted_one(tmp_path):
    assert ToyTrainer(_config(tmp_path, max_steps=4, checkpoint_every=2)).run()["step"] == 4
    resumed = ToyTrainer(_config(tmp_path, max_steps=6))
    assert resumed.run()["step"] == 6
    assert resumed.dataset.epochs == [1]  # epoch 1 from its second batch, skipping the one trained
    ToyTrainer(_config(tmp_path, out="straight")).run()
    a, b = load_file(tmp_path / "run" / "toy.safetensors"), load_file(tmp_path / "straight" / "toy.safetensors")
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0, msg=key)
    assert [int(r["step"]) for r in _log(tmp_path / "run")] == [1, 2, 3, 4, 5, 6]
    # resume=False starts again from step 0.
    assert ToyTrainer(_config(tmp_path, max_steps=1, resume=False)).run()["step"] == 1


def test_a_checkpoint_written_halfway_is_refused(tmp_path):
    ToyTrainer(_config(tmp_path, max_steps=2)).run()
    trainer = ToyTrainer(_config(tmp_path))
    save_safetensors(trainer.net, tmp_path / "run" / "toy.safetensors", step=1)
    with pytest.raises(InvalidInput, match="inconsistent"):
        trainer.load_checkpoint()


def test_the_time_budget_stops_with_a_checkpoint(tmp_path):
    summary = ToyTrainer(_config(tmp_path, max_steps=1000, time_budget=0.0, log_every=100)).run()
    assert summary["stopped"] == "time_budget" and summary["step"] == 1
    assert safetensors_step(tmp_path / "run" / "toy.safetensors") == 1
    assert [int(r["step"]) for r in _log(tmp_path / "run")] == [1]  # the partial window is logged


def test_epoch_batches_are_a_seeded_shuffle_without_the_partial_batch(tmp_path):
    trainer = ToyTrainer(_config(tmp_path))
    batches = trainer.epoch_batches(0)
    assert [len(b) for b in batches] == [3, 3, 3] and len({i for b in batches for i in b}) == 9
    assert trainer.epoch_batches(0) == batches and trainer.epoch_batches(1) != batches


def test_loop_settings_are_checked():
    with pytest.raises(InvalidInput, match="max_steps"):
        ToyConfig(data_dir="d", out_dir="o", max_steps=0)
    with pytest.raises(InvalidInput, match="log_every"):
        ToyConfig(data_dir="d", out_dir="o", log_every=0)


def test_the_loss_log_keeps_the_rows_a_resumed_checkpoint_covers(tmp_path):
    path = tmp_path / "log.csv"
    log = LossLog(path, ("a", "b"))
    log.open(0, tmp_path / "tb")
    for step in (1, 2, 3):
        log.add({"a": float(step)})
        log.add({"a": float(step) + 1, "b": 0.5})
        assert log.flush(step, step * 0.1) == {"a": step + 0.5, "b": 0.5}
    assert log.flush(4, 0.4) is None  # an empty window writes nothing
    log.close()
    reopened = LossLog(path, ("a", "b"))
    reopened.open(2, tmp_path / "tb")
    reopened.close()
    assert path.read_text().splitlines() == ["step,time,a,b", "1,0.100,1.5,0.5", "2,0.200,2.5,0.5"]


def test_atomic_write_keeps_the_old_file_when_writing_fails(tmp_path):
    path = tmp_path / "file.txt"
    atomic_write(path, lambda tmp: tmp.write_text("old"))

    def fail(tmp):
        tmp.write_text("half")
        raise OSError("disk full")

    with pytest.raises(OSError):
        atomic_write(path, fail)
    assert path.read_text() == "old"


def test_tile_grid_puts_rows_of_tiles_together():
    tiles = [[np.full((2, 3, 3), v, np.uint8) for v in (1, 2)], [np.full((2, 3, 3), v, np.uint8) for v in (3, 4)]]
    grid = tile_grid(tiles)
    assert grid.shape == (4, 6, 3) and grid[0, 0, 0] == 1 and grid[0, 5, 0] == 2 and grid[3, 5, 0] == 4


def test_require_same_names_the_first_setting_that_differs(tmp_path):
    trainer = ToyTrainer(_config(tmp_path, max_steps=1))
    saved = {"stage": "g1", "networks": {"g1": {"width": 4}, "g2": {"width": 8, "depth": 2}}}
    trainer.require_same(saved, stage="g1", networks={"g1": {"width": 4}, "g2": {"width": 8, "depth": 2}})
    with pytest.raises(InvalidInput, match=r"whose stage is 'g1', not 'g2'"):
        trainer.require_same(saved, stage="g2")
    with pytest.raises(InvalidInput, match=r"whose networks.g2.depth is 2, not 3"):
        trainer.require_same(saved, networks={"g1": {"width": 4}, "g2": {"width": 8, "depth": 3}})
    with pytest.raises(InvalidInput, match=r"whose networks.g3 is None, not \{\}"):
        trainer.require_same(saved, networks={"g1": {"width": 4}, "g2": {"width": 8, "depth": 2}, "g3": {}})

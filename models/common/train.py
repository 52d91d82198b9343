"""The training base every system stands on: the loop, its budgets, resuming, logs, checkpoints.

A system's trainer (``models.atvgnet.train.Trainer``, ``models.davs.train.Trainer``)
subclasses `BaseTrainer` and brings only what is its own: the data, the networks and
their optimisers, one optimisation step with the paper's losses, the file names of its
checkpoint, what its ``config.json`` records and what its sample images show. The base
owns everything a run does around those steps, once:

* the loop over seeded epochs (`BaseTrainer.epoch_batches`): a shuffle seeded by
  (seed, epoch), items seeded by (seed, epoch, index), so that a resumed run draws exactly
  the batches an uninterrupted one would;
* the two budgets, ``max_steps`` (all calls together) and ``time_budget`` (seconds of
  this call), and a final checkpoint whenever the loop ends between two steps (also on
  Ctrl-C or an error);
* resuming from the last checkpoint: weights, optimiser states and the RNG state, with
  a check that every file of the checkpoint carries the same step;
* ``log.csv`` (one row of window means every ``log_every`` steps; TensorBoard too when it
  is installed) and a thinned loss history in ``config.json``;
* the files themselves: safetensors with the step in their metadata, each file written
  atomically (a temporary file, then a rename), and PNG grids of sample frames.

A run folder holds ``config.json``, ``log.csv``, ``samples/``, one
``<network>.safetensors`` per checkpointed network and one training-state file (optimiser
and RNG states, ``torch.save`` of tensors and containers only, read back with
``weights_only=True``).

Example:

    >>> class Trainer(BaseTrainer):
    ...     model, name, state_file = "mysystem", "mysystem", "train_state.pt"
    ...     def train_step(self, batch): ...              # one step; returns {loss name: float}
    >>> summary = Trainer(config).run()
"""

from __future__ import annotations

import csv
import json
import logging
import os
import time
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from models import weights as weights_lib
from models.common.device import pick_device
from models.errors import InvalidInput

__all__ = [
    "BaseTrainer",
    "LoopConfig",
    "LossLog",
    "MAX_HISTORY",
    "atomic_write",
    "load_safetensors",
    "read_run_config",
    "safetensors_step",
    "save_png",
    "save_safetensors",
    "tile_grid",
    "write_json",
]

logger = logging.getLogger(__name__)

CONFIG_FILE = "config.json"  # the run's record; also what resuming and loading read
LOG_FILE = "log.csv"
SAMPLES_DIR = "samples"
TENSORBOARD_DIR = "tensorboard"
MAX_HISTORY = 1000  # loss points kept in config.json; log.csv has them all


# ---------------------------------------------------------------------------------------
# Files


def atomic_write(path: Path, write: Callable[[Path], object]):
    """Write ``path`` through ``write(tmp_path)`` and a rename, so readers never see half a file.

    A run interrupted while saving leaves the previous file in place, never a truncated one.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    write(tmp)
    os.replace(tmp, path)


def write_json(path: Path, data: dict):
    """``data`` as indented JSON with a final newline, written atomically."""
    def write(tmp):
        with open(tmp, "w") as f:
            json.dump(data, f, indent=2)
            f.write("\n")

    atomic_write(path, write)


def save_safetensors(module: nn.Module, path: Path, step: int):
    """``module``'s state dict as safetensors with ``step`` in the metadata, atomically.

    The step lets `BaseTrainer.load_checkpoint` tell a consistent checkpoint from one whose
    writing was interrupted between two files.
    """
    from safetensors.torch import save_file

    state = {k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()}
    atomic_write(path, lambda tmp: save_file(state, str(tmp), metadata={"step": str(step)}))


def safetensors_step(path: Path) -> int | None:
    """The step `save_safetensors` recorded in ``path`` (None for a file without one)."""
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        step = (f.metadata() or {}).get("step")
    return None if step is None else int(step)


def load_safetensors(module: nn.Module, path: Path) -> int | None:
    """Load ``path`` into ``module`` strictly; returns the step recorded in the file."""
    path = Path(path)
    weights_lib.load_weights(module, path, path.name)
    return safetensors_step(path)


def read_run_config(out_dir, system: str) -> dict:
    """The ``config.json`` of a training folder; `WeightsMissing` naming ``system`` when absent."""
    path = Path(out_dir) / CONFIG_FILE
    if not path.is_file():
        raise weights_lib.WeightsMissing(f"{path} not found: {out_dir} holds no {system} training run")
    with open(path) as f:
        return json.load(f)


def tile_grid(rows: list[list[np.ndarray]]) -> np.ndarray:
    """Rows of equal-size HxWx3 uint8 tiles -> one image."""
    return np.concatenate([np.concatenate(row, axis=1) for row in rows], axis=0)


def save_png(path: Path, image: np.ndarray):
    """A uint8 HxWx3 image as PNG, atomically."""
    from PIL import Image

    atomic_write(path, lambda tmp: Image.fromarray(image).save(tmp, format="PNG"))


# ---------------------------------------------------------------------------------------
# Settings and the loss log


@dataclass(kw_only=True)
class LoopConfig:
    """The settings of the training loop, shared by every system's ``TrainConfig``.

    Keyword-only, so that a system's dataclass keeps its own positional fields
    (``data_dir``, ``out_dir``, ...) first. ``config.json`` records them under ``train``
    with the system's own fields.
    """

    max_steps: int | None = None  # optimisation steps of all calls; None: the system's full schedule
    time_budget: float | None = None  # seconds of this call, then a final checkpoint
    device: str = "auto"
    sample_every: int = 500  # steps between sample images; 0 disables
    log_every: int = 10  # steps between log.csv rows (mean of the steps since the last row)
    checkpoint_every: int = 1000  # steps between checkpoints; one is always written at the end
    resume: bool = True
    seed: int = 0
    num_workers: int = 0
    progress: bool = True

    def __post_init__(self):
        if self.max_steps is not None and self.max_steps < 1:
            raise InvalidInput(f"max_steps must be at least 1, got {self.max_steps}")
        if self.log_every < 1 or self.checkpoint_every < 1 or self.sample_every < 0:
            raise InvalidInput("log_every and checkpoint_every must be >= 1, sample_every >= 0")


@dataclass
class LossLog:
    """``log.csv`` (and TensorBoard when installed): one row of window means each time the
    trainer calls ``flush`` (every ``log_every`` steps).

    Args:
        path (`Path`): the CSV file; its columns are ``step``, ``time`` and ``names``.
        names (`tuple` of `str`): the loss columns, in order.
    """

    path: Path
    names: tuple[str, ...]
    window: dict = field(default_factory=lambda: defaultdict(list))
    writer: object = None

    def open(self, step: int, tensorboard_dir: Path):
        """Keep the rows up to ``step`` (those a resumed checkpoint covers), drop the rest."""
        header = ["step", "time", *self.names]
        rows = []
        if step > 0 and self.path.is_file():
            with open(self.path, newline="") as f:
                reader = csv.reader(f)
                if next(reader, None) == header:
                    rows = [row for row in reader if row and int(row[0]) <= step]

        def write(tmp):
            with open(tmp, "w", newline="") as f:
                csv.writer(f).writerows([header, *rows])

        atomic_write(self.path, write)
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:  # tensorboard is optional
            self.writer = None
        else:
            self.writer = SummaryWriter(str(tensorboard_dir), purge_step=step + 1)

    def add(self, losses: dict):
        """Add one step's losses to the current window."""
        for name, value in losses.items():
            self.window[name].append(value)

    def flush(self, step: int, seconds: float) -> dict | None:
        """Write the means of the window as one row; returns them (None for an empty window)."""
        if not self.window:
            return None
        means = {name: float(np.mean(values)) for name, values in self.window.items()}
        self.window.clear()
        with open(self.path, "a", newline="") as f:
            # A loss a step did not compute (the discriminator's during a warm-up) is left empty.
            csv.writer(f).writerow([step, f"{seconds:.3f}", *(f"{means[n]:.8g}" if n in means else ""
                                                              for n in self.names)])
        if self.writer is not None:
            for name, value in means.items():
                self.writer.add_scalar(f"loss/{name}", value, step)
        return means

    def close(self):
        """Close the TensorBoard writer, if any (the CSV file is opened per row)."""
        if self.writer is not None:
            self.writer.close()


# ---------------------------------------------------------------------------------------
# The trainer


class BaseTrainer:
    """One training run: the loop, budgets, resuming, logs and checkpoints of every system.

    A subclass calls ``super().__init__(config)`` first, then sets ``dataset`` (with
    ``set_epoch(epoch)``), ``batch_size``, ``steps_per_epoch`` and its networks and
    optimisers, and supplies:

    * `train_step` (one optimisation step, returning ``{loss name: float}``) and
      `loss_names` (the ``log.csv`` columns);
    * `total_steps` (its authors' schedule, used when ``max_steps`` is None);
    * `checkpoint_networks` (``{file name: module}``), the optimisers ``opt_g`` and
      ``opt_d`` (or its own `optimizers`) and the class attribute ``state_file`` (the
      optimiser / RNG state file);
    * `config_json` (what ``config.json`` records; `progress_entries` and
      `history_entries` give the shared parts) and `check_resumable`;
    * `save_samples`.

    Optional hooks: `start_run` (after resuming or resetting), `start_epoch` (before each
    epoch's batches, e.g. a learning-rate schedule), `restore_networks`, `summary_extras`.

    Attributes:
        name (`str`): the run's name in the progress bar and the log messages.
        shown_losses (`tuple`): the losses the progress bar shows.
        step (`int`): optimisation steps taken, over all calls.
        elapsed (`float`): training seconds, over all calls.
        history (`list`): the logged loss means, thinned to `MAX_HISTORY` points.
    """

    name = "train"
    state_file = "train_state.pt"
    shown_losses: tuple[str, ...] = ()

    def __init__(self, config: LoopConfig):
        self.config = config
        self.device = pick_device(config.device)
        self.out_dir = Path(config.out_dir)
        self.data_dir = Path(config.data_dir)
        self.step = 0
        self.elapsed = 0.0  # training seconds over all calls
        self.history: list[dict] = []
        self.last_saved: int | None = None
        self.last_outputs: dict | None = None  # the last step's outputs, for the sample images
        self.opt_g: torch.optim.Optimizer | None = None  # set by the system
        self.opt_d: torch.optim.Optimizer | None = None

    # -- what a system supplies -----------------------------------------------------------
    @property
    def loss_names(self) -> tuple[str, ...]:
        """The losses `train_step` returns, in ``log.csv`` column order."""
        raise NotImplementedError

    def train_step(self, batch: dict) -> dict:
        """One optimisation step on ``batch`` (a collated dataset batch); returns the losses."""
        raise NotImplementedError

    def total_steps(self) -> int:
        """Steps of the full schedule, trained when ``max_steps`` is None."""
        raise NotImplementedError

    def checkpoint_networks(self) -> dict[str, nn.Module]:
        """{file name: network} of every network a checkpoint holds, in writing order."""
        raise NotImplementedError

    @property
    def optimizers(self) -> dict[str, torch.optim.Optimizer | None]:
        """{key in the state file: optimiser}; None for one the run does not have.

        By default the generator side's ``opt_g`` and the discriminator side's ``opt_d``
        (both GAN systems have the two), kept as ``optimizer_g`` and ``optimizer_d``.
        """
        return {"optimizer_g": self.opt_g, "optimizer_d": self.opt_d}

    def config_json(self) -> dict:
        """The content of ``config.json``."""
        raise NotImplementedError

    def read_saved_config(self) -> dict:
        """``out_dir``'s ``config.json``, read (and checked) as the system's ``read_config`` does."""
        return read_run_config(self.out_dir, self.name)

    def check_resumable(self, saved: dict):
        """Raise `InvalidInput` when the run recorded in ``saved`` cannot continue here
        (`require_same` says so for the entries a system compares)."""

    def require_same(self, saved: dict, **entries):
        """`InvalidInput` unless ``saved`` (a run's ``config.json``) has these ``entries``' values.

        The message names the first value that differs, e.g. ``stage`` or
        ``networks.g2.channels_base``: a run folder holds one stage of one set of networks,
        and resuming it as another would mix their weights.
        """
        def first_difference(key, theirs, ours):
            if isinstance(theirs, dict) and isinstance(ours, dict):
                for name in dict.fromkeys([*ours, *theirs]):
                    found = first_difference(f"{key}.{name}", theirs.get(name), ours.get(name))
                    if found:
                        return found
                return None
            return (key, theirs, ours) if theirs != ours else None

        for key, value in entries.items():
            found = first_difference(key, saved.get(key), value)
            if found:
                raise InvalidInput(f"{self.out_dir} holds a run whose {found[0]} is {found[1]!r}, not {found[2]!r}; "
                                   "train with the same settings, into another folder, or start it again "
                                   "(resume=False, --restart)")

    def save_samples(self, batch: dict | None = None):
        """Images of the last step's outputs into ``out_dir/samples/``."""

    # -- hooks ----------------------------------------------------------------------------
    def start_run(self):
        """Called once per `run`, after resuming (or starting afresh), before the first step."""

    def start_epoch(self, epoch: int):
        """Called before the batches of ``epoch`` (also of a resumed, partly trained one)."""

    def summary_extras(self) -> dict:
        """Entries the system adds to the summary `run` returns."""
        return {}

    def restore_networks(self) -> dict[str, int | None]:
        """Load every checkpointed network from ``out_dir``; {file name: step in the file}."""
        return {name: load_safetensors(module, self.out_dir / name)
                for name, module in self.checkpoint_networks().items()}

    # -- data -----------------------------------------------------------------------------
    def epoch_batches(self, epoch: int) -> list[list[int]]:
        """The clip indices of every batch of ``epoch``: a shuffle seeded by (seed, epoch).

        ``steps_per_epoch`` batches: the full ones only when the system drops the last
        partial batch (the authors' ``drop_last=True``), else every batch.
        """
        order = np.random.default_rng([self.config.seed, epoch]).permutation(len(self.dataset)).tolist()
        batches = [order[i: i + self.batch_size] for i in range(0, len(order), self.batch_size)]
        return batches[: self.steps_per_epoch]

    def epoch_loader(self, epoch: int, skip: int = 0):
        """The batches of ``epoch`` from batch ``skip`` on (a resumed run skips those trained)."""
        self.dataset.set_epoch(epoch)
        # A generator of its own: creating a loader iterator draws a seed, which must not come
        # from the global RNG (dropout's) or a resumed run would drop out differently.
        generator = torch.Generator().manual_seed(self.config.seed * 100_003 + epoch)
        loader = DataLoader(self.dataset, batch_sampler=self.epoch_batches(epoch)[skip:],
                            num_workers=self.config.num_workers, pin_memory=self.device.type == "cuda",
                            generator=generator)
        yield from loader

    # -- config.json ----------------------------------------------------------------------
    def train_record(self) -> dict:
        """``asdict(config)`` with the folders resolved: the ``train`` entry of ``config.json``."""
        record = asdict(self.config)
        record["data_dir"] = str(self.data_dir.resolve())
        record["out_dir"] = str(self.out_dir.resolve())
        return record

    def progress_entries(self) -> dict:
        """``step``, ``epoch``, ``elapsed_seconds`` and ``data_dir`` for ``config.json``."""
        return {
            "step": self.step,
            "epoch": self.step / self.steps_per_epoch,
            "elapsed_seconds": round(self.elapsed, 3),
            "data_dir": str(self.data_dir.resolve()),
        }

    def history_entries(self) -> dict:
        """``train``, ``loss_summary`` (first, last and min of each loss) and ``loss_history``."""
        summary = {}
        for name in self.loss_names:
            values = [point[name] for point in self.history if name in point]
            if values:
                summary[name] = {"first": values[0], "last": values[-1], "min": min(values)}
        return {"train": self.train_record(), "loss_summary": summary, "loss_history": self.history}

    # -- checkpoints ----------------------------------------------------------------------
    def save_checkpoint(self):
        """Weights, optimiser states, RNG state, then ``config.json``; each file atomically."""
        self.out_dir.mkdir(parents=True, exist_ok=True)
        for file_name, network in self.checkpoint_networks().items():
            save_safetensors(network, self.out_dir / file_name, self.step)
        state = {"step": self.step, "elapsed": self.elapsed}
        for key, optimizer in self.optimizers.items():
            state[key] = optimizer.state_dict() if optimizer is not None else {}
        state["rng_cpu"] = torch.get_rng_state()
        state["rng_cuda"] = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []
        atomic_write(self.out_dir / self.state_file, lambda tmp: torch.save(state, tmp))
        write_json(self.out_dir / CONFIG_FILE, self.config_json())
        self.last_saved = self.step

    def load_checkpoint(self) -> bool:
        """Continue from ``out_dir``'s checkpoint; False when there is none to continue."""
        if not (self.out_dir / CONFIG_FILE).is_file():
            return False
        saved = self.read_saved_config()
        self.check_resumable(saved)
        state = torch.load(self.out_dir / self.state_file, map_location="cpu", weights_only=True)
        steps = {CONFIG_FILE: saved["step"], self.state_file: state["step"], **self.restore_networks()}
        if len(set(steps.values())) != 1:
            raise InvalidInput(f"the checkpoint in {self.out_dir} is inconsistent (steps {steps}); "
                               "it was interrupted while being written: pass resume=False")
        for key, optimizer in self.optimizers.items():
            if optimizer is not None:
                optimizer.load_state_dict(state[key])
        torch.set_rng_state(state["rng_cpu"])
        if torch.cuda.is_available() and len(state["rng_cuda"]) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(state["rng_cuda"])
        self.step = self.last_saved = int(state["step"])
        self.elapsed = float(state["elapsed"])
        self.history = list(saved.get("loss_history", []))
        logger.info("resuming %s from step %d in %s", self.name, self.step, self.out_dir)
        return True

    # -- samples --------------------------------------------------------------------------
    def samples_dir(self) -> Path:
        """``out_dir/samples``, created when missing."""
        folder = self.out_dir / SAMPLES_DIR
        folder.mkdir(parents=True, exist_ok=True)
        return folder

    def save_sample_grid(self, file_name: str, rows: list[list[np.ndarray]]):
        """``samples/<file_name>``: rows of equal-size uint8 tiles as one PNG."""
        save_png(self.samples_dir() / file_name, tile_grid(rows))

    # -- the loop -------------------------------------------------------------------------
    def run(self) -> dict:
        """Train until ``max_steps`` (or the full schedule) or ``time_budget``; checkpoint.

        Returns a summary dict: ``step``, ``stopped`` (``"max_steps"`` or
        ``"time_budget"``), ``seconds`` (this call), ``elapsed`` (all calls), ``losses``
        (means of the last logged window), ``out_dir`` and the system's `summary_extras`.
        """
        config = self.config
        self.out_dir.mkdir(parents=True, exist_ok=True)
        if not (config.resume and self.load_checkpoint()):
            self.step, self.history, self.last_saved = 0, [], None
        self.start_run()
        total = config.max_steps or self.total_steps()
        log = LossLog(self.out_dir / LOG_FILE, self.loss_names)
        log.open(self.step, self.out_dir / TENSORBOARD_DIR)

        start, elapsed_before = time.monotonic(), self.elapsed
        stopped, last_losses, in_step = "max_steps", {}, False
        bar = tqdm(total=total, initial=min(self.step, total), desc=self.name, unit="step",
                   disable=not config.progress, dynamic_ncols=True)
        try:
            while self.step < total and stopped == "max_steps":
                epoch, skip = divmod(self.step, self.steps_per_epoch)
                self.start_epoch(epoch)
                for batch in self.epoch_loader(epoch, skip):
                    in_step = True
                    losses = self.train_step(batch)
                    self.step += 1
                    in_step = False
                    self.elapsed = elapsed_before + time.monotonic() - start
                    log.add(losses)
                    if self.step % config.log_every == 0:
                        last_losses = self.log_window(log)
                    if config.sample_every and self.step % config.sample_every == 0:
                        self.save_samples(batch)
                    if self.step % config.checkpoint_every == 0:
                        self.save_checkpoint()
                    bar.update(1)
                    bar.set_postfix({k: f"{losses[k]:.4g}" for k in self.shown_losses if k in losses})
                    if config.time_budget is not None and time.monotonic() - start >= config.time_budget:
                        stopped = "time_budget"
                    if self.step >= total or stopped != "max_steps":
                        break
        finally:
            # Also on KeyboardInterrupt or an error between steps: keep what was trained. A
            # step cut short leaves the networks half updated, so then the last checkpoint stays.
            if not in_step:
                last_losses = self.log_window(log) or last_losses
                if self.last_saved != self.step:
                    self.save_checkpoint()
            log.close()
            bar.close()
        return {"step": self.step, "stopped": stopped, "seconds": time.monotonic() - start,
                "elapsed": self.elapsed, "losses": last_losses, **self.summary_extras(),
                "out_dir": str(self.out_dir)}

    def log_window(self, log: LossLog) -> dict:
        """Write the window's means to ``log`` and the history; returns them ({} for none)."""
        means = log.flush(self.step, self.elapsed)
        if means is None:
            return {}
        self.history.append({"step": self.step, **means})
        if len(self.history) > MAX_HISTORY:  # keep the newest point, thin the rest evenly
            self.history = self.history[:-1:2] + self.history[-1:]
        return means

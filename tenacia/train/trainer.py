"""The single-process trainer: data, model, optimizer, checkpoints, metrics, around ``train_step``.

The replica layer (``tenacia.train.replicas``) builds on the same object: it calls
``batch_ids``/``commit`` itself, and runs its share of each step with its quorum's all-reduce
between the two halves of ``step.py``, instead of ``fit``.

Resume contract: ``resume()`` restores parameters, AdamW moments, RNG states, the sampler position,
the step and the token counter from the newest checkpoint that verifies and that no deposed leader
saved (its term is not older than the sample ledger's at its step), and rewinds the sample ledger
to that step. With the same thread count, N steps straight and N steps with any number of kills
and resumes in between give ``torch.equal`` weights on CPU.

Outer state: under ``replicas.sync`` diloco or streaming the trainer also holds ``outer``
(``outer.OuterState``: global parameters and outer momenta), saved as ``outer.safetensors`` and
restored with the rest; a single process's ``fit`` has none.

Terms: a single process writes its ledger records and checkpoint manifests under ``term``, the
newest term its ledger already holds (0 unless a replica run wrote the ledger before), so that it
continues a replica run's ledger instead of being read as a deposed leader. A replica's leader
passes its own term to ``save_checkpoint``.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch

from .. import checkpoint as ckpt
from .. import config as cfglib
from .. import hooks
from ..data.dataset import prepare_data
from ..data.ledger import SampleLedger
from ..data.sampler import Sampler
from ..device import Device, detect
from ..events import EventLog
from ..model import build_model, loss_fn
from ..storage import atomic_write
from .config import RunConfig
from .metrics import MetricsLog, expert_metrics
from .outer import OuterState
from .progress import Progress
from .second_moment import build_noise_corrected
from .step import StepResult, build_optimizer, lr_at, train_step


class Trainer:
    def __init__(self, cfg: RunConfig, *, source: str = "trainer", write_ledger: bool = True):
        self.cfg = cfg
        self.run_dir = Path(cfg.train.run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        if cfg.device.threads:
            torch.set_num_threads(cfg.device.threads)
        self.device: Device = detect(cfg.device.type)
        self.events = EventLog(self.run_dir / "events.jsonl", source)
        self.data = prepare_data(cfg.data, cfg.model.vocab_size)
        vocab = self.data.tokenizer.get_vocab_size()
        cfglib.check(vocab <= cfg.model.vocab_size, "model.vocab_size", cfg.model.vocab_size,
                     f"at least the tokenizer's vocabulary size {vocab}")
        torch.manual_seed(cfg.train.seed)
        self.model = build_model(cfg.model)
        self.model.reset_parameters(seed=cfg.train.seed)
        self.model.to(self.device.torch)
        o = cfg.optim
        if cfg.low_communication and cfg.replicas.outer.inner_second_moment == "noise_corrected":
            self.optimizer = build_noise_corrected(self.model, lr=o.lr, weight_decay=o.weight_decay,
                                                   betas=(o.beta1, o.beta2), eps=o.eps, reference=cfg.train.batch_size)
        else:
            self.optimizer = build_optimizer(self.model, lr=o.lr, weight_decay=o.weight_decay,
                                             betas=(o.beta1, o.beta2), eps=o.eps, device=self.device)
        self.outer = self._outer_state()
        self.sampler = Sampler(len(self.data.train), cfg.data.seed)
        self.ledger = SampleLedger(self.run_dir / "ledger.jsonl") if write_ledger else None
        self.term = self.ledger.newest_term() if self.ledger is not None else 0
        self.checkpoints = ckpt.CheckpointWriter(self.run_dir / "checkpoints", cfg.checkpoint.keep,
                                                 cfg.checkpoint.background, self.events)
        self.step = 0  # last committed step
        self.tokens_seen = 0  # committed target tokens, all members together
        self._write_run_files()

    def _outer_state(self) -> OuterState | None:
        """The global parameters and outer optimizer of a diloco or streaming run (``outer.py``);
        None under ddp (and ignored by a single process's ``fit``)."""
        if not self.cfg.low_communication:
            return None
        fragments = self.cfg.replicas.outer.fragments if self.cfg.replicas.sync == "streaming" else 1
        n = len(list(self.model.parameters()))
        cfglib.check(fragments <= n, "replicas.outer.fragments", fragments,
                     f"at most the model's {n} parameter tensors")
        return OuterState(self.model, self.cfg.replicas.outer, fragments)

    # ----- run directory -------------------------------------------------------------------
    def _write_run_files(self) -> None:
        """config.toml and tokenizer.json, each replaced atomically (replicas share the run dir)."""
        for name, data in (("config.toml", cfglib.dumps_toml(self.cfg).encode()),
                           ("tokenizer.json", self.data.tokenizer_path.read_bytes())):
            target = self.run_dir / name
            if target.exists() and target.read_bytes() == data:
                continue
            atomic_write(target, data)

    def meta(self) -> dict[str, Any]:
        return {"config": cfglib.to_dict(self.cfg), "sampler": self.sampler.state_dict(),
                "tokens_seen": self.tokens_seen, "data_fingerprint": self.data.fingerprint}

    # ----- checkpoints -----------------------------------------------------------------------
    def save_checkpoint(self, term: int | None = None) -> None:
        """Save under leader term ``term`` (default: this process's ``term``)."""
        meta = dict(self.meta(), term=self.term if term is None else term)
        snap = ckpt.take_snapshot(self.step, self.model, self.optimizer, self.device.type, meta)
        if self.outer is not None:
            snap.files["outer.safetensors"] = {k: v.detach().to("cpu", copy=True).contiguous()
                                               for k, v in (self.outer.tensors() | self.outer.own_tensors()).items()}
        self.checkpoints.save(snap)

    def resume(self, event: str = "resumed") -> bool:
        """Load the newest verified checkpoint, if any. Returns whether one was loaded. ``event``
        names what is logged: the run resumed, or (a replica) one process loaded a starting point."""
        found = ckpt.latest_verified(self.run_dir / "checkpoints", self.events,
                                     term_at=SampleLedger(self.run_dir / "ledger.jsonl").terms())
        if found is None:
            return False
        path, manifest = found
        self.load_state(path, manifest)
        self.events.emit(event, step=self.step, path=str(path))
        return True

    def load_state(self, path: Path, manifest: dict[str, Any]) -> None:
        if manifest.get("data_fingerprint") != self.data.fingerprint:
            raise ckpt.CorruptCheckpoint(f"checkpoint {path} was trained on other data (fingerprint differs)")
        ckpt.load_model_weights(self.model, path)
        ckpt.load_optimizer_tensors(self.model, self.optimizer, ckpt.load_file(path, "optimizer.safetensors"))
        ckpt.restore_rng(ckpt.load_file(path, "state.safetensors"), self.device.type)
        if self.outer is not None:  # a checkpoint without one (written under ddp) starts the outer loop afresh
            if "outer.safetensors" in manifest.get("files", {}):
                self.outer.load(ckpt.load_file(path, "outer.safetensors"))
            else:
                self.outer.take_model(self.model)
        self.sampler.load_state_dict(manifest["sampler"])
        self.step = int(manifest["step"])
        self.tokens_seen = int(manifest["tokens_seen"])
        if self.ledger is not None:
            self.ledger.rewind(self.step, term=self.term)

    # ----- one step ----------------------------------------------------------------------------
    def lr(self, step: int) -> float:
        o = self.cfg.optim
        return lr_at(step, lr=o.lr, warmup_steps=o.warmup_steps, total_steps=o.schedule_steps(self.cfg.train.steps),
                     min_lr_ratio=o.min_lr_ratio)

    def batch_ids(self) -> tuple[int, list[int]]:
        """The next global batch: (stream position of its first sample, sample ids)."""
        return self.sampler.position, self.sampler.peek(self.cfg.train.batch_size)

    def run_step(self, ids: list[int]) -> StepResult:
        """Forward/backward/update on ``ids`` for step ``self.step + 1``."""
        batch = self.data.train.get(ids)
        return train_step(self.model, self.optimizer, batch, step=self.step + 1, lr=self.lr(self.step + 1),
                          grad_clip=self.cfg.optim.grad_clip, micro_batch_size=self.cfg.train.micro_batch_size,
                          device=self.device, loss_denominator=self.cfg.train.batch_size)

    def commit(self, start: int, ids: list[int], tokens: int, samples: int | None = None) -> None:
        """Record a step that was applied: advance the sampler (by ``samples``, default the ids'
        count), the ledger and the counters. The only place a step is committed: single-process
        training and every replica (``replicas/apply.py``) go through it."""
        self.step += 1
        self.sampler.advance(len(ids) if samples is None else samples)
        self.tokens_seen += tokens
        if self.ledger is not None:
            self.ledger.record(self.step, start, ids, term=self.term)

    def step_once(self) -> StepResult:
        """One committed step of single-process training: draw, compute, apply, record."""
        start, ids = self.batch_ids()
        result = self.run_step(ids)
        self.commit(start, ids, result.tokens)
        hooks.reach("between_steps", self.step)
        return result

    @torch.no_grad()
    def evaluate(self) -> float:
        """Mean loss over a fixed set of held-out windows."""
        self.model.eval()
        n = min(len(self.data.eval), self.cfg.train.eval_batches * self.cfg.train.micro_batch_size)
        total = 0.0
        for start in range(0, n, self.cfg.train.micro_batch_size):
            ids = list(range(start, min(n, start + self.cfg.train.micro_batch_size)))
            batch = self.data.eval.get(ids).to(self.device.torch)
            with self.device.autocast():
                total += loss_fn(self.model(batch[:, :-1]), batch[:, 1:]).item() * len(ids)
        self.model.train()
        return total / max(n, 1)

    def sampler_identity(self) -> dict[str, int]:
        """What ``tenacia report --check`` replays the sample ledger against (``run_started``)."""
        return {"samples": len(self.data.train), "sampler_seed": self.cfg.data.seed}

    # ----- the loop ------------------------------------------------------------------------------
    def fit(self) -> dict[str, Any]:
        """Train to ``train.steps`` on this process alone; returns a summary."""
        tc = self.cfg.train
        # one process has no outer loop (replicas.sync diloco, streaming): it trains plain steps, and
        # its checkpoints carry no outer state (a replica run resuming one starts the outer loop afresh)
        self.outer = None
        if not (self.cfg.checkpoint.resume and self.resume()) and self.ledger is not None:
            self.ledger.rewind(0, term=self.term)  # from scratch: records of an earlier, lost attempt no longer count
        self.events.emit("run_started", step=self.step, replicas=1, device=self.device.describe(),
                         **self.sampler_identity())
        metrics = MetricsLog(self.run_dir)
        progress = Progress(total=tc.steps, start=self.step, enabled=tc.progress)
        t_start = time.perf_counter()
        window_loss, window_tokens, t_window = 0.0, 0, time.perf_counter()
        window_loads: list[list[list[int]]] = []  # MoE: each step's expert loads since the last line
        eval_loss = None
        with progress:
            while self.step < tc.steps:
                result = self.step_once()
                window_loss += result.loss
                window_tokens += result.tokens
                if result.expert_loads is not None:
                    window_loads.append(result.expert_loads)
                if self.step % tc.log_every == 0 or self.step == tc.steps:
                    n = (self.step - 1) % tc.log_every + 1
                    dt = time.perf_counter() - t_window
                    moe = expert_metrics(window_loads, self.model.expert_biases().tolist()) if window_loads else {}
                    record = metrics.write(step=self.step, loss=window_loss / n, lr=self.lr(self.step),
                                           grad_norm=result.grad_norm, tokens_per_s=window_tokens / dt,
                                           tokens=self.tokens_seen, **moe)
                    progress.update(self.step, loss=record["loss"], tokens_per_s=record["tokens_per_s"])
                    window_loss, window_tokens, t_window = 0.0, 0, time.perf_counter()
                    window_loads = []
                else:
                    progress.update(self.step)
                if tc.eval_every and self.step % tc.eval_every == 0 and self.step < tc.steps:
                    eval_loss = self.evaluate()
                    metrics.write(step=self.step, eval_loss=eval_loss)
                    self.events.emit("eval", step=self.step, eval_loss=eval_loss)
                if self.cfg.checkpoint.every and self.step % self.cfg.checkpoint.every == 0:
                    self.save_checkpoint()
        eval_loss = self.evaluate()
        metrics.write(step=self.step, eval_loss=eval_loss)
        self.events.emit("eval", step=self.step, eval_loss=eval_loss)
        self.save_checkpoint()
        self.checkpoints.wait()
        self.events.emit("state_fingerprint", step=self.step, replica=0, fingerprint=ckpt.state_fingerprint(
            self.step, self.sampler.state_dict(), self.model, self.optimizer))
        wall = time.perf_counter() - t_start
        self.events.emit("run_finished", step=self.step, wall_s=wall, committed_tokens=self.tokens_seen)
        return {"step": self.step, "eval_loss": eval_loss, "wall_s": wall, "tokens": self.tokens_seen,
                "checkpoint": str(self.checkpoints.last_path)}


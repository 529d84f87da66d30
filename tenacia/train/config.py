"""The config tree of a training run: ``RunConfig`` and the sections training owns.

``RunConfig`` gathers every section a run reads: the model's shape (``tenacia.shape``), data,
optimizer, loop, checkpoints, device, replicas, their numeric checks and the faults to inject (``tenacia.faults``).
``tenacia config show`` prints it whole with its defaults. Fields that moved keep working from
old TOML files, run directories and ``-o`` overrides for now (``RunConfig.MOVED``): the loader
reads them at their new place and says so once.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from ..checkpoint.config import CheckpointConfig
from ..config import check, check_choice
from ..data.config import DataConfig
from ..device_config import DeviceConfig
from ..faults import ChaosConfig
from ..shape import ModelConfig


@dataclass(kw_only=True, slots=True)
class OptimConfig:
    """AdamW with linear warmup then cosine decay to ``min_lr_ratio * lr``."""

    lr: float = 3e-3
    weight_decay: float = 0.1  # applied to matrices only, not to norms
    beta1: float = 0.9
    beta2: float = 0.95
    eps: float = 1e-8
    warmup_steps: int = 30
    min_lr_ratio: float = 0.1
    grad_clip: float = 1.0  # max global gradient norm; 0 disables clipping
    # steps the warmup and cosine span (0: train.steps); a run past them goes on at min_lr_ratio * lr,
    # so a run that continues past a budget trains that budget exactly as a run of that length would
    decay_steps: int = 0

    def __post_init__(self) -> None:
        check(self.lr > 0, "lr", self.lr, "a positive number")
        check(self.weight_decay >= 0, "weight_decay", self.weight_decay, "a number >= 0")
        check(0 <= self.beta1 < 1, "beta1", self.beta1, "a number in [0, 1)")
        check(0 <= self.beta2 < 1, "beta2", self.beta2, "a number in [0, 1)")
        check(self.eps > 0, "eps", self.eps, "a positive number")
        check(self.warmup_steps >= 0, "warmup_steps", self.warmup_steps, "an integer >= 0")
        check(0 <= self.min_lr_ratio <= 1, "min_lr_ratio", self.min_lr_ratio, "a number in [0, 1]")
        check(self.grad_clip >= 0, "grad_clip", self.grad_clip, "a number >= 0 (0 disables)")
        check(self.decay_steps >= 0, "decay_steps", self.decay_steps, "an integer >= 0 (0: train.steps)")

    def schedule_steps(self, train_steps: int) -> int:
        """The steps the schedule spans in a run of ``train_steps``."""
        return self.decay_steps or train_steps


@dataclass(kw_only=True, slots=True)
class TrainConfig:
    """The loop: how many steps, how big, how often to evaluate and log."""

    run_dir: str = "runs/default"  # checkpoints, metrics.jsonl, events.jsonl, tokenizer.json
    steps: int = 300
    batch_size: int = 16  # samples per optimizer step (the global batch, across all replicas)
    micro_batch_size: int = 16  # samples per forward/backward; batch_size must be a multiple
    eval_every: int = 50  # steps (diloco, streaming: outer rounds) between held-out evals; 0: only at the end
    eval_batches: int = 4
    log_every: int = 10
    seed: int = 0  # model init and any randomness in the step
    progress: bool = True  # live progress bar on a terminal

    def __post_init__(self) -> None:
        check(self.steps > 0, "steps", self.steps, "a positive integer")
        check(self.batch_size > 0, "batch_size", self.batch_size, "a positive integer")
        check(self.micro_batch_size > 0, "micro_batch_size", self.micro_batch_size, "a positive integer")
        check(self.batch_size % self.micro_batch_size == 0, "batch_size", self.batch_size,
              f"a multiple of train.micro_batch_size={self.micro_batch_size}")
        check(self.eval_every >= 0, "eval_every", self.eval_every, "an integer >= 0")
        check(self.eval_batches > 0, "eval_batches", self.eval_batches, "a positive integer")
        check(self.log_every > 0, "log_every", self.log_every, "a positive integer")


SYNC_STRATEGIES = ("ddp", "diloco", "streaming")  # replicas.sync (replicas/sync.py, docs/sync.md)
SYNC_ALIASES = {"every_step": "ddp"}  # names configs written before the strategies were named still use
LOW_COMMUNICATION = ("diloco", "streaming")  # strategies whose protocol step is an outer round


SECOND_MOMENTS = ("own", "noise_corrected")  # replicas.outer.inner_second_moment (train/second_moment.py)
OUTER_TRANSPORTS = ("gloo", "streams")  # replicas.outer.transport (docs/sync.md)
QUANTIZE = ("fp32", "int8", "int4", "int2")  # replicas.outer.quantize (replicas/compress.py)
COMPRESSED_EXCHANGES = ("all_gather", "reduce_scatter")  # replicas.outer.exchange (replicas/compressed_reduce.py)


@dataclass(kw_only=True, slots=True)
class TransportConfig:
    """The long-link transport's mesh (``tenacia.train.transport``, ``Mesh.open``): the settings of
    ``[replicas.outer.mesh]``, read when ``replicas.outer.transport = "streams"``."""

    streams: int = 4  # TCP streams to each peer; a transfer is split evenly across them
    # Socket buffers of each stream, bytes; 0: the kernel's autotuning. Sized to the link's
    # bandwidth-delay product divided by ``streams`` when the link is known (``window_for``).
    window_bytes: int = 0
    # At or below this many bytes an all-reduce sends its whole input to every peer and sums
    # locally: half a round trip, (R-1) x the bytes. Above, reduce-scatter then all-gather: one
    # round trip, 2 (R-1)/R x the bytes (``collectives.py``).
    small_bytes: int = 65536
    timeout_s: float = 60.0  # a call (or opening the mesh) that has not completed by then raises

    def __post_init__(self) -> None:
        check(1 <= self.streams <= 64, "streams", self.streams, "an integer from 1 to 64")
        check(self.window_bytes >= 0, "window_bytes", self.window_bytes, "a number of bytes >= 0 (0: autotuning)")
        check(self.small_bytes >= 0, "small_bytes", self.small_bytes, "a number of bytes >= 0")
        check(self.timeout_s > 0, "timeout_s", self.timeout_s, "a positive number of seconds")


@dataclass(kw_only=True, slots=True)
class OuterConfig:
    """The outer loop of the low-communication strategies (``replicas.sync = "diloco" | "streaming"``,
    ``docs/sync.md``); ignored under ``ddp``.

    A protocol step is then one *round*: ``inner_steps`` inner AdamW steps on each replica from the
    round's global parameters, then one outer Nesterov SGD step on the token-weighted average of the
    replicas' pseudo-gradients (global minus local parameters). ``train.steps`` counts rounds, and
    a round's batch is ``inner_steps x train.batch_size`` samples.
    """

    inner_steps: int = 16  # H: inner steps per round (each replica's share of a round is split into H batches)
    lr: float = 0.7  # outer learning rate (DiLoCo's 0.7)
    momentum: float = 0.9  # Nesterov momentum of the outer SGD (DiLoCo's 0.9)
    # the outer exchange: "fp32", "int8", "int4" (symmetric, absmax scale per block) or "int2" (four
    # levels at +-rms/2 and +-3 rms/2 of the block, replicas/compress.py)
    quantize: str = "fp32"
    block: int = 256  # elements per scale block of int8/int4/int2 (and per top-k block)
    error_feedback: bool = True  # what quantization and top-k did not send is kept per replica and sent next round
    topk: float = 0.0  # fraction of each block kept, the largest magnitudes (0: off, every element is sent)
    # How a compressed exchange (quantize not fp32, or topk) travels (replicas/compressed_reduce.py):
    # "all_gather" (every member's payload to every member, which sums them: R - 1 payloads received
    # a member, one one-way trip) or "reduce_scatter" (chunk j of every payload to member j, which
    # sums and re-quantizes it and sends that to every member: 2 (R - 1) / R payloads received, two
    # one-way trips, a second quantization whose error is dropped)
    exchange: str = "all_gather"
    fragments: int = 4  # streaming only: F fragments of the parameters, round r syncs fragment r mod F
    # streaming only: a round's fragment exchange runs beside its inner steps and carries the
    # fragment as the previous round left it; the outer step lands one round late (docs/sync.md)
    overlap: bool = True
    mix: float = 0.5  # streaming's overlap: a fragment's local copy becomes mix x local + (1 - mix) x global
    # streaming's overlap only, in place of mix: the eager outer step (Kale et al. 2025). A member at
    # rest holds the global parameters less its own progress not yet averaged; its inner steps start
    # from the outer step that progress would make as the average's stand-in, and the real step lands
    # when the average does (docs/sync.md)
    eager: bool = False
    # diloco, and streaming's eager step: once a member's exchange of round r is reduced (the average
    # in hand) it trains round r + 1's first inner batches while the vote and verdict are in flight,
    # from the start the commit would give; kept when the committed round's start, batch and share
    # are bit for bit those it assumed, otherwise redone with its inner moments restored (docs/sync.md)
    speculate: bool = False
    # diloco only, in place of speculate: the delayed outer step (Streaming DiLoCo's tau, Douillard
    # et al. 2025). Once a member's round r is trained it sends its pseudo-gradient and trains round
    # r + 1's first `delay` inner batches from its own end-of-round parameters while the exchange,
    # vote and verdict fly; then rebases them on the commit: parameters = new global + (own now - own
    # at round r's end). 0: off (the round starts from the new global). Less than inner_steps; a
    # member's own end-of-round parameters are in its checkpoint (docs/sync.md)
    delay: int = 0
    # What carries the outer exchange: "gloo" (torch's process group, one TCP connection per peer)
    # or "streams" (tenacia's long-link transport: several streams per peer, one round trip)
    transport: str = "gloo"
    # What a member's inner AdamW divides by: "own" (the second moment of its own gradients, AdamW's)
    # or "noise_corrected" (each inner batch as two halves, a per-coordinate unbiased estimate of the
    # second moment of the mean gradient over train.batch_size samples, ddp's; no communication;
    # tenacia/train/second_moment.py)
    inner_second_moment: str = "own"
    mesh: TransportConfig = field(default_factory=TransportConfig)  # transport = "streams" only

    def __post_init__(self) -> None:
        check(self.inner_steps >= 1, "inner_steps", self.inner_steps, "a positive integer")
        check(self.lr > 0, "lr", self.lr, "a positive number")
        check(0 <= self.momentum < 1, "momentum", self.momentum, "a number in [0, 1)")
        check_choice("quantize", self.quantize, QUANTIZE)
        check_choice("exchange", self.exchange, COMPRESSED_EXCHANGES)
        check(self.block >= 1, "block", self.block, "a positive integer")
        check(0 <= self.topk < 1, "topk", self.topk, "a fraction in [0, 1) (0: off)")
        check(self.fragments >= 1, "fragments", self.fragments, "a positive integer")
        check(0 <= self.mix <= 1, "mix", self.mix, "a number in [0, 1] (0: the global parameters replace the local)")
        check_choice("transport", self.transport, OUTER_TRANSPORTS)
        check_choice("inner_second_moment", self.inner_second_moment, SECOND_MOMENTS)
        check(isinstance(self.delay, int) and 0 <= self.delay < self.inner_steps, "delay", self.delay,
              f"an integer in [0, inner_steps = {self.inner_steps}) (0: off)")


@dataclass(kw_only=True, slots=True)
class ReplicaConfig:
    """Fault-tolerant data-parallel replicas (``tenacia train --replicas N``).

    Failure detection needs no hand-set timeout: a crash is seen when its connections close, a
    hang after ``max(hang_floor_s, hang_factor x median step time)`` measured over recent steps.
    """

    count: int = 1  # replicas the launcher starts on this host (1 without --replicas: one plain process)
    first_id: int = 0  # replica ids on this host are first_id .. first_id + count - 1 (unique per job)
    min_replicas: int = 1  # never form a quorum smaller than this (training waits instead)
    max_replicas: int = 64  # newcomers beyond this wait outside the quorum
    host: str = "127.0.0.1"  # address replicas listen on and advertise to peers
    join: list[str] = field(default_factory=list)  # HOST:PORT of any live replica, to join a running job
    restart_budget: int = 20  # process restarts the launcher allows in a run, all replicas together
    spares: int = 1  # warm replica processes kept ready (imported, built, loaded) to replace a dead one
    restart_backoff_s: float = 0.2  # first restart delay; doubles per consecutive crash of a replica, max 5 s
    # Heartbeats come every 0.1 s (``replicas.timing.Timing``, which holds every other duration)
    # from a thread of their own; the bounds below sit above the longest gap at the leader seen
    # with crashes, hangs and heals on 2 cores (docs/benchmarks.md, "Run of 2026-11-24,
    # 01:25-01:38", hang bound).
    hang_floor_s: float = 0.5  # hang detection never fires sooner than this
    hang_factor: float = 1.5  # ... nor sooner than this many median step times
    join_grace_s: float = 20.0  # at start, how long the first leader waits for all `count` replicas
    # Where leader terms are claimed (``replicas.lease``): "dir" (files in the run directory: one host
    # or a shared POSIX filesystem) or "etcd://HOST:PORT[/PREFIX]" (an etcd lease per term, renewed in
    # the background; a leader cut off from etcd stops committing within lease_ttl_s).
    lease: str = "dir"
    lease_ttl_s: int = 3  # etcd only: seconds an etcd lease outlives its last renewal
    # What a step reduces and when (replicas/sync.py, docs/sync.md): "ddp" (gradients, every step;
    # "every_step" is its old name), "diloco" or "streaming" (a step is an outer round: [replicas.outer]).
    sync: str = "ddp"
    outer: OuterConfig = field(default_factory=OuterConfig)
    vote_checks: list[str] = field(default_factory=list)  # checks on every vote (replicas/votecheck.py)

    def __post_init__(self) -> None:
        check(self.count >= 1, "count", self.count, "a positive integer")
        check(self.first_id >= 0, "first_id", self.first_id, "an integer >= 0")
        check(1 <= self.min_replicas <= max(self.count, 1), "min_replicas", self.min_replicas,
              f"an integer in 1..replicas.count={self.count}")
        check(self.max_replicas >= self.count, "max_replicas", self.max_replicas,
              f"at least replicas.count={self.count}")
        check(self.restart_budget >= 0, "restart_budget", self.restart_budget, "an integer >= 0")
        check(self.spares in (0, 1), "spares", self.spares, "0 or 1")
        check(self.restart_backoff_s >= 0, "restart_backoff_s", self.restart_backoff_s, "a number >= 0")
        check(self.hang_floor_s > 0, "hang_floor_s", self.hang_floor_s, "a positive number of seconds")
        check(self.hang_factor >= 1, "hang_factor", self.hang_factor, "a number >= 1")
        check_choice("sync", self.sync, (*SYNC_STRATEGIES, *SYNC_ALIASES))
        if self.sync == "streaming":  # 1 fragment with overlap: diloco's exchange beside the next round
            check(self.outer.fragments >= 2 or self.outer.overlap, "outer.fragments", self.outer.fragments,
                  "at least 2 under replicas.sync='streaming' without outer.overlap (1 fragment is 'diloco')")
        check(not self.outer.eager or (self.sync == "streaming" and self.outer.overlap), "outer.eager",
              self.outer.eager, "false unless replicas.sync='streaming' with outer.overlap (the step it makes early is the overlap's)")
        check(not self.outer.speculate or self.sync == "diloco" or self.outer.eager, "outer.speculate",
              self.outer.speculate, "false unless replicas.sync='diloco' or outer.eager (the mix's start is not known early)")
        check(not self.outer.delay or (self.sync == "diloco" and not self.outer.speculate), "outer.delay",
              self.outer.delay, "0 unless replicas.sync='diloco' without outer.speculate (its inner batches ahead "
              "take the speculation's place)")
        check(self.lease == "dir" or self.lease.startswith("etcd://"), "lease", self.lease,
              "'dir' or 'etcd://HOST:PORT[/PREFIX]'")
        check(isinstance(self.lease_ttl_s, int) and self.lease_ttl_s >= 2, "lease_ttl_s", self.lease_ttl_s,
              "an integer number of seconds >= 2 (etcd's shortest lease)")
        for addr in self.join:
            check(":" in addr and addr.rpartition(":")[2].isdigit(), "join", addr, "HOST:PORT addresses")


@dataclass(kw_only=True, slots=True)
class NumericsConfig:
    """How replicas check each other's numbers (``tenacia.train.numerics``, ``docs/fault-model.md``).

    Triggers are cheap and heuristic (non-finite values, spikes against robust baselines, a sampled
    recomputation that disagrees); a trigger only starts a re-execution, and every verdict (a
    transient fault, a faulty replica, an unstable batch) comes from comparing re-executions bit
    for bit. Needs two or more replicas; naming the replica whose state or reduced gradients differ
    needs a majority, so three or more.
    """

    check: bool = True  # finite flags, spike statistics and fingerprints on every vote (replicas only)
    audit_p: float = 1 / 32  # per step, the chance a healthy peer recomputes another's share (0: never)
    spike_z: float = 6.0  # a value this many robust deviations above its baseline is a spike ...
    # ... if it is also this many times the baseline: gradient norms swing 10x in clean runs of small
    # models (an exponent flip makes them 1e30x), the step's loss rarely grows by half unless the model broke
    norm_ratio: float = 50.0
    loss_ratio: float = 1.5
    warmup_steps: int = 20  # steps before spikes over time are judged (the baseline settles first)
    strikes_to_evict: int = 2  # strikes within the window that evict a replica by name
    strike_window_steps: int = 1000  # how far back strikes and transient faults count
    transients_to_evict: int = 3  # transient faults within the window that evict a replica (intermittent); 0: never
    seed: int = 0  # which steps are audited, and by whom (the same on every replica)

    def __post_init__(self) -> None:
        check(0 <= self.audit_p <= 1, "audit_p", self.audit_p, "a probability in [0, 1]")
        check(self.spike_z > 0, "spike_z", self.spike_z, "a positive number of deviations")
        check(self.norm_ratio > 1, "norm_ratio", self.norm_ratio, "a number > 1")
        check(self.loss_ratio > 1, "loss_ratio", self.loss_ratio, "a number > 1")
        check(self.warmup_steps >= 0, "warmup_steps", self.warmup_steps, "an integer >= 0")
        check(self.strikes_to_evict >= 1, "strikes_to_evict", self.strikes_to_evict, "an integer >= 1")
        check(self.transients_to_evict >= 0, "transients_to_evict", self.transients_to_evict,
              "an integer >= 0 (0: transient faults never evict)")
        check(self.strike_window_steps >= 1, "strike_window_steps", self.strike_window_steps, "an integer >= 1")


@dataclass(kw_only=True, slots=True)
class RunConfig:
    """The whole config of a training run (one process or replicas)."""

    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    device: DeviceConfig = field(default_factory=DeviceConfig)
    replicas: ReplicaConfig = field(default_factory=ReplicaConfig)
    numerics: NumericsConfig = field(default_factory=NumericsConfig)
    chaos: ChaosConfig = field(default_factory=ChaosConfig)

    # the short flags of ``tenacia train``: argparse dest -> the tree field each is an alias of
    FLAGS: ClassVar[dict[str, str]] = {"run_dir": "train.run_dir", "replicas": "replicas.count"}
    # old dotted name -> new one (tenacia 0.1.0 before the one [device] section)
    MOVED: ClassVar[dict[str, str]] = {
        "train.device": "device.type",
        "train.threads": "device.threads",
        "replicas.threads": "device.threads",
    }

    def __post_init__(self) -> None:
        if self.data.tokenizer == "train":
            check(self.model.vocab_size >= 300, "model.vocab_size", self.model.vocab_size,
                  "at least 300 for a trained byte-level BPE (256 bytes plus special tokens and merges)")
        check(self.data.seq_len <= self.model.max_seq_len, "data.seq_len", self.data.seq_len,
              f"at most model.max_seq_len={self.model.max_seq_len}")
        if self.replicas.sync in LOW_COMMUNICATION:
            check(not self.model.is_moe, "replicas.sync", self.replicas.sync,
                  "'ddp' for a mixture-of-experts model (its balancing biases move with the summed loads of "
                  "every step; diloco and streaming train dense models)")

    @property
    def low_communication(self) -> bool:
        """Is a protocol step an outer round (``replicas.sync`` diloco or streaming)?"""
        return self.replicas.sync in LOW_COMMUNICATION

    @property
    def step_samples(self) -> int:
        """Samples in one protocol step's global batch: ``train.batch_size``, times
        ``replicas.outer.inner_steps`` when a step is an outer round."""
        return self.train.batch_size * (self.replicas.outer.inner_steps if self.low_communication else 1)

    @property
    def replica_threads(self) -> int:
        """torch threads of one replica process: ``device.threads``, or 1 when it is 0 (several
        replicas share the host's cores; more than one thread each oversubscribes them)."""
        return self.device.threads or 1

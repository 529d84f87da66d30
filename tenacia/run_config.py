"""The root of the config tree: one ``RunConfig`` describes a whole run.

Sections are owned by the components they configure; later pillars (replicas, chaos, sync,
serve) add their section here.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .chaos.config import ChaosConfig
from .config import check
from .data.config import DataConfig
from .model.llama import ModelConfig
from .train.config import CheckpointConfig, OptimConfig, ReplicaConfig, TrainConfig


@dataclass(kw_only=True, slots=True)
class RunConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    chaos: ChaosConfig = field(default_factory=ChaosConfig)
    replicas: ReplicaConfig = field(default_factory=ReplicaConfig)

    def __post_init__(self) -> None:
        if self.data.tokenizer == "train":
            check(self.model.vocab_size >= 300, "model.vocab_size", self.model.vocab_size,
                  "at least 300 for a trained byte-level BPE (256 bytes plus special tokens and merges)")
        check(self.data.seq_len <= self.model.max_seq_len, "data.seq_len", self.data.seq_len,
              f"at most model.max_seq_len={self.model.max_seq_len}")

"""What a checkpoint holds, as tensors: weights, AdamW moments and RNG states, in and out.

A ``Snapshot`` is the host-memory copy of a trainer's state that a checkpoint write (or a peer's
healing) starts from; taking it is the only part of a save the training loop waits for. Every
tensor is named by the parameter it belongs to, so a snapshot loads back bit for bit.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import torch

from .format import CorruptCheckpoint, Snapshot, load_file


def model_tensors(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Parameters and persistent buffers, each shared tensor once (under its first name)."""
    out: dict[str, torch.Tensor] = {}
    seen: set[int] = set()
    for name, t in model.state_dict(keep_vars=False).items():
        key = t.data_ptr()
        if key in seen:
            continue
        seen.add(key)
        out[name] = t
    return out


def optimizer_tensors(model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, torch.Tensor]:
    names = {id(p): n for n, p in model.named_parameters()}
    out = {}
    for p, state in optimizer.state.items():
        for key, value in state.items():
            if torch.is_tensor(value):
                out[f"{names[id(p)]}.{key}"] = value
    return out


def state_fingerprint(step: int, sampler_state: dict[str, Any], model: torch.nn.Module,
                      optimizer: torch.optim.Optimizer) -> str:
    """SHA-256 over weights, AdamW moments, step and sampler position: equal iff replicas agree."""
    return tensors_fingerprint(step, sampler_state, [model_tensors(model), optimizer_tensors(model, optimizer)])


def tensors_fingerprint(step: int, sampler_state: dict[str, Any], parts: list[dict[str, torch.Tensor]]) -> str:
    """SHA-256 over step, sampler position and each part's tensors by name (``state_fingerprint``
    of whatever state a sync strategy replicates)."""
    h = hashlib.sha256(json.dumps([step, sampler_state]).encode())
    for tensors in parts:
        for name in sorted(tensors):
            h.update(name.encode())
            h.update(tensors[name].detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def load_optimizer_tensors(model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                           tensors: dict[str, torch.Tensor]) -> None:
    """Restore optimizer state from ``optimizer_tensors`` output (exact, bit for bit)."""
    params = dict(model.named_parameters())
    state: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        name, _, field = key.rpartition(".")
        if name not in params:
            raise CorruptCheckpoint(f"optimizer state for unknown parameter '{name}'")
        state.setdefault(name, {})[field] = value
    optimizer.state.clear()
    for name, fields in state.items():
        p = params[name]
        optimizer.state[p] = {
            k: (v.to(p.device) if k != "step" else v.clone()) for k, v in fields.items()
        }


def rng_tensors(device_type: str) -> dict[str, torch.Tensor]:
    out = {"rng.cpu": torch.get_rng_state()}
    if device_type != "cpu" and hasattr(torch, "accelerator"):
        module = getattr(torch, device_type, None)
        if module is not None and hasattr(module, "get_rng_state"):
            out["rng.accelerator"] = module.get_rng_state()
    return out


def restore_rng(tensors: dict[str, torch.Tensor], device_type: str) -> None:
    torch.set_rng_state(tensors["rng.cpu"])
    if "rng.accelerator" in tensors:
        getattr(torch, device_type).set_rng_state(tensors["rng.accelerator"])


def take_snapshot(step: int, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                  device_type: str, meta: dict[str, Any]) -> Snapshot:
    """Copy the state to host memory: the only part of a save the training loop waits for."""

    def host(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {k: v.detach().to("cpu", copy=True).contiguous() for k, v in tensors.items()}

    files = {
        "model.safetensors": host(model_tensors(model)),
        "optimizer.safetensors": host(optimizer_tensors(model, optimizer)),
        "state.safetensors": host(rng_tensors(device_type)),
    }
    return Snapshot(step, files, dict(meta, step=step))


def load_model_weights(model: torch.nn.Module, path: Path) -> None:
    """Load ``model.safetensors`` into ``model`` (tied weights re-tie by sharing storage)."""
    tensors = load_file(path, "model.safetensors")
    missing, unexpected = model.load_state_dict(tensors, strict=False)
    tied = {n for n in missing if getattr(getattr(model, "cfg", None), "tie_embeddings", False) and n == "output.weight"}
    if set(missing) - tied or unexpected:
        raise CorruptCheckpoint(
            f"checkpoint {path}: weights do not fit the model (missing {sorted(set(missing) - tied)}, unexpected {sorted(unexpected)})"
        )

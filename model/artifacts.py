"""The model as three parts, and their save / load through the registry.

``load_encoder`` (batch encode job), ``load_online`` (serving) and ``load_item_tower``
(index job) each read only their own weights plus the version's config.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from pathlib import Path
from typing import Any

import torch
from torch import nn

from model import registry as reg
from model.config import ModelConfig
from model.towers import ItemTower, OnlineTower, SequenceEncoder
from towerline.core.contracts import DEFAULT_MODEL_NAME

PARTS = ("encoder", "online", "item_tower")


@dataclasses.dataclass
class TwoTower:
    """The three parts of one model version."""

    cfg: ModelConfig
    encoder: SequenceEncoder
    online: OnlineTower
    item_tower: ItemTower

    @classmethod
    def build(cls, cfg: ModelConfig, seed: int = 0) -> TwoTower:
        """Freshly initialised parts (deterministic for ``seed``)."""
        torch.manual_seed(seed)
        encoder, item_tower = SequenceEncoder(cfg), ItemTower(cfg)
        if cfg.tie_pin_embeddings:
            # Shared in training; each part still saves (and loads) its own copy.
            encoder.pin = item_tower.pin
        return cls(cfg, encoder, OnlineTower(cfg), item_tower)

    def parts(self) -> dict[str, nn.Module]:
        return {"encoder": self.encoder, "online": self.online, "item_tower": self.item_tower}

    def train(self, mode: bool = True) -> TwoTower:
        for module in self.parts().values():
            module.train(mode)
        return self

    def eval(self) -> TwoTower:
        return self.train(False)

    def parameters(self) -> list[nn.Parameter]:
        """Every parameter once (a tied table belongs to two parts)."""
        unique = {id(p): p for module in self.parts().values() for p in module.parameters()}
        return list(unique.values())

    def state(self) -> dict[str, dict[str, torch.Tensor]]:
        """A detached copy of every part's state dict."""
        return {
            name: {k: v.detach().clone() for k, v in module.state_dict().items()}
            for name, module in self.parts().items()
        }

    def load_state(self, state: dict[str, dict[str, torch.Tensor]]) -> None:
        for name, module in self.parts().items():
            module.load_state_dict(state[name])


def save_model(
    registry: Path,
    model: TwoTower,
    window: dict[str, Any],
    metrics: dict[str, Any],
    model_name: str = DEFAULT_MODEL_NAME,
    keep: int = 3,
    train_config: dict[str, Any] | None = None,
    now: dt.datetime | None = None,
) -> str:
    """Register ``model`` as the next version of ``model_name``; returns the version."""
    documents = {
        "config": {"model": model.cfg.to_json(), "train": train_config or {}},
        "window": window,
        "metrics": metrics,
    }
    weights = {name: module.state_dict() for name, module in model.parts().items()}
    return reg.save_version(registry, model_name, weights, documents, keep=keep, now=now)


def load_config(
    registry: Path, version: str | None = None, model_name: str = DEFAULT_MODEL_NAME
) -> tuple[str, ModelConfig]:
    """(resolved version, its ModelConfig); ``version`` None / "latest" = the newest."""
    version = reg.resolve_version(registry, model_name, version)
    config = reg.load_document(registry, model_name, version, "config")
    return version, ModelConfig.from_json(config["model"])


def _load_part(
    registry: Path, version: str | None, model_name: str, part: str, factory: type[nn.Module]
) -> nn.Module:
    version, cfg = load_config(registry, version, model_name)
    module = factory(cfg)
    module.load_state_dict(reg.load_weights(registry, model_name, version, part))
    return module.eval()


def load_encoder(
    registry: Path, version: str | None = None, model_name: str = DEFAULT_MODEL_NAME
) -> SequenceEncoder:
    """The offline part alone, in eval mode."""
    return _load_part(registry, version, model_name, "encoder", SequenceEncoder)


def load_online(
    registry: Path, version: str | None = None, model_name: str = DEFAULT_MODEL_NAME
) -> OnlineTower:
    """The online part (context layer + head) alone, in eval mode."""
    return _load_part(registry, version, model_name, "online", OnlineTower)


def load_item_tower(
    registry: Path, version: str | None = None, model_name: str = DEFAULT_MODEL_NAME
) -> ItemTower:
    """The item tower alone, in eval mode."""
    return _load_part(registry, version, model_name, "item_tower", ItemTower)


def load_model(
    registry: Path, version: str | None = None, model_name: str = DEFAULT_MODEL_NAME
) -> tuple[str, TwoTower]:
    """All three parts of a version: (resolved version, model in eval mode)."""
    version, cfg = load_config(registry, version, model_name)
    model = TwoTower(
        cfg,
        load_encoder(registry, version, model_name),
        load_online(registry, version, model_name),
        load_item_tower(registry, version, model_name),
    )
    return version, model.eval()

"""Generators and critics, built by kind name from a config.

``build_generator("mlp", width=256)`` / ``build_critic("dcgan28", n_classes=10)``. An unknown
kind or keyword raises ``UserError`` naming what was wrong and what is valid.
"""

from __future__ import annotations

import difflib
import inspect
from typing import Any

from torch import nn

from gradpen.errors import UserError
from gradpen.nets.dcgan import (
    DCGANCritic28,
    DCGANCritic32,
    DCGANCritic64,
    DCGANGenerator28,
    DCGANGenerator32,
    DCGANGenerator64,
)
from gradpen.nets.mlp import MLPCritic, MLPGenerator
from gradpen.nets.resnet import ResNetCritic32, ResNetGenerator32
from gradpen.nets.zoo import PatchGANCritic

GENERATORS: dict[str, type[nn.Module]] = {
    "mlp": MLPGenerator,
    "dcgan28": DCGANGenerator28,
    "dcgan32": DCGANGenerator32,
    "dcgan64": DCGANGenerator64,
    "resnet32": ResNetGenerator32,  # the WGAN-GP paper's CIFAR-10 ResNet
}
CRITICS: dict[str, type[nn.Module]] = {
    "mlp": MLPCritic,
    "dcgan28": DCGANCritic28,
    "dcgan32": DCGANCritic32,
    "dcgan64": DCGANCritic64,
    "resnet32": ResNetCritic32,
    "patch": PatchGANCritic,  # pix2pix's PatchGAN: one score per patch, (B, 1, H', W')
}

__all__ = [
    "CRITICS",
    "GENERATORS",
    "DCGANCritic28",
    "DCGANCritic32",
    "DCGANCritic64",
    "DCGANGenerator28",
    "DCGANGenerator32",
    "DCGANGenerator64",
    "MLPCritic",
    "MLPGenerator",
    "ResNetCritic32",
    "ResNetGenerator32",
    "accepts",
    "build_critic",
    "build_generator",
    "critic_accepts",
]


def _closest(name: str, valid: list[str]) -> str:
    """A ' (did you mean X?)' hint when ``name`` is close to a valid one, else ''."""
    match = difflib.get_close_matches(name, valid, n=1)
    return f" (did you mean {match[0]!r}?)" if match else ""


def _build(role: str, registry: dict[str, type[nn.Module]], kind: str, **kw: Any) -> nn.Module:
    """Instantiate ``registry[kind](**kw)`` after checking the kind and the keyword names."""
    if kind not in registry:
        kinds = sorted(registry)
        raise UserError(
            f"unknown {role} kind {kind!r}{_closest(kind, kinds)}; valid kinds: {', '.join(kinds)}"
        )
    cls = registry[kind]
    valid = [p for p in inspect.signature(cls.__init__).parameters if p != "self"]
    for key in kw:
        if key not in valid:
            raise UserError(
                f"unknown option {key!r}{_closest(key, valid)} for {role} {kind!r}; "
                f"valid options: {', '.join(valid)}"
            )
    return cls(**kw)


def build_generator(kind: str, **kw: Any) -> nn.Module:
    """A generator of ``kind`` (a key of :data:`GENERATORS`) with the given constructor options."""
    return _build("generator", GENERATORS, kind, **kw)


def accepts(registry: dict[str, type[nn.Module]], kind: str, option: str) -> bool:
    """Whether ``registry[kind]`` (:data:`CRITICS` or :data:`GENERATORS`) takes ``option``."""
    cls = registry.get(kind)
    return cls is not None and option in inspect.signature(cls.__init__).parameters


def critic_accepts(kind: str, option: str) -> bool:
    """Whether the critic ``kind`` (a key of :data:`CRITICS`) takes the constructor ``option``."""
    return accepts(CRITICS, kind, option)


def build_critic(kind: str, **kw: Any) -> nn.Module:
    """A critic of ``kind`` (a key of :data:`CRITICS`) with the given constructor options."""
    return _build("critic", CRITICS, kind, **kw)

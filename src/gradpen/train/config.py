"""Run configuration: dataclasses read from TOML, ``--set section.key=value`` overrides.

Unknown keys and bad values raise :class:`~gradpen.errors.UserError` naming the key and
what is allowed (or the closest valid key); the resolved config is written back as TOML.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_type_hints

from gradpen.augment import parse_policy
from gradpen.errors import UserError
from gradpen.losses import LOSSES
from gradpen.outputs import REDUCTIONS
from gradpen.registry import OPTION_BOUNDS, PENALTIES


@dataclass
class DataConfig:
    """What the generator learns: a 2-D toy or an image set."""

    # 8gaussians | 25gaussians | swissroll | mnist5k | mnist | digits8x8 | stacked-mnist
    # | folder | npz
    name: str = "25gaussians"
    root: str = ""  # the IDX folder (mnist), the image folder (folder), the .npz file (npz)
    conditional: bool = False  # image sets: condition both networks on the labels
    holdout: float = 0.2  # image sets: fraction kept out of training for evaluation
    resolution: int = 32  # folder / npz: side of the square images (resized, center-cropped)
    channels: int = 3  # folder / npz: 1 (grayscale) or 3 (RGB)
    cache: str = ""  # folder: decoded-image cache; "" = $GRADPEN_CACHE or ~/.cache/gradpen


@dataclass
class NetConfig:
    """A network: its kind (``mlp``, ``dcgan28``) and constructor options."""

    kind: str = "mlp"
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class TrainConfig:
    """The loop (WGAN-GP's Algorithm 1, generalized); defaults are the algorithm's."""

    loss: str = "wgan"
    steps: int = 1000  # generator steps
    n_critic: int = 5  # critic steps per generator step
    n_generator: int = 1  # generator steps per round (Patel & Siddiki: 2)
    batch_size: int = 64
    g_lr: float = 1e-4
    d_lr: float = 1e-4
    g_betas: list[float] = field(default_factory=lambda: [0.5, 0.9])
    d_betas: list[float] = field(default_factory=lambda: [0.5, 0.9])
    lr_decay: str = "none"  # none | linear (to 0 at the last step)
    ema: float = 0.0  # generator EMA decay; 0 turns it off
    clip: float = 0.0  # weight clipping of the critic after each step; 0 turns it off
    spectral_norm: bool = False  # spectral normalization on every critic layer
    device: str = "cpu"
    threads: int = 0  # CPU threads for torch; 0 = auto (see threads_for), a number wins
    precision: str = "fp32"  # fp32 | bf16 | fp16 (autocast; fp16 with GradScaler)
    compile: bool = False  # the critic step through gradpen.compiled.CompiledCriticStep
    channels_last: bool = False  # conv networks in channels-last (NHWC) memory format
    augment: str = ""  # DiffAugment families, e.g. "color,translation,cutout"; "" = off


@dataclass
class PenaltyConfig:
    """The penalty term (see ``gradpen.Penalty``)."""

    name: str = "wgan-gp"
    weight: float = 10.0
    every: int = 1
    reuse_forward: bool = True  # R1/R2 take their gradient from the loss's forward pass
    allow_batchnorm: bool = False
    reduce: str = "sum"  # a patch / multi-output critic's per-sample score: "sum" or "mean"
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class LogConfig:
    """How often the run writes metrics, checkpoints and pictures (in generator steps)."""

    every: int = 100
    checkpoint_every: int = 500
    samples_every: int = 0  # 0: at checkpoints only
    eval_samples: int = 2500
    inception: str = ""  # a TorchScript Inception file: the evaluation adds its FID and KID
    progress: bool = True
    tensorboard: bool = False  # TensorBoard events beside metrics.jsonl


@dataclass
class Config:
    """A whole run."""

    seed: int = 0
    data: DataConfig = field(default_factory=DataConfig)
    generator: NetConfig = field(default_factory=NetConfig)
    critic: NetConfig = field(default_factory=NetConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    penalty: PenaltyConfig = field(default_factory=PenaltyConfig)
    log: LogConfig = field(default_factory=LogConfig)


PRECISIONS = ("fp32", "bf16", "fp16")
TOY_DATA = ("8gaussians", "25gaussians", "swissroll")
# Stacked data: each image stacks that many random digits of the named set as its channels.
STACKED_DATA = {"stacked-mnist": ("mnist5k", 3)}
IMAGE_DATA = ("mnist5k", "mnist", "digits8x8", *STACKED_DATA)
USER_IMAGE_DATA = ("folder", "npz")  # the user's images, at data.resolution and data.channels
CHOICES: dict[str, tuple[str, ...]] = {
    "data.name": TOY_DATA + IMAGE_DATA + USER_IMAGE_DATA,
    "train.loss": tuple(LOSSES),
    "train.lr_decay": ("none", "linear"),
    "train.precision": PRECISIONS,
    "penalty.name": tuple(PENALTIES),
    "penalty.reduce": REDUCTIONS,
}
SECTIONS = tuple(f.name for f in dataclasses.fields(Config) if f.name != "seed")


def _closest(key: str, valid: list[str]) -> str:
    match = difflib.get_close_matches(key, valid, n=1)
    return f" (did you mean {match[0]!r}?)" if match else ""


def _coerce(path: str, value: Any, kind: Any) -> Any:
    """``value`` as type ``kind``, or a UserError naming the key and the expected type."""
    if kind is bool:
        if isinstance(value, bool):
            return value
    elif kind is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif kind is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
    elif kind is str:
        if isinstance(value, str):
            return value
    elif getattr(kind, "__origin__", None) is list:
        if isinstance(value, list) and all(
            isinstance(v, int | float) and not isinstance(v, bool) for v in value
        ):
            return [float(v) for v in value]
    elif getattr(kind, "__origin__", None) is dict and isinstance(value, dict):
        return dict(value)
    name = getattr(kind, "__name__", str(kind))
    raise UserError(f"{path} must be of type {name}, got {value!r}")


def _fill(section: Any, values: dict[str, Any], prefix: str) -> None:
    hints = get_type_hints(type(section))
    names = [f.name for f in dataclasses.fields(section)]
    for key, value in values.items():
        path = f"{prefix}{key}"
        if key not in names:
            raise UserError(
                f"unknown config key {path!r}{_closest(key, names)}; valid keys in "
                f"[{prefix.rstrip('.') or 'top level'}]: {', '.join(names)}"
            )
        setattr(section, key, _coerce(path, value, hints[key]))


def _net_values(values: dict[str, Any]) -> dict[str, Any]:
    """A [generator]/[critic] table: ``kind`` plus free options (checked by the net factory)."""
    values = dict(values)
    options = dict(values.pop("options", {}))
    kind = values.pop("kind", None)
    options.update(values)
    return {"options": options} | ({"kind": kind} if kind is not None else {})


def from_dict(raw: dict[str, Any]) -> Config:
    """A validated :class:`Config` from a nested dict (a parsed TOML file)."""
    config = Config()
    valid_top = ["seed", *SECTIONS]
    for key, value in raw.items():
        if key == "seed":
            config.seed = _coerce("seed", value, int)
        elif key in SECTIONS:
            if not isinstance(value, dict):
                raise UserError(f"[{key}] must be a table, got {value!r}")
            if key in ("generator", "critic"):
                value = _net_values(value)
            _fill(getattr(config, key), value, f"{key}.")
        else:
            raise UserError(
                f"unknown config key {key!r}{_closest(key, valid_top)}; valid top-level keys: "
                f"{', '.join(valid_top)}"
            )
    validate(config)
    return config


def _check_positive(path: str, value: float, *, allow_zero: bool = False) -> None:
    ok = math.isfinite(value) and (value >= 0 if allow_zero else value > 0)
    if not ok:
        raise UserError(f"{path} must be {'>= 0' if allow_zero else '> 0'}, got {value}")


def validate(config: Config) -> None:
    """Check values against their allowed ranges and choices."""
    for path, allowed in CHOICES.items():
        section, key = path.split(".")
        value = getattr(getattr(config, section), key)
        if value not in allowed:
            raise UserError(
                f"{path} = {value!r} is not allowed{_closest(value, list(allowed))}; "
                f"choose one of: {', '.join(allowed)}"
            )
    t = config.train
    for path, value in [
        ("train.steps", t.steps),
        ("train.n_critic", t.n_critic),
        ("train.n_generator", t.n_generator),
        ("train.batch_size", t.batch_size),
        ("train.g_lr", t.g_lr),
        ("train.d_lr", t.d_lr),
        ("penalty.every", config.penalty.every),
        ("log.every", config.log.every),
        ("log.checkpoint_every", config.log.checkpoint_every),
        ("log.eval_samples", config.log.eval_samples),
    ]:
        _check_positive(path, value)
    for path, value in [
        ("train.ema", t.ema),
        ("train.clip", t.clip),
        ("penalty.weight", config.penalty.weight),
        ("log.samples_every", config.log.samples_every),
    ]:
        _check_positive(path, value, allow_zero=True)
    if t.threads < 0:
        raise UserError(f"train.threads must be >= 0 (0 = automatic), got {t.threads}")
    _check_penalty_options(config.penalty)
    if t.ema >= 1:
        raise UserError(f"train.ema must be in [0, 1), got {t.ema}")
    for path, betas in [("train.g_betas", t.g_betas), ("train.d_betas", t.d_betas)]:
        if len(betas) != 2 or not all(0 <= b < 1 for b in betas):
            raise UserError(f"{path} must be two numbers in [0, 1), got {betas}")
    if not 0 < config.data.holdout < 1:
        raise UserError(f"data.holdout must be in (0, 1), got {config.data.holdout}")
    if config.data.name == "mnist" and not config.data.root:
        raise UserError("data.name = 'mnist' needs data.root: the folder holding the IDX files")
    if config.data.name in USER_IMAGE_DATA and not config.data.root:
        what = (
            "a folder of PNG/JPEG/WebP images" if config.data.name == "folder" else "an .npz file"
        )
        raise UserError(f"data.name = {config.data.name!r} needs data.root: {what}")
    if config.data.conditional and config.data.name in TOY_DATA:
        raise UserError(f"data.conditional needs labels; {config.data.name!r} has none")
    if config.log.inception and not Path(config.log.inception).is_file():
        raise UserError(
            f"log.inception = {config.log.inception!r} is not a file; give the path of a "
            'TorchScript Inception (e.g. inception-2015-12-05.pt), or "" for none'
        )
    if config.data.conditional and config.data.name in STACKED_DATA:
        raise UserError(
            f"data.conditional is not available for {config.data.name!r}: its labels are the "
            "modes that the evaluation counts; train it unconditionally (data.conditional = false)"
        )
    _check_augment(config)


def _check_augment(config: Config) -> None:
    """``train.augment``: known families, and images to apply them to."""
    try:
        families = parse_policy(config.train.augment)
    except ValueError as error:
        raise UserError(f"train.augment: {error}") from None
    if families and config.data.name in TOY_DATA:
        raise UserError(
            f"train.augment augments images; data {config.data.name!r} is a 2-D toy. "
            'Use an image data set or train.augment = ""'
        )


def _check_penalty_options(penalty: PenaltyConfig) -> None:
    """The penalty options' values, checked before any training against the registry's bounds.

    Unknown options are refused by :class:`~gradpen.Penalty` when the run starts.
    """
    for key, value in penalty.options.items():
        bound = OPTION_BOUNDS.get(key)
        if bound is not None and not bound[0](value):
            raise UserError(f"penalty.options.{key} must be {bound[1]}, got {value!r}")


def threads_for(config: Config) -> int | None:
    """The CPU threads a run uses: ``train.threads`` when set, else an automatic choice.

    Automatic (``train.threads = 0``): one thread when both networks are MLPs (the toys), where
    more threads make a step no faster and, beside another run, many times slower (they spin on
    a busy core: ``benchmarks/thread_crossover.py``, ``benchmarks/concurrent_runs.py``); half of
    the CPUs (at least one) for convolutional networks, so that two runs side by side do not
    oversubscribe the machine. ``None`` when ``OMP_NUM_THREADS`` is set: torch follows it.
    """
    if config.train.threads:
        return config.train.threads
    if "OMP_NUM_THREADS" in os.environ:
        return None
    if config.generator.kind == "mlp" and config.critic.kind == "mlp":
        return 1
    usable = (
        os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else range(os.cpu_count() or 1)
    )
    return max(1, len(usable) // 2)


def parse_override(text: str) -> tuple[list[str], Any]:
    """``section.key=value`` -> (path, value); the value is read as TOML, else as a string."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise UserError(f"--set takes section.key=value, got {text!r}")
    try:
        value = tomllib.loads(f"v = {raw.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw.strip()
    return key.strip().split("."), value


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """A copy of ``raw`` with each ``section.key=value`` set."""
    merged = {k: dict(v) if isinstance(v, dict) else v for k, v in raw.items()}
    for text in overrides:
        path, value = parse_override(text)
        table = merged
        for part in path[:-1]:
            table = table.setdefault(part, {})
            if not isinstance(table, dict):
                raise UserError(f"--set {text!r}: {part!r} is not a table")
        table[path[-1]] = value
    return merged


def read_toml(path: str | Path) -> dict[str, Any]:
    """Parse a TOML file; a missing or malformed file is a UserError."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"config file {str(path)!r} does not exist")
    try:
        return tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as error:
        raise UserError(f"config file {str(path)!r} is not valid TOML: {error}") from None


def load(path: str | Path | None, overrides: list[str] = ()) -> Config:
    """The config from a TOML file (defaults if ``path`` is None) with overrides applied."""
    raw = read_toml(path) if path is not None else {}
    return from_dict(apply_overrides(raw, list(overrides)))


def to_dict(config: Config) -> dict[str, Any]:
    """The config as nested plain data; net options appear as keys of their table."""
    raw = dataclasses.asdict(config)
    for net in ("generator", "critic"):
        table = raw[net]
        raw[net] = {"kind": table["kind"], **table["options"]}
    return raw


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {value!r} to TOML")


def to_toml(config: Config) -> str:
    """The fully resolved config as TOML text (round-trips through :func:`from_dict`)."""
    raw = to_dict(config)
    lines = [f"seed = {raw.pop('seed')}"]

    def table(name: str, values: dict[str, Any]) -> None:
        lines.append(f"\n[{name}]")
        nested = {k: v for k, v in values.items() if isinstance(v, dict)}
        for key, value in values.items():
            if key not in nested:
                lines.append(f"{key} = {_toml_value(value)}")
        for key, value in nested.items():
            table(f"{name}.{key}", value)

    for section, values in raw.items():
        table(section, values)
    return "\n".join(lines) + "\n"

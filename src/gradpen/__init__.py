"""gradpen: gradient penalties for GAN critics and beyond: correct, fast, tested."""

from gradpen.allocator import keep_freed_memory
from gradpen.diagnose import diagnose
from gradpen.errors import UserError
from gradpen.gradients import gradient_of_scores, input_gradient, penalty_forward
from gradpen.penalties import (
    dragan,
    grad_norm,
    interpolate,
    perturb,
    r1,
    r2,
    wgan_div,
    wgan_gp,
    zero_centered,
)
from gradpen.penalty import Penalty, lazy_adam_hyperparameters, lazy_penalty_step
from gradpen.registry import PENALTIES, PenaltySpec

__version__ = "0.1.0"
"""The package version."""

__all__ = [
    "PENALTIES",
    "Penalty",
    "PenaltySpec",
    "UserError",
    "__version__",
    "diagnose",
    "dragan",
    "grad_norm",
    "gradient_of_scores",
    "input_gradient",
    "interpolate",
    "keep_freed_memory",
    "lazy_adam_hyperparameters",
    "lazy_penalty_step",
    "penalty_forward",
    "perturb",
    "r1",
    "r2",
    "wgan_div",
    "wgan_gp",
    "zero_centered",
]

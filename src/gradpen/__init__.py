"""gradpen: gradient penalties for GAN critics and beyond: correct, fast, tested."""

from gradpen.errors import UserError
from gradpen.penalties import (
    PENALTIES,
    Penalty,
    dragan,
    grad_norm,
    gradient_of_scores,
    input_gradient,
    interpolate,
    lazy_adam_hyperparameters,
    penalty_forward,
    perturb,
    r1,
    r2,
    wgan_gp,
    zero_centered,
)

__version__ = "0.1.0"

__all__ = [
    "PENALTIES",
    "Penalty",
    "UserError",
    "__version__",
    "dragan",
    "grad_norm",
    "gradient_of_scores",
    "input_gradient",
    "interpolate",
    "lazy_adam_hyperparameters",
    "penalty_forward",
    "perturb",
    "r1",
    "r2",
    "wgan_gp",
    "zero_centered",
]

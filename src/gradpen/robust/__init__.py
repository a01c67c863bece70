"""Input-gradient penalties beyond GANs: double backpropagation for robust classifiers.

``double_backprop_loss`` trains a classifier with ``CE + weight/2 * ||grad_x CE||^2``;
``fgsm`` and ``pgd`` are the L-infinity attacks that evaluate it; ``SmallCNN`` is the
classifier the robustness study trains; ``train_classifier`` is its minibatch loop.
"""

from gradpen.robust.attacks import fgsm, pgd, robust_accuracy
from gradpen.robust.double_backprop import (
    SCALINGS,
    double_backprop_loss,
    input_gradient_penalty,
    per_sample_weight,
)
from gradpen.robust.nets import SmallCNN
from gradpen.robust.train import train_classifier

__all__ = [
    "SCALINGS",
    "SmallCNN",
    "double_backprop_loss",
    "fgsm",
    "input_gradient_penalty",
    "per_sample_weight",
    "pgd",
    "robust_accuracy",
    "train_classifier",
]

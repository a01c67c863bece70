"""The small CNN the robustness study trains: cheap enough for several CPU runs."""

from __future__ import annotations

from torch import Tensor, nn


class SmallCNN(nn.Module):
    """Two 5x5 conv blocks (``width`` and ``2 * width`` channels, ReLU, 2x max-pool), a
    ``hidden``-wide fully connected ReLU layer and a 10-way linear head, for 28x28 digits.

    No batch normalization: the input-gradient penalty needs each sample's output to depend
    on that sample only.

    Args:
        width: channels of the first conv block (the second has ``2 * width``).
        hidden: width of the fully connected layer.
        num_classes: the number of classes.
    """

    def __init__(self, width: int = 16, hidden: int = 128, num_classes: int = 10) -> None:
        super().__init__()
        self.layers = nn.Sequential(
            nn.Conv2d(1, width, 5, padding=2),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(width, 2 * width, 5, padding=2),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Linear(2 * width * 7 * 7, hidden),
            nn.ReLU(),
            nn.Linear(hidden, num_classes),
        )

    def forward(self, images: Tensor) -> Tensor:
        """Class logits of a batch of digits.

        Args:
            images: shape ``(N, 1, 28, 28)``.

        Returns:
            Logits, shape ``(N, num_classes)``.
        """
        return self.layers(images)

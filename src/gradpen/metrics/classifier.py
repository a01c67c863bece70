"""A small MNIST CNN whose penultimate features and predictions score generated digits.

It stands in for Inception on 28 x 28 digits. The recipe is deterministic: it trains on the
training part of `split_holdout(load_mnist5k(), HOLDOUT_FRACTION, SPLIT_SEED)` and reports its
accuracy on the held-out part. Retrain (a few CPU minutes) and overwrite the shipped weights with

    python -m gradpen.metrics.classifier --train
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor, nn
from tqdm import tqdm

from gradpen.data.mnist import ImageDataset, load_mnist5k, split_holdout
from gradpen.errors import UserError

WEIGHTS_NAME = "mnist_classifier.safetensors"
RECIPE_NAME = "mnist_classifier.json"
HOLDOUT_FRACTION = 0.2
SPLIT_SEED = 0
IMAGE_SIDE = 28


class MnistClassifier(nn.Module):
    """Three conv blocks (16, 32, 64 channels, each followed by 2x max-pooling), a 128-wide
    fully connected ReLU layer, and a 10-way linear head.

    `features` is that layer's output divided by `feature_scale`, the root mean square feature
    on the training digits (set after training). Unit mean square keeps x . y / D below about 1,
    the regime KID's kernel (x . y / D + 1)^3 was designed for with Inception features; raw
    features are about 5x larger and make KID estimates dominated by noise.
    """

    feature_dim = 128

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(1, 16, 5, padding=2),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 5, padding=2),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Linear(64 * 3 * 3, self.feature_dim),
            nn.ReLU(),
        )
        self.head = nn.Linear(self.feature_dim, num_classes)
        self.register_buffer("feature_scale", torch.ones(()))

    def features(self, images: Tensor) -> Tensor:
        """Normalized penultimate features (N, 128) of images (N, 1, 28, 28) in [0, 1]."""
        return self.body(images) / self.feature_scale

    def forward(self, images: Tensor) -> Tensor:
        """Class logits (N, 10)."""
        return self.head(self.body(images))


@dataclass(frozen=True)
class TrainRecipe:
    """Everything that determines the shipped weights (stored next to them as json)."""

    seed: int = 0
    epochs: int = 30
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 1e-4
    max_shift: int = 2
    holdout_fraction: float = HOLDOUT_FRACTION
    split_seed: int = SPLIT_SEED


def default_assets_dir() -> Path:
    """The package's assets folder, where the shipped weights live."""
    return Path(str(resources.files("gradpen") / "assets"))


def mnist5k_split() -> tuple[ImageDataset, ImageDataset]:
    """(train, heldout) split of the 5k digits the classifier was trained and tested on."""
    return split_holdout(load_mnist5k(), HOLDOUT_FRACTION, SPLIT_SEED)


def _random_shift(images: Tensor, max_shift: int, generator: torch.Generator) -> Tensor:
    """Translate each image by up to max_shift pixels per axis (zero fill): cheap augmentation."""
    padded = nn.functional.pad(images, [max_shift] * 4)
    offsets = torch.randint(0, 2 * max_shift + 1, (len(images), 2), generator=generator)
    return torch.stack(
        [
            padded[i, :, dy : dy + IMAGE_SIDE, dx : dx + IMAGE_SIDE]
            for i, (dy, dx) in enumerate(offsets.tolist())
        ]
    )


@torch.no_grad()
def predict(model: nn.Module, images: Tensor, batch_size: int = 1000) -> Tensor:
    """Predicted labels (N,) in eval mode, batched."""
    model.eval()
    return torch.cat([model(batch).argmax(dim=1) for batch in images.split(batch_size)])


def accuracy(model: nn.Module, dataset: ImageDataset) -> float:
    """Fraction of the dataset's images whose predicted label is right."""
    return float((predict(model, dataset.images) == dataset.labels).double().mean())


def train_classifier(recipe: TrainRecipe) -> tuple[MnistClassifier, float]:
    """Train with Adam by the recipe; returns the model and its held-out accuracy.

    Runs on one CPU thread with deterministic algorithms, so that the result does not depend on
    the machine's core count (and a shared machine is not oversubscribed); both settings are
    restored afterwards.
    """
    threads, deterministic = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    try:
        return _train(recipe)
    finally:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(deterministic)


def _train(recipe: TrainRecipe) -> tuple[MnistClassifier, float]:
    torch.manual_seed(recipe.seed)
    generator = torch.Generator().manual_seed(recipe.seed)
    train, heldout = split_holdout(load_mnist5k(), recipe.holdout_fraction, recipe.split_seed)
    model = MnistClassifier()
    optimizer = torch.optim.Adam(model.parameters(), lr=recipe.lr, weight_decay=recipe.weight_decay)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=recipe.epochs)
    for epoch in range(recipe.epochs):
        model.train()
        order = torch.randperm(len(train), generator=generator)
        batches = tqdm(order.split(recipe.batch_size), desc=f"epoch {epoch + 1}/{recipe.epochs}")
        for indices in batches:
            images = _random_shift(train.images[indices], recipe.max_shift, generator)
            loss = nn.functional.cross_entropy(model(images), train.labels[indices])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            batches.set_postfix(loss=f"{loss.item():.3f}")
        scheduler.step()
    model.eval()
    with torch.no_grad():
        model.feature_scale.copy_(model.body(train.images).square().mean().sqrt())
    return model, accuracy(model, heldout)


def save_classifier(
    model: MnistClassifier, recipe: TrainRecipe, heldout_accuracy: float, out_dir: Path
) -> Path:
    """Write the weights (safetensors) and a json with the recipe and held-out accuracy."""
    out_dir.mkdir(parents=True, exist_ok=True)
    weights_path = out_dir / WEIGHTS_NAME
    state = {name: tensor.contiguous() for name, tensor in model.state_dict().items()}
    save_file(state, str(weights_path))
    info = {
        "recipe": asdict(recipe),
        "heldout_accuracy": heldout_accuracy,
        "torch_version": torch.__version__,
        "command": "python -m gradpen.metrics.classifier --train",
    }
    (out_dir / RECIPE_NAME).write_text(json.dumps(info, indent=2) + "\n")
    return weights_path


def load_classifier_info(assets_dir: Path | None = None) -> dict:
    """The json written with the weights: recipe and held-out accuracy."""
    path = (assets_dir or default_assets_dir()) / RECIPE_NAME
    if not path.is_file():
        raise UserError(f"classifier info {path} is missing; retrain with --train")
    return json.loads(path.read_text())


def load_classifier(
    assets_dir: Path | None = None, device: str | torch.device = "cpu"
) -> MnistClassifier:
    """The shipped (or retrained) classifier in eval mode."""
    path = (assets_dir or default_assets_dir()) / WEIGHTS_NAME
    if not path.is_file():
        raise UserError(
            f"classifier weights {path} are missing; "
            "retrain them with: python -m gradpen.metrics.classifier --train"
        )
    model = MnistClassifier()
    model.load_state_dict(load_file(str(path)))
    return model.to(device).eval()


def main(argv: list[str] | None = None) -> None:
    """Command line: --train retrains the classifier and writes its weights and json."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", action="store_true", help="retrain and write the weights")
    parser.add_argument("--out", type=Path, default=None, help="folder (default: package assets)")
    args = parser.parse_args(argv)
    if not args.train:
        info = load_classifier_info(args.out)
        print(f"shipped classifier: held-out accuracy {info['heldout_accuracy']:.4f}")
        return
    recipe = TrainRecipe()
    model, heldout_accuracy = train_classifier(recipe)
    path = save_classifier(model, recipe, heldout_accuracy, args.out or default_assets_dir())
    print(f"held-out accuracy {heldout_accuracy:.4f}; wrote {path}")


if __name__ == "__main__":
    main()

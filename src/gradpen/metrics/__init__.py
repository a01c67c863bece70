"""Metrics: toy mode coverage and W1 (`toy`), feature-space distances (`frechet`), the MNIST
feature classifier (`classifier`), image scores built on them (`images`) and gradient-norm
statistics (`gradnorm`). Import the submodules; this package imports nothing heavy itself."""

"""Companion package of the book "Accelerating deep learning with PyTorch on NVIDIA GPUs".

Importing it changes no global state: seeding, device choice and backend flags are explicit calls.
"""

# The one place the version is written: pyproject.toml reads it (dynamic = ["version"]).
__version__ = "0.1.0"

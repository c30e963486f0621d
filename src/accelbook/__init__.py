"""Companion package of the book "Accelerating deep learning with PyTorch on NVIDIA GPUs".

Importing it changes no global state: seeding, device choice and backend flags are explicit calls.
"""

__version__ = "0.1.0"

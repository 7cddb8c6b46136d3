"""Knowledge distillation and the shared training loop.

Example:
    >>> from deepshrink.distill import fit
"""

from .loop import fit

__all__ = ["fit"]

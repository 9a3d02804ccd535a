"""The learning-rate schedule of every training loop in the course: warm-up, then a cosine.

SimCLR (Chen et al., 2020, appendix B.1) warms the learning rate up linearly, then decays it
along a cosine without restarts (Loshchilov & Hutter, 2017). ``train`` (SimCLR and the methods
of 08) and ``finetune`` (the classifiers of 05) both follow it. Taught in 04.
"""

from __future__ import annotations

import math


def lr_at(step: int, total_steps: int, warmup_steps: int, peak: float) -> float:
    """Linear warm-up to ``peak`` over ``warmup_steps``, then cosine decay to 0 at the end."""
    if step < warmup_steps:
        return peak * (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return peak * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

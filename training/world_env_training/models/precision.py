"""Inference precision of the imagined environment's models: fp32 or bf16 autocast.

bf16 runs matmuls and convolutions on the CPU's AMX tiles (Sapphire Rapids) or a GPU's tensor
cores through ``torch.autocast``; what autocast keeps in fp32 (normalisation, softmax, losses)
stays there. Outputs that feed sampling, log-likelihoods or thresholds are cast back to fp32 by
the callers, so that only the network's arithmetic changes, not what is done with its result.
"""

from __future__ import annotations

import contextlib

import torch

PRECISIONS = ("fp32", "bf16")


def check_precision(precision: str) -> str:
    if precision not in PRECISIONS:
        raise ValueError(f"precision={precision!r}: expected one of {', '.join(PRECISIONS)}")
    return precision


def autocast(device, precision: str):
    """A context in which the network runs at ``precision`` on ``device`` (fp32: no change)."""
    if check_precision(precision) == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(torch.device(device).type, dtype=torch.bfloat16)

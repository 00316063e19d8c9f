"""Inference precision of the imagined environment's models: fp32, bf16 autocast, or auto.

bf16 runs matmuls and convolutions on the CPU's AMX tiles (Sapphire Rapids) or a GPU's tensor
cores through ``torch.autocast``; what autocast keeps in fp32 (normalisation, softmax, losses)
stays there. Outputs that feed sampling, log-likelihoods or thresholds are cast back to fp32 by
the callers, so that only the network's arithmetic changes, not what is done with its result.

A CPU without bf16 instructions (no AMX, no AVX512-BF16: e.g. an AVX2-only AMD EPYC) emulates
bf16, and there it is far slower than fp32 (a 1024x1024 matmul: 0.9 GFLOP/s in bf16 against 140
in fp32 on such a machine). ``auto`` therefore means bf16 where the device computes it natively
and fp32 elsewhere (``resolve_precision``).
"""

from __future__ import annotations

import contextlib

import torch

PRECISIONS = ("auto", "fp32", "bf16")


def check_precision(precision: str) -> str:
    if precision not in PRECISIONS:
        raise ValueError(f"precision={precision!r}: expected one of {', '.join(PRECISIONS)}")
    return precision


def native_bf16(device) -> bool:
    """Whether ``device`` computes bf16 matmuls in hardware (CUDA with bf16; a CPU with AMX or
    AVX512-BF16)."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        return torch.cpu._is_amx_tile_supported() or torch.cpu._is_avx512_bf16_supported()
    return False


def resolve_precision(precision: str, device) -> str:
    """fp32 or bf16: ``precision`` itself, or for auto, bf16 if ``native_bf16(device)`` else fp32."""
    if check_precision(precision) != "auto":
        return precision
    return "bf16" if native_bf16(device) else "fp32"


def autocast(device, precision: str):
    """A context in which the network runs at ``precision`` on ``device`` (fp32: no change)."""
    if resolve_precision(precision, device) == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(torch.device(device).type, dtype=torch.bfloat16)

"""Where a model runs: device, dtype and attention kernel, chosen once when the model loads.

GPU-first: one process per GPU (the worker's slot or `LOCAL_RANK` picks it), bfloat16 and flash attention when installed,
SDPA otherwise. On a machine without CUDA everything runs in float32 on the CPU with SDPA.

Example:
    >>> device = pick_device()
    >>> pick_dtype(device), pick_attn_implementation(device)  # on a CPU-only machine
    (torch.float32, 'sdpa')
"""

from __future__ import annotations

import importlib.util
import os

import torch


def pick_device(rank: int | None = None) -> torch.device:
    """The device this process should use: `cuda:{rank % n_gpus}` when CUDA is available, else the CPU.

    `rank` defaults to the local worker's slot (`MMSIEVE_WORKER_SLOT`, set by `mmsieve.executors`' local executor
    during a task), else `LOCAL_RANK` (torchrun), else 0, so that several workers on one machine spread over its
    GPUs. Slurm and Ray give each task its own GPU (`gpus_per_task`) through `CUDA_VISIBLE_DEVICES`: slot 0.

    Example:
        >>> pick_device(rank=3)  # on a 2-GPU machine: device(type='cuda', index=1); without CUDA: cpu
        device(type='cpu')
    """
    if not torch.cuda.is_available():
        return torch.device("cpu")
    if rank is None:
        rank = int(os.environ.get("MMSIEVE_WORKER_SLOT") or os.environ.get("LOCAL_RANK") or 0)
    return torch.device("cuda", rank % torch.cuda.device_count())


def pick_dtype(device: str | torch.device) -> torch.dtype:
    """bfloat16 on CUDA, float32 elsewhere (CPU half precision is slow and inexact).

    Example:
        >>> pick_dtype("cpu")
        torch.float32
    """
    return torch.bfloat16 if torch.device(device).type == "cuda" else torch.float32


def pick_attn_implementation(device: str | torch.device, dtype: torch.dtype | None = None) -> str:
    """`"flash_attention_2"` on CUDA when `flash_attn` is installed (and `dtype` is half precision), else `"sdpa"`.

    Example:
        >>> pick_attn_implementation("cpu")
        'sdpa'
    """
    half = dtype is None or dtype in (torch.float16, torch.bfloat16)  # flash attention has no float32 kernels
    if torch.device(device).type == "cuda" and half and importlib.util.find_spec("flash_attn") is not None:
        return "flash_attention_2"
    return "sdpa"

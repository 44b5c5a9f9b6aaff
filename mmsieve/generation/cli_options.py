"""The command-line options every generating command shares, and the backend they describe.

`--model ID_OR_PATH` alone runs the model in process (transformers); `--endpoint URL --model NAME` calls an
OpenAI-compatible server (vLLM, SGLang, TGI, a hosted API; the key comes from `$OPENAI_API_KEY`).

Example:
    >>> parser = argparse.ArgumentParser()
    >>> add_backend_arguments(parser.add_argument_group("model"))
    >>> backend_from_args(parser.parse_args(["--model", "my-vlm", "--endpoint", "http://localhost:8000"])).name
    'openai:my-vlm'
"""

from __future__ import annotations

import argparse
from typing import Any

from mmsieve.generation import GenerationBackend, OpenAIBackend, TransformersBackend


def add_backend_arguments(group: Any, prefix: str = "", what: str = "the model") -> None:
    """Add `--{prefix}model` and `--{prefix}endpoint` (and, without a prefix, the shared generation settings).

    Example:
        >>> add_backend_arguments(argparse.ArgumentParser().add_argument_group("vision judge"), prefix="vision-")
    """
    required = not prefix
    group.add_argument(
        f"--{prefix}model",
        required=required,
        metavar="ID_OR_PATH",
        help=f"{what}: a Hub id or local folder run in process, or the served model's name with --{prefix}endpoint",
    )
    group.add_argument(
        f"--{prefix}endpoint",
        default=None,
        metavar="URL",
        help=f"an OpenAI-compatible server for {what} (e.g. http://localhost:8000); key from $OPENAI_API_KEY",
    )
    if prefix:
        return
    group.add_argument("--concurrency", type=int, default=32, help="server: requests in flight at once (32)")
    group.add_argument("--timeout", type=float, default=120.0, help="server: seconds per request (120)")
    group.add_argument("--retries", type=int, default=3, help="server: retries after a failure (3)")
    group.add_argument("--temperature", type=float, default=0.0, help="sampling temperature; 0 is greedy (0)")
    group.add_argument("--generate-batch-size", type=int, default=8, help="in process: requests per generate (8)")
    group.add_argument("--device", default=None, help="in process: force a device (default: the task's GPU, else CPU)")


def backend_from_args(args: argparse.Namespace, prefix: str = "", max_tokens: int = 256) -> GenerationBackend:
    """The backend the options describe: a server when `--{prefix}endpoint` is given, else in process (whose
    config is read here: `ValueError` when it cannot be).

    Example:
        >>> args = argparse.Namespace(model="Qwen/Qwen2.5-VL-3B-Instruct", endpoint=None, temperature=0.0,
        ...                           generate_batch_size=4, device=None)
        >>> backend_from_args(args).name  # doctest: +SKIP
        'transformers:Qwen/Qwen2.5-VL-3B-Instruct'
    """
    attr = prefix.replace("-", "_")
    model, endpoint = getattr(args, f"{attr}model"), getattr(args, f"{attr}endpoint")
    temperature = getattr(args, "temperature", 0.0)
    if endpoint:
        return OpenAIBackend(
            endpoint,
            model,
            concurrency=args.concurrency,
            timeout=args.timeout,
            retries=args.retries,
            temperature=temperature,
            max_tokens=max_tokens,
        )
    check_model(model)
    sampling: dict[str, Any] = {"do_sample": True, "temperature": temperature} if temperature > 0 else {}
    return TransformersBackend(
        model, device=args.device, batch_size=args.generate_batch_size, max_new_tokens=max_tokens, **sampling
    )


def check_model(model: str) -> None:
    """Read an in-process model's config now, so a wrong `--model` fails in one line before any worker starts.

    Raises:
        ValueError: the checkpoint cannot be found or read.

    Example:
        >>> check_model("/no/such/folder")
        Traceback (most recent call last):
        ...
        ValueError: no model folder at /no/such/folder
    """
    from pathlib import Path

    from transformers import AutoConfig

    if model.startswith((".", "/", "~")) and not Path(model).expanduser().exists():
        raise ValueError(f"no model folder at {model}")
    try:
        AutoConfig.from_pretrained(model)
    except (OSError, ValueError) as err:
        raise ValueError(f"cannot load model {model!r}: {str(err).splitlines()[0]}") from None


__all__ = ["add_backend_arguments", "backend_from_args", "check_model"]

"""The shell every command-line tool shares: common arguments, argument types, and one error wrapper.

    def main(argv=None): args = tool_parser(__doc__).parse_args(argv); ...
    if __name__ == "__main__": sys.exit(run_tool(main))

The device, scale and overlap options of every tool are parsed here (``device_arg``, ``scales_arg``,
``fraction_arg``), so a bad value is an argparse error (usage line, exit 2) in every tool alike, before
anything is loaded.

`run_tool` turns every expected error (a seg.errors.SegError, or an OSError such as a missing file, a
read-only folder or a full disk) into one line ``error: <message>`` on stderr and exit code 1; the
traceback is shown only with ``--debug``. An error raised in a data-loader worker reaches the main process
as the same type with the worker's whole traceback as its message; the line keeps only the original message.
"""
from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Callable, Sequence
from fractions import Fraction

from seg.engine.distributed import DEVICES, parse_device, resolve_device
from seg.errors import ConfigError, InputError, SegError
from seg.resources import resolve_config

__all__ = ["EXPECTED_ERRORS", "DEVICES", "tool_parser", "add_config_args", "add_device_args", "device_name",
           "device_arg", "parse_fractions", "fraction_arg", "scales_arg", "positive_int", "nonnegative_int",
           "run_tool", "one_line"]

EXPECTED_ERRORS = (SegError, OSError)


def tool_parser(doc: str | None) -> argparse.ArgumentParser:
    """An ArgumentParser showing the tool's docstring, with --debug."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--debug", action="store_true", help="show the full traceback of an error")
    return parser


def add_config_args(parser: argparse.ArgumentParser) -> None:
    """The positional config (a YAML file, or the name of a shipped config) and ``--opts key=value ...``
    overrides (values are YAML)."""
    parser.add_argument("config", type=resolve_config, help="YAML config file, or a shipped config by name, "
                        "e.g. cityscapes/deeplabv3plus_r50_partial_896 (`seg configs` lists them)")
    parser.add_argument("--opts", nargs="*", default=[], metavar="KEY=VALUE", help="config overrides, e.g. "
                        "train.lr=0.02 (values are YAML)")


def add_device_args(parser: argparse.ArgumentParser, *, indexed: bool = False, workers: bool = True) -> None:
    """--device (DEVICES, plus cuda:N with ``indexed``; checked by :func:`device_arg`) and, with ``workers``,
    --num-workers."""
    parser.add_argument("--device", default="auto", type=device_arg, choices=None if indexed else DEVICES,
                        help=f"{', '.join(DEVICES)}{' or cuda:N' if indexed else ''} (auto: the GPU when present)")
    if workers:
        parser.add_argument("--num-workers", type=nonnegative_int, help="data loader workers (default: the config's)")


def device_name(text: str) -> str:
    """A --device value of the right form (:func:`~seg.engine.distributed.parse_device`); whether that device
    exists is not checked: for options passed on to a later step, maybe on another machine."""
    try:
        return parse_device(text, "--device")
    except ConfigError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def device_arg(text: str) -> str:
    """A --device value this machine has (:func:`~seg.engine.distributed.resolve_device`, checked while parsing
    so that a missing GPU is a usage error before anything loads); the value stays as written, since
    init_distributed resolves "auto" and "cuda" per rank."""
    try:
        resolve_device(text, "--device")
    except ConfigError as err:
        raise argparse.ArgumentTypeError(str(err)) from None
    return parse_device(text, "--device")


def parse_fractions(text: str) -> list[float]:
    """"0,1/3,1/2,0.75" -> [0.0, 0.333.., 0.5, 0.75]."""
    try:
        return [float(Fraction(part.strip())) for part in text.split(",") if part.strip()]
    except (ValueError, ZeroDivisionError) as err:
        raise InputError(f"cannot parse {text!r} as comma-separated numbers or fractions like 1/3") from err


def fraction_arg(text: str) -> float:
    """One number or fraction ("1/3", "0.25"), e.g. --overlap (its range is checked where it is used)."""
    try:
        values = parse_fractions(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None
    if len(values) != 1:
        raise argparse.ArgumentTypeError(f"expected one number or fraction such as 1/3, got {text!r}")
    return values[0]


def scales_arg(text: str) -> list[float]:
    """--scales: comma-separated positive numbers or fractions, at least one ("0.75,1,5/4")."""
    try:
        scales = parse_fractions(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None
    bad = [s for s in scales if not s > 0]
    if bad or not scales:
        raise argparse.ArgumentTypeError(f"expected positive scales such as 0.75,1,1.25, got {text!r}")
    return scales


def _bounded_int(low: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be >= {low}, got {value}")
        return value
    parse.__name__ = f"int>={low}"
    return parse


positive_int = _bounded_int(1)
nonnegative_int = _bounded_int(0)


# torch.utils.data re-raises a worker's exception as ``type(f"Caught {name} {where}.\nOriginal {traceback}")``
_RERAISED = re.compile(r"Caught (?P<name>\w+) (?P<where>[^\n]*)\.\nOriginal Traceback \(most recent call last\):\n")


def _worker_message(err: BaseException, text: str) -> str | None:
    """"<original message> (<type> in <where>)" from a data-loader worker's re-raised error; None for others.
    The original message follows the last "<module.Type>: " that starts a line of the formatted traceback."""
    found = _RERAISED.match(text)
    if found is None:
        return None
    module, name = type(err).__module__, type(err).__qualname__
    shown = name if module in ("builtins", "__main__") else f"{module}.{name}"  # as traceback prints the type
    start = text.rfind(f"\n{shown}: ")
    message = text[start + len(shown) + 3:] if start >= 0 else text.rstrip().rsplit("\n", 1)[-1]
    return f"{message.strip()} ({found['name']} {found['where']})"


def one_line(err: BaseException) -> str:
    """The error's message on one line (OSError: its reason and file; an error from a data-loader worker:
    its original message and the worker, not the worker's traceback)."""
    text = str(err)
    if isinstance(err, OSError) and err.filename is not None and err.strerror:
        text = f"{err.filename}: {err.strerror}"
    text = _worker_message(err, text) or text
    return " ".join(text.split())


def run_tool(main: Callable[[Sequence[str]], object], argv: Sequence[str] | None = None) -> int:
    """Run ``main(argv)``; an expected error becomes ``error: <message>`` on stderr and exit code 1
    (re-raised with its traceback under --debug). Returns the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        main(argv)
    except EXPECTED_ERRORS as err:
        if "--debug" in argv:
            raise
        print(f"error: {one_line(err)}", file=sys.stderr, flush=True)
        return 1
    return 0

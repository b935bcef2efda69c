"""Command-line parsing for `polyroute`: values are checked when they are parsed.

The types below are argparse `type=`s: a bad value ends the command before anything runs. The
parser raises `UsageError` instead of printing its usage and exiting, so that the CLI's one error
handler prints it like every other error: one line that names the flag and what it takes, exit 2.
"""

from __future__ import annotations

import argparse
import math
import re
from typing import NoReturn

from moe_core.errors import PolyrouteError

MAX_PORT = 65535
# torch takes seeds up to 2**64 - 1; the store and the wire keep them as signed 64-bit integers.
MAX_SEED = (1 << 63) - 1
_DEVICE = re.compile(r"cpu|cuda(:\d+)?")


class UsageError(PolyrouteError):
    """The command line does not parse: an unknown flag, a missing one, or a bad value."""


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line with the flag first (`--port must be ...`)."""

    def error(self, message: str) -> NoReturn:
        flag, sep, problem = message.partition(": ")
        if sep and flag.startswith("argument "):
            message = f"{flag.removeprefix('argument ')} {problem}"
        raise UsageError(f"{message} (see `{self.prog} --help`)")


def _integer(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number, not {text!r}") from None


def positive_int(text: str) -> int:
    """1, 2, 3 ...: counts, sizes, limits and run ids."""
    value = _integer(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def seed(text: str) -> int:
    value = _integer(text)
    if not 0 <= value <= MAX_SEED:
        raise argparse.ArgumentTypeError(f"must be a whole number from 0 to 2**63-1, not {value}")
    return value


def port(text: str) -> int:
    value = _integer(text)
    if not 1 <= value <= MAX_PORT:
        raise argparse.ArgumentTypeError(f"must be a port from 1 to {MAX_PORT}, not {value}")
    return value


def positive_float(text: str) -> float:
    """A finite number above 0: sizes in MiB, seconds, learning rates."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number, not {text!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"must be a number above 0, not {text}")
    return value


def device(text: str) -> str:
    """Where a model runs: cpu, cuda or cuda:N (torch's names for the devices Polyroute supports)."""
    if not _DEVICE.fullmatch(text):
        raise argparse.ArgumentTypeError(f"must be cpu, cuda or cuda:N, not {text!r}")
    return text


def parse_layers(text: str) -> tuple[int, int]:
    """`8-35` or `12` -> an inclusive range of decoder-layer indices."""
    first, _, last = text.partition("-")
    try:
        band = (int(first), int(last or first))
    except ValueError:
        raise PolyrouteError(f"--layers takes A-B or one layer, e.g. 8-35, not {text!r}") from None
    if band[0] > band[1]:
        raise PolyrouteError(f"--layers {text}: the first layer must not come after the last")
    return band


def parse_ratios(text: str) -> tuple[float, float, float]:
    """The shallow,middle,deep shares of K that `--ratios` gives (`analyze rise` and `adapt`)."""
    try:
        values = tuple(float(part) for part in text.split(","))
    except ValueError:
        values = ()
    if len(values) != 3:
        raise PolyrouteError(f"--ratios takes three shares, e.g. 0.35,0.25,0.40, not {text!r}")
    return values[0], values[1], values[2]


def run_ids(text: str) -> list[int]:
    """`1,2,3` -> [1, 2, 3]: run ids (`polyroute runs`), each at least 1."""
    return [positive_int(part.strip()) for part in text.split(",") if part.strip()]

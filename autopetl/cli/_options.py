"""Options several commands share, and their parsing into library objects."""

from __future__ import annotations

import argparse
import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from autopetl.backbones import DEFAULT_BACKBONE, SMOKE_BACKBONE, BackboneSpec
from autopetl.errors import ConfigError


def int_in(low: int, high: int) -> Callable[[str], int]:
    """An argparse type: an integer from ``low`` to ``high``; anything else is argparse's one-line
    error (a 70-bit seed, a budget of 1e30 or -1 failed late, inside SQLite or Ray, before)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected a whole number from {low} to {high}, got {text!r}"
            ) from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be from {low} to {high}, got {value}")
        return value

    return parse


def float_in(low: float, high: float, *, above_low: bool = False) -> Callable[[str], float]:
    """An argparse type: a finite number in [low, high] (or (low, high] with ``above_low``)."""
    shown = f"{'above' if above_low else 'from'} {low:g} {'and at most' if above_low else 'to'} {high:g}"

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number {shown}, got {text!r}") from None
        if (
            not math.isfinite(value)
            or not (low < value if above_low else low <= value)
            or value > high
        ):
            raise argparse.ArgumentTypeError(f"must be a number {shown}, got {text}")
        return value

    return parse


SEED = int_in(0, 2**32 - 1)  # numpy and torch seeds
IMG_SIZE = int_in(8, 4096)


def add_backbone_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("backbone")
    group.add_argument(
        "--backbone",
        default=None,
        help=f"timm ViT name (default {DEFAULT_BACKBONE}); `search` takes several, "
        "comma-separated (a backbone sweep: one search and one front each)",
    )
    group.add_argument(
        "--weights",
        default=None,
        help="hub (default), a local weights file, or none (random init); with several "
        "backbones, one per backbone (comma-separated, same order) or one for all",
    )
    group.add_argument(
        "--img-size", type=IMG_SIZE, default=None, help="input side in pixels, 8-4096 (default 224)"
    )


def add_data_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--data-root",
        type=Path,
        default=None,
        help="root of VTAB-1k folders (default: $AUTOPETL_DATA)",
    )


def backbone_spec(args: argparse.Namespace) -> BackboneSpec:
    """The one backbone the options ask for; ``--smoke-test`` starts from the tiny random ViT."""
    specs = backbone_specs(args)
    if len(specs) > 1:
        raise ConfigError(
            f"this command takes one backbone, got {len(specs)} ({args.backbone}); "
            "`autopetl search` sweeps several"
        )
    return specs[0]


def backbone_specs(args: argparse.Namespace) -> list[BackboneSpec]:
    """The backbones of ``--backbone a,b,c`` with ``--weights wa,wb,wc`` (or one weights value
    for all: hub, none); each is searched on its own, never on a shared front."""
    names = [n.strip() for n in (args.backbone or "").split(",") if n.strip()] or [None]
    weights = [w.strip() for w in (args.weights or "").split(",") if w.strip()] or [None]
    if len(weights) not in (1, len(names)):
        raise ConfigError(
            f"--weights gives {len(weights)} values for {len(names)} backbones: give one per "
            "backbone, in the same order, or one for all (hub, none)"
        )
    if len(set(names)) != len(names):
        raise ConfigError(f"--backbone names a backbone twice: {args.backbone}")
    if len(weights) == 1:
        weights = weights * len(names)
    return [_spec(args, n, w) for n, w in zip(names, weights, strict=True)]


def _spec(args: argparse.Namespace, backbone: str | None, weights: str | None) -> BackboneSpec:
    base = SMOKE_BACKBONE if getattr(args, "smoke_test", False) else BackboneSpec()
    name = backbone or base.name
    img_size = args.img_size or base.img_size
    if img_size < 8:
        raise ConfigError(f"--img-size must be at least 8 pixels, got {img_size}")
    # The smoke model's overrides only make sense for the smoke model itself.
    overrides = base.overrides if name == base.name else {}
    weights = weights or base.weights
    if weights not in ("hub", "none"):
        # A local file, made absolute: Ray's workers run in folders of their own, where a path
        # relative to the user's folder names nothing (every trial failed on it).
        weights = os.path.abspath(Path(weights).expanduser())
    return BackboneSpec(name=name, weights=weights, img_size=img_size, overrides=overrides)


def write_text(text: str, output: Path | None) -> None:
    """Print ``text`` to stdout, or write it to ``output`` (a user's bad path is one clear line)."""
    from autopetl.cli._console import console

    if output is None:
        console.file.write(text)
        return
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(text)
    except OSError as exc:
        raise ConfigError(f"cannot write {output}: {exc.strerror}") from exc


def parse_set_options(items: list[str] | None) -> dict[str, Any]:
    """``--set key=value`` pairs to a dict; values are read as YAML scalars (10, 0.1, true, a,b)."""
    values: dict[str, Any] = {}
    for item in items or []:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set expects key=value, got {item!r}")
        try:
            values[key.strip()] = yaml.safe_load(raw) if raw.strip() else ""
        except (yaml.YAMLError, ValueError) as exc:  # ValueError: an integer of 5,000 digits
            shown = raw if len(raw) <= 40 else f"{raw[:20]}...({len(raw)} characters)"
            raise ConfigError(f"--set {key}: cannot read value {shown!r}") from exc
    return values

"""Options several commands share, and their parsing into library objects."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import yaml

from autopetl.backbones import DEFAULT_BACKBONE, SMOKE_BACKBONE, BackboneSpec
from autopetl.errors import ConfigError


def add_backbone_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("backbone")
    group.add_argument(
        "--backbone", default=None, help=f"timm ViT name (default {DEFAULT_BACKBONE})"
    )
    group.add_argument(
        "--weights", default=None, help="hub (default), a local weights file, or none (random init)"
    )
    group.add_argument(
        "--img-size", type=int, default=None, help="input side in pixels (default 224)"
    )


def add_data_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--data-root",
        type=Path,
        default=None,
        help="root of VTAB-1k folders (default: $AUTOPETL_DATA)",
    )


def backbone_spec(args: argparse.Namespace) -> BackboneSpec:
    """The backbone the options ask for; ``--smoke-test`` starts from the tiny random ViT."""
    base = SMOKE_BACKBONE if getattr(args, "smoke_test", False) else BackboneSpec()
    name = args.backbone or base.name
    img_size = args.img_size or base.img_size
    if img_size < 8:
        raise ConfigError(f"--img-size must be at least 8 pixels, got {img_size}")
    # The smoke model's overrides only make sense for the smoke model itself.
    overrides = base.overrides if name == base.name else {}
    return BackboneSpec(
        name=name, weights=args.weights or base.weights, img_size=img_size, overrides=overrides
    )


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
        except yaml.YAMLError as exc:
            raise ConfigError(f"--set {key}: cannot read value {raw!r}") from exc
    return values

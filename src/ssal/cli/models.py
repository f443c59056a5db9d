"""``ssal models [NAME | PATTERN]``: the models a config can name, or the attach points of one model."""

from __future__ import annotations

import argparse
import sys
import textwrap

__all__ = ["register", "run"]


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``models`` sub-command."""
    p = sub.add_parser(
        "models",
        help="list the models (registered, torchvision:<name>, timm:<name>) or the attach points of one",
        description="Without NAME: every model name model.name accepts (registered, torchvision, timm; a shell "
        "pattern such as 'timm:vit*' filters). With NAME: the model's attach points (modules up to --depth levels "
        "and the positions g1..gN) with their output shapes, feature layouts and reductions, from one probe batch "
        "of the model built without pretrained weights. Trailing key=value pairs are builder options "
        "(e.g. img_size=64).",
    )
    p.add_argument("name", nargs="?", metavar="NAME", help="a model name, or a pattern with * ? [ ]")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="builder options of the model")
    p.add_argument("--num-classes", type=int, default=None, help="classes of the probe model (default 10)")
    p.add_argument("--input-size", type=int, default=None, metavar="S", help="probe input side (default: native)")
    p.add_argument("--depth", type=int, default=None, help="list modules up to this nesting depth (default 2)")
    p.add_argument("--all", action="store_true", help="list every module")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Print the list of models or one model's attach points."""
    from ..config import parse_overrides
    from ..errors import SSALError
    from ..models.describe import attach_points, format_attach_points, model_names
    from ..models.zoo import TIMM_MISSING

    name = args.name
    if name is None or any(c in name for c in "*?["):
        given = [
            flag
            for flag, value in (("--num-classes", args.num_classes), ("--input-size", args.input_size),
                                ("--depth", args.depth), ("--all", args.all or None),
                                ("key=value options", args.overrides or None))
            if value is not None
        ]  # fmt: skip
        if given:
            raise SSALError(f"{', '.join(given)} apply to one model NAME, not to the list of names")
        groups = model_names(name)
        for src, names in groups.items():
            note = f" ({TIMM_MISSING})" if src == "timm" and not names and name is None else ""
            sys.stdout.write(f"{src} ({len(names)}){note}:\n")
            if names:
                sys.stdout.write(textwrap.fill(", ".join(names), 110, initial_indent="  ", subsequent_indent="  "))
                sys.stdout.write("\n")
        if name is not None and not any(groups.values()):
            raise SSALError(f"no model matches {name!r}")
        return 0
    num_classes = 10 if args.num_classes is None else args.num_classes
    depth = 2 if args.depth is None else args.depth
    if num_classes < 2:
        raise SSALError(f"--num-classes must be at least 2, got {num_classes}")
    if depth < 1:
        raise SSALError(f"--depth must be at least 1, got {depth}")
    if args.input_size is not None and args.input_size < 1:
        raise SSALError(f"--input-size must be at least 1, got {args.input_size}")
    options = parse_overrides(args.overrides)
    points, size = attach_points(name, num_classes, args.input_size, options, None if args.all else depth)
    sys.stdout.write(format_attach_points(name, points, size) + "\n")
    return 0

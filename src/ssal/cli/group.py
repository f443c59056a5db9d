"""``ssal group``: build a class grouping from a confusion matrix, a coarse mapping, or at random."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from ..errors import SSALError
from ..grouping import (
    CRITERIA,
    Grouping,
    group_from_confusion,
    group_from_superclasses,
    load_class_names,
    load_confusion,
    load_superclasses,
    random_grouping,
)

log = logging.getLogger(__name__)


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``group`` sub-command."""
    p = sub.add_parser(
        "group",
        help="group classes from a confusion matrix (paper Sec. 3.1)",
        description="Build a balanced class grouping gamma and save it as JSON.",
    )
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--confusion", type=Path, metavar="CONF.npy", help="C x C confusion matrix (.npy, .csv, .txt)")
    src.add_argument(
        "--from-superclasses",
        type=Path,
        metavar="META.json",
        help="JSON with 'fine_to_coarse' (e.g. CIFAR-100 meta.json)",
    )
    src.add_argument("--random", type=int, metavar="C", help="random balanced grouping of C classes")
    p.add_argument("--k", type=int, help="number of groups, 2 <= k <= C/2 (not for --from-superclasses)")
    p.add_argument(
        "--criterion",
        choices=CRITERIA,
        default=None,
        help="join (default: similar classes together) or split (similar classes apart); --confusion only",
    )
    p.add_argument("--seed", type=int, default=0, help="seed for tie-breaking / random groupings")
    p.add_argument("--refine", action="store_true", help="improve the greedy result with pairwise swaps (--confusion)")
    p.add_argument(
        "--size-margin",
        type=float,
        default=None,
        help="allow groups up to MARGIN*C/k (the authors used 1.1; --confusion only); default: exact balance",
    )
    p.add_argument("--class-names", type=Path, metavar="FILE", help="class names, one per line")
    p.add_argument("--out", type=Path, required=True, metavar="GROUPS.json", help="output JSON file")
    p.add_argument(
        "--labels-out",
        type=Path,
        metavar="FILE.txt",
        help="also write the authors' one-integer-per-line label file",
    )
    p.add_argument("--quiet", action="store_true", help="do not print the groups")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Build, save and print the grouping."""
    if args.seed < 0:
        raise SSALError(f"--seed must be >= 0, got {args.seed}")
    if args.random is not None and not 4 <= args.random <= 10**7:
        raise SSALError(f"--random takes a class count from 4 to 10,000,000, got {args.random}")
    if args.confusion is None:  # options of the other sources would be dropped without a word
        given = [f for f, v in (("--criterion", args.criterion), ("--refine", args.refine or None),
                                ("--size-margin", args.size_margin)) if v is not None]  # fmt: skip
        if args.from_superclasses is not None:
            given += [f for f, v in (("--k", args.k), ("--seed", args.seed or None)) if v is not None]
        if given:
            what = "--from-superclasses" if args.from_superclasses is not None else "--random"
            raise SSALError(f"{', '.join(given)} {'is' if len(given) == 1 else 'are'} not used with {what}")
    names = load_class_names(args.class_names)
    if args.from_superclasses is not None:
        mapping, meta_names = load_superclasses(args.from_superclasses)
        g = group_from_superclasses(mapping, names or meta_names, source=f"superclasses:{args.from_superclasses.name}")
    else:
        if args.k is None:
            raise SSALError("--k is required with --confusion and --random")
        if args.confusion is not None:
            conf = load_confusion(args.confusion)
            g = group_from_confusion(
                conf,
                args.k,
                args.criterion or "join",
                args.seed,
                args.refine,
                args.size_margin,
                names,
                source=f"confusion:{args.confusion.name}",
            )
        else:
            g = random_grouping(args.random, args.k, args.seed, names)
    g.save(args.out)
    if args.labels_out:
        g.save_labels(args.labels_out)
    if not args.quiet:
        sys.stdout.write(g.describe() + "\n")
    log.info("wrote %s", args.out)
    return 0


__all__ = ["Grouping", "register", "run"]

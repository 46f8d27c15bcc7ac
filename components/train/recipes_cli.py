"""``aprflow recipes``: list the training recipes, or print one fully resolved."""

from __future__ import annotations

import argparse
import sys

from components.common.errors import AprflowError


def build_parser() -> argparse.ArgumentParser:
    from components.train.recipes import add_recipe_set_option

    parser = argparse.ArgumentParser(
        prog="aprflow recipes",
        description="Without NAME: list the training recipes (recipes/*.yaml) with their "
        "description, epochs, batch size, optimizer and learning rate. With NAME: print every "
        "field of that recipe as YAML, with --set overrides applied (what a trial would use).",
    )
    parser.add_argument("name", nargs="?", help="a recipe name (see the list)")
    add_recipe_set_option(parser)
    return parser


def recipe_table() -> str:
    """One line per recipe: name, epochs, batch, optimizer, lr and the description."""
    from components.train.recipes import DESCRIPTIONS, RECIPES

    rows = [("NAME", "EPOCHS", "BATCH", "OPT", "LR", "DESCRIPTION")]
    for name, recipe in sorted(RECIPES.items()):
        rows.append(
            (
                name,
                str(recipe.epochs),
                str(recipe.batch_size),
                recipe.opt,
                f"{recipe.lr:g}",
                DESCRIPTIONS[name],
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(5)]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row[:5], widths, strict=True))
        + "  "
        + row[5]
        for row in rows
    )


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        from components.train.recipes import DESCRIPTIONS, recipe_sets, resolve_recipe

        if args.name is None:
            if args.sets:
                raise ValueError("--set needs a recipe NAME: aprflow recipes NAME --set ...")
            print(recipe_table())
            return 0
        recipe = resolve_recipe(args.name, recipe_sets(args.sets))
    except (AprflowError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"# {DESCRIPTIONS[args.name]}")
    print(recipe.to_yaml(), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())

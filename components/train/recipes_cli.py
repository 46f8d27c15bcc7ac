"""``aprflow recipes``: list the training recipes, or print one fully resolved."""

from __future__ import annotations

import argparse
import sys

from components.common.cli import UsageError, add_common_options, print_result, run_cli


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
    add_common_options(parser, json_output=True)
    return parser


def recipe_rows() -> list[dict]:
    """One row per recipe: name, epochs, batch size, optimizer, lr and the description."""
    from components.train.recipes import DESCRIPTIONS, RECIPES

    return [
        {
            "name": name,
            "epochs": recipe.epochs,
            "batch_size": recipe.batch_size,
            "opt": recipe.opt,
            "lr": recipe.lr,
            "description": DESCRIPTIONS[name],
        }
        for name, recipe in sorted(RECIPES.items())
    ]


def recipe_table(rows: list[dict]) -> str:
    """The rows of :func:`recipe_rows` as aligned columns, the description last."""
    cells = [("NAME", "EPOCHS", "BATCH", "OPT", "LR", "DESCRIPTION")] + [
        (
            row["name"],
            str(row["epochs"]),
            str(row["batch_size"]),
            row["opt"],
            f"{row['lr']:g}",
            row["description"],
        )
        for row in rows
    ]
    widths = [max(len(line[i]) for line in cells) for i in range(5)]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(line[:5], widths, strict=True))
        + "  "
        + line[5]
        for line in cells
    )


def _recipes(args: argparse.Namespace) -> int:
    from components.train.recipes import DESCRIPTIONS, recipe_sets, resolve_recipe

    if args.name is None:
        if args.sets:
            raise UsageError("--set needs a recipe NAME: aprflow recipes NAME --set ...")
        rows = recipe_rows()
        print_result(args, rows, text=recipe_table(rows))
        return 0
    recipe = resolve_recipe(args.name, recipe_sets(args.sets))
    text = f"# {DESCRIPTIONS[args.name]}\n{recipe.to_yaml().rstrip()}"
    print_result(args, recipe.to_dict(), text=text)
    return 0


def main(argv: list[str] | None = None) -> int:
    """Runs ``aprflow recipes``: 0 on success, 1 on a failure, 2 on a usage error."""
    return run_cli(build_parser(), _recipes, argv)


if __name__ == "__main__":
    sys.exit(main())

"""`tfmaas explain`: why a served model classifies sentences as it does.

It calls the version's `explain` signature (every tfmaas export carries one) and prints each
sentence with the characters that pushed toward the predicted class and those that pushed
away from it: coloured on a terminal, `[+好]` / `[-差]` markers otherwise, JSON with `--json`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence

from tfmaas.cli import serving_target
from tfmaas.client.explanations import Explanation

# A character is marked when its |attribution| is at least this share of the sentence's
# largest: the few that decide, not every faint contribution.
MARK_FRACTION = 0.1
_COLOURS = {1: "\x1b[1;42;30m", -1: "\x1b[1;41;37m"}
_RESET = "\x1b[0m"


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "explain",
        help="show which characters made a served model predict what it did",
        description=(
            "Call the explain signature of a served model and print each sentence with the "
            "characters that pushed toward the predicted class (+, green) and away from it "
            "(-, red); --json prints every attribution."
        ),
    )
    serving_target.add_arguments(parser)
    parser.add_argument(
        "--json", action="store_true", help="one JSON object per sentence, all attributions"
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from tfmaas.client import PredictionError

    try:
        explanations = _explain(args)
    except PredictionError as exc:
        print(f"tfmaas: explanation failed: {exc}", file=sys.stderr)
        return 1
    colour = sys.stdout.isatty() and "NO_COLOR" not in os.environ
    for sentence, explanation in zip(args.sentences, explanations, strict=True):
        if args.json:
            print(json.dumps({"text": sentence, **explanation.as_dict()}, ensure_ascii=False))
        else:
            print(render(explanation, colour=colour))
    return 0


def _explain(args: argparse.Namespace) -> list[Explanation]:
    with serving_target.client(args) as client:
        explanations: list[Explanation] = client.explain(
            args.model, args.sentences, version=args.version, label=args.label
        )
        return explanations


def spans(characters: Sequence[str], attributions: Sequence[float]) -> list[tuple[str, int]]:
    """Runs of characters with the same mark: +1 toward the class, -1 away from it, 0 neither."""
    strongest = max((abs(a) for a in attributions), default=0.0)
    runs: list[tuple[str, int]] = []
    for character, attribution in zip(characters, attributions, strict=True):
        marked = strongest > 0 and abs(attribution) >= MARK_FRACTION * strongest
        sign = (1 if attribution > 0 else -1) if marked else 0
        if runs and runs[-1][1] == sign:
            runs[-1] = (runs[-1][0] + character, sign)
        else:
            runs.append((character, sign))
    return runs


def render(explanation: Explanation, *, colour: bool) -> str:
    """`label score<TAB>sentence`, its decisive characters coloured or `[+…]`/`[-…]` marked."""
    parts = []
    for text, sign in spans(explanation.characters, explanation.char_attributions):
        if sign == 0:
            parts.append(text)
        elif colour:
            parts.append(f"{_COLOURS[sign]}{text}{_RESET}")
        else:
            parts.append(f"[{'+' if sign > 0 else '-'}{text}]")
    return f"{explanation.label} {explanation.score:.3f}\t{''.join(parts)}"

"""`python -m semdraw_widget.engine.models.demo train|evaluate|words`: train the demo model, measure it, list its words."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m semdraw_widget.engine.models.demo", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    train = commands.add_parser("train", help="train from scratch on the CPU (resumes from DIR/checkpoint.pt)")
    train.add_argument("--out", required=True, help="the diffusers folder to write")
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--quick", action="store_true", help="a few steps of each phase (a smoke test, not a model)")
    evaluate = commands.add_parser("evaluate", help="print the quality figures of a trained model")
    evaluate.add_argument("--model", default=None, help="a folder written by train (default: the shipped model)")
    evaluate.add_argument("--scenes", type=int, default=200, help="random scenes for region adherence")
    evaluate.add_argument("--size", type=int, default=256, help="canvas side in pixels")
    evaluate.add_argument("--json", default=None, help="also write the figures here")
    evaluate.add_argument("--classifier", default=None, metavar="FILE",
                          help="judge with this classifier.safetensors (default: the model's own); one classifier for "
                               "several runs compares them without the classifiers' own differences")
    commands.add_parser("words", help="list the words the demo model knows")
    args = parser.parse_args(argv)

    if args.command == "words":
        from .vocabulary import COLOUR_WORDS, TEXTURE_WORDS

        print("colours:", ", ".join(sorted(COLOUR_WORDS)))
        print("textures:", ", ".join(sorted(TEXTURE_WORDS)))
        return 0
    if args.command == "train":
        from .train import QUICK, Recipe, train as run

        recipe = QUICK if args.quick else Recipe(seed=args.seed)
        run(args.out, recipe)
        return 0
    from . import evaluate as measure
    from . import load_demo_model

    model_dir = Path(args.model) if args.model else None
    model = load_demo_model(model_dir)
    figures = measure.run_all(model, model_dir, scenes=args.scenes, size=args.size, classifier_file=args.classifier)
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""`labeler train`'s recipe options (issue 20 item 3) and the `engine.recipes` callbacks they ask for."""
from __future__ import annotations


def add_recipe_options(group) -> None:
    """--ema, --progressive, --probe-head and --mixup / --cutmix on an argparse group."""
    group.add_argument("--ema", type=float, default=None, metavar="DECAY",
                       help="validate and keep an exponential moving average of the weights, e.g. 0.99 (default: off)")
    group.add_argument("--progressive", type=int, default=None, metavar="PX",
                       help="progressive resizing: the first half of the epochs at PX pixels, the rest at --size")
    group.add_argument("--probe-head", action="store_true",
                       help="classifier: start the head from a logistic regression on the pretrained body's features "
                            "of the training images (a linear probe, then fine-tuning)")
    mixes = group.add_mutually_exclusive_group()
    mixes.add_argument("--mixup", type=float, default=None, metavar="ALPHA",
                       help="train on blends of two images, their losses mixed alike (e.g. 0.4); the last epoch "
                            "unmixed and batch norm measured again on clean images (default: off)")
    mixes.add_argument("--cutmix", type=float, default=None, metavar="ALPHA",
                       help="train with a box of another image pasted in (e.g. 1.0), as --mixup")


def recipe_callbacks(args) -> list:
    """--probe-head, --ema, --progressive and --mixup/--cutmix, as the learner's first callbacks (before the
    progress reports): the probe first, at the size the first epoch trains at, so the weight average starts from
    the probed head; the mix last, so it measures batch norm again on the weights and size the model keeps."""
    from engine.recipes import Mix, ProbeHead, ProgressiveResize, WeightAverage
    steps, epochs = [ProbeHead(size=args.progressive)] if args.probe_head else [], args.freeze_epochs + args.epochs
    if args.ema is not None:
        steps.append(WeightAverage(args.ema))
    if args.progressive is not None:
        steps.append(ProgressiveResize(args.progressive, epochs))
    for kind in Mix.KINDS:
        if getattr(args, kind) is not None:
            steps.append(Mix(kind, getattr(args, kind), epochs))
    return steps

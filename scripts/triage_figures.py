"""Cross-validated figures for the red-flag classifier, per card, as a Markdown table (for the README).

    .venv/bin/python scripts/triage_figures.py [--folds 5] [--prompts prompts]

For each card: its tier, how many `match` / `no_match` examples it has (all of which the patterns
pass at start-up), and, for the learned classifier alone (logistic regression on the sentence
vectors, k-fold cross-validated over every card's examples plus the educational and scope
examples as "no red flag"): recall of the card's own examples as that card, recall as any red flag,
and false alarms (the share of "no red flag" examples it gives this card), at the `sure` threshold.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

PROJECT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--folds", type=int, default=5)
    p.add_argument("--prompts", type=Path, default=PROJECT / "prompts")
    args = p.parse_args(argv)

    from bot.embed import SentenceEmbedder
    from bot.safety import load_rules
    from bot.settings import get_settings
    from bot.triage import load_redflags
    from bot.triage_model import cached_vectors, cross_validate, training_set

    settings = get_settings()
    rules = load_redflags(args.prompts / "redflags.yaml")
    safety = load_rules(args.prompts / "safety.yaml")
    extra = safety.role_change.examples + safety.scope.on_topic + safety.scope.off_topic
    texts, labels = training_set(rules, extra)
    embedder = SentenceEmbedder(settings.embedding_model)
    vectors = cached_vectors(texts, embedder, settings.cache_dir, settings.embedding_model)
    clf = rules.classifier
    figures, overall = cross_validate(vectors, labels, clf.sure, clf.unsure, folds=args.folds)
    by_id = {c.id: c for c in rules.cards}
    print("| card | tier | examples (match / no_match) | CV recall, sure | CV recall, flagged | CV false alarms, sure "
          "| CV no-flag examples flagged |")
    print("|---|---|---|---|---|---|---|")
    for f in figures:
        c = by_id[f.card]
        print(f"| `{c.id}` ({c.sign}) | {c.tier} | {len(c.examples.match)} / {len(c.examples.no_match)} "
              f"| {f.recall_card:.0%} | {f.recall_any:.0%} | {f.false_alarms:.1%} | {f.flagged_none:.1%} |")
    negatives = labels.count("none")
    print(f"\nClassifier alone, {args.folds}-fold cross-validation over {len(labels) - negatives} red-flag and "
          f"{negatives} other examples: sure (one card >= {clf.sure}) recall {overall['recall_sure']:.1%}, false alarms "
          f"{overall['false_alarms_sure']:.1%}; flagged (sure, or all cards summed >= {clf.unsure}) recall "
          f"{overall['recall_flagged']:.1%}, other examples flagged {overall['flagged_none']:.1%}.")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

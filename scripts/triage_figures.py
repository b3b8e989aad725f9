"""Cross-validated figures for the red-flag classifier, per card, as a Markdown table (for the README).

    .venv/bin/python scripts/triage_figures.py [--folds 5] [--prompts prompts] [--cases evals/cases/dev]

For each card: its tier, how many `match` / `no_match` examples it has (all of which the patterns
pass at start-up), and, for the learned classifier alone (logistic regression on the sentence
vectors, k-fold cross-validated over every card's examples plus the educational and scope
examples as "no red flag"): recall of the card's own examples as that card, recall as any red flag,
and false alarms (the share of "no red flag" examples it gives this card), at the `sure` threshold.

With --cases, also the whole gate (patterns, clauses, classifier and steps) on those eval cases, per
card: recall of the urgent cases tagged `topic:<card>`, and false alarms, the share of the cases that
must not be urgent (categories other than `urgent`) that this card (or tier 3 / the classifier naming
it) made urgent. Use it on the dev split only: it prints no case text, but never run it on blind sets.
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
    p.add_argument("--cases", type=Path, nargs="*", default=[], help="eval case files or folders (dev split)")
    p.add_argument("--no-cv", action="store_true", help="skip the cross-validation of the classifier")
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
    by_id = {c.id: c for c in rules.cards}
    if args.cases:
        _gate_figures(args, embedder, settings, by_id)
    if args.no_cv:
        return 0
    figures, overall = cross_validate(vectors, labels, clf.sure, clf.unsure, folds=args.folds)
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


def _gate_figures(args: argparse.Namespace, embedder, settings, by_id: dict) -> None:
    """Per card: recall of the urgent cases of its topic, and false alarms it raised on the other cases."""
    from collections import Counter

    from bot.safety import SafetyGate
    from evals.runner import load_cases

    gate = SafetyGate.from_dir(args.prompts, embedder, cache_dir=settings.cache_dir)
    cases = load_cases(args.cases)
    topic_total, topic_hit, alarms = Counter(), Counter(), Counter()
    urgent_total = urgent_hit = others = other_alarms = 0
    for case in cases:
        verdict = gate.check(case.question, case.history or [])
        topics = [t.split(":", 1)[1] for t in case.tags if t.startswith("topic:")]
        if case.category == "urgent":
            urgent_total += 1
            urgent_hit += verdict.kind == "urgent"
            for t in topics:
                topic_total[t] += 1
                topic_hit[t] += verdict.kind == "urgent"
        else:
            others += 1
            if verdict.kind == "urgent":
                other_alarms += 1
                for card in verdict.signs or ("tier3",):
                    alarms[card] += 1
    print(f"| card | urgent cases of its topic made urgent | false alarms it raised (of {others} other cases) |")
    print("|---|---|---|")
    for card in [*by_id, "tier3"]:
        n = topic_total.get(card, 0)
        recall = f"{topic_hit[card]}/{n} ({topic_hit[card] / n:.0%})" if n else "-"
        print(f"| `{card}` | {recall} | {alarms.get(card, 0)} ({alarms.get(card, 0) / max(others, 1):.1%}) |")
    print(f"\nWhole gate on {len(cases)} cases: urgent recall {urgent_hit}/{urgent_total} "
          f"({urgent_hit / max(urgent_total, 1):.1%}), false alarms {other_alarms}/{others} "
          f"({other_alarms / max(others, 1):.1%}).\n")


if __name__ == "__main__":
    raise SystemExit(main())

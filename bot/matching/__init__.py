"""Matching a citizen's message to a knowledge entry, or declining honestly.

One module per step: `normalise` (canonical text, clauses, urgency), `ngrams` (character n-gram
features), `encode` (the multilingual sentence encoder), `model` (the trained classifier and its
cache), `decide` (answer / clarify / decline), `calibrate` (thresholds by cross-validation), and
`matcher`, which runs them in order.
"""

from bot.matching.decide import Decision, Thresholds
from bot.matching.matcher import OUT_OF_SCOPE, Match, Matcher

__all__ = ["OUT_OF_SCOPE", "Decision", "Match", "Matcher", "Thresholds"]

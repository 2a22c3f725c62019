"""Therapy class (TCE or not) and subclass of a line, by the precedence in rules.toml."""

from __future__ import annotations

from connector.cohort.rules import Rules, SubclassRule


def _applies(rule: SubclassRule, classes: set[str], ingredients: set[str],
             categories: set[str]) -> bool:
    return rule.always or bool(set(rule.classes) & classes) \
        or bool(set(rule.ingredients) & ingredients) or bool(set(rule.procedures) & categories)


def classify(classes: set[str], ingredients: set[str], categories: set[str],
             rules: Rules) -> tuple[str, str]:
    """``(therapy_class, subclass)`` of a line from its drug classes and procedures.

    ``classes`` should include the class of a CAR-T product known only from a
    procedure, so a productless infusion still makes the line TCE.
    """
    cr = rules.classify
    tce = bool(set(cr.tce_classes) & classes) or bool(set(cr.tce_procedures) & categories)
    for rule in cr.subclasses:
        if _applies(rule, classes, ingredients, categories):
            return ("tce" if tce else "non_tce"), rule.name
    return ("tce" if tce else "non_tce"), "other"

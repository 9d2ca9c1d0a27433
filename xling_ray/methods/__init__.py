"""The regularization methods, one module (or package) each, and the interface they share.

==============  =======================================  ==========================================
key             module                                   what it adds to cross-entropy
==============  =======================================  ==========================================
``xlinglearn``  :mod:`xling_ray.methods.xlinglearn`      perturbed view; CE, dispersion, attention, OT
``xite``        :mod:`xling_ray.methods.xite`            synthetic examples from target-language pairs
``adjustment``  :mod:`xling_ray.methods.adjustment`      word alignment before or during fine-tuning
``ding2022``    :mod:`xling_ray.methods.ding2022`        pushed view; robust targets, attention pull
==============  =======================================  ==========================================

A method is a :class:`Method` (settings, loss terms, preparation steps) handed to
:func:`register`; the recipe validates ``losses.<key>`` with its settings and the training
loop asks the registered methods what to prepare and weigh (:mod:`xling_ray.methods.base`).
A method outside the package registers the same way from its own module, named in the
recipe's ``methods:`` list so that every process reading the recipe imports it first
(``docs/adding-a-method.md``). The formulas the terms compute are in :mod:`xling_ray.losses`.
"""
from xling_ray.methods.base import (
    Method,
    Preparation,
    PrepareContext,
    active_methods,
    active_terms,
    register,
    registered_methods,
    unregister,
    registered_terms,
)

# The built-in methods, registered in this order (the order their terms are added to the loss).
from xling_ray.methods import xlinglearn, xite, adjustment, ding2022  # noqa: E402,F401  isort: skip

__all__ = ["Method", "Preparation", "PrepareContext", "active_methods", "active_terms", "register", "registered_methods",
           "registered_terms", "unregister"]

"""Fuzzing for temporal-extauthz: a coverage-guided ``atheris`` target over the whole Check
handler (``python -m fuzz.check_handler``) and the helpers the property tests share with it.

- ``fuzz.reference``: what a request acts on, read from a *fully decoded* ``temporalio``
  message (the oracle the body scanner is compared against);
- ``fuzz.harness``: a CheckRequest built from arbitrary bytes, run through the real
  ``AuthorizationService`` and checked against the invariants every outcome must satisfy.
"""

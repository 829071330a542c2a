"""The policy engine: categories, the policy document, matching, the decision and reloads."""

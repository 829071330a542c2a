"""Adapters between Envoy's wire protocols and the decision pipeline."""

"""Training: :func:`fit`, evaluation, resumable state and data-parallel runs."""

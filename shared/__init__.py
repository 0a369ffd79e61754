"""Code the three services share: settings, logging, errors, metrics, health, artifacts, the inference protocol."""

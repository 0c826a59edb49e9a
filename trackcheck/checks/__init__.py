"""Built-in checks, one module each; :func:`trackcheck.registry.all_checks` imports them all."""

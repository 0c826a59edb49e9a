"""trackcheck inside the frameworks people train with: one line, no adapter code.

- :mod:`trackcheck.integrations.lightning`: a ``lightning.pytorch.Callback`` that runs the
  checklist on your LightningModule (its ``training_step``, ``configure_optimizers`` and the
  Trainer's loaders) as ``trainer.fit`` starts, and stops ``fit`` on a failed gate.
- :mod:`trackcheck.integrations.hf`: a ``transformers.TrainerCallback`` (and
  ``check_trainer(trainer)``) that does the same for the Hugging Face ``Trainer``, through
  its own ``compute_loss``.

Each imports its framework only when used: ``import trackcheck`` never imports them.
"""

"""Helpers the tests share, imported by package name (pytest puts tests/ on sys.path):

- ``helpers.models``: tiny models, correct ones and ones with a planted bug each;
- ``helpers.hf_models``: tiny Hugging Face models built from configs (nothing downloaded)
  and the dict-item datasets they are fed;
- ``helpers.packed``: a tiny packed-sequence RNN (tokens, lengths) and its data;
- ``helpers.public_programs``: correct programs re-implemented from public examples (a d2l
  ResNet with conv biases before BatchNorm, a summed-NLL char-RNN with clipping, a [B, 1]
  regression with a squeezing loss, an EmbeddingBag text classifier);
- ``helpers.lightning_models``: a LightningModule and DataModule in lightning-hydra-template's
  shape, and the bugs planted in them;
- ``helpers.sweeps``: what the sweep tests of every launcher read back (the summary, the
  MLflow runs).

The tiny datasets and the one-check runner are in tests/conftest.py.
"""

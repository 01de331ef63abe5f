"""English↔Spanish translation with attention (RNN encoder–decoder or Transformer).

Modules: ``grammar``/``lexicon`` (embedded corpus), ``sources`` (file/HF readers), ``batching``
(datasets, collate, token-budget bucketing), ``data`` (LightningDataModule), ``models`` (networks),
``module`` (LightningModule, ``translate``), ``cli`` (``attn-translate``), ``demo``. See README.md.
Nothing heavy is imported here, so ``tasks.translation.grammar`` stays cheap to import.
"""

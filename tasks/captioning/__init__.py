"""Image captioning with visual attention (Show, Attend and Tell, plus a Transformer decoder).

Modules: `scenes` (generated corpus), `sources` (Flickr/COCO/Karpathy readers), `images` (robust
decoding, transforms), `data` (datasets + `CaptionDataModule`), `encoder` / `decoder` (model parts),
`module` (`CaptioningModule`), `metrics` (BLEU / CIDEr-D, COCO-toolkit style), `text` (PTB-style
tokenisation), `cli` (``attn-caption``), `demo` (``run_demo``).
"""

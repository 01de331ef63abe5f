"""Image captioning with visual attention (Show, Attend and Tell, plus a Transformer decoder).

Modules: `scenes` (generated corpus), `sources` (Flickr/COCO/Karpathy readers), `images` (robust
decoding, transforms), `batching` / `data` (datasets, collate, `CaptionDataModule`), `encoder` / `decoder`
(model parts), `network` (`CaptionNetwork`: the two together), `task` (`CaptioningTask`: loss, scores,
artifacts), `evaluation` (figures, pointing, the extra test split), `stored` (checkpoint artifacts, earlier
formats), `module` (`CaptioningModule`: the typed options on `core.train.module.TaskModule`), `inference`
(`Captioner`: the library calls), `metrics` (BLEU / CIDEr-D, COCO-toolkit style), `alignment` (pointing),
`text` (PTB-style tokenisation), `cli` (``attn-caption``), `demo` (``run_demo``).
"""

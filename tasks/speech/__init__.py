"""Speech recognition task: joint CTC/attention ASR on log-mel features (see tasks/speech/README.md).

Modules: `synth` (eSpeak NG corpus, optional GPL extra), `sources` (corpus readers), `audio` (reading,
resampling, chunking), `features` (log-mel, statistics, SpecAugment), `data` (`SpeechDataModule`; batching in
`batching`), `model` (encoders, attention decoder, CTC head), `network` (the front end and the model: the core
module's network), `losses` (the objective), `inference` (beam search, `transcribe`), `task` (`SpeechTask`: what the
core module trains, scores and stores; `stored`), `module` (`SpeechModule`), `cli` (`attn-asr`), `demo`. Kept
import-free so the synthesis worker process starts fast.
"""

"""Speech recognition task: joint CTC/attention ASR on log-mel features (see tasks/speech/README.md).

Modules: `synth` (eSpeak NG corpus, optional GPL extra), `sources` (corpus readers), `audio` (reading,
resampling, chunking), `features` (log-mel, statistics, SpecAugment), `data` (bucketed batches,
`SpeechDataModule`), `model` (encoders, attention decoder, CTC head), `module` (`SpeechModule`,
`transcribe`), `cli` (`attn-asr`), `demo`. Kept import-free so the synthesis worker process starts fast.
"""

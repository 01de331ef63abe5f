"""Decoding shared by every task: model-agnostic beam search (`core.decoding.beam`) and the CPU fast paths a
decoder's step function uses (`core.decoding.fast_paths`)."""

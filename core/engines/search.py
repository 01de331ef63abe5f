"""An engine that runs the whole search itself (CTranslate2), behind the interface of a network.

PyTorch and ONNX Runtime networks are driven one step at a time by ``core.decoding.beam.beam_search`` (the
``StepDecoder`` contract). An engine such as CTranslate2 runs its own beam search in C++ instead: it is handed
the batch and returns finished hypotheses. :class:`EngineSearch` is that contract, so a task's inference object
holds either kind as its ``network`` and picks the path with one ``isinstance``. Every engine's network
derives from :class:`EngineNetwork` (ONNX Runtime's steps too), which names the engine.
"""

from __future__ import annotations

from torch import Tensor, nn

from core.decoding.beam import DecodeResult

__all__ = ["EngineNetwork", "EngineSearch"]


class EngineNetwork(nn.Module):
    """Base class of a network that runs on an inference engine (it has no parameters in PyTorch)."""

    #: the engine's name (``"ctranslate2"``, ``"onnxruntime"``), shown to users
    engine: str = ""


class EngineSearch(EngineNetwork):
    """A network whose engine searches whole sequences itself."""

    def search(
        self,
        src: Tensor,
        src_lengths: Tensor,
        beam: int,
        nbest: int,
        need_weights: bool,
        max_len: int,
        length_penalty: float,
        suppress: tuple[int, ...],
    ) -> DecodeResult:
        """Beam search over a padded batch, as ``core.decoding.beam.beam_search`` returns it.

        Args:
            src: ``(B, S)`` token ids, padded.
            src_lengths: ``(B,)`` lengths.
            beam: beam size (1: greedy).
            nbest: hypotheses per item.
            need_weights: also return each hypothesis' ``(T, S)`` attention.
            max_len: most decoding steps (EOS included).
            length_penalty: the exponent of the length normalisation.
            suppress: token ids never emitted.
        """
        raise NotImplementedError

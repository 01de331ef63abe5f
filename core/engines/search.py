"""An engine that runs the whole search itself (CTranslate2), behind the interface of a network.

PyTorch and ONNX Runtime networks are driven one step at a time by ``core.decoding.beam.beam_search`` (the
``StepDecoder`` contract; ONNX Runtime's are ``core.engines.onnx.EngineNetwork``). An engine such as
CTranslate2 runs its own beam search in C++ instead: it is handed the batch and returns finished hypotheses.
:class:`EngineSearch` is that contract, so a task's inference object holds either kind as its ``network`` and
picks the path with one ``isinstance``. It is plain Python: ids in, hypotheses out, so an engine that needs no
PyTorch is run without importing it (CTranslate2 starts in a fraction of a second; PyTorch's import alone takes
over a second).
"""

from __future__ import annotations

from core.decoding.result import DecodeResult

__all__ = ["EngineSearch"]


class EngineSearch:
    """A network whose engine searches whole sequences itself."""

    #: the engine's name (``"ctranslate2"``), shown to users
    engine: str = ""

    def search(
        self,
        sources: list[list[int]],
        beam: int,
        nbest: int,
        need_weights: bool,
        max_len: int,
        length_penalty: float,
        suppress: tuple[int, ...],
    ) -> DecodeResult:
        """Beam search over a batch, as ``core.decoding.beam.beam_search`` returns it.

        Args:
            sources: token ids of each item (unpadded).
            beam: beam size (1: greedy).
            nbest: hypotheses per item.
            need_weights: also return each hypothesis' ``(T, S)`` attention (a CPU float tensor).
            max_len: most decoding steps (EOS included).
            length_penalty: the exponent of the length normalisation.
            suppress: token ids never emitted.
        """
        raise NotImplementedError

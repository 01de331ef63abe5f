"""What attention buys, translation: the grammar's gold word alignments, long coordinated sentences, the AER of a
model's attention (``tasks.translation.alignment``) and its ``val/aer`` / ``test/aer`` logging."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest
import torch

from core.metrics.alignment import word_index_of_tokens
from core.text.tokenizers import CharTokenizer, WordTokenizer
from tasks.translation import alignment as alignment_mod
from tasks.translation import grammar as g
from tasks.translation.alignment import alignment_scores, word_indices
from tasks.translation.data import TranslationDataModule
from tasks.translation.module import TranslationModule

# The Spanish words with no English word of their own: personal "a", "al" (a + el) and the "los" of
# "todos los días". Every other Spanish word has a sure link.
ONLY_POSSIBLE = {"a", "al", "los"}


def _named(p: g.AlignedPair) -> tuple[set[tuple[str, str]], set[tuple[str, str]]]:
    """Sure and possible links as (English word, Spanish word) strings, for readable expectations."""
    en, es = p.en.split(), p.es.split()
    return {(en[i], es[j]) for i, j in p.sure}, {(en[i], es[j]) for i, j in p.possible}


def _tiny_dm(tmp: Path, **kw: Any) -> TranslationDataModule:
    args: dict[str, Any] = dict(
        n_pairs=400, val_size=16, test_size=16, vocab_size=250, min_freq=1, max_tokens=512, cache_dir=str(tmp / "cache")
    )
    args.update(kw)
    return TranslationDataModule(**args)


def _tiny_model(dm: TranslationDataModule, **kw: Any) -> TranslationModule:
    torch.manual_seed(0)
    model = TranslationModule(embed_dim=16, hidden_dim=16, dropout=0.0, **kw)
    model.set_tokenizers(dm.src_tokenizer, dm.tgt_tokenizer)  # type: ignore[arg-type]
    model.build_model()
    return model


# ------------------------------------------------------------------------------------------ gold alignments
def test_gold_links_of_hand_checked_pairs() -> None:
    love, see, buy = g.verb_by_en("love"), g.verb_by_en("see"), g.verb_by_en("buy")
    i, you, she = g.subject_pronoun(0), g.subject_pronoun(1), g.subject_pronoun(3)

    p = g.aligned_clause(i, love, clitic=1)
    assert p.pair == ("I love you", "te quiero") == g.clause(i, love, clitic=1)
    assert _named(p) == ({("love", "quiero"), ("you", "te")}, {("I", "quiero")})  # pro-drop: "I" lives on -o

    p = g.phrase_pair(g.noun_phrase(g.noun_by_en("car"), adj=g.adjective_by_en("red")))
    assert p.pair == ("the red car", "el coche rojo")
    assert p.sure == ((0, 0), (1, 2), (2, 1)) and p.possible == ()  # adjective after the noun: crossed links

    p = g.aligned_clause(i, see, obj=g.noun_phrase(g.noun_by_en("boy")))
    assert p.pair == ("I see the boy", "veo al niño")
    assert _named(p) == (
        {("see", "veo"), ("boy", "niño")},
        {("I", "veo"), ("the", "al"), ("see", "al")},  # "al" = personal "a" + "el"
    )

    p = g.aligned_clause(you, love, clitic=0, question=True)
    assert p.pair == ("do you love me?", "¿me quieres?")
    assert _named(p) == (
        {("love", "quieres?"), ("me?", "¿me")},
        {("do", "quieres?"), ("you", "quieres?"), ("me?", "quieres?")},  # "?" also translates the final "?"
    )

    p = g.aligned_clause(she, see, clitic=5, tense="past", negative=True)
    assert p.pair == ("she didn't see them", "ella no los vio")
    assert _named(p) == (
        {("she", "ella"), ("didn't", "no"), ("see", "vio"), ("them", "los")},
        {("didn't", "vio")},  # "did": the tense of "vio"
    )

    p = g.aligned_what_question(she, buy, tense="past")
    assert p.pair == ("what did she buy?", "¿qué compró ella?")
    assert _named(p) == (
        {("what", "¿qué"), ("buy?", "compró"), ("she", "ella?")},
        {("did", "compró"), ("buy?", "¿qué"), ("buy?", "ella?")},
    )

    p = g.aligned_copula(she, g.adjective_by_en("tall"), negative=True)
    assert p.pair == ("she isn't tall", "ella no es alta")
    assert _named(p) == ({("she", "ella"), ("isn't", "no"), ("isn't", "es"), ("tall", "alta")}, set())

    p = g.aligned_clause(g.subject_pronoun(4), g.verb_by_en("work"), tense="present", adverb=2)
    assert p.pair == ("we work every day", "trabajamos todos los días")
    assert _named(p) == (
        {("work", "trabajamos"), ("every", "todos"), ("day", "días")},
        {("we", "trabajamos"), ("every", "los"), ("day", "los")},
    )


def test_corpus_links_are_in_range_and_cover_every_spanish_word() -> None:
    aligned = g.generate_aligned_corpus(3000, seed=0)
    assert [p.pair for p in aligned] == g.generate_corpus(3000, seed=0)
    for p in aligned:
        en, es = p.en.split(), p.es.split()
        assert all(0 <= i < len(en) and 0 <= j < len(es) for i, j in p.sure + p.possible), p
        assert not set(p.sure) & set(p.possible) and list(p.sure) == sorted(set(p.sure))
        linked = {j for _, j in p.sure + p.possible}
        surely = {j for _, j in p.sure}
        assert linked == set(range(len(es))), p  # every Spanish word has a link
        assert {es[j].strip("¿?") for j in range(len(es)) if j not in surely} <= ONLY_POSSIBLE, p
        assert {i for i, _ in p.sure + p.possible} == set(range(len(en))), p  # and every English word


def test_generate_corpus_is_unchanged() -> None:
    """The demo's and the checkpoints' corpus: the same pairs as before gold alignments existed."""
    pairs = g.generate_corpus(3000, seed=0)
    digest = hashlib.sha256("\n".join(f"{a}\t{b}" for a, b in pairs).encode()).hexdigest()
    assert digest == "2344a25dab5d632c240fbae11cdc0c9ee4d8998d6254b0cc203306ce9876e9aa"
    assert g.generate_corpus(3000, seed=0, max_clauses=1) == pairs


# ------------------------------------------------------------------------------------------ long sentences
def _clause_of_each_word(words: list[str], conjunctions: set[str]) -> list[int]:
    """Which coordinated clause each word belongs to (-1 for the conjunctions between clauses)."""
    out, k = [], 0
    for w in words:
        if w in conjunctions:
            k += 1
            out.append(-1)
        else:
            out.append(k)
    return out


def _check_coordinated(p: g.AlignedPair) -> None:
    """Every link joins words of the same clause, or "and" with its "y"/"e"; every Spanish word is linked."""
    en, es = p.en.split(), p.es.split()
    en_k, es_k = _clause_of_each_word(en, {"and"}), _clause_of_each_word(es, {"y", "e"})
    assert max(en_k) == max(es_k)
    for i, j in p.sure + p.possible:
        assert en_k[i] == es_k[j], (p.en, en[i], es[j])
        assert (en_k[i] == -1) == (en[i] == "and")
    assert {j for _, j in p.sure + p.possible} == set(range(len(es)))


def test_coordinate_offsets_links_and_uses_e_before_i() -> None:
    a = g.aligned_clause(g.subject_pronoun(0), g.verb_by_en("love"), clitic=1)  # I love you → te quiero
    cake = g.noun_phrase(g.noun_by_en("cake"))
    b = g.aligned_clause(g.subject_pronoun(0), g.verb_by_en("make"), obj=cake, tense="past")  # I made the cake
    c = g.aligned_clause(g.subject_pronoun(3), g.verb_by_en("sleep"))  # she sleeps → ella duerme
    p = g.coordinate([a, b, c])
    assert p.pair == ("I love you and I made the cake and she sleeps", "te quiero e hice el pastel y ella duerme")
    assert (3, 2) in p.sure and (8, 6) in p.sure  # "and" → "e" (before "hice"), "and" → "y"
    assert (5, 3) in p.sure and (4, 3) in p.possible  # "made"–"hice" and the dropped "I" moved by 4 and 3 words
    assert (10, 8) in p.sure  # "sleeps"–"duerme" moved by 9 and 7
    _check_coordinated(p)
    with pytest.raises(ValueError, match="statements, not questions"):
        g.coordinate([a, g.aligned_clause(g.subject_pronoun(1), g.verb_by_en("love"), clitic=0, question=True)])


def test_long_sentence_buckets_reach_40_words_and_keep_alignments() -> None:
    corpus = g.generate_corpus(2000, seed=0)
    buckets = g.long_sentence_buckets(4, seed=0, exclude=corpus)
    assert list(buckets) == ["1-9", "10-19", "20-29", "30-39", "40+"]
    bounds = dict(zip(buckets, g.LENGTH_BUCKETS))
    seen = {en for en, _ in corpus}
    for label, pairs in buckets.items():
        lo, hi = bounds[label]
        assert len(pairs) == 4
        for p in pairs:
            n = len(p.en.split())
            assert lo <= n and (hi is None or n <= hi), (label, p.en)
            assert p.en not in seen
            if "?" not in p.en and " and " in p.en:
                _check_coordinated(p)
            else:  # a single sentence: every Spanish word linked, all in range
                assert {j for _, j in p.sure + p.possible} == set(range(len(p.es.split())))
    assert min(len(p.en.split()) for p in buckets["40+"]) >= 40
    # a training corpus of up to 3 clauses: longer sentences, the same checks
    long = g.generate_aligned_corpus(300, seed=0, max_clauses=3)
    assert max(len(p.en.split()) for p in long) > 15
    for p in long[len(g.anchor_pairs()) :]:
        if " and " in p.en:
            _check_coordinated(p)


def test_data_module_gold_alignments_long_set_and_direction(tmp_path: Path) -> None:
    dm = _tiny_dm(tmp_path, max_clauses=3, aer_pairs=5)
    val = dm.load_splits()["val"]
    gold = dm.gold_alignments("val")
    assert gold is not None and [(s, t) for s, t, _, _ in gold] == val[:5]
    assert max(len(s.split()) for s, _ in dm.load_splits()["train"]) > 15  # coordinated statements
    long = dm.long_sentence_set(n_per_bucket=2)
    train_sources = {s for s, _ in dm.load_splits()["train"]}
    assert all(s not in train_sources for pairs in long.values() for s, _, _, _ in pairs)
    assert all(len(s.split()) >= 40 for s, _, _, _ in long["40+"])

    back = _tiny_dm(tmp_path, direction="es-en", aer_pairs=3)
    src, tgt, sure, possible = back.gold_alignments("test")[0]  # type: ignore[index]
    forward = next(p for p in g.generate_aligned_corpus(400, seed=0) if p.es == src)
    assert tgt == forward.en and set(sure) == {(j, i) for i, j in forward.sure}
    assert set(possible) == {(j, i) for i, j in forward.possible}
    assert len(back.long_sentence_set(1, buckets=((1, 9),))["1-9"][0][0].split()) <= 9  # bucketed by Spanish

    from core.errors import ConfigError

    with pytest.raises(ConfigError, match="max_clauses must be >= 1"):
        _tiny_dm(tmp_path, max_clauses=0)


# ------------------------------------------------------------------------------------------ words of tokens
def test_word_indices_of_subword_word_and_char_tokenizers(tmp_path: Path) -> None:
    text = "¿qué compró ella?"
    word = WordTokenizer.train([text])  # splits "¿" and "?" off: 5 tokens, 3 words
    assert word_indices(word, text, word.encode(text)) == [0, 0, 1, 2, 2]
    char = CharTokenizer.train([text])
    assert word_indices(char, "ab cd", char.encode("ab cd")) == [0, 0, 0, 1, 1]  # the space joins the word before
    dm = _tiny_dm(tmp_path)
    dm.setup("fit")
    tok = dm.tgt_tokenizer
    assert tok is not None and tok.kind == "subword"
    ids = tok.encode(text)
    assert tok.id_to_token(ids[0]).startswith("▁")  # the Metaspace marker the merge relies on
    assert word_indices(tok, text, ids) == word_index_of_tokens(tok.tokens(text))
    assert word_indices(tok, text, ids)[-1] == 2


# ------------------------------------------------------------------------------------------ the score
def test_alignment_scores_of_tiny_models(tmp_path: Path) -> None:
    dm = _tiny_dm(tmp_path)
    dm.setup("fit")
    gold = dm.gold_alignments("val")
    assert gold
    scores = alignment_scores(_tiny_model(dm).translator, gold, batch_size=5)
    assert set(scores) == {"aer"} and 0.0 <= scores["aer"] <= 1.0
    assert alignment_scores(_tiny_model(dm, attention="none").translator, gold) == {}
    multi = alignment_scores(
        _tiny_model(dm, attention="multihead", attention_options={"num_heads": 2}).translator, gold
    )
    keys = {"aer", "aer_mean_heads", "aer_layer", "aer_best_head", "aer_best_head_index"}
    keys |= {"aer_best_layer", "aer_best_layer_index"}
    assert set(multi) == keys and multi["aer_layer"] == 0.0 == multi["aer_best_layer_index"]
    assert multi["aer"] == multi["aer_mean_heads"] == multi["aer_best_layer"]  # one layer: the best one
    assert 0.0 <= multi["aer_best_head"] <= 1.0 and multi["aer_best_head_index"] in (0.0, 1.0)
    trans = _tiny_model(dm, arch="transformer", num_heads=2, ffn_dim=32, encoder_layers=1, decoder_layers=2)
    scores = alignment_scores(trans.translator, gold)
    assert set(scores) == keys and scores["aer_layer"] == 1.0 and scores["aer_best_head_index"] in (0.0, 1.0)
    assert all(0.0 <= scores[k] <= 1.0 for k in ("aer", "aer_best_head", "aer_best_layer"))
    # batching changes nothing: the same score one sentence at a time
    assert alignment_scores(trans.translator, gold, batch_size=1) == pytest.approx(scores)


def _forced(model: TranslationModule, gold: list[Any], layers: list[list[dict[int, float]]]) -> Any:
    """A stand-in for ``layer_head_attention_batch`` whose attention is made from the gold links.

    ``layers[l][h]`` mixes two one-hot maps: weight ``mix[0]`` on the gold source word of each target word (a
    sure link, else a possible one) and ``mix[1]`` on the next source word (cyclically): the "shifted" map.
    """
    src_tok, tgt_tok = model.src_tokenizer, model.tgt_tokenizer
    pending = iter(gold)  # alignment_scores asks for the sentences in order (none is skipped here)

    def fake(_module: Any, src_ids: list[list[int]], tgt_ids: list[list[int]]) -> list[list[torch.Tensor]]:
        out = []
        for s_ids, t_ids in zip(src_ids, tgt_ids):
            src, tgt, sure, possible = next(pending)
            assert s_ids == src_tok.encode(src) and t_ids == tgt_tok.encode(tgt)
            s_words = word_index_of_tokens([src_tok.id_to_token(i) for i in s_ids])
            t_words = word_index_of_tokens([tgt_tok.id_to_token(i) for i in t_ids])
            n_src = s_words[-1] + 1
            first_token = {w: s_words.index(w) for w in range(n_src)}
            per_layer = []
            for heads in layers:
                w = torch.zeros(len(heads), len(t_ids), len(s_ids))  # (H, T, S) tokens
                for h, mix in enumerate(heads):
                    for t, tw in enumerate(t_words):
                        src_word = min([s for s, x in sure if x == tw] or [s for s, x in possible if x == tw])
                        w[h, t, first_token[src_word]] += mix.get(0, 0.0)
                        w[h, t, first_token[(src_word + 1) % n_src]] += mix.get(1, 0.0)
                per_layer.append(w)
            out.append(per_layer)
        return out

    return fake


def test_forced_attention_scores_zero_and_a_known_shifted_value(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    dm = _tiny_dm(tmp_path)
    dm.setup("fit")
    boy = g.aligned_clause(g.subject_pronoun(0), g.verb_by_en("see"), obj=g.noun_phrase(g.noun_by_en("boy")))
    car = g.phrase_pair(g.noun_phrase(g.noun_by_en("car"), adj=g.adjective_by_en("red")))
    gold = [boy, car]
    model = _tiny_model(dm)
    gold_map, shifted = {0: 1.0}, {1: 1.0}
    monkeypatch.setattr(alignment_mod, "layer_head_attention_batch", _forced(model, gold, [[gold_map]]))
    assert alignment_scores(model.translator, gold) == {"aer": 0.0}
    monkeypatch.setattr(alignment_mod, "layer_head_attention_batch", _forced(model, gold, [[shifted]]))
    # shifted: veo/al→"the", niño→"I"; el→"red", coche→"the", rojo→"car": only ("the", "al") is even possible.
    # |A| = 6, |S| = 5, |A∩S| = 0, |A∩P| = 1: AER = 1 - 1/11.
    assert alignment_scores(model.translator, gold) == {"aer": pytest.approx(10 / 11)}

    # Two layers of two heads: the last layer's mean leans to the shifted map, its second head to the gold.
    multi = _tiny_model(dm, attention="multihead", attention_options={"num_heads": 2})
    layers = [[gold_map, gold_map], [shifted, {0: 0.6, 1: 0.4}]]
    monkeypatch.setattr(alignment_mod, "layer_head_attention_batch", _forced(multi, gold, layers))
    assert alignment_scores(multi.translator, gold) == {
        "aer": pytest.approx(10 / 11),
        "aer_mean_heads": pytest.approx(10 / 11),
        "aer_layer": 1.0,
        "aer_best_head": 0.0,
        "aer_best_head_index": 1.0,
        "aer_best_layer": 0.0,
        "aer_best_layer_index": 0.0,
    }


# ------------------------------------------------------------------------------------------ training
def _fit(model: TranslationModule, dm: TranslationDataModule, val_batches: int = 0) -> Any:
    import lightning.pytorch as pl

    trainer = pl.Trainer(
        max_epochs=1,
        limit_train_batches=3,
        limit_val_batches=val_batches,
        limit_test_batches=1,
        num_sanity_val_steps=0,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        use_distributed_sampler=False,
    )
    trainer.fit(model, dm)
    return trainer


def test_attention_none_fits_and_decodes(tmp_path: Path) -> None:
    dm = _tiny_dm(tmp_path, aer_pairs=8)
    model = TranslationModule(embed_dim=16, hidden_dim=16, attention="none", beam_size=1, plot_examples=0, max_len=8)
    trainer = _fit(model, dm, val_batches=1)
    assert trainer.global_step == 3 and "val/loss" in trainer.callback_metrics
    assert not any("aer" in k for k in trainer.callback_metrics)  # nothing to align
    out = model.translate(["I love you", "the red car"], beam=2)
    assert len(out) == 2 and all(isinstance(o, str) for o in out)
    hyp = model.translate(["the red car"], beam=1, return_attention=True)[0]
    uniform = torch.full_like(hyp.attention, 1 / len(hyp.src_tokens))  # the masked mean: 1/S everywhere
    assert hyp.attention is not None and torch.allclose(hyp.attention, uniform)


def test_val_and_test_aer_are_logged(tmp_path: Path) -> None:
    dm = _tiny_dm(tmp_path, aer_pairs=8)
    model = TranslationModule(
        embed_dim=16,
        hidden_dim=16,
        attention="multihead",
        attention_options={"num_heads": 2},
        beam_size=1,
        plot_examples=0,
        val_bleu_sentences=4,
        max_len=8,
    )
    trainer = _fit(model, dm, val_batches=1)
    metrics = trainer.callback_metrics
    assert 0.0 <= float(metrics["val/aer"]) <= 1.0
    assert {"val/aer_best_head", "val/aer_best_head_index", "val/aer_best_layer"} <= set(metrics)
    trainer.test(model, dm, verbose=False)
    assert 0.0 <= float(trainer.callback_metrics["test/aer"]) <= 1.0

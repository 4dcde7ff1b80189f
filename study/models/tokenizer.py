"""A word-level tokenizer built locally with ``tokenizers`` (no hub), for the embedded teacher.

Every word of the training corpus is one token, so answers are one to three tokens and sequences
stay short, which is what makes training on a 2-core CPU affordable. Real checkpoints bring their
own tokenizer; nothing else in the toolkit depends on this one being word-level.
"""

from __future__ import annotations

from collections.abc import Iterable

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
from transformers import PreTrainedTokenizerFast

PAD, BOS, EOS, UNK, IMAGE = "<pad>", "<s>", "</s>", "<unk>", "<image>"
SPECIAL_TOKENS = (PAD, BOS, EOS, UNK, IMAGE)


def build_word_tokenizer(texts: Iterable[str], whole_tokens: Iterable[str] = ()) -> PreTrainedTokenizerFast:
    """A left-padding word-level tokenizer whose vocabulary is every word in ``texts``, plus
    ``whole_tokens`` kept as single tokens (e.g. a chat template's ``"USER:"``).

    Padding side is passed to the constructor so that it is saved in ``tokenizer_config.json``:
    set afterwards, it is lost on reload and answers end up on pad positions.
    """
    pre = pre_tokenizers.Whitespace()
    words: set[str] = set()
    for text in texts:
        for special in SPECIAL_TOKENS:
            text = text.replace(special, " ")
        words.update(w for w, _ in pre.pre_tokenize_str(text))
    vocab = {tok: i for i, tok in enumerate([*SPECIAL_TOKENS, *sorted(words)])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token=UNK))
    tok.pre_tokenizer = pre
    tok.decoder = decoders.WordPiece(prefix="##", cleanup=True)  # joins words with spaces
    tok.post_processor = processors.TemplateProcessing(single=f"{BOS} $A", pair=f"{BOS} $A $B", special_tokens=[(BOS, vocab[BOS])])
    tok.add_special_tokens(list(SPECIAL_TOKENS))
    tok.add_tokens(list(whole_tokens))
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=BOS,
        eos_token=EOS,
        pad_token=PAD,
        unk_token=UNK,
        padding_side="left",
        extra_special_tokens={"image_token": IMAGE},
    )

"""Text tasks (passkey, needle, lines, RULER) in the ids of a `transformers` tokenizer.

`TaskDataModule(tokenizer=DIR)` wraps its task in `TokenizedTask`: each example the task generates
(its input and target are bytes, the 256 one-character symbols of lengen's byte tasks) is decoded
as UTF-8 text and tokenized, so a pretrained model is evaluated and fine-tuned on the token ids it
was trained with. Layout: prompt = [BOS when the tokenizer has one] + the context's tokens;
target = the answer's tokens + [EOS] (the token of "\\n" when the tokenizer has no EOS, as
lengen's language-model data ends a document).

The context and the answer are tokenized together and split where the answer's first character
starts: a token that spans the boundary (e.g. " 12345" after "The pass key is") goes to the target.
So the target is the tokenization a model trained on the tokenizer's text would itself produce
after the prompt, and token-level scores (PresenceAccuracy, ExactMatch) compare the same strings
the byte tasks compare; `decode` gives the tokens back as text.

The task's `length` (the evaluation bucket) keeps the task's meaning, bytes of its input; the
model sees fewer tokens (about length / bytes-per-token of the tokenizer).
"""

from __future__ import annotations

import hashlib
import random

from lengen.task import Example, Task

BYTE_SYMBOLS = tuple(chr(byte) for byte in range(256))


def load_tokenizer(name: str):
    """`transformers.AutoTokenizer` for `name` (a local folder or a hub name); one-line errors."""
    try:
        from transformers import AutoTokenizer  # heavy and optional: imported only here
    except ImportError as error:
        raise ValueError(
            f"tokenizer {name!r} needs the transformers package (pip install transformers)"
        ) from error
    try:
        tokenizer = AutoTokenizer.from_pretrained(name)
    except (OSError, ValueError) as error:
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else ""
        raise ValueError(f"tokenizer {name!r} could not be loaded: {first_line}") from error
    if not tokenizer.is_fast:
        raise ValueError(
            f"tokenizer {name!r} is a slow (Python) tokenizer; a fast one (tokenizer.json) is "
            "needed for the character offsets that split context and answer"
        )
    return tokenizer


class TokenizedTask(Task):
    """A byte task's examples as the ids of a `transformers` tokenizer (module docstring).

    Args:
        task: a task over the 256 byte symbols (Passkey, NeedleQA, LineRetrieval, Ruler*).
        tokenizer: a folder with a fast `transformers` tokenizer, or a hub name.
    """

    def __init__(self, task: Task, tokenizer: str) -> None:
        if tuple(task.symbol_table) != BYTE_SYMBOLS:
            raise ValueError(
                f"data.tokenizer: {type(task).__name__} is not a text task (its symbols are not "
                "the 256 bytes); a tokenizer is accepted for the retrieval tasks (Passkey, "
                "NeedleQA, LineRetrieval, Ruler*) and TextDataModule"
            )
        self.task = task
        self.tokenizer_name = tokenizer
        self._tokenizer = load_tokenizer(tokenizer)
        self._end = self._end_token()

    def _end_token(self) -> int:
        """The id that ends a target: EOS, else the single token of "\\n"."""
        if self._tokenizer.eos_token_id is not None:
            return self._tokenizer.eos_token_id
        newline = self._tokenizer("\n", add_special_tokens=False)["input_ids"]
        if len(newline) != 1:
            raise ValueError(
                f"tokenizer {self.tokenizer_name!r} has no EOS token and no single token for "
                '"\\n" to end a target with; give one with an eos_token'
            )
        return newline[0]

    @property
    def min_length(self) -> int:
        return self.task.min_length

    @property
    def vocab_size(self) -> int:
        return len(self._tokenizer)

    @property
    def vocab(self) -> tuple[str, ...]:
        """Token strings by id (the tokenizer's own spelling, e.g. "Ġthe")."""
        by_id = {index: token for token, index in self._tokenizer.get_vocab().items()}
        return tuple(by_id.get(index, "") for index in range(self.vocab_size))

    def decode(self, token_ids: list[int]) -> list[str]:
        """Each id as the text it stands for (joined, they read as the decoded string)."""
        return [self._tokenizer.decode([token_id]) for token_id in token_ids]

    def to_text(self, symbols: list[str]) -> str:
        """The decoded tokens (`decode`) joined: the text they stand for."""
        return "".join(symbols)

    def encode(self, symbols: list[str]) -> list[int]:
        """Byte symbols -> token ids of their UTF-8 text (no special tokens)."""
        return self._tokenizer(self._text(symbols), add_special_tokens=False)["input_ids"]

    @staticmethod
    def _text(symbols: list[str]) -> str:
        """The byte symbols (chr(byte)) as UTF-8 text; an invalid sequence (a character cut by
        the filler's random offset) becomes U+FFFD."""
        return "".join(symbols).encode("latin-1").decode("utf-8", errors="replace")

    def split_tokens(self, context: str, answer: str) -> tuple[list[int], list[int]]:
        """(context tokens, answer tokens) of `context + answer` tokenized as one text, split
        where the answer starts; a token spanning the boundary belongs to the answer."""
        encoded = self._tokenizer(
            context + answer, add_special_tokens=False, return_offsets_mapping=True
        )
        ids, offsets = encoded["input_ids"], encoded["offset_mapping"]
        cut = next(
            (index for index, (_, end) in enumerate(offsets) if end > len(context)), len(ids)
        )
        return ids[:cut], ids[cut:]

    def make_example(self, length: int, rng: random.Random) -> Example:
        if length < self.min_length:
            raise ValueError(
                f"{type(self.task).__name__} needs length >= {self.min_length}, got {length}"
            )
        inputs, target = self.task.generate(length, rng)
        context, answer = self.split_tokens(self._text(inputs), self._text(target))
        bos = self._tokenizer.bos_token_id
        return Example(
            prompt=([bos] if bos is not None else []) + context,
            target=[*answer, self._end],
            length=length,
        )

    def fingerprint(self) -> str:
        """sha256 (16 hex digits) of the tokenizer's definition and special tokens."""
        definition = self._tokenizer.backend_tokenizer.to_str()
        specials = repr(sorted(self._tokenizer.special_tokens_map.items()))
        return hashlib.sha256((definition + specials).encode()).hexdigest()[:16]

    def identity(self) -> dict:
        """The wrapped task's identity and code version, and the tokenizer's fingerprint."""
        from lengen.data.tasks import task_code_version

        return {
            "class_path": f"{type(self).__module__}.{type(self).__qualname__}",
            "task": self.task.identity(),
            "task_code": task_code_version(self.task),
            "tokenizer": self.tokenizer_name,
            "tokenizer_fingerprint": self.fingerprint(),
        }

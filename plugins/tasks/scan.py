"""SCAN: navigation commands to action sequences, split by the length of the action sequence."""

from __future__ import annotations

import functools
import random
from collections import defaultdict

from lengen.task import Task

PRIMITIVES = {"walk": "I_WALK", "look": "I_LOOK", "run": "I_RUN", "jump": "I_JUMP"}
TURNS = {"left": "I_TURN_LEFT", "right": "I_TURN_RIGHT"}
WORDS = (*PRIMITIVES, "turn", *TURNS, "opposite", "around", "twice", "thrice", "and", "after")
ACTIONS = (*PRIMITIVES.values(), *TURNS.values())


def _verb_phrases() -> list[tuple[list[str], list[str]]]:
    """V of the grammar: u, u dir, turn dir, x opposite dir, x around dir (34 phrases)."""
    phrases = [([word], [action]) for word, action in PRIMITIVES.items()]
    for direction, turn in TURNS.items():
        phrases.append((["turn", direction], [turn]))
        phrases.append((["turn", "opposite", direction], [turn, turn]))
        phrases.append((["turn", "around", direction], [turn] * 4))
        for word, action in PRIMITIVES.items():
            phrases.append(([word, direction], [turn, action]))
            phrases.append(([word, "opposite", direction], [turn, turn, action]))
            phrases.append(([word, "around", direction], [turn, action] * 4))
    return phrases


@functools.cache
def commands_by_output_length() -> dict[int, list[tuple[tuple[str, ...], tuple[str, ...]]]]:
    """All 20,910 SCAN commands (Lake & Baroni 2018, figure 6 grammar) by action-sequence length."""
    sentences = []
    for words, actions in _verb_phrases():
        sentences.append((words, actions))
        sentences.append((words + ["twice"], actions * 2))
        sentences.append((words + ["thrice"], actions * 3))
    by_length = defaultdict(list)
    for words, actions in sentences:
        by_length[len(actions)].append((tuple(words), tuple(actions)))
    for first_words, first_actions in sentences:
        for second_words, second_actions in sentences:
            for conjunction, actions in (
                ("and", first_actions + second_actions),
                ("after", second_actions + first_actions),
            ):
                command = (*first_words, conjunction, *second_words)
                by_length[len(actions)].append((command, tuple(actions)))
    return dict(by_length)


class Scan(Task):
    """SCAN (Lake & Baroni 2018), generated from its grammar, as in Kazemnejad et al. 2023.

    The length is the number of actions in the target, as in SCAN's length split: an instance of
    length n is a command drawn uniformly from the commands whose action sequence has n actions.
    Input: the command's words; target: the actions (I_WALK, I_TURN_LEFT, ...). Lengths run 1..48
    (a few lengths have no command; asking for one is an error naming those that exist). Default
    split (Lake & Baroni's length split): train on lengths 1..22, test on 24..48.
    """

    symbols = (*WORDS, *ACTIONS)

    def generate(self, length: int, rng: random.Random) -> tuple[list[str], list[str]]:
        by_length = commands_by_output_length()
        if length not in by_length:
            raise ValueError(f"Scan: no command has {length} actions; lengths: {sorted(by_length)}")
        command, actions = rng.choice(by_length[length])
        return list(command), list(actions)

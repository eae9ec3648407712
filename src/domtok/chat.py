"""The one place that knows the chat format: `User: {q}\\nAssistant: {a}<EOS>`.

SFT, GRPO, RFT, evaluation and sampling all render through this module, so a prompt seen
in training is byte-for-byte the prompt seen in evaluation. The loss mask is built here from
message roles, never from token values (the reference study masked every EOS because
pad == eos, and its models never learned to stop).

Format, for messages [system?, user, assistant, user, assistant, ...]:

    {system}\\n\\n                      (only if there is a system message)
    User: {user}\\nAssistant: {assistant}<EOS>
    User: {user}\\nAssistant: {assistant}<EOS>

The assistant content follows "Assistant:" after one space; the space belongs to the prompt
side, so generation starts right after "Assistant:" with the model writing " {answer}".
Loss covers the assistant text and its closing EOS, nothing else.
"""

from __future__ import annotations

from dataclasses import dataclass

USER_PREFIX = "User: "
ASSISTANT_PREFIX = "\nAssistant:"
TURN_SEPARATOR = "\n"  # between an assistant's EOS and the next "User: "
# A sample that starts a new user turn has gone past its answer: generation stops here.
STOP_STRINGS = ("\nUser:",)

# The same format as a Jinja chat template, for `transformers`' `tokenizer.apply_chat_template`
# (written into every tokenizer_config.json domtok saves). With the tokenizer's eos_token
# "<|endoftext|>" it renders exactly `render_conversation_text`; tests/test_hf_native.py
# compares the two, text and ids. "Assistant:" follows every user message, so the prompt
# ends the same with or without `add_generation_prompt`.
CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{%- if message['role'] == 'system' -%}{{ message['content'] }}{{ '\\n\\n' }}"
    "{%- elif message['role'] == 'user' -%}"
    "{%- if loop.index0 > 0 and messages[loop.index0 - 1]['role'] == 'assistant' %}{{ '\\n' }}{% endif -%}"
    "{{ 'User: ' }}{{ message['content'] }}{{ '\\nAssistant:' }}"
    "{%- elif message['role'] == 'assistant' -%}{{ ' ' }}{{ message['content'] }}{{ eos_token }}"
    "{%- endif -%}"
    "{%- endfor -%}"
)


def render_prompt(question: str, system: str | None = None, history: list[dict] | None = None) -> str:
    """Text the model continues to answer `question` (ends with "Assistant:")."""
    messages = ([{"role": "system", "content": system}] if system else []) + list(history or [])
    messages.append({"role": "user", "content": question})
    return render_conversation_text(messages, eos_text="<|endoftext|>", add_generation_prompt=True)


def render_conversation_text(messages: list[dict], eos_text: str = "<|endoftext|>",
                             add_generation_prompt: bool = False) -> str:
    """The whole conversation as text (for display and for the text-level tests)."""
    return "".join(text for text, _ in _segments(messages, eos_text, add_generation_prompt))


@dataclass
class Rendered:
    ids: list[int]
    mask: list[int]  # 1 where the token is trained on (assistant text + its EOS), else 0


def render_conversation(messages: list[dict], tokenizer, add_generation_prompt: bool = False) -> Rendered:
    """Token ids and the explicit loss mask for a conversation.

    Segments are tokenized one by one and concatenated, so the mask boundary is exact;
    the EOS is the tokenizer's `eot_id`, appended as an id (never parsed out of text).
    """
    ids: list[int] = []
    mask: list[int] = []
    for text, trained in _segments(messages, None, add_generation_prompt):
        seg = [tokenizer.eot_id] if text is None else tokenizer.encode(text)
        ids.extend(seg)
        mask.extend([1 if trained else 0] * len(seg))
    return Rendered(ids, mask)


def _segments(messages: list[dict], eos_text: str | None, add_generation_prompt: bool):
    """Yield (text, trained) pieces; text None stands for the EOS id when eos_text is None."""
    validate_messages(messages)
    i = 0
    if messages and messages[0]["role"] == "system":
        yield messages[0]["content"] + "\n\n", False
        i = 1
    first = True
    for m in messages[i:]:
        if m["role"] == "user":
            yield ("" if first else TURN_SEPARATOR) + USER_PREFIX + m["content"] + ASSISTANT_PREFIX, False
            first = False
        else:  # assistant
            yield " " + m["content"], True
            yield eos_text, True
    if add_generation_prompt and messages and messages[-1]["role"] == "assistant":
        raise ValueError("add_generation_prompt needs the conversation to end with a user message")


def validate_messages(messages: list[dict]) -> None:
    """A ValueError saying what is wrong when `messages` is not a conversation this format renders."""
    roles = [m.get("role") for m in messages]
    for k, r in enumerate(roles):
        if r not in ("system", "user", "assistant"):
            raise ValueError(f"message {k}: unknown role {r!r} (expected system, user or assistant)")
        if r == "system" and k != 0:
            raise ValueError(f"message {k}: a system message may only come first")
        if not isinstance(messages[k].get("content"), str):
            raise ValueError(f"message {k}: content must be a string")
    body = [r for r in roles if r != "system"]
    for k, r in enumerate(body):
        expected = "user" if k % 2 == 0 else "assistant"
        if r != expected:
            raise ValueError(f"messages must alternate user/assistant starting with user; turn {k} is {r}")


def qa_messages(question: str, answer: str, system: str | None = None) -> list[dict]:
    """A one-turn conversation from a question/answer pair (GSM8K, TinyGSM, drills)."""
    msgs = [{"role": "system", "content": system}] if system else []
    return msgs + [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]

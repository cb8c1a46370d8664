"""Prompt templates: how a question becomes the text a policy continues.

- ``qwen_math_cot``: the Qwen2.5-Math chain-of-thought chat prompt (system "Please reason step by step,
  and put your final answer within \\boxed{}.") written out literally, as Qwen2.5-Math's evaluation
  does; for Qwen-family models.
- ``chat``: the model's own chat template (``tokenizer.apply_chat_template``) with that same system
  message and a generation prompt; for any instruct model (SmolLM2, Llama, ...).
- ``plain``: "Question: ...\\nAnswer:" for base models, with the boxed-answer instruction.
- ``raw``: the question unchanged (the built-in task's prompts are already complete).
- ``qwen25_math_cot_ft``: the PURE authors' evaluation prompt (their ``qwen25-math-cot-ft`` prompt type:
  the question, a blank line, and an instruction to separate steps with blank lines; no system prompt,
  no chat template), for models trained with PURE (``purerl eval --protocol pure``).
"""

from __future__ import annotations

COT_SYSTEM = "Please reason step by step, and put your final answer within \\boxed{}."

TEMPLATES = ("qwen_math_cot", "chat", "plain", "raw", "qwen25_math_cot_ft")
PURE_FT_INSTRUCTION = (
    'Please reason step by step with steps separated by "\n\n", and put your final answer within \\boxed{}.'
)
"""The instruction of ``qwen25_math_cot_ft`` (the blank line inside the quotes is two real newlines)."""


def format_prompt(question: str, template: str, tokenizer=None, system: str = COT_SYSTEM) -> str:
    """The prompt text for ``question``.

    >>> format_prompt("1+1?", "plain")
    'Question: 1+1?\\nPlease reason step by step, and put your final answer within \\\\boxed{}.\\nAnswer:'
    """
    if template == "qwen_math_cot":
        return (
            f"<|im_start|>system\n{system}<|im_end|>\n<|im_start|>user\n{question}<|im_end|>\n<|im_start|>assistant\n"
        )
    if template == "chat":
        if tokenizer is None or not getattr(tokenizer, "chat_template", None):
            raise ValueError("template 'chat' needs a tokenizer with a chat template (use qwen_math_cot or plain)")
        messages = [{"role": "system", "content": system}, {"role": "user", "content": question}]
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    if template == "plain":
        return f"Question: {question}\n{system}\nAnswer:"
    if template == "raw":
        return question
    if template == "qwen25_math_cot_ft":
        return f"{question}\n\n{PURE_FT_INSTRUCTION}"
    raise ValueError(f"unknown prompt template {template!r}; choose from {', '.join(TEMPLATES)}")

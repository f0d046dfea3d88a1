"""Chat templates of generator folders: ChatML rendered by ragcore itself, others in jinja2's sandbox."""
from __future__ import annotations

import re
from typing import Dict, Sequence

__all__ = ["render_chat"]

_CHATML = ("{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] "
           "+ '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")

# no jinja needed for the ChatML family; jinja2 used when installed for other templates


def _render_chatml(template: str, messages: Sequence[Dict[str, str]], add_generation_prompt: bool) -> str:
    """ChatML (``<|im_start|>role\\ncontent<|im_end|>\\n``), with a default system message when the
    template inserts one (SmolLM2 does)."""
    parts = []
    m = re.search(r"'<\|im_start\|>system\n(.*?)<\|im_end\|>\n'", template, re.S)
    if m and messages and messages[0]["role"] != "system":
        parts.append(f"<|im_start|>system\n{m.group(1)}<|im_end|>\n")
    for msg in messages:
        parts.append(f"<|im_start|>{msg['role']}\n{msg['content']}<|im_end|>\n")
    if add_generation_prompt:
        parts.append("<|im_start|>assistant\n")
    return "".join(parts)


def _is_chatml(template: str) -> bool:
    # the ChatML templates this renderer reproduces exactly: nothing but the optional default system
    # message, the messages loop and the generation prompt
    return "<|im_start|>" in template and "tools" not in template and "raise_exception" not in template


def _render_jinja(template: str, messages: Sequence[Dict[str, str]], add_generation_prompt: bool) -> str:
    """Render a non-ChatML chat template in jinja2's immutable sandbox.

    The template comes from a model folder, i.e. from whoever published the model: a plain
    ``jinja2.Environment`` lets ``{{ cycler.__init__.__globals__.os.popen('id').read() }}`` run a shell
    command. The sandbox refuses attribute access to Python internals and mutation of the arguments;
    a refused operation, a syntax error or the template's own ``raise_exception`` give ``ValueError``.
    """
    try:
        import jinja2
        import jinja2.ext
        import jinja2.sandbox
    except ImportError:
        raise ImportError("this model's chat template is not ChatML; rendering it needs jinja2 (pip install jinja2)") from None

    def raise_exception(message):
        raise jinja2.exceptions.TemplateError(message)

    env = jinja2.sandbox.ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                                       extensions=[jinja2.ext.loopcontrols])
    env.globals["raise_exception"] = raise_exception
    try:
        return env.from_string(template).render(messages=[dict(m) for m in messages],
                                                add_generation_prompt=add_generation_prompt,
                                                bos_token="", eos_token="")
    except jinja2.sandbox.SecurityError as e:
        raise ValueError(f"the model's chat template tried an unsafe operation and was stopped: {e}") from None
    except jinja2.exceptions.TemplateError as e:
        raise ValueError(f"the model's chat template failed: {e}") from None


def render_chat(template, messages: Sequence[Dict[str, str]], add_generation_prompt: bool) -> str:
    """``messages`` rendered with ``template`` (None: plain ChatML)."""
    if template is None or _is_chatml(template):
        return _render_chatml(template or _CHATML, messages, add_generation_prompt)
    return _render_jinja(template, messages, add_generation_prompt)

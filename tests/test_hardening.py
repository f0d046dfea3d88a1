"""Issue 15's Python-side items: model folders cannot run code, retrievers answer from one snapshot,
encoder folders stay inside themselves and are checksummed, k and inner products are bounded."""
import json
import threading

import numpy as np
import pytest

import ragcore as rc
from ragcore.generation import Generator

# ---------------------------------------------------------------------------------------------------
# 1. chat templates render in jinja2's sandbox

_EVIL = "{{ cycler.__init__.__globals__.os.popen('touch %s').read() }}"
_MSGS = [{"role": "user", "content": "hi"}]


def _generator_with_template(folder):
    g = Generator.__new__(Generator)  # the template logic only: no ONNX model needed
    g._template = Generator._read_template(folder)
    return g


@pytest.mark.parametrize("where", ["chat_template.jinja", "tokenizer_config.json"])
def test_chat_template_cannot_run_code(tmp_path, where):
    pytest.importorskip("jinja2")
    marker = tmp_path / "pwned"
    template = _EVIL % marker
    if where == "chat_template.jinja":
        (tmp_path / where).write_text(template, encoding="utf-8")
    else:
        (tmp_path / where).write_text(json.dumps({"chat_template": template}), encoding="utf-8")
    g = _generator_with_template(tmp_path)
    with pytest.raises(ValueError, match="unsafe"):
        g.apply_chat_template(_MSGS)
    assert not marker.exists()


def test_sandboxed_template_still_renders(tmp_path):
    pytest.importorskip("jinja2")
    (tmp_path / "chat_template.jinja").write_text(
        "{% for m in messages %}[{{ m['role'] }}] {{ m.content }}\n{% if loop.index == 2 %}{% break %}{% endif %}"
        "{% endfor %}{% if add_generation_prompt %}>{% endif %}", encoding="utf-8")
    g = _generator_with_template(tmp_path)
    msgs = [{"role": "system", "content": "s"}, {"role": "user", "content": "u"}, {"role": "user", "content": "x"}]
    assert g.apply_chat_template(msgs) == "[system] s\n[user] u\n>"
    (tmp_path / "chat_template.jinja").write_text("{{ raise_exception('no system role') }}", encoding="utf-8")
    with pytest.raises(ValueError, match="no system role"):
        _generator_with_template(tmp_path).apply_chat_template(msgs)
    (tmp_path / "chat_template.jinja").write_text("{% for %}", encoding="utf-8")
    with pytest.raises(ValueError, match="chat template failed"):
        _generator_with_template(tmp_path).apply_chat_template(msgs)

"""Small chat templates that write tool calls as Llama 3.1 and Mistral v0.3 templates do (their
tool-call and tool-result branches, copied in spirit: Llama's ``{"name": ..., "parameters": ...}``
and ``ipython`` role; Mistral's ``[TOOL_CALLS] [...]`` with 9-character ids and
``[TOOL_RESULTS]``), for tiny test models; the Hermes one is in ``test_tools.py``."""

LLAMA3 = (
    "{% if tools %}<|start_header_id|>system<|end_header_id|>\n\nCall a function as {\"name\": function name, "
    "\"parameters\": dictionary of argument name and its value}.\n{% for t in tools %}{{ t | tojson }}\n{% endfor %}"
    "<|eot_id|>{% endif %}"
    "{% for m in messages %}{% if m.role == 'assistant' and m.tool_calls %}"
    "<|start_header_id|>assistant<|end_header_id|>\n\n<|python_tag|>{% for c in m.tool_calls %}"
    "{{ '{\"name\": \"' + c.function.name + '\", \"parameters\": ' }}{{ c.function.arguments | tojson }}}"
    "{% if not loop.last %}; {% endif %}{% endfor %}<|eom_id|>"
    "{% elif m.role == 'tool' %}<|start_header_id|>ipython<|end_header_id|>\n\n{{ m.content }}<|eot_id|>"
    "{% else %}<|start_header_id|>{{ m.role }}<|end_header_id|>\n\n{{ m.content }}<|eot_id|>{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}")

MISTRAL = (
    "{% for m in messages %}{% if m.role == 'user' %}{% if loop.last and tools %}[AVAILABLE_TOOLS] "
    "{{ tools | tojson }}[/AVAILABLE_TOOLS]{% endif %}[INST] {{ m.content }}[/INST]"
    "{% elif m.role == 'assistant' and m.tool_calls %}[TOOL_CALLS] [{% for c in m.tool_calls %}"
    "{% set out = c.function | tojson %}{{ out[:-1] }}"
    "{% if c.id is not defined or c.id | length != 9 %}{{ raise_exception('Tool call IDs should be alphanumeric "
    "strings with length 9!') }}{% endif %}{{ ', \"id\": \"' + c.id + '\"}' }}"
    "{% if not loop.last %}, {% else %}]</s>{% endif %}{% endfor %}"
    "{% elif m.role == 'tool' %}[TOOL_RESULTS] {\"content\": {{ m.content | tojson }}, \"call_id\": \"{{ m.tool_call_id }}\"}"
    "[/TOOL_RESULTS]{% else %}{{ m.content }}</s>{% endif %}{% endfor %}")

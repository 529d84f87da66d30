"""A request's ``tools`` and ``tool_choice``, checked: ``check_tools`` refuses what cannot work
(400 naming the field): tools for a model whose chat template never mentions them, a malformed
tool, a ``tool_choice`` naming no tool."""

from __future__ import annotations

from typing import Any

from ..engine.sequence import InvalidRequest


def check_tools(tools: list[Any] | None, tool_choice: Any, template_source: str) -> tuple[list[dict], Any]:
    """Validated ``tools`` and ``tool_choice`` ("none", "auto", "required" or a function name);
    tools are [] when none are shown to the model."""
    if not tools:
        if tool_choice not in (None, "none", "auto"):
            raise InvalidRequest("tool_choice", "tool_choice needs tools")
        return [], "none"
    if "tools" not in template_source:
        raise InvalidRequest("tools", "this model's chat template has no tool support; send no tools")
    functions = []
    for i, tool in enumerate(tools):
        fn = tool.get("function") if isinstance(tool, dict) and tool.get("type") == "function" else None
        if not isinstance(fn, dict) or not isinstance(fn.get("name"), str) or not fn["name"]:
            raise InvalidRequest(f"tools[{i}]", f"tools[{i}] must be {{'type': 'function', 'function': "
                                 "{'name': ..., 'parameters': {...}}}")
        if not isinstance(fn.get("parameters", {}), dict):
            raise InvalidRequest(f"tools[{i}].function.parameters", "parameters must be a JSON schema object")
        functions.append(tool)
    names = [t["function"]["name"] for t in functions]
    if tool_choice is None:
        tool_choice = "auto"
    if isinstance(tool_choice, dict):
        name = (tool_choice.get("function") or {}).get("name")
        if name not in names:
            raise InvalidRequest("tool_choice", f"tool_choice names {name!r}, which is not among the tools {names}")
        tool_choice = name
    elif tool_choice not in ("none", "auto", "required"):
        raise InvalidRequest("tool_choice", "tool_choice must be 'none', 'auto', 'required' or "
                             f"{{'type': 'function', 'function': {{'name': ...}}}}, got {tool_choice!r}")
    if tool_choice == "none":
        return [], "none"
    return functions, tool_choice

"""/docs: the OpenAPI reference as one self-contained HTML page (no JavaScript, no network).

FastAPI's default /docs loads Swagger UI's script and CSS from a CDN, so on a machine without
network it shows a blank page. genlab does not ship Swagger UI's ~1.5 MB bundle; instead this
page is rendered on the server from the same OpenAPI document (/openapi.json, which any
OpenAPI tool can read): every endpoint with its summary, fields, types, defaults and bounds,
and its responses. Try requests with curl or the studio.
"""

from __future__ import annotations

import html
import json

BOUNDS = (("minimum", ">="), ("exclusiveMinimum", ">"), ("maximum", "<="), ("exclusiveMaximum", "<"),
          ("minLength", "min length"), ("maxLength", "max length"), ("minItems", "min items"),
          ("maxItems", "max items"))

STYLE = """body{font-family:system-ui,sans-serif;max-width:980px;margin:2em auto;padding:0 1em;color:#222}
h2{border-bottom:1px solid #ccc;padding-top:.6em}code,pre{background:#f4f4f4;padding:1px 4px;border-radius:3px}
.method{font-weight:bold;color:#fff;padding:2px 8px;border-radius:3px;margin-right:.5em}
.GET{background:#2a7ab0}.POST{background:#3a8a3a}table{border-collapse:collapse;width:100%;margin:.5em 0}
td,th{border:1px solid #ddd;padding:4px 8px;text-align:left;vertical-align:top;font-size:.92em}
th{background:#f6f6f6}.desc{white-space:pre-wrap}"""


def _resolve(schema: dict, spec: dict) -> dict:
    while isinstance(schema, dict) and "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        schema = spec.get("components", {}).get("schemas", {}).get(name, {})
    return schema or {}


def _type(schema: dict, spec: dict) -> str:
    schema = _resolve(schema, spec)
    if "anyOf" in schema:
        return " | ".join(_type(option, spec) for option in schema["anyOf"])
    if "enum" in schema:
        return " | ".join(json.dumps(v) for v in schema["enum"])
    if "const" in schema:
        return json.dumps(schema["const"])
    if schema.get("type") == "array":
        return f"array of {_type(schema.get('items', {}), spec)}"
    if schema.get("format") == "binary" or "contentMediaType" in schema:  # OpenAPI 3.0 and 3.1 spellings
        return "file"
    return schema.get("type", "any")


def _number(value) -> str:
    return str(int(value)) if isinstance(value, float) and value.is_integer() else str(value)


def _bounds(schema: dict, spec: dict) -> str:
    schema = _resolve(schema, spec)
    parts = [f"{label} {_number(schema[key])}" for key, label in BOUNDS if key in schema]
    for option in schema.get("anyOf", []):
        parts += [f"{label} {_number(option[key])}" for key, label in BOUNDS if key in option]
        if option.get("type") == "array" and "items" in option:
            parts += [f"each: {b}" for b in [_bounds(option["items"], spec)] if b]
    return ", ".join(parts)


def _fields_table(schema: dict, spec: dict) -> str:
    schema = _resolve(schema, spec)
    properties = schema.get("properties", {})
    if not properties:
        return ""
    required = set(schema.get("required", []))
    rows = []
    for name, field in properties.items():
        default = "required" if name in required else json.dumps(_resolve(field, spec).get("default", None))
        rows.append(f"<tr><td><code>{html.escape(name)}</code></td><td>{html.escape(_type(field, spec))}</td>"
                    f"<td>{html.escape(default)}</td><td>{html.escape(_bounds(field, spec))}</td>"
                    f"<td>{html.escape(_resolve(field, spec).get('description', field.get('description', '')))}</td></tr>")
    return ("<table><tr><th>field</th><th>type</th><th>default</th><th>bounds</th><th>meaning</th></tr>"
            + "".join(rows) + "</table>")


def render_docs(spec: dict) -> str:
    """The HTML page for an OpenAPI document."""
    info = spec.get("info", {})
    parts = [f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>{html.escape(info.get('title', 'API'))}"
             f" API reference</title><style>{STYLE}</style></head><body>",
             f"<h1>{html.escape(info.get('title', 'API'))} {html.escape(str(info.get('version', '')))} — API reference</h1>",
             "<p>This page works offline; the machine-readable document is <a href='/openapi.json'>/openapi.json</a>. "
             "Errors are JSON: <code>{\"error\": {\"message\", \"hint\", \"type\", \"param\", \"code\"}}</code>.</p>",
             f"<pre class='desc'>{html.escape(info.get('description', ''))}</pre>"]
    index = []
    for path, methods in spec.get("paths", {}).items():
        for method, operation in methods.items():
            anchor = f"{method}-{path}".replace("/", "-").replace("{", "").replace("}", "")
            index.append(f"<li><a href='#{anchor}'><code>{method.upper()} {html.escape(path)}</code></a> "
                         f"{html.escape(operation.get('summary', ''))}</li>")
            section = [f"<h2 id='{anchor}'><span class='method {method.upper()}'>{method.upper()}</span>"
                       f"<code>{html.escape(path)}</code></h2>",
                       f"<p><b>{html.escape(operation.get('summary', ''))}</b></p>",
                       f"<p class='desc'>{html.escape(operation.get('description', ''))}</p>"]
            params = operation.get("parameters", [])
            if params:
                section.append("<p>Parameters:</p><table><tr><th>name</th><th>in</th><th>type</th><th>meaning</th></tr>")
                section += [f"<tr><td><code>{html.escape(p['name'])}</code></td><td>{p.get('in', '')}</td>"
                            f"<td>{html.escape(_type(p.get('schema', {}), spec))}</td>"
                            f"<td>{html.escape(p.get('description', ''))}</td></tr>" for p in params]
                section.append("</table>")
            for content_type, body in operation.get("requestBody", {}).get("content", {}).items():
                section.append(f"<p>Request body (<code>{html.escape(content_type)}</code>):</p>")
                section.append(_fields_table(body.get("schema", {}), spec))
            responses = operation.get("responses", {})
            if responses:
                section.append("<p>Responses: " + ", ".join(
                    f"<code>{html.escape(code)}</code> {html.escape(r.get('description', ''))}"
                    for code, r in responses.items()) + "</p>")
            parts.append("\n".join(section))
    parts.insert(4, "<ul>" + "".join(index) + "</ul>")
    parts.append("</body></html>")
    return "\n".join(parts)

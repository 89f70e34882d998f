"""Is a new JSON Schema of an event still compatible with the committed one of the same version?

A change is compatible when code written against the old schema keeps working: every message the
old schema accepted is still accepted (new consumers read old messages, e.g. on a replay), and no
property that consumers of the old version read disappears. Additive changes pass: a new optional
property, a new enum value, a widened type, a loosened or dropped constraint.

Rules, for the JSON Schema subset pydantic v2 emits (local ``$ref``/``$defs``, ``anyOf``/``oneOf``):

- a property removed;
- a type changed or narrowed: a JSON type no longer accepted (``integer`` -> ``number`` widens),
  an ``anyOf``/``oneOf`` variant no longer accepted, ``format`` added or changed;
- a new required property; an optional property made required;
- an ``enum`` value removed, ``const`` changed, values restricted where any was allowed;
- constraints tightened: ``minimum``, ``exclusiveMinimum``, ``minLength``, ``minItems``,
  ``minProperties`` raised or added; their ``max*`` counterparts lowered or added; ``pattern``
  added or changed (regex inclusion is not decided: any new pattern counts);
- ``additionalProperties`` tightened (to ``false``, or from anything to a schema) or narrowed;
- array ``items`` narrowed (the same rules, recursively).

Not checked: ``multipleOf``, ``prefixItems``, ``not``, ``if``/``then``/``else``, remote ``$ref``s.
Titles, descriptions, defaults and examples are documentation and never break anything.
"""

from __future__ import annotations

from typing import Any

Schema = dict[str, Any]

_RAISED_IS_TIGHTER = ("minimum", "exclusiveMinimum", "minLength", "minItems", "minProperties")
_LOWERED_IS_TIGHTER = ("maximum", "exclusiveMaximum", "maxLength", "maxItems", "maxProperties")
_JSON_TYPES = {
    bool: "boolean",
    int: "integer",
    float: "number",
    str: "string",
    type(None): "null",
    list: "array",
    dict: "object",
}


def breaking_changes(old_schema: Schema, new_schema: Schema) -> list[str]:
    """One ``"<path>: <sentence>"`` per incompatible change from ``old_schema`` to ``new_schema``."""
    return _Diff(old_schema, new_schema).compare(old_schema, new_schema, "", frozenset())


class _Diff:
    def __init__(self, old_root: Schema, new_root: Schema) -> None:
        self.old_root, self.new_root = old_root, new_root

    def compare(self, old: Schema, new: Schema, path: str, stack: frozenset[Any]) -> list[str]:
        old, old_ref = _resolve(self.old_root, old)
        new, new_ref = _resolve(self.new_root, new)
        if old_ref and (old_ref, new_ref) in stack:  # a recursive model: already being compared
            return []
        stack = stack | {(old_ref, new_ref)}
        old_variants, new_variants = _variants(old), _variants(new)
        if len(old_variants) == 1 and len(new_variants) == 1:
            return self._compare_one(old, new, path, stack)
        problems = []
        for variant in old_variants:  # each old variant must still fit one of the new ones
            fits = [self.compare(variant, candidate, path, stack) for candidate in new_variants]
            if all(fits):
                closest = min(fits, key=len)
                if len(new_variants) == 1:
                    problems += closest
                else:
                    variant_name, reasons = _describe(variant), "; ".join(closest)
                    problems.append(
                        f"{path or '/'}: anyOf variant {variant_name} is no longer accepted"
                        f" ({reasons})"
                    )
        return problems

    def _compare_one(self, old: Schema, new: Schema, path: str, stack: frozenset[Any]) -> list[str]:
        problems: list[str] = []

        def report(sentence: str) -> None:
            problems.append(f"{path or '/'}: {sentence}")

        old_types, new_types = _types(old), _types(new)
        if new_types is not None:
            lost = {t for t in old_types or {"any"} if t not in new_types}
            lost -= {"integer"} if "number" in new_types else set()
            if lost:
                report(f"type changed from {_show(old_types)} to {_show(new_types)}")
        if new.get("format") is not None and new.get("format") != old.get("format"):
            report(f"format changed from {old.get('format')!r} to {new['format']!r}")

        old_values, new_values = _values(old), _values(new)
        if "const" in old and "const" in new and old["const"] != new["const"]:
            report(f"const changed from {old['const']!r} to {new['const']!r}")
        elif new_values is not None:
            if old_values is None:
                report(f"values restricted to {new_values!r}")
            elif removed := [v for v in old_values if v not in new_values]:
                report(f"enum value(s) {removed!r} removed")

        for key in _RAISED_IS_TIGHTER + _LOWERED_IS_TIGHTER:
            if key in new and (
                key not in old
                or (new[key] > old[key] if key in _RAISED_IS_TIGHTER else new[key] < old[key])
            ):
                report(f"{key} tightened from {old.get(key)!r} to {new[key]!r}")
        if "pattern" in new and new["pattern"] != old.get("pattern"):
            report(f"pattern changed from {old.get('pattern')!r} to {new['pattern']!r}")

        old_props, new_props = old.get("properties", {}), new.get("properties", {})
        for name, old_prop in old_props.items():
            child = f"{path}/{_escape(name)}"
            if name not in new_props:
                problems.append(f"{child}: property removed (consumers of this version read it)")
            else:
                problems += self.compare(old_prop, new_props[name], child, stack)
        old_required = set(old.get("required", []))
        for name in [n for n in new.get("required", []) if n not in old_required]:
            child = f"{path}/{_escape(name)}"
            if name in old_props:
                problems.append(f"{child}: optional property made required")
            else:
                problems.append(f"{child}: new required property (old messages lack it)")

        old_extra, new_extra = _extra(old), _extra(new)
        if new_extra is False and old_extra is not False:
            report("additionalProperties tightened: unknown properties are now rejected")
        elif isinstance(new_extra, dict) and old_extra is True:
            report("additionalProperties tightened from anything to a schema")
        elif isinstance(new_extra, dict) and isinstance(old_extra, dict):
            problems += self.compare(old_extra, new_extra, f"{path}/*", stack)

        if "items" in new:
            problems += self.compare(old.get("items", {}), new["items"], f"{path}/[]", stack)
        return problems


def _resolve(root: Schema, schema: Schema) -> tuple[Schema, str | None]:
    """Inline a local ``$ref`` (or a one-element ``allOf``); keywords beside it take precedence."""
    ref = None
    while True:
        if "$ref" in schema:
            ref = schema["$ref"]
            siblings = {k: v for k, v in schema.items() if k != "$ref"}
            schema = {**_follow(root, ref), **siblings}
        elif len(schema.get("allOf", [])) == 1:
            siblings = {k: v for k, v in schema.items() if k != "allOf"}
            schema = {**schema["allOf"][0], **siblings}
        else:
            return schema, ref


def _follow(root: Schema, ref: str) -> Schema:
    if not ref.startswith("#"):
        raise ValueError(f"only local $refs are supported, not {ref!r}")
    node: Any = root
    for part in filter(None, ref[1:].split("/")):
        node = node[part.replace("~1", "/").replace("~0", "~")]
    return node  # type: ignore[no-any-return]


def _variants(schema: Schema) -> list[Schema]:
    return schema.get("anyOf") or schema.get("oneOf") or [schema]


def _types(schema: Schema) -> set[str] | None:
    """The JSON types a schema accepts; ``None`` when it does not restrict them."""
    if "type" in schema:
        types = schema["type"]
        return {types} if isinstance(types, str) else set(types)
    values = _values(schema)
    return None if values is None else {_JSON_TYPES.get(type(v), "any") for v in values}


def _values(schema: Schema) -> list[Any] | None:
    if "const" in schema:
        return [schema["const"]]
    return schema.get("enum")


def _extra(schema: Schema) -> bool | Schema:
    extra = schema.get("additionalProperties", True)
    return True if extra == {} else extra  # type: ignore[no-any-return]


def _show(types: set[str] | None) -> str:
    return "any" if types is None else "|".join(sorted(types))


def _describe(schema: Schema) -> str:
    if "$ref" in schema:
        return schema["$ref"].rsplit("/", 1)[-1]
    return str(schema.get("title") or _show(_types(schema)))


def _escape(name: str) -> str:
    return name.replace("~", "~0").replace("/", "~1")

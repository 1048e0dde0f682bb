"""MongoDB templates: the JSON format, its static checks, and the parsed model.

A MongoDB template is declarative — collections with ``$jsonSchema``
validators, indexes and seed documents — never a script: everything that
manages users, roles or the server belongs to cloner, so the format simply
has no place for it. The shape::

    {"format": "cloner.mongodb/1", "kind": "root" | "overlay", "description": "…",
     "collections": [
        {"name": "users",
         "validator": {"$jsonSchema": {"bsonType": "object", "required": […], "properties": {…}}},
         "indexes": [{"name": "…", "key": [["email", 1]], "unique": true,
                      "partialFilterExpression": {…}}],
         "documents": [{"_id": {"$oid": "…"}, …, "created_at": "$$NOW"}]}]}

Index keys are ``[field, direction]`` pairs because their order matters and
JSON objects do not promise one. Seed documents are MongoDB Extended JSON
(``{"$date": …}``, ``{"$numberDecimal": …}``, ``{"$oid": …}``) so types
survive the file; each needs a fixed ``_id`` so that a resumed apply
replaces it instead of inserting it twice; the top-level string ``"$$NOW"``
stands for the server's clock at apply time (SQL's ``DEFAULT now()``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC
from typing import Any

from cloner.errors import TemplateError

FORMAT = "cloner.mongodb/1"
NOW = "$$NOW"
#: Collections the root template must define: bookkeeping and the isolation probe's target.
ROOT_COLLECTIONS = ("schema_info", "system_settings")

_TOP_KEYS = frozenset({"format", "kind", "description", "collections"})
_COLLECTION_KEYS = frozenset({"name", "validator", "indexes", "documents"})
_INDEX_KEYS = frozenset({"name", "key", "unique", "partialFilterExpression"})
_NAME = re.compile(r"^[a-z][a-z0-9_]{0,62}$")
_INDEX_NAME = re.compile(r"^[a-z][a-z0-9_]{0,99}$")
_FIELD = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")

# MongoDB implements JSON Schema draft 4 minus a few keywords, plus bsonType.
_SCHEMA_KEYWORDS = frozenset({
    "additionalItems", "additionalProperties", "allOf", "anyOf", "bsonType", "dependencies",
    "description", "enum", "exclusiveMaximum", "exclusiveMinimum", "items", "maxItems",
    "maxLength", "maxProperties", "maximum", "minItems", "minLength", "minProperties",
    "minimum", "multipleOf", "not", "oneOf", "pattern", "patternProperties", "properties",
    "required", "title", "type", "uniqueItems",
})
_UNSUPPORTED_KEYWORDS = frozenset({"$ref", "$schema", "default", "definitions", "format", "id"})
BSON_TYPES = frozenset({
    "double", "string", "object", "array", "binData", "objectId", "bool", "date", "null",
    "regex", "javascript", "int", "timestamp", "long", "decimal", "minKey", "maxKey", "number",
})
_JSON_TYPES = frozenset({"object", "array", "number", "boolean", "string", "null"})
# Operators a partial index filter accepts on every supported server version (5.0+).
_PARTIAL_OPERATORS = frozenset({"$eq", "$exists", "$gt", "$gte", "$lt", "$lte", "$type", "$and"})
# Server-side JavaScript: disabled in tenant servers (--noscripting) and never in a template.
_SCRIPTING = frozenset({"$where", "$function", "$accumulator", "$code"})


@dataclass(frozen=True)
class MongoIndex:
    """One index of a collection."""

    name: str
    key: tuple[tuple[str, int], ...]
    unique: bool = False
    partial_filter: Mapping[str, Any] | None = None


@dataclass(frozen=True)
class MongoCollection:
    """One collection: its ``$jsonSchema``, indexes and seed documents (typed BSON values)."""

    name: str
    schema: Mapping[str, Any]
    indexes: tuple[MongoIndex, ...] = ()
    documents: tuple[Mapping[str, Any], ...] = ()


@dataclass(frozen=True)
class MongoTemplate:
    """A parsed, checked MongoDB template file."""

    kind: str
    description: str
    collections: tuple[MongoCollection, ...]

    @property
    def names(self) -> tuple[str, ...]:
        """Collection names, in file order."""
        return tuple(c.name for c in self.collections)


def lint_mongo_template(text: str) -> list[str]:
    """Errors found in a MongoDB template's text (empty list = fine)."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        return [f"not valid JSON: {exc}"]
    return list(_lint(data))


def parse_mongo_template(text: str, source: str = "template") -> MongoTemplate:
    """The checked model of a template; ``TemplateError`` listing every problem otherwise."""
    errors = lint_mongo_template(text)
    if errors:
        shown = "; ".join(errors[:5]) + (f"; … {len(errors) - 5} more" if len(errors) > 5 else "")
        raise TemplateError(f"{source}: {shown}")
    data = json.loads(text)
    return MongoTemplate(
        kind=data["kind"],
        description=data.get("description", ""),
        collections=tuple(
            MongoCollection(
                name=c["name"],
                schema=c["validator"]["$jsonSchema"],
                indexes=tuple(
                    MongoIndex(
                        name=i["name"],
                        key=tuple((str(f), int(d)) for f, d in i["key"]),
                        unique=bool(i.get("unique", False)),
                        partial_filter=(
                            extended_json(i["partialFilterExpression"])
                            if "partialFilterExpression" in i else None
                        ),
                    )
                    for i in c.get("indexes", [])
                ),
                documents=tuple(extended_json(d) for d in c.get("documents", [])),
            )
            for c in data["collections"]
        ),
    )


def extended_json(value: Mapping[str, Any]) -> dict[str, Any]:
    """Plain JSON → BSON-typed values (Extended JSON v2: dates tz-aware UTC, decimals, ids)."""
    from bson import json_util

    options = json_util.JSONOptions(
        json_mode=json_util.JSONMode.RELAXED, tz_aware=True, tzinfo=UTC
    )
    parsed: dict[str, Any] = json_util.loads(json.dumps(value), json_options=options)
    return parsed


# ------------------------------------------------------------------- checks


def _lint(data: Any) -> Iterator[str]:
    if not isinstance(data, dict):
        yield "the template must be a JSON object"
        return
    if unknown := sorted(set(data) - _TOP_KEYS):
        yield f"unknown top-level keys {unknown}"
    if data.get("format") != FORMAT:
        yield f"format must be {FORMAT!r}, found {data.get('format')!r}"
    kind = data.get("kind")
    if kind not in ("root", "overlay"):
        yield f"kind must be 'root' or 'overlay', found {kind!r}"
    if not isinstance(data.get("description", ""), str):
        yield "description must be a string"
    collections = data.get("collections")
    if not isinstance(collections, list) or not collections:
        yield "collections must be a non-empty list"
        return
    seen: set[str] = set()
    yield from _lint_collections(collections, seen)
    if kind == "root":
        for required in ROOT_COLLECTIONS:
            if required not in seen:
                yield f"a root template must define collection {required!r}"
    yield from _lint_scripting(data, "template")


def _lint_collections(collections: list[Any], seen: set[str]) -> Iterator[str]:
    """Each collection's problems; fills ``seen`` with the valid names."""
    for index, collection in enumerate(collections):
        if not isinstance(collection, dict):
            yield f"collections[{index}] must be an object"
            continue
        name = collection.get("name")
        where = f"collection {name!r}" if isinstance(name, str) else f"collections[{index}]"
        if not isinstance(name, str) or not _NAME.fullmatch(name):
            yield (f"{where}: name must match {_NAME.pattern} "
                   "(no dots, no system. prefix, no $)")
        elif name in seen:
            yield f"{where}: defined twice"
        else:
            seen.add(name)
        yield from (f"{where}: {e}" for e in _lint_collection(collection))


def _lint_collection(collection: dict[str, Any]) -> Iterator[str]:
    if unknown := sorted(set(collection) - _COLLECTION_KEYS):
        yield f"unknown keys {unknown}"
    validator = collection.get("validator")
    if not isinstance(validator, dict) or set(validator) != {"$jsonSchema"}:
        yield 'validator must be exactly {"$jsonSchema": {…}}'
        return
    schema = validator["$jsonSchema"]
    if not isinstance(schema, dict):
        yield "$jsonSchema must be an object"
        return
    if schema.get("bsonType") != "object":
        yield '$jsonSchema must have bsonType "object" at the top'
    yield from _lint_schema(schema, "$jsonSchema")
    properties = schema.get("properties", {})
    fields = set(properties) if isinstance(properties, dict) else set()
    indexes = collection.get("indexes", [])
    if not isinstance(indexes, list):
        yield "indexes must be a list"
        indexes = []
    names: set[str] = set()
    for position, index in enumerate(indexes):
        label = (f"index {index.get('name')!r}" if isinstance(index, dict)
                 else f"indexes[{position}]")
        for problem in _lint_index(index, fields):
            yield f"{label}: {problem}"
        if isinstance(index, dict) and isinstance(index.get("name"), str):
            if index["name"] in names:
                yield f"{label}: name used twice"
            names.add(index["name"])
    documents = collection.get("documents", [])
    if not isinstance(documents, list):
        yield "documents must be a list"
        return
    for position, document in enumerate(documents):
        for problem in _lint_document(document, schema):
            yield f"documents[{position}]: {problem}"


def _lint_schema(schema: Any, path: str) -> Iterator[str]:
    if not isinstance(schema, dict):
        yield f"{path} must be an object"
        return
    yield from _lint_keywords(schema, path)
    yield from _lint_properties(schema, path)
    for key in ("items", "not", "additionalProperties", "additionalItems"):
        if isinstance(schema.get(key), dict):
            yield from _lint_schema(schema[key], f"{path}.{key}")
    for key in ("allOf", "anyOf", "oneOf"):
        if key not in schema:
            continue
        if not isinstance(schema[key], list) or not schema[key]:
            yield f"{path}: {key} must be a non-empty list"
            continue
        for position, sub in enumerate(schema[key]):
            yield from _lint_schema(sub, f"{path}.{key}[{position}]")


def _lint_keywords(schema: dict[str, Any], path: str) -> Iterator[str]:
    for key in schema:
        if key in _UNSUPPORTED_KEYWORDS:
            yield f"{path}: keyword {key!r} is not supported by MongoDB's $jsonSchema"
        elif key not in _SCHEMA_KEYWORDS:
            yield f"{path}: unknown keyword {key!r}"
    if "bsonType" in schema and "type" in schema:
        yield f"{path}: use bsonType or type, not both"
    for key, allowed in (("bsonType", BSON_TYPES), ("type", _JSON_TYPES)):
        if key in schema:
            values = schema[key] if isinstance(schema[key], list) else [schema[key]]
            if bad := [v for v in values if v not in allowed]:
                yield f"{path}: unknown {key} {bad}"
    for key in ("exclusiveMinimum", "exclusiveMaximum"):
        if key in schema and not isinstance(schema[key], bool):
            yield f"{path}: {key} is a boolean in MongoDB's draft-4 $jsonSchema"
    if "pattern" in schema:
        try:
            re.compile(str(schema["pattern"]))
        except re.error as exc:
            yield f"{path}: pattern {schema['pattern']!r} does not compile: {exc}"


def _lint_properties(schema: dict[str, Any], path: str) -> Iterator[str]:
    properties = schema.get("properties", {})
    if not isinstance(properties, dict):
        yield f"{path}: properties must be an object"
        properties = {}
    required = schema.get("required", [])
    if not isinstance(required, list) or not all(isinstance(r, str) for r in required):
        yield f"{path}: required must be a list of field names"
    elif "properties" in schema and (missing := sorted(set(required) - set(properties))):
        yield f"{path}: required fields without a property definition: {missing}"
    if schema.get("additionalProperties") is False and "_id" not in properties:
        yield f"{path}: additionalProperties false needs an _id property, or every insert fails"
    for name, sub in properties.items():
        yield from _lint_schema(sub, f"{path}.{name}")


def _lint_index(index: Any, fields: set[str]) -> Iterator[str]:
    if not isinstance(index, dict):
        yield "must be an object"
        return
    if unknown := sorted(set(index) - _INDEX_KEYS):
        yield f"unknown keys {unknown}"
    if not isinstance(index.get("name"), str) or not _INDEX_NAME.fullmatch(index["name"]):
        yield f"name must match {_INDEX_NAME.pattern}"
    key = index.get("key")
    if not isinstance(key, list) or not key:
        yield "key must be a non-empty list of [field, direction] pairs"
        return
    seen: set[str] = set()
    for pair in key:
        if (not isinstance(pair, list) or len(pair) != 2 or not isinstance(pair[0], str)
                or not _FIELD.fullmatch(pair[0])):
            yield f"bad key entry {pair!r}: expected [field, 1 | -1]"
            continue
        field, direction = pair
        if direction not in (1, -1) or isinstance(direction, bool):
            yield f"field {field!r}: direction must be 1 or -1"
        if field in seen:
            yield f"field {field!r} appears twice"
        seen.add(field)
        if field.split(".")[0] not in fields | {"_id"}:
            yield f"field {field!r} is not a property of the collection's $jsonSchema"
    if "unique" in index and not isinstance(index["unique"], bool):
        yield "unique must be true or false"
    if "partialFilterExpression" in index:
        yield from _lint_partial(index["partialFilterExpression"], top=True)


def _lint_partial(expression: Any, *, top: bool) -> Iterator[str]:
    if not isinstance(expression, dict) or not expression:
        yield "partialFilterExpression must be a non-empty object"
        return
    for key, value in expression.items():
        if key == "$and":
            if not top:
                yield "partialFilterExpression: $and only at the top level"
            elif not isinstance(value, list) or not value:
                yield "partialFilterExpression: $and needs a non-empty list"
            else:
                for part in value:
                    yield from _lint_partial(part, top=False)
        elif key.startswith("$"):
            yield f"partialFilterExpression: operator {key} is not allowed at the top"
        elif isinstance(value, dict) and any(k.startswith("$") for k in value):
            if bad := sorted(k for k in value if k not in _PARTIAL_OPERATORS):
                yield f"partialFilterExpression: operators {bad} are not portable; use " \
                      f"{sorted(_PARTIAL_OPERATORS)}"
            if value.get("$exists", True) is not True:
                yield "partialFilterExpression: only $exists: true is supported"


def _lint_document(document: Any, schema: Mapping[str, Any]) -> Iterator[str]:
    if not isinstance(document, dict):
        yield "must be an object"
        return
    if "_id" not in document:
        yield "needs a fixed _id, so a resumed apply replaces it instead of inserting twice"
    try:
        extended_json(document)
    except (ValueError, TypeError) as exc:
        yield f"not valid Extended JSON: {exc}"
    required = schema.get("required", [])
    if isinstance(required, list) and (missing := sorted(set(required) - set(document))):
        yield f"missing required fields {missing}"
    properties = schema.get("properties", {})
    if (schema.get("additionalProperties") is False and isinstance(properties, dict)
            and (extra := sorted(set(document) - set(properties)))):
        yield f"fields not in the schema {extra}"
    for name, value in document.items():
        if isinstance(value, str) and value.startswith("$$") and value != NOW:
            yield f"field {name!r}: only {NOW!r} is understood as a variable"


def _lint_scripting(value: Any, path: str) -> Iterator[str]:
    if isinstance(value, dict):
        for key, sub in value.items():
            if key in _SCRIPTING:
                yield f"{path}: {key} (server-side JavaScript) is disabled in tenant servers"
            yield from _lint_scripting(sub, path)
    elif isinstance(value, list):
        for sub in value:
            yield from _lint_scripting(sub, path)


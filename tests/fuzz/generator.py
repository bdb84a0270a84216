"""Hostile requests for every /sdapi/v1 route, driven by the server's own OpenAPI schema.

Each route has a valid baseline request (the replay bodies of tests/server/test_api_replay.py,
sizes clamped so that one generation is cheap on the bundled 64x64 model) and a table of the
fields a client can set, read from the schema: a body's properties, their nested items
(`imageList[0].data`), every option under `override_settings` and POST /options, query
parameters, and the body as a whole. A case mutates one or two fields of the baseline with
values from `hostile`. The first cases touch every (route, field) and send every hostile value
to every route once; the rest pick routes by weight and fields at random. All of it comes from
one seeded `random.Random`: a seed names a run.
"""

from __future__ import annotations

import copy
import json
import random
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from . import hostile as h
from .hostile import Hostile

API_PREFIX = "/sdapi/v1/"
FUZZED_PREFIXES = (API_PREFIX, "/controlnet/", "/internal/")
"""The API's routes: A1111's, sd-webui-controlnet's and A1111's task progress."""

SERVER_ENDING_ROUTES = frozenset({"server-stop", "server-kill", "server-restart", "tasks/pause"})
"""Each ends the server it is sent to, or (pause) holds every later job: the fuzz run needs its server to the end."""


@dataclass(frozen=True)
class Baseline:
    """A route's valid request: the path it is sent to (parameters filled in) and its body."""

    path: str
    body: dict[str, Any] | None


FieldPath = tuple[str | int, ...]

WHOLE_BODY: FieldPath = ("<body>",)
"""The request body as a whole: replaced by raw bytes that are not the expected JSON object."""

UNKNOWN_QUERY: FieldPath = ("<query>",)
"""A query parameter the route does not declare."""

UNKNOWN_OPTION = "../../sdstudio-fuzz"
"""An option name that is no option, and path-like: sent to POST /options and in override_settings."""

IMAGE_FIELDS = frozenset({"image", "mask", "firstpass_image", "latent_mask", "data"})
"""Fields holding one base64 image (`data` is a FileData item's, in extra-batch-images)."""

IMAGE_LIST_FIELDS = frozenset({"init_images"})
PROMPT_FIELDS = frozenset({"prompt", "negative_prompt", "hr_prompt", "hr_negative_prompt", "infotext"})

MOST_WEIGHT = 15
"""A route's share of the random cases grows with its number of fields up to this many."""

TWO_FIELD_SHARE = 0.3
"""Of the random cases, those mutating two fields at once."""


@dataclass(frozen=True)
class Mutation:
    """One field of a case and the label of the hostile value it got."""

    field: FieldPath
    label: str

    def __str__(self) -> str:
        return f"{field_name(self.field)}={self.label}"


@dataclass(frozen=True)
class FuzzCase:
    """One hostile HTTP request and what was changed from the route's baseline."""

    method: str
    path: str
    mutations: tuple[Mutation, ...]
    content: bytes | None
    params: tuple[tuple[str, str], ...] = ()

    @property
    def route(self) -> str:
        return route_name(self.method, self.path)

    @property
    def key(self) -> str:
        """Route and mutations: what a report groups failures by."""
        return f"{self.route} {' + '.join(str(m) for m in self.mutations)}"

    @property
    def fields(self) -> str:
        """Route and the mutated fields, without their values: what a report counts classes of failure by."""
        return f"{self.route} {' + '.join(field_name(m.field) for m in self.mutations)}"


@dataclass(frozen=True)
class RouteFields:
    """A route, its valid baseline request and each settable field's hostile values."""

    method: str
    path: str
    baseline: dict[str, Any] | None
    fields: Mapping[FieldPath, tuple[Hostile, ...]]
    query: frozenset[FieldPath] = frozenset()
    """The fields sent in the query string, not the body."""
    template: str = ""
    """The route's OpenAPI path (`path` is where the baseline sends it, its parameters filled in)."""

    @property
    def name(self) -> str:
        return route_name(self.method, self.path)

    @property
    def weight(self) -> int:
        return max(1, min(len(self.fields), MOST_WEIGHT))


def route_name(method: str, path: str) -> str:
    """`POST txt2img`: how reports name a route."""
    return f"{method.upper()} {path.removeprefix(API_PREFIX)}"


def field_name(path: FieldPath) -> str:
    """`override_settings['sd_vae']`, `imageList[0].data`, `<body>`."""
    text = str(path[0])
    for part in path[1:]:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if part.isidentifier() else f"[{part!r}]")
    return text


def schema_types(schema: Mapping[str, Any]) -> set[str]:
    """The JSON types a property schema allows (its `type` or those of its `anyOf`)."""
    options = schema.get("anyOf", [schema])
    return {option["type"] for option in options if "type" in option}


def item_ref(schema: Mapping[str, Any]) -> str | None:
    """The component an array property's items refer to, if any."""
    for option in schema.get("anyOf", [schema]):
        ref = option.get("items", {}).get("$ref")
        if ref:
            return ref.rsplit("/", 1)[-1]
    return None


def values_for(name: str, schema: Mapping[str, Any], image: tuple[Hostile, ...]) -> tuple[Hostile, ...]:
    """The hostile values a field gets: the generic ones, plus those its name or type calls for."""
    values = h.GENERIC
    if name in IMAGE_FIELDS:
        values = image + values
    if name in IMAGE_LIST_FIELDS:
        values = tuple(Hostile(f"[{v.label}]", [v.value]) for v in image) + values
        values += (Hostile("[valid, bomb PNG]", [h.b64(h.png_bytes((64, 64))), image[0].value]),)
    if name in PROMPT_FIELDS:
        values = h.PROMPTS + values
    if "array" in schema_types(schema):
        values += tuple(Hostile(f"[{v.label}]", [v.value]) for v in h.STRINGS + h.PATHS + h.NUMBERS[:3])
    return values


def route_fields(
    openapi: Mapping[str, Any],
    baselines: Mapping[tuple[str, str], Baseline],
    option_names: Iterable[str],
) -> list[RouteFields]:
    """Every fuzzable route of the schema with its fields; a route without a baseline is an error."""
    components = openapi["components"]["schemas"]
    image = h.image_values()
    option_fields = {(name,): h.GENERIC for name in [*option_names, UNKNOWN_OPTION]}
    routes = []
    for path, operations in openapi["paths"].items():
        if not path.startswith(FUZZED_PREFIXES) or path.removeprefix(API_PREFIX) in SERVER_ENDING_ROUTES:
            continue
        for method, operation in operations.items():
            if (method, path) not in baselines:
                raise KeyError(f"no baseline request for {method.upper()} {path}: add its replay row")
            fields: dict[FieldPath, tuple[Hostile, ...]] = {}
            query = {(p["name"],) for p in operation.get("parameters", []) if p.get("in") == "query"}
            body_schema = operation.get("requestBody", {}).get("content", {}).get("application/json", {})
            ref = body_schema.get("schema", {}).get("$ref")
            if ref:
                properties = components[ref.rsplit("/", 1)[-1]]["properties"]
                for name, schema in properties.items():
                    fields[(name,)] = values_for(name, schema, image)
                    nested = item_ref(schema)
                    if nested:
                        for item_name, item_schema in components[nested]["properties"].items():
                            fields[(name, 0, item_name)] = values_for(item_name, item_schema, image)
                    if name == "override_settings":
                        fields.update({(name, *option): values for option, values in option_fields.items()})
            elif body_schema:  # POST /options: an object of option names
                fields.update(option_fields)
            else:
                query.add(UNKNOWN_QUERY)
            fields.update({name: h.QUERY_VALUES for name in query})
            fields[WHOLE_BODY] = h.RAW_BODIES
            baseline = baselines[(method, path)]
            routes.append(RouteFields(method, baseline.path, baseline.body, fields, frozenset(query), path))
    return routes


def set_field(body: dict[str, Any], path: FieldPath, value: Any) -> None:
    """Set `body[path[0]][path[1]]...` to value, making the containers the path needs."""
    target: Any = body
    for part, following in zip(path, path[1:]):
        if isinstance(target, dict):
            if not isinstance(target.get(part), (dict, list)):
                target[part] = [{}] if isinstance(following, int) else {}
            target = target[part]
        else:
            target = target[part]
    target[path[-1]] = value


def build_case(route: RouteFields, picks: list[tuple[FieldPath, Hostile]]) -> FuzzCase:
    """The route's baseline request with each picked field set to its hostile value."""
    body = copy.deepcopy(route.baseline)
    params: list[tuple[str, str]] = []
    raw: bytes | None = None
    for path, value in picks:
        if path == WHOLE_BODY:
            raw = value.value
        elif path in route.query:
            params.append(("file" if path == UNKNOWN_QUERY else str(path[0]), value.value))
        else:
            body = body if body is not None else {}
            set_field(body, path, copy.deepcopy(value.value))
    text = json.dumps(body).encode() if body is not None else b"{}"  # NaN and infinities as raw NaN/Infinity
    if raw is h.PADDED:
        raw += text
    elif raw is None and body is not None:
        raw = text
    mutations = tuple(Mutation(path, value.label) for path, value in picks)
    return FuzzCase(route.method, route.path, mutations, raw, tuple(params))


def fuzz_cases(routes: list[RouteFields], count: int, seed: int, skip: Iterable[str] = ()) -> list[FuzzCase]:
    """One case per (route, field) and per (route, value), then random ones up to `count`; shuffled, from `seed`.

    Values whose label is in `skip` are never sent (to look past one known stall at a time).
    """
    rng = random.Random(seed)
    skipped = set(skip)

    def pick(route: RouteFields, path: FieldPath) -> tuple[FieldPath, Hostile]:
        values = [v for v in route.fields[path] if v.label not in skipped]
        return path, rng.choice(values)

    cases = [build_case(route, [pick(route, path)]) for route in routes for path in route.fields]
    for route in routes:  # and every value once per route, in one of the fields that take it
        fields_by_label: dict[str, list[FieldPath]] = defaultdict(list)
        for path, values in route.fields.items():
            for value in values:
                fields_by_label[value.label].append(path)
        for label, paths in fields_by_label.items():
            if label not in skipped:
                path = rng.choice(paths)
                cases.append(build_case(route, [(path, next(v for v in route.fields[path] if v.label == label))]))
    weights = [route.weight for route in routes]
    while len(cases) < count:
        route = rng.choices(routes, weights)[0]
        paths = list(route.fields)
        picked = [rng.choice(paths)]
        if rng.random() < TWO_FIELD_SHARE and len(paths) > 2:
            first, second = rng.sample([p for p in paths if p != WHOLE_BODY], 2)
            nested = first[: len(second)] == second or second[: len(first)] == first  # imageList, imageList[0].data
            picked = [first] if nested else [first, second]
        cases.append(build_case(route, [pick(route, path) for path in picked]))
    rng.shuffle(cases)
    return cases

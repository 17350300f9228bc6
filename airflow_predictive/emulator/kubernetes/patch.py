"""The three patch types the API server accepts: strategic merge, JSON merge (RFC 7386) and JSON
patch (RFC 6902).

Strategic merge follows the core/v1 patch strategies for the fields a pod, PVC or quota carries:
lists with a merge key (containers by ``name``, conditions by ``type``, ports by
``containerPort`` ...) are merged item by item; other lists are replaced; ``null`` deletes a key;
``$patch: delete`` / ``$patch: replace`` directives are honoured. It never mutates its inputs.
"""

from __future__ import annotations

import copy
from typing import Any

from airflow_predictive.emulator.kubernetes.errors import ApiError, bad_request

# core/v1 patchMergeKey per field name (the emulator's objects never reuse these names otherwise).
MERGE_KEYS: dict[str, str] = {
    "containers": "name",
    "initContainers": "name",
    "ephemeralContainers": "name",
    "containerStatuses": "name",
    "initContainerStatuses": "name",
    "ephemeralContainerStatuses": "name",
    "env": "name",
    "ports": "containerPort",
    "volumes": "name",
    "volumeMounts": "mountPath",
    "volumeDevices": "devicePath",
    "conditions": "type",
    "imagePullSecrets": "name",
    "hostAliases": "ip",
    "resizePolicy": "resourceName",
    "ownerReferences": "uid",
    "podIPs": "ip",
    "hostIPs": "ip",
}

STRATEGIC = "application/strategic-merge-patch+json"
MERGE = "application/merge-patch+json"
JSON_PATCH = "application/json-patch+json"
APPLY = "application/apply-patch+yaml"


def apply_patch(content_type: str, original: dict[str, Any], patch: Any) -> dict[str, Any]:
    """Apply a patch body of ``content_type`` to ``original``; 415 for unsupported types."""
    kind = content_type.split(";")[0].strip().lower()
    if kind == STRATEGIC:
        if not isinstance(patch, dict):
            raise bad_request("strategic merge patch must be a JSON object")
        return strategic_merge(original, patch)
    if kind == MERGE:
        result = json_merge(original, patch)
        if not isinstance(result, dict):
            raise bad_request("merge patch must produce an object")
        return result
    if kind == JSON_PATCH:
        if not isinstance(patch, list):
            raise bad_request("json patch must be a JSON array")
        return json_patch(original, patch)
    raise ApiError(
        415,
        "UnsupportedMediaType",
        f"the body of the request was in an unknown format - accepted media types include: "
        f"{JSON_PATCH}, {MERGE}, {STRATEGIC}",
    )


def strategic_merge(original: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    return _merge_map(copy.deepcopy(original), patch)


def _merge_map(target: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    directive = patch.get("$patch")
    if directive == "replace":
        return {k: copy.deepcopy(v) for k, v in patch.items() if k != "$patch"}
    if directive == "delete":
        return {}
    for key, value in patch.items():
        if key.startswith("$"):
            continue  # $setElementOrder/..., $retainKeys, $deleteFromPrimitiveList/...: order only
        if value is None:
            target.pop(key, None)
        elif isinstance(value, dict) and isinstance(target.get(key), dict):
            target[key] = _merge_map(target[key], value)
        elif isinstance(value, list) and key in MERGE_KEYS and isinstance(target.get(key), list):
            target[key] = _merge_list(target[key], value, MERGE_KEYS[key])
        elif isinstance(value, dict):
            target[key] = _merge_map({}, value)
        elif isinstance(value, list) and key in MERGE_KEYS:
            target[key] = [_strip(item) for item in value if not _is_delete(item)]
        else:
            target[key] = copy.deepcopy(value)
    for key, order in patch.items():
        field = key.removeprefix("$setElementOrder/")
        if field != key and field in MERGE_KEYS and isinstance(target.get(field), list):
            target[field] = _reorder(target[field], order, MERGE_KEYS[field])
    return target


def _reorder(items: list[Any], order: Any, merge_key: str) -> list[Any]:
    """``$setElementOrder``: listed items first, in the given order; the others keep theirs."""
    if not isinstance(order, list):
        return items
    keys = [o.get(merge_key) for o in order if isinstance(o, dict)]
    rank = {k: i for i, k in enumerate(keys)}
    listed = sorted(
        (i for i in items if isinstance(i, dict) and i.get(merge_key) in rank),
        key=lambda i: rank[i[merge_key]],
    )
    return listed + [i for i in items if not (isinstance(i, dict) and i.get(merge_key) in rank)]


def _merge_list(target: list[Any], patch: list[Any], merge_key: str) -> list[Any]:
    result = [copy.deepcopy(item) for item in target]
    for item in patch:
        if not isinstance(item, dict):
            raise bad_request(f"list items merged by {merge_key!r} must be objects")
        if item.get("$patch") == "replace":
            return [_strip(i) for i in patch if isinstance(i, dict) and i.get("$patch") != "replace"]
        if merge_key not in item:
            raise bad_request(f"map: {item} does not contain declared merge key: {merge_key}")
        index = next(
            (
                i
                for i, cur in enumerate(result)
                if isinstance(cur, dict) and cur.get(merge_key) == item[merge_key]
            ),
            None,
        )
        if _is_delete(item):
            if index is not None:
                result.pop(index)
        elif index is None:
            result.append(_strip(item))
        else:
            result[index] = _merge_map(result[index], item)
    return result


def _is_delete(item: Any) -> bool:
    return isinstance(item, dict) and item.get("$patch") == "delete"


def _strip(value: Any) -> Any:
    """A patch value without directives and null keys (what a fresh object would hold)."""
    if isinstance(value, dict):
        return {k: _strip(v) for k, v in value.items() if not k.startswith("$") and v is not None}
    if isinstance(value, list):
        return [_strip(v) for v in value]
    return value


def json_merge(original: Any, patch: Any) -> Any:
    """RFC 7386: objects merge recursively, null deletes, everything else (lists too) replaces."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = copy.deepcopy(original) if isinstance(original, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = json_merge(result.get(key), value)
    return result


def json_patch(original: dict[str, Any], operations: list[Any]) -> dict[str, Any]:
    """RFC 6902 add / remove / replace / test / move / copy on a deep copy of ``original``."""
    doc: Any = copy.deepcopy(original)
    for op in operations:
        if not isinstance(op, dict) or "op" not in op or "path" not in op:
            raise bad_request("json patch operations need 'op' and 'path'")
        name, path = op["op"], _pointer(op["path"])
        if name == "add":
            doc = _put(doc, path, copy.deepcopy(op.get("value")), insert=True)
        elif name == "remove":
            doc = _remove(doc, path)
        elif name == "replace":
            _get(doc, path)
            doc = _put(doc, path, copy.deepcopy(op.get("value")), insert=False)
        elif name == "test":
            if _get(doc, path) != op.get("value"):
                raise ApiError(
                    422,
                    "Invalid",
                    f"the server rejected our request due to an error in our request: testing value {op['path']} failed",
                )
        elif name in ("move", "copy"):
            source = _pointer(op.get("from", ""))
            value = copy.deepcopy(_get(doc, source))
            if name == "move":
                doc = _remove(doc, source)
            doc = _put(doc, path, value, insert=True)
        else:
            raise bad_request(f"unexpected json patch operation {name!r}")
    if not isinstance(doc, dict):
        raise bad_request("json patch must produce an object")
    return doc


def _pointer(text: str) -> list[str]:
    if text == "":
        return []
    if not text.startswith("/"):
        raise bad_request(f"invalid JSON pointer {text!r}")
    return [p.replace("~1", "/").replace("~0", "~") for p in text[1:].split("/")]


def _get(doc: Any, path: list[str]) -> Any:
    cur = doc
    for part in path:
        if isinstance(cur, dict) and part in cur:
            cur = cur[part]
        elif isinstance(cur, list) and part.isdigit() and int(part) < len(cur):
            cur = cur[int(part)]
        else:
            raise ApiError(
                422,
                "Invalid",
                f"the server rejected our request due to an error in our request: jsonpatch path /{'/'.join(path)} not found",
            )
    return cur


def _put(doc: Any, path: list[str], value: Any, *, insert: bool) -> Any:
    if not path:
        return value
    parent = _get(doc, path[:-1])
    last = path[-1]
    if isinstance(parent, dict):
        parent[last] = value
    elif isinstance(parent, list):
        if last == "-":
            parent.append(value)
        elif last.isdigit() and int(last) <= len(parent):
            if insert:
                parent.insert(int(last), value)
            else:
                parent[int(last)] = value
        else:
            raise bad_request(f"invalid list index {last!r}")
    else:
        raise bad_request("json patch target is not a container")
    return doc


def _remove(doc: Any, path: list[str]) -> Any:
    parent = _get(doc, path[:-1])
    last = path[-1]
    _get(doc, path)
    if isinstance(parent, dict):
        del parent[last]
    else:
        parent.pop(int(last))
    return doc

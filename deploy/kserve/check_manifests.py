#!/usr/bin/env python3
"""Checks KServe manifests against KServe's own schema, as its Python SDK carries it: every
field of a ClusterServingRuntime or InferenceService (and of the Kubernetes objects inside
them) must be one the CRD's OpenAPI schema names, of the type it gives, and the objects are then
built with the SDK's models, which refuse a missing required field.

    python check_manifests.py FILE.yaml...     (needs the kserve package)
"""
import sys

import kserve
import kubernetes.client.models as k8s
import yaml

KINDS = {
    ("serving.kserve.io/v1alpha1", "ClusterServingRuntime"): "V1alpha1ClusterServingRuntime",
    ("serving.kserve.io/v1alpha1", "ServingRuntime"): "V1alpha1ServingRuntime",
    ("serving.kserve.io/v1beta1", "InferenceService"): "V1beta1InferenceService",
}


def model(name):
    cls = getattr(kserve, name, None) or getattr(k8s, name, None)
    if cls is None:
        raise SystemExit(f"the SDK has no model {name}")
    return cls


def build(value, typ, path):
    """The value as the SDK's type `typ` names it; raises ValueError naming the path."""
    # Both spellings the SDK's generators use: list[T] / List[T], dict(str, T) / Dict[str, T].
    if typ.startswith(("list[", "List[")):
        if not isinstance(value, list):
            raise ValueError(f"{path}: expected a list ({typ}), got {type(value).__name__}")
        return [build(v, typ[5:-1], f"{path}[{i}]") for i, v in enumerate(value)]
    if typ.startswith(("dict(", "Dict[")):
        if not isinstance(value, dict):
            raise ValueError(f"{path}: expected a map ({typ}), got {type(value).__name__}")
        inner = typ[5:-1].split(",", 1)[1].strip()
        return {k: build(v, inner, f"{path}.{k}") for k, v in value.items()}
    simple = {"str": str, "bool": bool, "int": int, "float": (int, float)}
    if typ in simple:
        if not isinstance(value, simple[typ]) or (typ != "bool" and isinstance(value, bool)):
            raise ValueError(f"{path}: expected {typ}, got {value!r}")
        return value
    if typ in ("object", "datetime"):
        return value
    cls = model(typ)
    if not isinstance(value, dict):
        raise ValueError(f"{path}: expected an object ({typ}), got {value!r}")
    by_key = {v: k for k, v in cls.attribute_map.items()}
    kwargs = {}
    for key, v in value.items():
        if key not in by_key:
            raise ValueError(f"{path}.{key}: not a field of {typ} (its fields: {', '.join(sorted(by_key))})")
        attr = by_key[key]
        kwargs[attr] = build(v, cls.openapi_types[attr], f"{path}.{key}")
    try:
        return cls(**kwargs)
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from None


def main(paths):
    failed = False
    for p in paths:
        with open(p) as f:
            docs = [d for d in yaml.safe_load_all(f) if d]
        for d in docs:
            kind = (d.get("apiVersion"), d.get("kind"))
            where = f"{p}: {kind[1]} {d.get('metadata', {}).get('name')}"
            if kind not in KINDS:
                print(f"FAIL {where}: not a KServe kind this checks ({', '.join(k for _, k in KINDS)})")
                failed = True
                continue
            try:
                build(d, KINDS[kind], kind[1])
                print(f"ok   {where}")
            except ValueError as e:
                print(f"FAIL {where}: {e}")
                failed = True
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

#!/usr/bin/env python3
"""Checks that teeserve's Rust source keeps the shape its design describes.

CI runs it from the repository root; it reads files only (no cargo, no network):

    python3 scripts/check_layers.py               # exit 0 clean, 1 with one line per violation
    python3 scripts/check_layers.py --self-test   # plants violations in a temporary tree
    python3 scripts/check_layers.py --root DIR    # check another checkout

The rules, and why:
  1. No `.rs` file is over 800 lines: a reader should find a file's content from its path, and a
     file that long holds more than one thing.
  2. No import circle between the files of one crate (`crate::`, `super::` and `self::` paths,
     `pub use` re-exports followed to the file that defines the item). A circle means neither
     file can be read, tested or moved on its own. A module's facade (lib.rs, mod.rs, or foo.rs
     beside foo/) may name its own descendants; a child may use its ancestors.
  3. Layers: in crates/serving, engine < models < api < network, and a file may import only from
     its own layer or below, so the engine never learns about HTTP. Between workspace crates,
     a crate may depend only on crates of lower rank (CRATE_RANKS), the key broker and the server
     never on each other, and the requester's crate never (even through others) on the server.
  4. In the serving, wire, tensor and client crates, no `fn` is over 100 lines.
Only the standard library is used. Comments, strings and char literals are blanked out before
anything is scanned, so a path in a doc comment or a message is not an import.
"""
import argparse
import bisect
import os
import pathlib
import re
import sys
import tempfile

MAX_FILE_LINES = 800
MAX_FN_LINES = 100
FN_LENGTH_DIRS = ("crates/serving/src", "crates/wire/src", "crates/tensor/src", "crates/client/src")
SOURCES = [f"crates/*/{d}" for d in ("src", "tests", "examples", "benches")] + ["python/src", "fuzz/fuzz_targets"]
# Per crate directory: the layer rank of each top-level module of src/ (lowest first).
LAYERS = {"crates/serving": {"engine": 0, "models": 1, "api": 2, "network": 3}}
# Which workspace crate may depend on which: only on crates of lower rank. Package names.
# "teeserve" is crates/cli, the binary; "teeserve-python" is python/, the requester's Python binding.
CRATE_RANKS = {"teeserve-attest": 0, "teeserve-seal": 0, "teeserve-wire": 0, "teeserve-tensor": 1,
               "teeserve-ratls": 1, "teeserve-tls": 2, "teeserve-client": 3, "teeserve-kbs": 4,
               "teeserve-serving": 4, "teeserve-python": 4, "teeserve-load": 4,
               "teeserve-testkit": 5, "teeserve": 6}
NEVER_EACH_OTHER = [("teeserve-kbs", "teeserve-serving")]
REQUESTER, SERVER = "teeserve-client", "teeserve-serving"

TOKEN = re.compile(r"""\bmod\s+(?:r\#)?(?P<mod>\w+)\s*(?P<open>[{;])
    | (?P<pubuse>\bpub(?:\s*\([^)]*\))?\s+use\s+)
    | (?<![\w:])\$?(?P<anchor>\b(?:crate|super|self))\s*::
    | [{}]""", re.X)
IDENT = re.compile(r"\s*(\*|(?:r#)?\w+)")
GROUP_OPEN, GROUP_CLOSE = re.compile(r"\s*\{"), re.compile(r"\s*\}")
COLONS, COMMA, ALIAS = re.compile(r"\s*::"), re.compile(r"\s*,?"), re.compile(r"\s+as\s+(\w+)")
PATH_ATTR = re.compile(r'#\[\s*path\s*=\s*"([^"]+)"\s*\]\s*(?:#\[[^\]]*\]\s*)*(?:pub\S*\s+)?mod\s+(\w+)\s*;')
RAW_STRING = re.compile(r'[bc]?r(#*)"')
FN = re.compile(r"\bfn\s+(?:r#)?(\w+)")
ANCHORS = ("crate", "super", "self")


def strip_code(src):
    """`src` with comments and string/char literals blanked (newlines kept, offsets unchanged)."""
    out, i, n = [], 0, len(src)
    while i < n:
        c, prev = src[i], src[i - 1] if i else " "
        word_start = not (prev.isalnum() or prev == "_")
        raw = RAW_STRING.match(src, i) if word_start else None
        if src.startswith("//", i):
            j = src.find("\n", i)
            j = n if j < 0 else j
        elif src.startswith("/*", i):  # block comments nest in Rust
            depth, j = 1, i + 2
            while j < n and depth:
                if src.startswith(("/*", "*/"), j):
                    depth += 1 if src[j] == "/" else -1
                    j += 1
                j += 1
        elif raw:
            j = src.find('"' + raw.group(1), raw.end())
            j = n if j < 0 else j + 1 + len(raw.group(1))
        elif c == '"' or (c in "bc" and src.startswith('"', i + 1) and word_start):
            j = src.index('"', i) + 1
            while j < n and src[j] != '"':
                j += 2 if src[j] == "\\" else 1
            j += 1
        elif c == "'" and src.startswith("\\", i + 1):  # '\n', '\'', '\u{..}'
            j = src.find("'", i + 3) + 1 or n
        elif c == "'" and i + 2 < n and src[i + 2] == "'":  # 'x'; a lifetime 'a has no closing quote
            j = i + 3
        else:
            out.append(c)
            i += 1
            continue
        out.append(re.sub(r"[^\n]", " ", src[i:j]))
        i = j
    return "".join(out)


def parse_tree(code, i, prefix):
    """The paths of the use tree or path at code[i:], as ([(segments, alias)], end)."""
    segs = list(prefix)
    while True:
        group = GROUP_OPEN.match(code, i)
        if group:  # `{a::{b, c}, d}`: each member extends the segments so far
            i, trees = group.end(), []
            while not (close := GROUP_CLOSE.match(code, i)):
                sub, j = parse_tree(code, i, segs)
                if j == i:
                    return trees, i
                trees += sub
                i = COMMA.match(code, j).end()
            return trees, close.end()
        m = IDENT.match(code, i)
        if not m:
            return ([(segs, None)] if segs else []), i
        name, i = m.group(1).removeprefix("r#"), m.end()
        if not (name == "self" and segs):  # `a::{self, b}`: `self` is `a`
            segs.append(name)
        if c := COLONS.match(code, i):
            i = c.end()
            continue
        alias = ALIAS.match(code, i)
        return [(segs, alias and alias.group(1))], (alias.end() if alias else i)


def absolute(segs, here):
    """Module path from the crate root of `segs` written in module `here`; None if not ours."""
    if segs[0] == "crate":
        return segs[1:]
    if segs[0] == "self":
        return here + segs[1:]
    if segs[0] == "super":
        k = next((k for k, s in enumerate(segs) if s != "super"), len(segs))
        return here[:len(here) - k] + segs[k:] if k <= len(here) else None
    return None


class Source:
    """One `.rs` file: where it sits in its crate's module tree, and what it references."""

    def __init__(self, root, rel):
        self.rel, self.text = rel, (root / rel).read_text(encoding="utf-8", errors="replace")
        self.code = strip_code(self.text)
        self.newlines = [i for i, c in enumerate(self.code) if c == "\n"]
        path = pathlib.PurePosixPath(rel)
        self.crate = next((str(p) for p in path.parents if (root / p / "Cargo.toml").exists()), str(path.parents[-2]))
        parts = path.relative_to(self.crate).parts
        base = list(parts[:2]) if parts[:2] == ("src", "bin") else [parts[0]]
        rest = list(parts[len(base):])
        each_a_root = base != ["src"]  # tests/x.rs, src/bin/x.rs, fuzz_targets/x.rs ...
        if each_a_root and len(rest) > 1 and (root / self.crate / "/".join(base + rest[:1]) / "main.rs").exists():
            base, rest, each_a_root = base + rest[:1], rest[1:], False  # tests/x/main.rs and its modules
        self.tree = "/".join([self.crate] + base)  # the directory the module paths start from
        self.is_root = rest in (["lib.rs"], ["main.rs"]) or (each_a_root and len(rest) == 1)
        self.mod = [] if self.is_root else rest[:-1] + ([] if rest[-1] == "mod.rs" else [rest[-1][:-3]])
        self.facade = self.is_root or rest[-1] == "mod.rs" or (root / rel[:-3]).is_dir()
        self.refs, self.reexports, self.globs, self.targets = [], {}, [], {}

    def line(self, pos):
        return bisect.bisect_left(self.newlines, pos) + 1

    def scan(self):
        """Collects module references (offset, absolute path) and top-level `pub use` re-exports."""
        stack, depth, i = [], 0, 0  # stack: inline `mod x {` blocks, with the depth they opened at
        while m := TOKEN.search(self.code, i):
            i, here = m.end(), self.mod + [name for name, _ in stack]
            if m.group("mod"):
                if m.group("open") == "{":
                    stack.append((m.group("mod"), depth))
                    depth += 1
            elif m.group(0) in "{}":
                depth += 1 if m.group(0) == "{" else -1
                if stack and stack[-1][1] == depth:
                    stack.pop()
            else:
                pub_use = m.group("pubuse") is not None
                trees, i = parse_tree(self.code, m.end() if pub_use else m.start("anchor"), [])
                for segs, alias in trees:
                    path = absolute(segs, here) if segs[0] in ANCHORS else (here + segs if pub_use else None)
                    if path is None:
                        continue
                    if segs[0] in ANCHORS:
                        self.refs.append((m.start(), path))
                    if pub_use and not stack and segs[-1] == "*":
                        self.globs.append(path[:-1])
                    elif pub_use and not stack and segs[-1] not in ANCHORS:
                        self.reexports[alias or segs[-1]] = path

    def defines(self, name):
        return re.search(rf"\b(?:fn|struct|enum|trait|type|const|static|union|mod)\s+{re.escape(name)}\b", self.code)


class Workspace:
    def __init__(self, root):
        rels = []
        for top in [t for pattern in SOURCES for t in sorted(root.glob(pattern))]:
            for d, dirs, names in os.walk(top):
                dirs[:] = sorted(x for x in dirs if x != "target")
                rels += [(pathlib.Path(d, x).relative_to(root).as_posix()) for x in sorted(names) if x.endswith(".rs")]
        self.files = {rel: Source(root, rel) for rel in rels}
        self.overrides = {}  # (tree, module path) -> Source, from #[path = "..."]
        for f in self.files.values():
            for m in PATH_ATTR.finditer(f.text):
                target = os.path.normpath(os.path.join(os.path.dirname(f.rel), m.group(1)))
                if f.code[m.start()] == "#" and target in self.files:  # not in a comment
                    self.overrides[(f.tree, tuple(f.mod + [m.group(2)]))] = self.files[target]
                    if self.files[target].tree == f.tree:
                        self.files[target].mod = f.mod + [m.group(2)]
        for f in self.files.values():
            f.scan()
        for f in self.files.values():
            for pos, path in f.refs:
                g = self.resolve(f.tree, path)
                if g is not None and g is not f:
                    f.targets.setdefault(g.rel, []).append(f.line(pos))

    def module_file(self, tree, segs):
        if not segs:
            roots = [self.files.get(f"{tree}/{n}") for n in ("lib.rs", "main.rs")]
            return next((r for r in roots if r), None)
        key = f"{tree}/{'/'.join(segs)}"
        found = self.overrides.get((tree, tuple(segs))) or self.files.get(key + ".rs")
        return found or self.files.get(key + "/mod.rs")

    def resolve(self, tree, segs, depth=0):
        """The file that defines `segs`: the longest module-file prefix, through re-exports."""
        for k in range(len(segs), -1, -1):
            f = self.module_file(tree, segs[:k])
            if f is not None:
                break
        else:
            return None
        rest = segs[k:]
        if rest and f.facade and depth < 3:
            if rest[0] in f.reexports:
                g = self.resolve(tree, f.reexports[rest[0]] + rest[1:], depth + 1)
                if g is not None:
                    return g
            for glob in f.globs:
                g = self.resolve(tree, glob + rest, depth + 1)
                if g is not None and g is not f and g.defines(rest[0]):
                    return g
        return f


def lengths(ws):
    for f in ws.files.values():
        if (n := len(f.text.splitlines())) > MAX_FILE_LINES:
            yield f"{f.rel}: {n} lines; split it (at most {MAX_FILE_LINES})"
        if not f.rel.startswith(tuple(d + "/" for d in FN_LENGTH_DIRS)):
            continue
        code = f.code
        for m in FN.finditer(code):
            j, depth = m.end(), 0  # the body's `{`, or the `;` of a declaration (`[u8; 4]` is neither)
            while j < len(code) and not (depth == 0 and code[j] in "{;"):
                depth += (code[j] in "([") - (code[j] in ")]")
                j += 1
            if j == len(code) or code[j] == ";":
                continue
            k, depth = j, 0
            while k < len(code) and (depth := depth + (code[k] == "{") - (code[k] == "}")):
                k += 1
            if (n := f.line(k) - f.line(m.start()) + 1) > MAX_FN_LINES:
                yield f"{f.rel}:{f.line(m.start())}: fn {m.group(1)} is {n} lines; split it (at most {MAX_FN_LINES})"


def layers(ws):
    for crate, table in LAYERS.items():
        tree, names = crate + "/src", {rank: name for name, rank in table.items()}
        files = [f for f in ws.files.values() if f.tree == tree and f.mod]  # the crate root is exempt
        unknown = {f.mod[0]: f.rel for f in reversed(files) if f.mod[0] not in table}
        for name, rel in sorted(unknown.items()):
            yield f"{rel}: module {name} of {crate} is in no layer; add it to LAYERS in scripts/check_layers.py"
        for f in (f for f in files if f.mod[0] in table):
            for g, lines in ((ws.files[rel], lines) for rel, lines in sorted(f.targets.items())):
                if g.tree == tree and g.mod and table.get(g.mod[0], -1) > table[f.mod[0]]:
                    more = f" (also line {', '.join(map(str, lines[1:]))})" if lines[1:] else ""
                    yield (f"{f.rel}:{lines[0]}: imports crate::{'::'.join(g.mod)} (layer {names[table[g.mod[0]]]})"
                           f" from layer {f.mod[0]}{more}; a file may import only from its own layer or below")


def shortest_path(graph, start, goal):
    """The fewest hops start -> ... -> goal (at least one), as a list of nodes; None if none."""
    came, queue = {}, [start]
    while queue and goal not in came:
        v = queue.pop(0)
        for w in graph.get(v, ()):
            if w not in came:
                came[w] = v
                queue.append(w)
    if goal not in came:
        return None
    path = [goal]
    while len(path) == 1 or path[0] != start:
        path.insert(0, came[path[0]])
    return path


def cycles(ws):
    def is_edge(f, g):  # a facade naming its own descendants is no edge
        return not (f.facade and g.tree == f.tree and len(g.mod) > len(f.mod) and g.mod[:len(f.mod)] == f.mod)
    graph = {rel: sorted(t for t in f.targets if is_edge(f, ws.files[t])) for rel, f in ws.files.items()}
    on_circle = {v: shortest_path(graph, v, v) for v in graph}
    done = set()
    for v in sorted(v for v, path in on_circle.items() if path):
        if v in done:
            continue
        component = {w for w in on_circle if on_circle[w] and shortest_path(graph, v, w) and shortest_path(graph, w, v)}
        done |= component
        path, tree = on_circle[v], ws.files[v].tree + "/"
        hops = [f"{a.removeprefix(tree)}:{ws.files[a].targets[b][0]}" for a, b in zip(path, path[1:])]
        rest = ", ".join(sorted(w.removeprefix(tree) for w in component - set(path)))
        yield (f"{v}:{ws.files[v].targets[path[1]][0]}: import circle in {tree[:-1]}: {' -> '.join(hops)} -> "
               f"{v.removeprefix(tree)}" + (f"; the circle's component also holds {rest}" if rest else ""))


def read_manifest(path):
    """(package name, names of [dependencies]) from a Cargo.toml, without a TOML library."""
    name, deps, section = None, set(), ""
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.split("#")[0].strip()
        if m := re.match(r"^\[+\s*([^\]]+?)\s*\]+$", line):
            section = m.group(1)
            if section.startswith("dependencies."):
                deps.add(section.split(".", 1)[1])
        elif (m := re.match(r"^name\s*=\s*\"([^\"]+)\"", line)) and section == "package":
            name = m.group(1)
        elif (m := re.match(r"^([\w-]+)\s*[.=]", line)) and section.split(".")[-1] == "dependencies":
            renamed = re.search(r"package\s*=\s*\"([^\"]+)\"", line)
            deps.add(renamed.group(1) if renamed else m.group(1))
    return name, deps


def crate_order(root):
    manifests = sorted(root.glob("crates/*/Cargo.toml")) + sorted(root.glob("python/Cargo.toml"))
    crates = {}  # name -> (manifest, deps)
    for path in manifests:
        name, deps = read_manifest(path)
        crates[name] = (path.relative_to(root).as_posix(), deps)
    for name, (where, deps) in sorted(crates.items()):
        if name not in CRATE_RANKS:
            yield f"{where}: crate {name} is in no crate layer; add it to CRATE_RANKS in scripts/check_layers.py"
            continue
        for dep in sorted(d for d in deps if d in crates and d in CRATE_RANKS):
            if CRATE_RANKS[dep] >= CRATE_RANKS[name] or {name, dep} in map(set, NEVER_EACH_OTHER):
                yield (f"{where}: {name} (rank {CRATE_RANKS[name]}) depends on {dep} (rank {CRATE_RANKS[dep]}); "
                       f"a crate may depend only on crates of lower rank (CRATE_RANKS)")
    graph = {name: sorted(d for d in deps if d in crates) for name, (_, deps) in crates.items()}
    chain = shortest_path(graph, REQUESTER, SERVER)
    if chain:
        yield f"{crates[REQUESTER][0]}: {' -> '.join(chain)}; the requester's crate must not depend on the server's"


def check(root):
    ws = Workspace(root)
    return [*sorted(lengths(ws)), *layers(ws), *cycles(ws), *crate_order(root)]


def self_test():
    """Plants one violation of each rule in a small tree; checks each is found, and a clean twin passes."""
    S = "crates/serving/src/"
    body = lambda n: "".join("    let _x = 1;\n" for _ in range(n))
    clean = {
        "crates/serving/Cargo.toml": '[package]\nname = "teeserve-serving"\n[dependencies]\nteeserve-client = "1"\n',
        "crates/client/Cargo.toml": '[package]\nname = "teeserve-client"\n[dependencies]\n# teeserve-serving\n'
                                    '[dev-dependencies]\nteeserve-serving.workspace = true\n',
        "crates/client/src/lib.rs": "//! The requester.\n",
        S + "lib.rs": "mod engine;\nmod models;\nmod api;\nmod network;\npub use models::Model;\n"
                      "pub use api::Thing;\npub use self::network::Server;\npub const VERSION: u8 = 1;\n",
        S + "engine/mod.rs": "pub mod a;\npub mod b;\npub mod model;\npub mod tf;\npub use a::A;\n",
        # tf/ops.rs's tests use super::*, itself; were that tf/mod.rs, there would be a circle.
        S + "engine/model.rs": "pub struct Model(crate::engine::tf::ops::Op);\n",
        S + "engine/tf/mod.rs": "pub mod ops;\nuse super::model::Model;\n",
        S + "engine/tf/ops.rs": "pub struct Op;\n#[cfg(test)]\nmod tests {\n    use super::*;\n}\n",
        S + "engine/a.rs": "// use crate::engine::b::B;\nuse crate::engine::b::B;\npub struct A(B);\n",
        S + "engine/b.rs": 'pub struct B;\nconst S: &str = "use super::a::A; {";\n'
                                          'const R: &str = r#"a " crate::api::y::Thing"#;\n',
        S + "models/mod.rs": "pub mod x;\npub mod g;\npub use x::Model;\n",
        S + "models/x.rs": "pub struct Model(crate::engine::A);\n",
        S + "models/g.rs": "use crate::{engine::{self, b::B}};\n/* crate::api::y::Thing */\n",
        S + "api/mod.rs": "pub mod y;\npub use self::y::Thing;\n",
        S + "api/y.rs": "pub struct Thing(crate::Model);\n#[cfg(test)]\nmod tests {\n    use super::*;\n}\n",
        S + "network/mod.rs": "pub mod big;\nuse crate::api::y::Thing;\nuse crate::VERSION;\npub struct Server;\n",
        S + "network/big.rs": "fn fits<'a>(s: &'a str) -> char {\n" + body(97) + "    '{'\n}\n"
                                             + "".join("const _: u8 = 0;\n" for _ in range(MAX_FILE_LINES - 100)),
    }
    planted = [  # (file, its text with a violation, what must be reported)
        (S + "engine/b.rs", "use super::a::A;\npub struct B;\n",
         ["import circle in crates/serving/src: engine/a.rs:2 -> engine/b.rs:1 -> engine/a.rs"]),
        (S + "models/x.rs", "pub fn f() -> crate::api::y::Thing {\n" + body(99) + "}\n",
         ["models/x.rs:1: imports crate::api::y (layer api) from layer models", "models/x.rs:1: fn f is 101 lines"]),
        (S + "api/y.rs", "pub struct Thing;\n", []),  # else y.rs -> x.rs -> y.rs
        (S + "models/g.rs", "use crate::{api::{y::Thing}};\n",
         ["models/g.rs:1: imports crate::api::y (layer api) from layer models"]),
        (S + "engine/up.rs", "fn g(_: crate::Thing) {}\n",  # through two re-exports
         ["engine/up.rs:1: imports crate::api::y (layer api) from layer engine"]),
        (S + "network/big.rs", clean[S + "network/big.rs"] + "const _: u8 = 0;\n", ["network/big.rs: 801 lines"]),
        (S + "misc.rs", "", ["module misc of crates/serving is in no layer"]),
        ("crates/client/Cargo.toml", '[package]\nname = "teeserve-client"\n[dependencies]\nteeserve-serving = "1"\n',
         ["teeserve-client (rank 3) depends on teeserve-serving (rank 4)",
          "teeserve-client -> teeserve-serving; the requester's crate must not depend on the server's"]),
        ("crates/bogus/Cargo.toml", '[package]\nname = "teeserve-bogus"\n', ["crate teeserve-bogus is in no crate layer"]),
    ]
    dirty = dict(clean, **{rel: text for rel, text, _ in planted})
    expected = [e for _, _, es in planted for e in es]
    failures = []
    for name, files in (("clean", clean), ("planted", dirty)):
        with tempfile.TemporaryDirectory() as tmp:
            for rel, text in files.items():
                (pathlib.Path(tmp) / rel).parent.mkdir(parents=True, exist_ok=True)
                (pathlib.Path(tmp) / rel).write_text(text)
            found = check(pathlib.Path(tmp))
        if name == "clean":
            failures += [f"clean tree reported: {v}" for v in found]
        else:
            failures += [f"planted violation missed: {e}" for e in expected if not any(e in v for v in found)]
            if len(found) != len(expected):
                failures.append(f"planted tree gave {len(found)} reports, expected {len(expected)}:")
                failures += [f"  {v}" for v in found]
    print("\n".join(failures) or f"self-test passed: {len(expected)} planted violations found, the clean tree passes")
    return 1 if failures else 0


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=pathlib.Path, default=pathlib.Path(__file__).resolve().parent.parent,
                        help="the repository to check (default: the one this script is in)")
    parser.add_argument("--self-test", action="store_true", help="check the checker on planted violations")
    args = parser.parse_args()
    if args.self_test:
        return self_test()
    violations = check(args.root.resolve())
    for v in violations:
        print(v)
    return 1 if violations else 0


if __name__ == "__main__":
    sys.exit(main())

"""Access-path selectors: the grammar, the walk, and DocArray 0.21 itself as the oracle."""

from __future__ import annotations

import warnings

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from clipserve.errors import InputRefusedError, InvalidInputError
from clipserve.wire import DocumentProto
from clipserve.wire.access_paths import (
    MAX_SELECTOR_CHARS,
    ROOTS,
    Step,
    parse_access_paths,
    select,
)


def tree() -> list[DocumentProto]:
    """a: chunks a0, a1 (a1 has chunk a10 and match a1m), match am; b: chunk b0; c: nothing."""
    a1 = DocumentProto(id="a1", chunks=[DocumentProto(id="a10")], matches=[DocumentProto(id="a1m")])
    a = DocumentProto(id="a", chunks=[DocumentProto(id="a0"), a1])
    a.matches.add(id="am", chunks=[DocumentProto(id="amc")])
    b = DocumentProto(id="b", chunks=[DocumentProto(id="b0")])
    return [a, b, DocumentProto(id="c")]


def ids(selector: str, roots: list[DocumentProto] | None = None) -> list[str]:
    return [d.id for d in select(roots or tree(), parse_access_paths(selector)).docs]


@pytest.mark.parametrize(
    ("selector", "expected"),
    [
        ("@r", ["a", "b", "c"]),
        ("r", ["a", "b", "c"]),
        ("@c", ["a0", "a1", "b0"]),
        ("@m", ["am"]),
        ("@cc", ["a10"]),
        ("@cm", ["a1m"]),
        ("@mc", ["amc"]),
        ("@r,c", ["a", "b", "c", "a0", "a1", "b0"]),
        ("@c,r", ["a0", "a1", "b0", "a", "b", "c"]),
        ("@ r , c ", ["a", "b", "c", "a0", "a1", "b0"]),
        ("@c[:1]", ["a0", "b0"]),
        ("@c:1", ["a0", "b0"]),
        ("@r[1]", ["b"]),
        ("@r1", ["b"]),
        ("@r[1:]c", ["b0"]),
        ("@r[-1]", ["c"]),  # the last one (DocArray 0.21 selects nothing here)
        ("@c[-1]", ["a1", "b0"]),
        ("@c[::-1]", ["a1", "a0", "b0"]),
        ("@r[::2]", ["a", "c"]),
        ("@r[7]", []),
        ("@mm", []),
        ("@c,c", ["a0", "a1", "b0"]),  # a document reached twice is selected once
        ("@r,c,cc,m,cm,mc", ["a", "b", "c", "a0", "a1", "b0", "a10", "am", "a1m", "amc"]),
    ],
)
def test_selectors_reach_the_documents_docarray_would(selector: str, expected: list[str]) -> None:
    assert ids(selector) == expected


def test_places_name_where_each_document_sits() -> None:
    selection = select(tree(), parse_access_paths("@r[2],cc,m"))
    places = [selection.where(i) for i in range(len(selection.docs))]
    assert places == ["#2", "#0.chunks[1].chunks[0]", "#0.matches[0]"]
    roots = select(tree(), ROOTS)
    assert roots.where(1) == "#1" and len(roots.docs) == 3


def test_the_default_is_the_request_itself_and_only_it_reaches_no_nested() -> None:
    roots = tree()
    assert select(roots, parse_access_paths("@r")).docs is roots
    assert parse_access_paths("@r").is_all_roots and not parse_access_paths("@r").reaches_nested
    assert not parse_access_paths("@r[0]").is_all_roots
    assert parse_access_paths("@r,c").reaches_nested and parse_access_paths("@m").reaches_nested


def test_limits_refuse_a_walk_early_and_keep_filters() -> None:
    root = DocumentProto(id="root")
    for i in range(10_000):
        root.chunks.add(id=str(i))
    with pytest.raises(InputRefusedError, match="'@c' selects more than 64 documents"):
        select([root], parse_access_paths("@c"), max_selected=64)
    assert len(select([root], parse_access_paths("@c[:64]"), max_selected=64).docs) == 64
    with pytest.raises(InputRefusedError, match="'@cm' walks more than 4096 documents"):
        select([root], parse_access_paths("@cm"), max_selected=64, max_visits=4096)
    many_paths = ",".join(["c[:1]"] * 40)  # each path looks at the root again
    with pytest.raises(InputRefusedError, match="walks more than 50 documents"):
        select([root], parse_access_paths(many_paths), max_visits=50)
    with pytest.raises(InputRefusedError, match="'@r' selects more than 2"):
        select(tree(), parse_access_paths("@r"), max_selected=2)
    kept = select(tree(), parse_access_paths("@r,c"), keep=lambda d: d.id != "a")
    assert [d.id for d in kept.docs] == ["b", "c", "a0", "a1", "b0"]


@pytest.mark.parametrize(
    ("selector", "why"),
    [
        ("", "it is empty"),
        ("@", "it is empty"),
        ("@x", "'x' is not a step"),
        ("@C", "'C' is not a step"),
        ("@r,,c", "path 2 is empty"),
        ("@r,", "path 2 is empty"),
        ("@c[", "'[' after 'c' is never closed"),
        ("@c]", "']' is not a step"),
        ("@c[]", "empty window '[]' after 'c'"),
        ("@c[a]", "window 'a' after 'c' is not integers"),
        ("@c[1-2]", "window '1-2' after 'c' is not integers"),
        ("@c[²]", "is not integers"),
        ("@c[1:2:3:4]", "more than three parts"),
        ("@c[::0]", "a step of 0"),
        ("@.[image]", "attribute steps ('.[name]') are not supported"),
        ("@r.[image]", "attribute steps"),
    ],
)
def test_a_malformed_selector_is_named_with_what_is_wrong(selector: str, why: str) -> None:
    with pytest.raises(InvalidInputError) as caught:
        parse_access_paths(selector, "traversal_paths")
    message = str(caught.value)
    assert f"parameter traversal_paths={selector!r} is not a valid access path" in message
    assert why in message


def test_a_huge_selector_is_refused_without_being_read() -> None:
    with pytest.raises(InvalidInputError, match=f"characters long, above {MAX_SELECTOR_CHARS}"):
        parse_access_paths("@" + "c" * 100_000)


def test_windows_parse_to_python_slices() -> None:
    (path,) = parse_access_paths("@r[2]c[1:3]m[::-2]c-3").paths
    assert path == (
        Step("r", slice(2, 3)),
        Step("c", slice(1, 3)),
        Step("m", slice(None, None, -2)),
        Step("c", slice(-3, -2)),
    )


# ---- DocArray 0.21 as the oracle ------------------------------------------------------


@st.composite
def trees(draw: st.DrawFn, depth: int = 0) -> dict:
    """A random document tree: {"chunks": [...], "matches": [...]}, at most 3 levels."""
    if depth >= 3:
        return {"chunks": [], "matches": []}
    chunks = draw(st.lists(trees(depth + 1), max_size=3 if depth < 2 else 2))
    matches = draw(st.lists(trees(depth + 1), max_size=2))
    return {"chunks": chunks, "matches": matches}


def window_text() -> st.SearchStrategy[str]:
    bound = st.one_of(st.none(), st.integers(-4, 4))
    index = st.integers(-4, 4).filter(lambda i: i != -1).map(str)  # -1: the one difference
    pair = st.tuples(bound, bound).map(lambda p: ":".join("" if v is None else str(v) for v in p))
    step = st.sampled_from([1, 2, -1, -2])
    triple = st.tuples(bound, bound, step).map(
        lambda p: ":".join("" if v is None else str(v) for v in p)
    )
    inner = st.one_of(index, pair, triple)
    return st.one_of(st.just(""), inner.map(lambda w: f"[{w}]"))


selectors = st.lists(
    st.lists(st.tuples(st.sampled_from("rcm"), window_text()), min_size=1, max_size=3).map(
        lambda steps: "".join(letter + window for letter, window in steps)
    ),
    min_size=1,
    max_size=3,
).map(lambda paths: "@" + ",".join(paths))


def build(spec: dict, doc_id: str):  # noqa: ANN201 - (DocumentProto, docarray Document)
    from docarray import Document

    proto, doc = DocumentProto(id=doc_id), Document(id=doc_id)
    for name in ("chunks", "matches"):
        children = [build(child, f"{doc_id}.{name[0]}{i}") for i, child in enumerate(spec[name])]
        getattr(proto, name).extend(c[0] for c in children)
        setattr(doc, name, [c[1] for c in children])
    return proto, doc


@settings(max_examples=150, deadline=None)
@given(roots=st.lists(trees(), min_size=1, max_size=3), selector=selectors)
def test_random_selectors_on_random_trees_match_docarray(roots: list[dict], selector: str) -> None:
    from docarray import DocumentArray

    built = [build(spec, f"d{i}") for i, spec in enumerate(roots)]
    protos = [p for p, _ in built]
    array = DocumentArray([d for _, d in built])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = list(dict.fromkeys(d.id for d in array[selector]))  # DocArray repeats
    assert ids(selector, protos) == expected

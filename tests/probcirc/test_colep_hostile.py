"""Hostile COLEP knowledge: size bombs fail fast and small, wrong types give one-line errors naming the field."""

from __future__ import annotations

import itertools
import json
import os
import re
import resource
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from probcirc.colep import Knowledge, KnowledgeError, Reasoner
from probcirc.colep.knowledge import FILE_MAX_CLUSTER_SIZE, MAX_FILE_BYTES, KnowledgeLimitError, min_vertex_cover
from probmod.errors import FormatError, InputError, LimitError, ProbmodError, exit_code

SECONDS, MEGABYTES = 5.0, 200


def _peak_rss_mb() -> float:
    text = Path("/proc/self/status").read_text()
    return int(re.search(r"VmHWM:\s+(\d+)", text).group(1)) / 1024


def _within_budget(fn):
    """Run ``fn`` and return what it raised, asserting it took under 5 s and grew the peak RSS by under 200 MB."""
    try:  # reset the peak to the current RSS (Linux), so earlier tests' peaks do not hide this one's
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        before = _peak_rss_mb()
    except OSError:
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    start = time.perf_counter()
    try:
        fn()
        err = None
    except Exception as e:  # noqa: BLE001 - the caller checks what it is
        err = e
    elapsed = time.perf_counter() - start
    after = (
        _peak_rss_mb()
        if os.path.exists("/proc/self/status")
        else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    )
    assert elapsed < SECONDS, f"took {elapsed:.1f} s"
    assert after - before < MEGABYTES, f"peak memory grew by {after - before:.0f} MB"
    return err


def _write(tmp_path, d, name="kb.json") -> str:
    path = tmp_path / name
    path.write_text(json.dumps(d))
    return str(path)


def _dense(n: int, **extra) -> dict:
    """One cluster of n variables with a rule between every pair: its minimum cover has n - 1 of them."""
    names = [f"v{i}" for i in range(n)]
    rules = [{"if": names[a], "then": names[b]} for a, b in itertools.combinations(range(n), 2)]
    return {
        "classes": names[:1],
        "concepts": names[1:],
        "rules": rules,
        "clusters": [{"name": "dense", "rules": list(range(len(rules)))}],
        **extra,
    }


def _star(n: int, **extra) -> dict:
    names = [f"v{i}" for i in range(n)]
    rules = [{"if": names[j], "then": names[0]} for j in range(1, n)]
    return {
        "classes": names[1:],
        "concepts": names[:1],
        "rules": rules,
        "clusters": [{"name": "star", "rules": list(range(n - 1))}],
        **extra,
    }


def test_a_small_file_raising_max_cluster_size_is_refused_fast(tmp_path):
    """The reported bomb: ~13 KB asking for max_cluster_size 1000 over a 60-variable dense cluster."""
    path = _write(tmp_path, _dense(60, max_cluster_size=1000))
    assert os.path.getsize(path) < 64 << 10
    err = _within_budget(lambda: Knowledge.from_json(path))
    assert isinstance(err, KnowledgeLimitError) and isinstance(err, LimitError) and exit_code(err) == 7
    assert "max_cluster_size=1000 is over the limit of 20" in str(err) and "cluster_size_limit" in str(err)


def test_at_the_file_limit_a_dense_cluster_is_refused_and_a_star_builds(tmp_path):
    dense = _write(tmp_path, _dense(FILE_MAX_CLUSTER_SIZE, max_cluster_size=FILE_MAX_CLUSTER_SIZE), "dense.json")
    err = _within_budget(lambda: Knowledge.from_json(dense))
    assert isinstance(err, KnowledgeLimitError)
    assert f"cluster 'dense' needs a reasoning circuit of {2**19 * 21 + 41} nodes" in str(
        err
    )  # 2^19 branches × (20 + 1), + 2·20 + 1
    star = _write(tmp_path, _star(FILE_MAX_CLUSTER_SIZE, max_cluster_size=FILE_MAX_CLUSTER_SIZE), "star.json")
    built = {}
    assert _within_budget(lambda: built.setdefault("r", Reasoner(Knowledge.from_json(star)))) is None
    assert [len(c.cover) for c in built["r"].circuits] == [1]


def test_code_can_raise_what_a_file_cannot(tmp_path):
    path = _write(tmp_path, _star(22, max_cluster_size=22))
    with pytest.raises(KnowledgeLimitError, match="max_cluster_size=22 is over the limit of 20"):
        Knowledge.from_json(path)
    assert Knowledge.from_json(path, cluster_size_limit=22).max_cluster_size == 22
    small = Knowledge.from_dict(_dense(8))  # 2^7 branches × 10 nodes
    with pytest.raises(KnowledgeLimitError, match="over max_circuit_nodes=1000"):
        Knowledge(small.classes, small.concepts, small.rules, small.clusters, max_circuit_nodes=1000)


def test_many_mid_sized_clusters_count_together(tmp_path):
    """Clusters under every per-cluster limit still add up: 40 dense 12-variable clusters (~26,000 nodes each)."""
    one = _dense(12)
    d = {"classes": [], "concepts": [], "rules": [], "clusters": []}
    for c in range(40):
        rename = {n: f"{n}_{c}" for n in one["classes"] + one["concepts"]}
        d["classes"] += [rename[n] for n in one["classes"]]
        d["concepts"] += [rename[n] for n in one["concepts"]]
        d["clusters"].append({"name": f"c{c}", "rules": [len(d["rules"]) + i for i in range(len(one["rules"]))]})
        d["rules"] += [{"if": rename[r["if"]], "then": rename[r["then"]]} for r in one["rules"]]
    err = _within_budget(lambda: Knowledge.from_dict(d))
    assert isinstance(err, KnowledgeLimitError) and re.search(
        r"cluster 'c\d+' needs .* nodes \(after \d+ in the clusters before it\)", str(err)
    )


def test_many_exclusive_classes_are_refused_before_building(tmp_path):
    """Exclusive classes join every cluster: 3000 classes make each branch a product over 3000 leaves."""
    d = _dense(12)
    d["classes"] = [f"c{i}" for i in range(3000)] + d["classes"]
    d.update(exclusive_classes=True)
    path = _write(tmp_path, d)
    assert os.path.getsize(path) < 64 << 10
    err = _within_budget(lambda: Knowledge.from_json(path))
    assert isinstance(err, KnowledgeLimitError) and "cluster 'dense' needs a reasoning circuit of" in str(err)


def test_bounds_refuse_an_exponential_vertex_walk():
    """Bounds for a concept enumerate every vertex, classes included: 30 exclusive classes would be 2^31."""
    classes = [f"c{i}" for i in range(30)]
    kb = Knowledge.from_concept_classes(classes, {"k": classes[:3]}, exclusive_classes=True)
    r = Reasoner(kb)
    lo, hi = torch.full((1, 31), 0.2, dtype=torch.float64), torch.full((1, 31), 0.6, dtype=torch.float64)
    err = _within_budget(lambda: r.bounds(lo, hi, variables=[30]))
    assert isinstance(err, LimitError) and "2^31 box vertices" in str(err)
    assert _within_budget(lambda: r.bounds(lo, hi, variables=[0, 1])) is None  # class bounds need 2 vertices only


GOOD = {
    "classes": ["a", "b"],
    "concepts": ["k"],
    "rules": [{"if": "a", "then": "k", "weight": 1.5}],
    "clusters": [{"name": "c", "rules": [0]}],
    "concept_classes": {"k": ["a"]},
}


@pytest.mark.parametrize(
    "key,value,msg",
    [
        ("classes", {"a": 1}, "'classes' must be a list, got dict"),
        ("classes", "ab", "'classes' must be a list, got str"),
        ("classes", [["a"], "b"], r"'classes'\[0\] must be a name \(a string\), got list"),
        ("classes", [None, "b"], r"'classes'\[0\] must be a name \(a string\), got NoneType"),
        ("concepts", [{"k": 1}], r"'concepts'\[0\] must be a name"),
        ("rules", {"if": "a"}, "'rules' must be a list, got dict"),
        ("rules", [["a", "k"]], "rule 0 must be an object"),
        ("rules", [{"if": 5, "then": "k"}], "rule 0: a literal must be a non-empty string"),
        ("rules", [{"if": "a", "then": "k", "weight": "1.5"}], "rule 0: weight must be a finite number"),
        ("rules", [{"if": "a", "then": "k", "weight": True}], "rule 0: weight must be a finite number"),
        ("clusters", [[0]], "cluster 0 must be an object"),
        ("clusters", [{"name": "c", "rules": "0"}], "cluster 'c': 'rules' must be a non-empty list"),
        ("clusters", [{"name": "c", "rules": [[0]]}], r"cluster 'c': rule index \[0\] is out of range"),
        ("clusters", [{"name": "c", "rules": [0.0]}], "cluster 'c': rule index 0.0 is out of range"),
        ("clusters", [{"name": ["c"], "rules": [0]}], "cluster 0: 'name' must be a string, got list"),
        ("concept_classes", ["k", "a"], "'concept_classes' must be an object"),
        ("concept_classes", {"k": "a"}, r"concept_classes\['k'\] must be a list of names, got str"),
        ("concept_classes", {"k": [1.5]}, r"concept_classes\['k'\]\[0\] must be a name"),
        ("max_cluster_size", "12", "max_cluster_size must be a positive integer, got '12'"),
        ("max_cluster_size", 1.5, "max_cluster_size must be a positive integer, got 1.5"),
        ("max_cluster_size", True, "max_cluster_size must be a positive integer, got True"),
        ("max_cluster_size", 0, "max_cluster_size must be a positive integer, got 0"),
        ("exclusive_classes", "yes", "exclusive_classes must be true or false"),
    ],
)
def test_wrong_container_types_give_one_line_naming_the_field(tmp_path, key, value, msg):
    path = _write(tmp_path, {**GOOD, key: value})
    err = _within_budget(lambda: Knowledge.from_json(path))
    assert isinstance(err, KnowledgeError) and isinstance(err, FormatError) and exit_code(err) == 4, repr(err)
    assert re.search(msg, str(err)) and "\n" not in str(err), str(err)


@pytest.mark.parametrize(
    "text,msg",
    [
        ("[" * 100_000 + "]" * 100_000, "nested too deeply|must be a JSON object"),
        ('{"classes": [' + "9" * 5000 + "]}", "not valid JSON"),  # longer than Python converts to int
        ("[1, 2]", "knowledge must be a JSON object, got list"),
        ('{"classes": ["a"], "rules": [], "clusters": [], "' + "x" * 30000 + '": 1}', "unknown knowledge keys"),
    ],
)
def test_hostile_json_text(tmp_path, text, msg):
    path = tmp_path / "kb.json"
    path.write_text(text)
    err = _within_budget(lambda: Knowledge.from_json(str(path)))
    assert isinstance(err, KnowledgeError) and re.search(msg, str(err)), repr(err)
    assert len(str(err)) < 2000 and "\n" not in str(err)


def test_hostile_paths(tmp_path):
    bad_utf8 = tmp_path / "latin1.json"
    bad_utf8.write_bytes(b'{"classes": ["\xe9"]}')
    with pytest.raises(KnowledgeError, match="not UTF-8"):
        Knowledge.from_json(bad_utf8)
    big = tmp_path / "big.json"
    with open(big, "wb") as f:  # sparse: declares the size without storing it
        f.truncate(MAX_FILE_BYTES + 1)
    err = _within_budget(lambda: Knowledge.from_json(big))
    assert isinstance(err, LimitError) and "16 MiB" in str(err)
    fifo = tmp_path / "fifo.json"
    os.mkfifo(fifo)
    err = _within_budget(lambda: Knowledge.from_json(str(fifo)))  # never opened, so it cannot hang
    assert isinstance(err, InputError) and "not a regular file" in str(err)
    for missing in (tmp_path / "nope.json", tmp_path):
        with pytest.raises(InputError):
            Knowledge.from_json(missing)
    assert isinstance(InputError("x"), ProbmodError)


def test_to_json_does_not_overwrite_unless_asked(tmp_path):
    from probmod.errors import OutputExistsError

    kb = Knowledge.from_dict(GOOD)
    path = tmp_path / "kb.json"
    path.write_text("keep me")
    with pytest.raises(OutputExistsError):
        kb.to_json(path)
    assert path.read_text() == "keep me"
    kb.to_json(path, overwrite=True)
    assert Knowledge.from_json(path) == kb


def test_declared_circuit_size_bounds_the_built_circuit():
    from probcirc.colep import ClusterCircuit, digits_knowledge
    from probcirc.colep.knowledge import circuit_nodes

    kbs = [
        digits_knowledge(),
        digits_knowledge(exclusive_classes=False),
        Knowledge.from_dict(_dense(7)),
        Knowledge.from_dict(_star(9)),
    ]
    for cluster in (c for kb in kbs for c in kb.compiled_clusters):
        for structure in ("cover", "enumerate"):
            built = ClusterCircuit(cluster, structure).pc.num_nodes
            assert built <= circuit_nodes(cluster, structure) <= 2 * built + 2 * len(cluster.variables) + 1


@pytest.mark.parametrize("seed", range(40))
def test_min_vertex_cover_matches_brute_force(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 11))
    edges = [(a, b) for a, b in itertools.combinations(range(n), 2) if rng.random() < rng.uniform(0.1, 0.9)]
    cover = min_vertex_cover(n, edges)
    assert all(a in cover or b in cover for a, b in edges) and list(cover) == sorted(set(cover))
    smallest = next(
        k for k in range(n + 1) for c in itertools.combinations(range(n), k) if all(a in c or b in c for a, b in edges)
    )
    assert len(cover) == smallest

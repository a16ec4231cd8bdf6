"""Domain knowledge for COLEP: classes, concepts, weighted implication rules, clusters.

JSON schema (all keys required unless marked optional)::

    {
      "classes":  ["0", "1", ...],                       # class names, in the model's class order
      "concepts": ["even", "loop", ...],                 # concept names (disjoint from classes)
      "concept_classes": {"even": ["0", "2", ...]},      # optional: which classes carry each concept;
                                                         #   used only to derive concept training labels
      "rules": [                                         # weighted implications  body => head
        {"if": "0", "then": "even", "weight": 1.5},      #   class => concept
        {"if": "loop", "then": "not ge5", "weight": 0.5} #   concept => concept; "not X" negates a literal
      ],
      "clusters": [                                      # each cluster: rule indices into "rules"
        {"name": "even", "rules": [0, ...]}              #   (its variables are those its rules mention)
      ],
      "exclusive_classes": true                          # optional (default false): exactly one class holds
    }

A literal is a class or concept name, optionally prefixed with ``"not "``.
Weights are finite and non-negative (a weight of 0 leaves the rule inert).
Every rule belongs to exactly one cluster. A cluster's variables are the
classes and concepts its rules mention. Exact handling enumerates up to 2^m
cases per cluster (the vertex cover's branches in the circuit, and the 2^m
vertices of the sensor box in certification), so a cluster may hold at most
``max_cluster_size`` variables.

With ``exclusive_classes`` the classes are mutually exclusive and exhaustive
(F(μ) = 0 unless exactly one class variable is 1), as for a multiclass label.
Every cluster then spans all classes, so knowledge about a concept moves
probability between classes: a class whose concepts the concept sensors deny
loses mass to the classes they confirm. The classes cost only K one-hot
states, so ``max_cluster_size`` then counts a cluster's concepts only.

Limits (knowledge files are untrusted input; each limit is checked before
anything is built):

- ``max_cluster_size`` defaults to :data:`MAX_CLUSTER_SIZE` (12); a file may
  raise it to at most :data:`FILE_MAX_CLUSTER_SIZE` (20). Only code can go
  further: ``Knowledge.from_json(path, cluster_size_limit=24)`` or
  ``Knowledge(..., max_cluster_size=24)``.
- The clusters' reasoning circuits together may hold at most
  ``max_circuit_nodes`` (default :data:`MAX_CIRCUIT_NODES`, 2^20) nodes; one has about (number of
  branches) × (variables + 1), where a cluster has 2^|cover| branches, times
  K with exclusive classes. Only code can raise it (it is not a file key).
- A knowledge file may be at most :data:`MAX_FILE_BYTES` (16 MiB).

Over a limit: :class:`KnowledgeLimitError` (a ``LimitError``, exit code 7).
Malformed knowledge: :class:`KnowledgeError` (a ``FormatError``, exit code 4),
one line that names the field.
"""

from __future__ import annotations

import json
import math
import os
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from probmod.errors import FormatError, LimitError
from probmod.io import check_regular_file

#: Default bound on the number of variables in one cluster (certification enumerates 2^m box vertices).
MAX_CLUSTER_SIZE = 12
#: The largest ``max_cluster_size`` a knowledge file may ask for (code may pass a higher ``cluster_size_limit``).
FILE_MAX_CLUSTER_SIZE = 20
#: Default bound on the nodes of one cluster's reasoning circuit (about 80 bytes and 2.5 µs each to build).
MAX_CIRCUIT_NODES = 1 << 20
#: The largest knowledge file read.
MAX_FILE_BYTES = 16 << 20


class KnowledgeError(FormatError):
    """Raised for knowledge that is malformed, names unknown variables,
    or cannot be handled exactly (a ``ValueError``)."""


class KnowledgeLimitError(KnowledgeError, LimitError):
    """Knowledge whose exact handling would exceed a documented size limit (exit code 7)."""

    exit_code = LimitError.exit_code


def _names(value: Any, where: str) -> list[str]:
    """A list of names (strings; integers are taken as their decimal text)."""
    if not isinstance(value, (list, tuple)):
        raise KnowledgeError(f"{where} must be a list of names, got {type(value).__name__}")
    for i, v in enumerate(value):
        if isinstance(v, bool) or not isinstance(v, (str, int)):
            raise KnowledgeError(f"{where}[{i}] must be a name (a string), got {type(v).__name__}")
    return [str(v) for v in value]


def _objects(value: Any, where: str, what: str) -> list[dict]:
    """A list of JSON objects (dicts)."""
    if not isinstance(value, (list, tuple)):
        raise KnowledgeError(f"'{where}' must be a list of objects, got {type(value).__name__}")
    for i, v in enumerate(value):
        if not isinstance(v, Mapping):
            raise KnowledgeError(f"{what} {i} must be an object {{...}}, got {type(v).__name__}")
    return [dict(v) for v in value]


def _count(value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise KnowledgeError(f"{where} must be a positive integer, got {value!r}")
    return value


def min_vertex_cover(num_vars: int, edges: list[tuple[int, int]]) -> tuple[int, ...]:
    """A smallest set of variables touching every edge: the complement of a maximum independent set.

    The independent set is found by branching on bit masks (take a vertex of
    degree ≤ 1 outright, else branch on one of largest degree), which visits
    about 1.4^m sets rather than the 2^m subsets of brute force.

    Example:
        >>> min_vertex_cover(4, [(0, 1), (0, 2), (0, 3)])   # a star: its centre
        (0,)
    """
    adj = [0] * num_vars
    for a, b in edges:
        if a != b:
            adj[a] |= 1 << b
            adj[b] |= 1 << a

    def independent(cand: int) -> int:
        if not cand:
            return 0
        verts = [v for v in range(num_vars) if cand >> v & 1]
        deg = {v: (adj[v] & cand).bit_count() for v in verts}
        low = min(verts, key=deg.__getitem__)
        if deg[low] <= 1:  # some maximum independent set contains a vertex of degree 0 or 1
            return 1 << low | independent(cand & ~(1 << low) & ~adj[low])
        top = max(verts, key=deg.__getitem__)
        with_top = 1 << top | independent(cand & ~(1 << top) & ~adj[top])
        without = independent(cand & ~(1 << top))
        return with_top if with_top.bit_count() >= without.bit_count() else without

    keep = independent((1 << num_vars) - 1)
    return tuple(v for v in range(num_vars) if not keep >> v & 1)


@dataclass(frozen=True)
class Literal:
    """A variable index (into ``Knowledge.variables``) and its polarity."""

    var: int
    positive: bool = True


@dataclass(frozen=True)
class Rule:
    """``body => head`` with weight ``w``: contributes ``w`` to log F(μ) when μ satisfies it."""

    body: Literal
    head: Literal
    weight: float

    def satisfied(self, mu) -> bool:
        """Vectorised: ``mu[..., var]`` in {0,1}; returns ``not body or head`` elementwise."""
        b = mu[..., self.body.var] if self.body.positive else 1 - mu[..., self.body.var]
        h = mu[..., self.head.var] if self.head.positive else 1 - mu[..., self.head.var]
        return (1 - b) + b * h > 0


@dataclass(frozen=True)
class Cluster:
    name: str
    rules: tuple[Rule, ...]
    variables: tuple[int, ...]  # sorted global variable indices
    one_hot: tuple[int, ...] = ()  # global indices of which exactly one is 1 (the classes, if exclusive)


def cover_of(cluster: Cluster, structure: str = "cover") -> tuple[int, ...]:
    """Local indices (into ``cluster.variables``) that the circuit conditions on besides the one-hot group.

    ``"cover"``: a minimum vertex cover of the rules among the other
    variables; ``"enumerate"``: all of them (see :class:`ClusterCircuit`).
    """
    local = {v: i for i, v in enumerate(cluster.variables)}
    hot = {local[v] for v in cluster.one_hot}
    rest = [j for j in range(len(cluster.variables)) if j not in hot]
    if structure == "enumerate":
        return tuple(rest)
    pos = {j: i for i, j in enumerate(rest)}
    ends = [(local[r.body.var], local[r.head.var]) for r in cluster.rules]
    edges = [(pos[a], pos[c]) for a, c in ends if a in pos and c in pos]
    return tuple(rest[i] for i in min_vertex_cover(len(rest), edges))


def circuit_nodes(cluster: Cluster, structure: str = "cover") -> int:
    """An upper bound on the nodes of the cluster's reasoning circuit, from its declared shape (nothing is built).

    Each of the b branches has a leaf or a sum per variable and one product;
    each free variable adds two shared leaves; one root.
    """
    branches = max(len(cluster.one_hot), 1) << len(cover_of(cluster, structure))
    m = len(cluster.variables)
    return branches * (m + 1) + 2 * m + 1


def _preview(names: Sequence[str], most: int = 10) -> str:
    """Names for a one-line message: all of a short list, else the first few and the count."""
    shown = ", ".join(repr(n[:40]) for n in names[:most])
    return f"[{shown}]" if len(names) <= most else f"[{shown}, ... ({len(names)} in all)]"


@dataclass
class Knowledge:
    """Classes, concepts, weighted implication rules and their clusters.

    Variables are numbered classes first (0..K-1), then concepts (K..K+C-1);
    sensors report probabilities in that order.

    Example:
        >>> kb = Knowledge.from_concept_classes(["0", "1", "2", "3"], {"even": ["0", "2"]}, weight=1.5)
        >>> kb.num_classes, kb.num_concepts, [c.name for c in kb.compiled_clusters]
        (4, 1, ['even'])
        >>> Knowledge.from_json(kb.to_json()) == kb
        True
    """

    classes: list[str]
    concepts: list[str]
    rules: list[dict]
    clusters: list[dict]
    concept_classes: dict[str, list[str]] | None = None
    max_cluster_size: int = MAX_CLUSTER_SIZE
    exclusive_classes: bool = False
    max_circuit_nodes: int = MAX_CIRCUIT_NODES
    _compiled: list[Cluster] = field(default_factory=list, init=False, repr=False, compare=False)

    def __post_init__(self):
        self.classes = _names(self.classes, "'classes'")
        self.concepts = _names(self.concepts, "'concepts'")
        self.rules = _objects(self.rules, "rules", "rule")
        self.clusters = _objects(self.clusters, "clusters", "cluster")
        if self.concept_classes is not None:
            if not isinstance(self.concept_classes, Mapping):
                raise KnowledgeError(
                    "'concept_classes' must be an object {concept: [classes]}, "
                    f"got {type(self.concept_classes).__name__}"
                )
            self.concept_classes = {
                str(k): _names(vs, f"concept_classes[{k!r}]") for k, vs in self.concept_classes.items()
            }
        _count(self.max_cluster_size, "max_cluster_size")
        _count(self.max_circuit_nodes, "max_circuit_nodes")
        self._validate()

    # ------------------------------------------------------------ accessors
    @property
    def variables(self) -> list[str]:
        return self.classes + self.concepts

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def num_concepts(self) -> int:
        return len(self.concepts)

    @property
    def num_variables(self) -> int:
        return len(self.classes) + len(self.concepts)

    @property
    def compiled_clusters(self) -> list[Cluster]:
        """Clusters with resolved rules and variable indices."""
        return list(self._compiled)

    def concept_matrix(self):
        """Boolean ``(K, C)`` numpy array: class k carries concept c (needs ``concept_classes``)."""
        import numpy as np

        if self.concept_classes is None:
            raise KnowledgeError(
                "concept labels need 'concept_classes' (which classes carry each concept) in the knowledge"
            )
        m = np.zeros((self.num_classes, self.num_concepts), dtype=bool)
        for ci, c in enumerate(self.concepts):
            for k in self.concept_classes.get(c, []):
                m[self.classes.index(k), ci] = True
        return m

    def labels(self, y):
        """Binary targets ``(n, K + C)`` for class labels ``y``: one-hot classes, then concepts."""
        import numpy as np

        y = np.asarray(y, dtype=int)
        out = np.zeros((len(y), self.num_variables))
        out[np.arange(len(y)), y] = 1.0
        if self.num_concepts:
            out[:, self.num_classes :] = self.concept_matrix()[y]
        return out

    # ----------------------------------------------------------- validation
    def _literal(self, text, where: str) -> Literal:
        if not isinstance(text, str) or not text.strip():
            raise KnowledgeError(
                f"{where}: a literal must be a non-empty string such as 'even' or 'not even', got {text!r}"
            )
        s = text.strip()
        positive = True
        if s.lower().startswith("not "):
            positive, s = False, s[4:].strip()
        elif s.startswith(("!", "~", "¬")):
            positive, s = False, s[1:].strip()
        if s not in self._index:
            raise KnowledgeError(f"{where}: unknown class or concept {s!r}; known: {_preview(self.variables)}")
        return Literal(self._index[s], positive)

    def _validate(self) -> None:
        if not self.classes:
            raise KnowledgeError("knowledge needs at least one class")
        names = self.variables
        dup = sorted(n for n, k in Counter(names).items() if k > 1)
        if dup:
            raise KnowledgeError(f"class and concept names must be unique; repeated: {_preview(dup)}")
        self._index = {n: i for i, n in enumerate(names)}
        if not isinstance(self.exclusive_classes, bool):
            raise KnowledgeError(f"exclusive_classes must be true or false, got {self.exclusive_classes!r}")
        if self.concept_classes is not None:
            concepts, classes = set(self.concepts), set(self.classes)
            for c, members in self.concept_classes.items():
                if c not in concepts:
                    raise KnowledgeError(
                        f"concept_classes: unknown concept {c!r}; known concepts: {_preview(self.concepts)}"
                    )
                for k in members:
                    if k not in classes:
                        raise KnowledgeError(
                            f"concept_classes[{c!r}]: unknown class {k!r}; known classes: {_preview(self.classes)}"
                        )
        rules: list[Rule] = []
        for i, r in enumerate(self.rules):
            where = f"rule {i}"
            extra = set(r) - {"if", "then", "weight"}
            if extra or not {"if", "then"} <= set(r):
                raise KnowledgeError(f"{where}: expected keys 'if', 'then' and optional 'weight', got {sorted(r)}")
            body, head = self._literal(r["if"], where), self._literal(r["then"], where)
            if body.var == head.var:
                raise KnowledgeError(f"{where}: body and head are the same variable {names[body.var]!r}")
            w = r.get("weight", 1.5)
            if isinstance(w, bool) or not isinstance(w, (int, float)) or not math.isfinite(w) or w < 0:
                raise KnowledgeError(f"{where}: weight must be a finite number >= 0, got {w!r}")
            rules.append(Rule(body, head, float(w)))
        seen: dict[int, str] = {}
        total_nodes = 0
        compiled: list[Cluster] = []
        cnames: set[str] = set()
        for ci, spec in enumerate(self.clusters):
            name = spec.get("name", f"cluster{ci}")
            if isinstance(name, bool) or not isinstance(name, (str, int)):
                raise KnowledgeError(f"cluster {ci}: 'name' must be a string, got {type(name).__name__}")
            name = str(name)
            if name in cnames:
                raise KnowledgeError(f"cluster names must be unique; {name!r} repeats")
            cnames.add(name)
            extra = set(spec) - {"name", "rules"}
            if extra or "rules" not in spec:
                raise KnowledgeError(f"cluster {name!r}: expected keys 'name' and 'rules', got {sorted(spec)}")
            idx = spec["rules"]
            if not isinstance(idx, (list, tuple)) or not idx:
                raise KnowledgeError(f"cluster {name!r}: 'rules' must be a non-empty list of rule indices")
            crules = []
            for j in idx:
                if isinstance(j, bool) or not isinstance(j, int) or not 0 <= j < len(rules):
                    raise KnowledgeError(f"cluster {name!r}: rule index {j!r} is out of range [0, {len(rules)})")
                if j in seen:
                    raise KnowledgeError(
                        f"rule {j} is in clusters {seen[j]!r} and {name!r}; each rule belongs to one cluster"
                    )
                seen[j] = name
                crules.append(rules[j])
            used = {v for r in crules for v in (r.body.var, r.head.var)}
            if self.exclusive_classes:
                used |= set(range(self.num_classes))
            variables = tuple(sorted(used))
            counted = [v for v in variables if not (self.exclusive_classes and v < self.num_classes)]
            if len(counted) > self.max_cluster_size:
                kind = "concepts" if self.exclusive_classes else "variables"
                raise KnowledgeLimitError(
                    f"cluster {name!r} has {len(counted)} {kind}; "
                    "exact reasoning and certification enumerate up to 2^m cases and are "
                    f"limited to max_cluster_size={self.max_cluster_size}. Split the cluster or raise max_cluster_size."
                )
            one_hot = tuple(range(self.num_classes)) if self.exclusive_classes else ()
            cluster = Cluster(name, tuple(crules), variables, one_hot)
            nodes = circuit_nodes(cluster)
            total_nodes += nodes
            if total_nodes > self.max_circuit_nodes:
                before = f" (after {total_nodes - nodes} in the clusters before it)" if total_nodes > nodes else ""
                raise KnowledgeLimitError(
                    f"cluster {name!r} needs a reasoning circuit of {nodes} nodes{before}, "
                    f"over max_circuit_nodes={self.max_circuit_nodes} "
                    f"({len(variables)} variables, {len(one_hot) or 1} × 2^{len(cover_of(cluster))} branches). "
                    f"Split the cluster, or raise max_circuit_nodes in code."
                )
            compiled.append(cluster)
        orphans = [j for j in range(len(rules)) if j not in seen]
        if orphans:
            raise KnowledgeError(f"rules {orphans} belong to no cluster; list each rule index in one cluster")
        self._compiled = compiled

    # ------------------------------------------------------------------ io
    def to_dict(self) -> dict:
        d = {
            "classes": list(self.classes),
            "concepts": list(self.concepts),
            "rules": [dict(r) for r in self.rules],
            "clusters": [dict(c) for c in self.clusters],
        }
        if self.concept_classes is not None:
            d["concept_classes"] = {k: list(v) for k, v in self.concept_classes.items()}
        if self.max_cluster_size != MAX_CLUSTER_SIZE:
            d["max_cluster_size"] = self.max_cluster_size
        if self.exclusive_classes:
            d["exclusive_classes"] = True
        return d

    def to_json(self, path: str | os.PathLike | None = None, overwrite: bool = False) -> str:
        """The JSON text (also written atomically to ``path`` if given; an existing file only with ``overwrite``)."""
        text = json.dumps(self.to_dict(), indent=2)
        if path is not None:
            from probmod.io import atomic_path

            with atomic_path(path, overwrite) as tmp, open(tmp, "w", encoding="utf-8") as f:
                f.write(text)
        return text

    @classmethod
    def from_dict(cls, d: Mapping, cluster_size_limit: int = FILE_MAX_CLUSTER_SIZE) -> Knowledge:
        """Knowledge from parsed JSON; its ``max_cluster_size`` may not exceed ``cluster_size_limit``.

        Raises:
            KnowledgeError: malformed knowledge (one line naming the field).
            KnowledgeLimitError: ``max_cluster_size`` over ``cluster_size_limit``, or a cluster over a limit.
        """
        if not isinstance(d, Mapping):
            raise KnowledgeError(f"knowledge must be a JSON object, got {type(d).__name__}")
        allowed = {
            "classes",
            "concepts",
            "rules",
            "clusters",
            "concept_classes",
            "max_cluster_size",
            "exclusive_classes",
        }
        extra = set(d) - allowed
        if extra:
            raise KnowledgeError(
                f"unknown knowledge keys {_preview(sorted(map(str, extra)))}; allowed: {sorted(allowed)}"
            )
        missing = {"classes", "rules", "clusters"} - set(d)
        if missing:
            raise KnowledgeError(f"knowledge lacks required keys {sorted(missing)}")
        for key in ("classes", "concepts", "rules", "clusters"):
            if key in d and not isinstance(d[key], list):
                raise KnowledgeError(f"'{key}' must be a list, got {type(d[key]).__name__}")
        size = _count(d.get("max_cluster_size", MAX_CLUSTER_SIZE), "max_cluster_size")
        if size > cluster_size_limit:
            raise KnowledgeLimitError(
                f"max_cluster_size={size} is over the limit of {cluster_size_limit} that knowledge may set "
                f"(exact reasoning enumerates 2^m cases); raise cluster_size_limit in code if you trust it"
            )
        return cls(
            classes=d["classes"],
            concepts=d.get("concepts", []),
            rules=d["rules"],
            clusters=d["clusters"],
            concept_classes=d.get("concept_classes"),
            max_cluster_size=size,
            exclusive_classes=d.get("exclusive_classes", False),
        )

    @classmethod
    def from_json(cls, text_or_path: str | os.PathLike, cluster_size_limit: int = FILE_MAX_CLUSTER_SIZE) -> Knowledge:
        """Parse JSON text (a string starting with ``{``), or read it from a file path.

        The file must be a regular file of at most :data:`MAX_FILE_BYTES`;
        ``cluster_size_limit`` as in :meth:`from_dict`.

        Raises:
            InputError: the path is missing or not a regular file (a FIFO is never opened).
            KnowledgeError: not UTF-8 JSON, or malformed knowledge.
            KnowledgeLimitError: a file over :data:`MAX_FILE_BYTES`, or knowledge over a limit.
        """
        if isinstance(text_or_path, str) and text_or_path.lstrip().startswith(("{", "[")):
            text, where = text_or_path, "knowledge"
        else:
            path = check_regular_file(text_or_path, "knowledge file")
            size = path.stat().st_size
            if size > MAX_FILE_BYTES:
                raise KnowledgeLimitError(
                    f"{path}: {size} bytes, over the {MAX_FILE_BYTES >> 20} MiB limit for a knowledge file"
                )
            with open(path, "rb") as f:
                raw = f.read(MAX_FILE_BYTES + 1)  # the file may have grown since stat
            if len(raw) > MAX_FILE_BYTES:
                raise KnowledgeLimitError(f"{path}: over the {MAX_FILE_BYTES >> 20} MiB limit for a knowledge file")
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise KnowledgeError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None
            where = str(path)
        try:
            d = json.loads(text)
        except RecursionError:
            raise KnowledgeError(f"{where} is not valid JSON: nested too deeply") from None
        except ValueError as e:  # JSONDecodeError, and integers longer than Python converts
            raise KnowledgeError(f"{where} is not valid JSON: {e}") from None
        return cls.from_dict(d, cluster_size_limit)

    @classmethod
    def from_concept_classes(
        cls,
        classes: Sequence,
        concept_classes: Mapping[str, Iterable],
        weight: float = 1.5,
        negative_weight: float | None = None,
        max_cluster_size: int = MAX_CLUSTER_SIZE,
        exclusive_classes: bool = False,
    ) -> Knowledge:
        """One cluster per concept with rules ``class => concept`` for each class carrying it.

        With ``negative_weight`` the cluster also holds ``class => not concept``
        for the other classes (a cluster then spans every class).
        ``exclusive_classes`` declares exactly one class true (a multiclass label).
        """
        classes = [str(c) for c in classes]
        concepts = [str(c) for c in concept_classes]
        rules: list[dict[str, object]] = []
        clusters: list[dict[str, object]] = []
        for c, members in concept_classes.items():
            members = [str(m) for m in members]
            idx = []
            for k in classes:
                if k in members:
                    idx.append(len(rules))
                    rules.append({"if": k, "then": str(c), "weight": weight})
                elif negative_weight is not None:
                    idx.append(len(rules))
                    rules.append({"if": k, "then": f"not {c}", "weight": negative_weight})
            clusters.append({"name": str(c), "rules": idx})
        return cls(
            classes,
            concepts,
            rules,
            clusters,
            {str(c): [str(m) for m in v] for c, v in concept_classes.items()},
            max_cluster_size,
            exclusive_classes,
        )


def digits_knowledge(
    weight: float = 1.5, negative_weight: float | None = None, exclusive_classes: bool = True
) -> Knowledge:
    """Knowledge about the ten digits: even, has a closed loop, >= 5, straight strokes only.

    A digit has exactly one class, so the classes are exclusive by default.
    ``negative_weight`` adds ``class => not concept`` for the classes without
    the concept, so a present concept also counts against them.
    """
    concepts = {
        "even": [0, 2, 4, 6, 8],
        "loop": [0, 6, 8, 9],
        "ge5": [5, 6, 7, 8, 9],
        "straight": [1, 4, 7],
    }
    return Knowledge.from_concept_classes(
        [str(i) for i in range(10)],
        {k: [str(v) for v in vs] for k, vs in concepts.items()},
        weight=weight,
        negative_weight=negative_weight,
        exclusive_classes=exclusive_classes,
    )

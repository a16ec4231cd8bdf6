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
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from typing import Iterable, Mapping, Sequence

#: Default bound on the number of variables in one cluster (certification enumerates 2^m box vertices).
MAX_CLUSTER_SIZE = 12


class KnowledgeError(ValueError):
    """Raised for knowledge that is malformed, names unknown variables, or cannot be handled exactly."""


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

    def satisfied(self, mu) -> "bool":
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
    _compiled: list[Cluster] = field(default_factory=list, init=False, repr=False, compare=False)

    def __post_init__(self):
        self.classes = [str(c) for c in self.classes]
        self.concepts = [str(c) for c in self.concepts]
        self.rules = [dict(r) for r in self.rules]
        self.clusters = [dict(c) for c in self.clusters]
        if self.concept_classes is not None:
            self.concept_classes = {str(k): [str(v) for v in vs] for k, vs in self.concept_classes.items()}
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
            raise KnowledgeError("concept labels need 'concept_classes' (which classes carry each concept) in the knowledge")
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
            raise KnowledgeError(f"{where}: a literal must be a non-empty string such as 'even' or 'not even', got {text!r}")
        s = text.strip()
        positive = True
        if s.lower().startswith("not "):
            positive, s = False, s[4:].strip()
        elif s.startswith(("!", "~", "¬")):
            positive, s = False, s[1:].strip()
        names = self.variables
        if s not in names:
            raise KnowledgeError(f"{where}: unknown class or concept {s!r}; known: {names}")
        return Literal(names.index(s), positive)

    def _validate(self) -> None:
        if not self.classes:
            raise KnowledgeError("knowledge needs at least one class")
        names = self.variables
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise KnowledgeError(f"class and concept names must be unique; repeated: {dup}")
        if not isinstance(self.exclusive_classes, bool):
            raise KnowledgeError(f"exclusive_classes must be true or false, got {self.exclusive_classes!r}")
        if not isinstance(self.max_cluster_size, int) or self.max_cluster_size < 1:
            raise KnowledgeError(f"max_cluster_size must be a positive integer, got {self.max_cluster_size!r}")
        if self.concept_classes is not None:
            for c, members in self.concept_classes.items():
                if c not in self.concepts:
                    raise KnowledgeError(f"concept_classes: unknown concept {c!r}; known concepts: {self.concepts}")
                for k in members:
                    if k not in self.classes:
                        raise KnowledgeError(f"concept_classes[{c!r}]: unknown class {k!r}; known classes: {self.classes}")
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
        compiled = []
        cnames = set()
        for ci, c in enumerate(self.clusters):
            name = str(c.get("name", f"cluster{ci}"))
            if name in cnames:
                raise KnowledgeError(f"cluster names must be unique; {name!r} repeats")
            cnames.add(name)
            extra = set(c) - {"name", "rules"}
            if extra or "rules" not in c:
                raise KnowledgeError(f"cluster {name!r}: expected keys 'name' and 'rules', got {sorted(c)}")
            idx = c["rules"]
            if not isinstance(idx, (list, tuple)) or not idx:
                raise KnowledgeError(f"cluster {name!r}: 'rules' must be a non-empty list of rule indices")
            crules = []
            for j in idx:
                if isinstance(j, bool) or not isinstance(j, int) or not 0 <= j < len(rules):
                    raise KnowledgeError(f"cluster {name!r}: rule index {j!r} is out of range [0, {len(rules)})")
                if j in seen:
                    raise KnowledgeError(f"rule {j} is in clusters {seen[j]!r} and {name!r}; each rule belongs to one cluster")
                seen[j] = name
                crules.append(rules[j])
            variables = {v for r in crules for v in (r.body.var, r.head.var)}
            if self.exclusive_classes:
                variables |= set(range(self.num_classes))
            variables = tuple(sorted(variables))
            counted = [v for v in variables if not (self.exclusive_classes and v < self.num_classes)]
            if len(counted) > self.max_cluster_size:
                kind = "concepts" if self.exclusive_classes else "variables"
                raise KnowledgeError(
                    f"cluster {name!r} has {len(counted)} {kind}; exact reasoning and certification enumerate up to 2^m cases and are "
                    f"limited to max_cluster_size={self.max_cluster_size}. Split the cluster or raise max_cluster_size."
                )
            one_hot = tuple(range(self.num_classes)) if self.exclusive_classes else ()
            compiled.append(Cluster(name, tuple(crules), variables, one_hot))
        orphans = [j for j in range(len(rules)) if j not in seen]
        if orphans:
            raise KnowledgeError(f"rules {orphans} belong to no cluster; list each rule index in one cluster")
        self._compiled = compiled

    # ------------------------------------------------------------------ io
    def to_dict(self) -> dict:
        d = {"classes": list(self.classes), "concepts": list(self.concepts), "rules": [dict(r) for r in self.rules], "clusters": [dict(c) for c in self.clusters]}
        if self.concept_classes is not None:
            d["concept_classes"] = {k: list(v) for k, v in self.concept_classes.items()}
        if self.max_cluster_size != MAX_CLUSTER_SIZE:
            d["max_cluster_size"] = self.max_cluster_size
        if self.exclusive_classes:
            d["exclusive_classes"] = True
        return d

    def to_json(self, path: str | os.PathLike | None = None) -> str:
        """The JSON text (also written to ``path`` if given)."""
        text = json.dumps(self.to_dict(), indent=2)
        if path is not None:
            with open(path, "w") as f:
                f.write(text)
        return text

    @classmethod
    def from_dict(cls, d: Mapping) -> "Knowledge":
        if not isinstance(d, Mapping):
            raise KnowledgeError(f"knowledge must be a JSON object, got {type(d).__name__}")
        allowed = {"classes", "concepts", "rules", "clusters", "concept_classes", "max_cluster_size", "exclusive_classes"}
        extra = set(d) - allowed
        if extra:
            raise KnowledgeError(f"unknown knowledge keys {sorted(extra)}; allowed: {sorted(allowed)}")
        missing = {"classes", "rules", "clusters"} - set(d)
        if missing:
            raise KnowledgeError(f"knowledge lacks required keys {sorted(missing)}")
        for key in ("classes", "concepts", "rules", "clusters"):
            if key in d and not isinstance(d[key], list):
                raise KnowledgeError(f"'{key}' must be a list, got {type(d[key]).__name__}")
        return cls(
            classes=d["classes"], concepts=d.get("concepts", []), rules=d["rules"], clusters=d["clusters"],
            concept_classes=d.get("concept_classes"), max_cluster_size=d.get("max_cluster_size", MAX_CLUSTER_SIZE),
            exclusive_classes=d.get("exclusive_classes", False),
        )

    @classmethod
    def from_json(cls, text_or_path: str | os.PathLike) -> "Knowledge":
        """Parse JSON text, or read it from a file path."""
        s = str(text_or_path)
        if not s.lstrip().startswith("{") and os.path.exists(s):
            with open(s) as f:
                s = f.read()
        try:
            d = json.loads(s)
        except json.JSONDecodeError as e:
            raise KnowledgeError(f"knowledge is not valid JSON: {e}") from None
        return cls.from_dict(d)

    @classmethod
    def from_concept_classes(
        cls,
        classes: Sequence,
        concept_classes: Mapping[str, Iterable],
        weight: float = 1.5,
        negative_weight: float | None = None,
        max_cluster_size: int = MAX_CLUSTER_SIZE,
        exclusive_classes: bool = False,
    ) -> "Knowledge":
        """One cluster per concept with rules ``class => concept`` for each class carrying it.

        With ``negative_weight`` the cluster also holds ``class => not concept``
        for the other classes (a cluster then spans every class).
        ``exclusive_classes`` declares exactly one class true (a multiclass label).
        """
        classes = [str(c) for c in classes]
        concepts = [str(c) for c in concept_classes]
        rules, clusters = [], []
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
        return cls(classes, concepts, rules, clusters, {str(c): [str(m) for m in v] for c, v in concept_classes.items()}, max_cluster_size,
                   exclusive_classes)


def digits_knowledge(weight: float = 1.5, negative_weight: float | None = None, exclusive_classes: bool = True) -> Knowledge:
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
    return Knowledge.from_concept_classes([str(i) for i in range(10)], {k: [str(v) for v in vs] for k, vs in concepts.items()}, weight=weight,
                                          negative_weight=negative_weight, exclusive_classes=exclusive_classes)

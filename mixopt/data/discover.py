"""Domain discovery in the manner of CLIMB: embed documents, cluster, prune, merge, write a new manifest.

A corpus rarely comes split into the domains that matter to a model; CLIMB (Diao et al., 2025) finds them by
clustering document embeddings and then searches mixtures over the clusters. Here:

1. every document the manifest would prepare (de-duplicated, capped) is cut into pieces of at most
   `chunk_chars` characters at line breaks, and each piece is embedded — by default hashed word uni/bigram
   TF-IDF reduced with truncated SVD (no model, no download), or a local sentence-transformers model. A piece is
   the unit from here on: a long file's parts may land in different clusters, as CLIMB's fixed-length chunks do;
2. faiss k-means with K centroids (on every point: faiss otherwise samples 256 per centroid);
3. clusters smaller than `min_cluster_frac` of the average cluster are pruned: their documents go to the
   nearest surviving centroid, so no document is lost;
4. near clusters are merged: Ward linkage on the centroids, cut at `merge_distance` (or at `final_k` clusters);
5. each cluster becomes a domain of a new manifest, backed by a JSONL file of its pieces, annotated with its
   size (pieces and bytes, and the bytes from each input domain), top terms (class-based TF-IDF) and example
   snippets.

Why pieces: a corpus of a few large files (a dictionary, a book, a manual) gives a handful of documents, and
embedding only each one's start puts whole sources in one cluster; shares are reported in bytes because a
cluster of many short pieces and one of a few long files can hold the same amount of training text.

Deterministic per seed: the embedding, k-means initialisation and every ordering depend only on the seed and
the documents.
"""

from __future__ import annotations

import json
import logging
import math
import re
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml

from mixopt.data.prepare import kept_documents
from mixopt.errors import InputError
from mixopt.spec import ClusterInfo, DatasetSpec, DomainSpec, SourceSpec

log = logging.getLogger(__name__)

EMBED_CHARS = 4000  # what is embedded of each piece (all of it, at the default piece size)
#: Pieces of at most this many characters are clustered: about a page of text, enough words for TF-IDF.
CHUNK_CHARS = 4000
WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_]{2,}")


@dataclass
class Discovery:
    """Cluster labels per document and what each cluster holds."""

    labels: np.ndarray  # the cluster of each piece
    origins: list[str]  # the source domain of each piece
    clusters: list[ClusterInfo]
    seconds: dict[str, float] = field(default_factory=dict)
    manifest: Path | None = None


# ------------------------------------------------------------------------------------------------ embedding


def embed_tfidf(texts: list[str], dim: int = 64, seed: int = 0) -> np.ndarray:
    """Hashed word uni+bigram TF-IDF → truncated SVD → unit rows. Needs no vocabulary pass and no model."""
    from sklearn.decomposition import TruncatedSVD
    from sklearn.feature_extraction.text import HashingVectorizer, TfidfTransformer
    from sklearn.preprocessing import normalize
    from threadpoolctl import threadpool_limits

    hv = HashingVectorizer(n_features=2**18, ngram_range=(1, 2), alternate_sign=False, norm=None,
                           token_pattern=r"(?u)\b\w\w+\b|[^\w\s]", lowercase=True, dtype=np.float32)
    x = TfidfTransformer(sublinear_tf=True).fit_transform(hv.transform(t[:EMBED_CHARS] for t in texts))
    x = x[:, np.unique(x.indices)]  # only the hash buckets in use: the SVD's work scales with the columns
    k = max(2, min(dim, x.shape[0] - 1, x.shape[1] - 1))
    # One BLAS thread: threaded reductions reorder float sums (runs would differ), and on a busy machine
    # OpenBLAS threads mostly wait on each other.
    with threadpool_limits(1):
        z = TruncatedSVD(n_components=k, random_state=seed, n_iter=5).fit_transform(x)
    return np.ascontiguousarray(normalize(z), dtype=np.float32)


def embed_sentence_transformer(texts: list[str], model: str) -> np.ndarray:
    try:
        from sentence_transformers import SentenceTransformer
    except ImportError:
        raise InputError("--embedder", f"{model!r} needs the sentence-transformers library",
                         "pip install sentence-transformers, or use the default tfidf embedder") from None
    if not Path(model).exists():
        raise InputError("--embedder", f"no local model at {model!r}",
                         "pass the folder of a downloaded sentence-transformers model")
    st = SentenceTransformer(model, local_files_only=True)
    z = st.encode([t[:EMBED_CHARS] for t in texts], batch_size=64, normalize_embeddings=True,
                  show_progress_bar=False)
    return np.ascontiguousarray(z, dtype=np.float32)


def embed(texts: list[str], embedder: str = "tfidf", dim: int = 64, seed: int = 0) -> np.ndarray:
    if embedder == "tfidf":
        return embed_tfidf(texts, dim, seed)
    return embed_sentence_transformer(texts, embedder)


def chunk(text: str, chars: int = CHUNK_CHARS) -> list[str]:
    """Pieces of at most `chars` characters, cut after the last line break (else space) before the limit, so a
    piece holds whole lines; 0 keeps the document whole. Joined back, the pieces are the document."""
    if chars <= 0 or len(text) <= chars:
        return [text]
    out, start = [], 0
    while len(text) - start > chars:
        end = start + chars
        cut = text.rfind("\n", start + chars // 2, end)
        if cut < 0:
            cut = text.rfind(" ", start + chars // 2, end)
        end = cut + 1 if cut >= 0 else end
        out.append(text[start:end])
        start = end
    out.append(text[start:])
    return out


# ------------------------------------------------------------------------------------------------ clustering


def cluster(emb: np.ndarray, k: int, seed: int = 0, min_cluster_frac: float = 0.2,
            merge_distance: float | None = 1.0, final_k: int | None = None, niter: int = 25) -> np.ndarray:
    """Labels 0..m-1 (largest cluster first) after k-means, pruning and merging."""
    import faiss
    from scipy.cluster.hierarchy import fcluster, linkage

    n, d = emb.shape
    k = min(k, n)
    threads = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)  # parallel reductions reorder float sums; one thread keeps runs identical
    try:
        km = faiss.Kmeans(d, k, niter=niter, seed=seed, verbose=False,
                          max_points_per_centroid=math.ceil(n / k) + 1, min_points_per_centroid=1)
        km.train(emb)
        _, lab = km.index.search(emb, 1)
    finally:
        faiss.omp_set_num_threads(threads)
    labels = lab[:, 0].astype(np.int64)
    counts = np.bincount(labels, minlength=k)
    keep = np.flatnonzero(counts >= max(1.0, min_cluster_frac * n / k))
    if len(keep) == 0:
        keep = np.array([int(counts.argmax())])
    cents = _centroids(emb, labels, keep)
    labels = keep[np.argmax(emb @ cents.T, axis=1)]  # pruned clusters' documents go to the nearest survivor
    if len(keep) > 1 and (merge_distance is not None or final_k is not None):
        z = linkage(_centroids(emb, labels, keep), method="ward")
        groups = (fcluster(z, t=final_k, criterion="maxclust") if final_k is not None
                  else fcluster(z, t=merge_distance, criterion="distance"))
        labels = groups[np.searchsorted(keep, labels)].astype(np.int64)
    # Relabel by size (ties by first document), so names do not depend on faiss's centroid order.
    uniq, first, cnt = np.unique(labels, return_index=True, return_counts=True)
    order = sorted(range(len(uniq)), key=lambda i: (-cnt[i], first[i]))
    remap = np.empty(int(uniq.max()) + 1, dtype=np.int64)
    remap[uniq[order]] = np.arange(len(uniq))
    return remap[labels]


def _centroids(emb: np.ndarray, labels: np.ndarray, ids: np.ndarray) -> np.ndarray:
    return np.stack([emb[labels == c].mean(axis=0) for c in ids]).astype(np.float32)


def top_terms(texts: list[str], labels: np.ndarray, n_terms: int = 10, per_cluster: int = 500) -> list[list[str]]:
    """Class-based TF-IDF: words frequent in a cluster and rare in the others."""
    m = int(labels.max()) + 1
    counts = [Counter() for _ in range(m)]
    for c in range(m):
        for i in np.flatnonzero(labels == c)[:per_cluster]:
            counts[c].update(w.lower() for w in WORD.findall(texts[i][:EMBED_CHARS]))
    total: Counter = Counter()
    for cnt in counts:
        total.update(cnt)
    spread: Counter = Counter()
    for cnt in counts:
        spread.update(cnt.keys())
    avg = sum(total.values()) / m
    out = []
    for cnt in counts:
        size = max(1, sum(cnt.values()))
        # BERTopic's c-TF-IDF, times an IDF over clusters so words every cluster uses ("the") score zero.
        score = {w: (f / size) * math.log(1 + avg / total[w]) * math.log((1 + m) / (1 + spread[w]))
                 for w, f in cnt.items() if f >= 2}
        out.append([w for w, _ in sorted(score.items(), key=lambda kv: (-kv[1], kv[0]))[:n_terms]])
    return out


def _snippet(text: str, chars: int = 160) -> str:
    return " ".join(text[:chars * 2].split())[:chars]


# ------------------------------------------------------------------------------------------------ the command


def discover(spec: DatasetSpec, k: int, out: str | Path, seed: int | None = None, embedder: str = "tfidf",
             dim: int = 64, min_cluster_frac: float = 0.2, merge_distance: float | None = 1.0,
             final_k: int | None = None, on_stage: Callable[[str], None] | None = None,
             chunk_chars: int = CHUNK_CHARS) -> Discovery:
    """Cluster the documents of `spec` (in pieces of at most `chunk_chars` characters; 0: whole documents) and
    write a manifest (`out`) whose domains are the clusters.

    The pieces of each cluster go to `<out without .yaml>/cluster_NN.jsonl`, which the manifest reads.
    Written under temporary names and renamed, so a failed run leaves the previous output intact.
    """
    seed = spec.seed if seed is None else seed
    out = Path(out)
    t0 = time.perf_counter()
    secs: dict[str, float] = {}
    stage = on_stage or (lambda s: None)
    stage("reading documents")
    texts: list[str] = []
    origins: list[str] = []
    with tempfile.TemporaryDirectory() as tmp:
        for domain, data, is_tokens in kept_documents(spec, Path(tmp)):
            if not is_tokens:
                pieces = chunk(data.decode("utf-8"), chunk_chars)
                texts += pieces
                origins += [domain] * len(pieces)
    if len(texts) < 2:
        raise InputError(f"dataset {spec.name}", f"{len(texts)} pieces of text, too few to cluster",
                         "discovery embeds text; already tokenized sources are left out")
    secs["read"] = time.perf_counter() - t0
    stage(f"embedding {len(texts):,} pieces")
    t = time.perf_counter()
    emb = embed(texts, embedder, dim, seed)
    secs["embed"] = time.perf_counter() - t
    stage(f"clustering into {k} and merging")
    t = time.perf_counter()
    labels = cluster(emb, k, seed, min_cluster_frac, merge_distance, final_k)
    secs["cluster"] = time.perf_counter() - t
    t = time.perf_counter()
    stage("describing clusters and writing the manifest")
    terms = top_terms(texts, labels)
    m = int(labels.max()) + 1
    if m < 2:
        raise InputError(f"dataset {spec.name}", "every piece of text fell into one cluster",
                         "raise --k, or lower --merge-distance (or set --final-k)")
    infos = []
    for c in range(m):
        idx = np.flatnonzero(labels == c)
        cent = emb[idx].mean(axis=0)
        near = idx[np.argsort(-(emb[idx] @ cent), kind="stable")[:3]]
        size: Counter = Counter()
        for i in idx:
            size[origins[i]] += len(texts[i].encode())
        infos.append(ClusterInfo(documents=len(idx), bytes=sum(size.values()),
                                 origins=dict(Counter(origins[i] for i in idx).most_common()),
                                 origin_bytes=dict(size.most_common()),
                                 top_terms=terms[c], examples=[_snippet(texts[i]) for i in near]))
    _write(spec, out, texts, labels, infos)
    secs["write"] = time.perf_counter() - t
    secs["total"] = time.perf_counter() - t0
    return Discovery(labels, origins, infos, secs, out)


def _write(spec: DatasetSpec, out: Path, texts: list[str], labels: np.ndarray, infos: list[ClusterInfo]) -> None:
    folder = out.with_suffix("")
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        domains: dict[str, DomainSpec] = {}
        for c, info in enumerate(infos):
            name = cluster_name(c, len(infos))
            with open(tmp / f"{name}.jsonl", "w") as f:
                for i in np.flatnonzero(labels == c):
                    f.write(json.dumps({"text": texts[i]}, ensure_ascii=False) + "\n")
            domains[name] = DomainSpec(
                sources=[SourceSpec(jsonl=f"{folder.name}/{name}.jsonl")],
                description=f"{info.documents} pieces; top terms: {', '.join(info.top_terms[:6])}",
                discovered=info)
        new = DatasetSpec(name=f"{spec.name}-clusters", tokenizer=spec.tokenizer, val_fraction=spec.val_fraction,
                          min_val_tokens=spec.min_val_tokens, seed=spec.seed, domains=domains)
        header = (f"# Domains discovered in dataset {spec.name} by `mixopt data discover` (clusters of document "
                  f"embeddings).\n# Each domain reads the JSONL file of its cluster's documents in {folder.name}/.\n")
        body = yaml.safe_dump(new.model_dump(mode="json", exclude_none=True, exclude_defaults=False),
                              sort_keys=False, allow_unicode=True, width=120)
        if folder.exists():
            old = folder.with_name(f".{folder.name}.old")
            folder.rename(old)
            tmp.rename(folder)
            _rmtree(old)
        else:
            tmp.rename(folder)
        out_tmp = out.with_name(f".{out.name}.tmp")
        out_tmp.write_text(header + body)
        out_tmp.replace(out)
    except BaseException:
        _rmtree(tmp)
        raise


def _rmtree(p: Path) -> None:
    import shutil

    shutil.rmtree(p, ignore_errors=True)


def cluster_name(c: int, m: int) -> str:
    return f"cluster_{c:0{max(2, len(str(m - 1)))}d}"

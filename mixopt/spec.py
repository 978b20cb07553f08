"""Typed specs: the one place where a job's configuration is validated.

Everything a search needs is checked here, at load, before anything runs or anything is written: unknown keys
are errors (a typo must not silently fall back to a default), mixtures must be on the simplex. Errors become
one `InputError` line that names the file, the field and the fix. The specs know no optimizer: the settings
under `optimizer:` are checked by the search layer (`mixopt.search.checks`), which loads the optimizer.
"""

from __future__ import annotations

import difflib
import math
import os
import re
import sysconfig
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from mixopt.errors import InputError

WEIGHT_TOLERANCE = 1e-3  # |sum(w) - 1| allowed in user-written mixtures before we refuse them


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# --------------------------------------------------------------------------------------------- datasets

#: Placeholders a dataset glob may use, so the built-in demo corpus works on any Python installation.
PLACEHOLDERS = ("stdlib", "include", "purelib", "platlib", "data")


def expand_placeholders(pattern: str) -> str:
    paths = sysconfig.get_paths()
    return pattern.format(**{k: paths[k] for k in PLACEHOLDERS})


#: Source kinds that name files (a path or glob); the others name a builtin or a Hugging Face dataset.
FILE_KINDS = ("glob", "docstrings", "jsonl", "parquet", "npy", "megatron")
SOURCE_KINDS = (*FILE_KINDS, "builtin", "hf")


#: `documents:` keywords of a glob source; anything else is a separator regex.
DOCUMENT_MODES = ("auto", "file", "paragraphs", "lines")
#: `documents: auto` splits files at paragraphs when a source has fewer files than this: a domain of a few large
#: files then gives enough documents for a validation split, while a corpus of many files keeps one per file.
SPLIT_BELOW_FILES = 32
#: In a domain of fewer than SPLIT_BELOW_FILES text files, `auto` joins a file's paragraphs into documents of
#: about 1/DOCS_PER_FILE of the file: ~400 documents per file give a 5 % validation split ~20 of them.
DOCS_PER_FILE = 400


class SourceSpec(_Strict):
    """One source of documents for a domain. Exactly one of the kind fields is set.

    Text:
    - `glob`: plain text files; `documents` says how a file becomes documents (by default: one document per
      file, or paragraphs joined up to `max_document_bytes` when the source has only a few files; when the whole
      domain has only a few files, into documents of about 1/400 of each file).
    - `docstrings`: Python files; each module, class and function docstring is one document (English prose).
    - `builtin: pydoc_topics`: the interpreter's bundled documentation topics (English prose).
    - `jsonl`: JSON Lines files (`.jsonl`, `.jsonl.gz`); each record's `text_field` is one document.
    - `parquet`: Parquet files; each row's `text_field` column is one document.
    - `hf`: a Hugging Face dataset (hub name, or a local folder written by `save_to_disk`), with `split`,
      optional `config` and `text_field`; needs the `datasets` library.

    Already tokenized (token ids of the dataset's tokenizer):
    - `npy`: 1-D integer `.npy` files; documents end at token `eos`, or each file is one document.
    - `megatron`: Megatron-LM `.bin`/`.idx` pairs (give the `.bin`, the `.idx`, or the prefix).
    """

    glob: str | None = None
    docstrings: str | None = None
    builtin: Literal["pydoc_topics"] | None = None
    jsonl: str | None = None
    parquet: str | None = None
    hf: str | None = None
    npy: str | None = None
    megatron: str | None = None
    exclude: list[str] = Field(default_factory=list, description="globs of files to leave out")
    text_field: str | None = Field(default=None, description="jsonl/parquet/hf: the field holding the text "
                                   "(dots reach into nested JSON objects); default `text`")
    split: str | None = Field(default=None, description="hf: the split to read; default `train`")
    config: str | None = Field(default=None, description="hf: the dataset configuration name")
    eos: int | None = Field(default=None, ge=0, description="npy: the token id that ends a document")
    documents: str = Field(
        default="auto", description="glob: how a file becomes documents — file (one document), paragraphs (split "
        "at blank lines, paragraphs joined up to max_document_bytes), lines (one per non-empty line), a regular "
        "expression that separates documents, or auto: paragraphs when the source has fewer than "
        f"{SPLIT_BELOW_FILES} files (joined into documents of about 1/{DOCS_PER_FILE} of a file when the whole "
        "domain has that few), else file")
    max_document_bytes: int = Field(default=65_536, ge=64, description="glob with paragraphs or a separator: "
                                    "pieces are joined into documents of at most this many bytes")
    encoding: str = "utf-8"
    decode_errors: Literal["error", "replace", "skip"] = Field(
        default="error", description="a file that is not valid in `encoding`: refuse it (error), replace the "
        "bad bytes, or skip the file")

    @model_validator(mode="after")
    def _exactly_one(self) -> SourceSpec:
        set_kinds = [k for k in SOURCE_KINDS if getattr(self, k) is not None]
        if len(set_kinds) != 1:
            raise ValueError(f"a source sets exactly one of {', '.join(SOURCE_KINDS)}"
                             + (f" (this one sets {', '.join(set_kinds)})" if set_kinds else ""))
        kind = set_kinds[0]
        for key, kinds in (("text_field", ("jsonl", "parquet", "hf")), ("split", ("hf",)), ("config", ("hf",)),
                           ("eos", ("npy",))):
            if getattr(self, key) is not None and kind not in kinds:
                raise ValueError(f"{key} applies to {' and '.join(kinds)} sources, not to {kind}")
        for pattern in (*(getattr(self, k) for k in FILE_KINDS), *self.exclude):
            if pattern is not None:
                try:
                    expand_placeholders(pattern)
                except (KeyError, IndexError, ValueError) as e:
                    raise ValueError(
                        f"unknown placeholder in {pattern!r}; known: {', '.join('{'+p+'}' for p in PLACEHOLDERS)}"
                    ) from e
        try:
            "".encode(self.encoding)
        except LookupError:
            raise ValueError(f"unknown encoding {self.encoding!r}") from None
        if self.documents != "auto" and kind != "glob":
            raise ValueError(f"documents applies to glob sources, not to {kind}")
        if self.documents not in DOCUMENT_MODES:
            try:
                re.compile(self.documents, re.MULTILINE)
            except re.error as e:
                raise ValueError(f"documents is neither one of {', '.join(DOCUMENT_MODES)} nor a valid regular "
                                 f"expression ({e})") from None
        return self

    @property
    def kind(self) -> str:
        return next(k for k in SOURCE_KINDS if getattr(self, k) is not None)

    @property
    def target(self) -> str:
        """The path, glob, name or builtin this source reads."""
        return str(getattr(self, self.kind))


class ClusterInfo(_Strict):
    """What `mixopt data discover` found out about a discovered domain, kept in the manifest for people."""

    documents: int
    bytes: int
    origins: dict[str, int] = Field(default_factory=dict, description="documents per domain of the input")
    origin_bytes: dict[str, int] = Field(default_factory=dict, description="bytes per domain of the input")
    top_terms: list[str] = Field(default_factory=list)
    examples: list[str] = Field(default_factory=list)


class DomainSpec(_Strict):
    sources: list[SourceSpec] = Field(min_length=1)
    max_bytes: int | None = Field(default=None, gt=0, description="keep at most this many bytes of text")
    max_docs: int | None = Field(default=None, gt=0, description="keep at most this many documents")
    val_fraction: float | None = Field(default=None, gt=0, lt=0.5, description="overrides the dataset's")
    description: str | None = None
    discovered: ClusterInfo | None = None


class TokenizerSpec(_Strict):
    """`byte` (256 bytes + end of document), a `bpe` trained here on the corpus, or a local `tokenizer.json`.

    Shorthands: `tokenizer: byte`, `tokenizer: bpe`, `tokenizer: path/to/tokenizer.json`.
    """

    kind: Literal["byte", "bpe", "file"] = "byte"
    vocab_size: int | None = Field(default=None, ge=300, le=1_000_000, description="bpe: default 8192")
    train_bytes: int = Field(default=20_000_000, gt=0, description="bpe: text sampled to train it")
    path: str | None = Field(default=None, description="file: a Hugging Face tokenizers `tokenizer.json`")
    eos_token: str | None = Field(default=None, description="file: the end-of-document token; default: the "
                                  "first of <|endoftext|>, </s>, <eos>, [SEP] the tokenizer has")

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, v: Any) -> Any:
        if isinstance(v, str):
            return {"kind": v} if v in ("byte", "bpe") else {"kind": "file", "path": v}
        return v

    @model_validator(mode="after")
    def _fields_match_kind(self) -> TokenizerSpec:
        if (self.kind == "file") != (self.path is not None):
            raise ValueError("a file tokenizer needs `path` (a tokenizer.json); only it takes one")
        if self.vocab_size is not None and self.kind != "bpe":
            raise ValueError("vocab_size applies to a bpe tokenizer only (the others have theirs)")
        if self.eos_token is not None and self.kind != "file":
            raise ValueError("eos_token applies to a file tokenizer only")
        return self


class DatasetSpec(_Strict):
    """A corpus split into named domains, and how to turn it into token arrays."""

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    tokenizer: TokenizerSpec = TokenizerSpec()
    val_fraction: float = Field(default=0.05, gt=0, lt=0.5)
    min_val_tokens: int = Field(default=16_384, gt=0)
    seed: int = 0
    roots: list[str] = Field(default_factory=list, description="folders sources may read besides the "
                             "manifest's own folder and the Python installation's")
    domains: dict[str, DomainSpec]

    @field_validator("domains")
    @classmethod
    def _domain_names(cls, v: dict[str, DomainSpec]) -> dict[str, DomainSpec]:
        if len(v) < 2:
            raise ValueError("a dataset needs at least 2 domains to mix")
        for name in v:
            if not name.replace("_", "").isalnum() or not name[0].isalpha():
                raise ValueError(f"domain name {name!r} must be letters, digits and _, starting with a letter")
        return v

    def resolved(self, base_dir: Path, where: str | None = None) -> DatasetSpec:
        """Make relative paths absolute (so the spec can be copied into a job folder and still work) and refuse
        paths that leave the allowed roots: a manifest must not read arbitrary files by `../` accident."""
        base_dir = Path(base_dir).resolve()
        where = where or str(base_dir)

        def fix(p: str | None) -> str | None:
            if p is None or p.startswith("{") or Path(p).is_absolute():
                return p
            return os.path.normpath(base_dir / p)

        roots = list(dict.fromkeys([*(fix(r) or r for r in self.roots), str(base_dir)]))
        allowed = [Path(r).resolve() for r in roots] + [Path(p).resolve() for p in sysconfig.get_paths().values()]
        domains = {}
        for name, d in self.domains.items():
            sources = []
            for j, s in enumerate(d.sources):
                upd: dict[str, Any] = {k: fix(getattr(s, k)) for k in FILE_KINDS}
                upd["exclude"] = [fix(e) for e in s.exclude]
                if s.hf is not None and (base_dir / s.hf).exists():  # a local dataset folder, not a hub name
                    upd["hf"] = fix(s.hf)
                for k in (*FILE_KINDS, "hf"):
                    p = upd.get(k)
                    if p is not None and Path(expand_placeholders(p)).is_absolute():
                        _check_under_roots(expand_placeholders(p), allowed,
                                           f"{where}: domains.{name}.sources[{j}].{k}")
                sources.append(s.model_copy(update=upd))
            domains[name] = d.model_copy(update={"sources": sources})
        tok = self.tokenizer
        if tok.path is not None:
            tok = tok.model_copy(update={"path": fix(tok.path)})
        return self.model_copy(update={"domains": domains, "roots": roots, "tokenizer": tok})


def _check_under_roots(pattern: str, allowed: list[Path], where: str) -> None:
    fixed = []
    for part in Path(pattern).parts:
        if any(c in part for c in "*?["):
            break
        fixed.append(part)
    here = Path(*fixed).resolve() if fixed else Path("/")
    if not any(here == r or here.is_relative_to(r) for r in allowed):
        raise InputError(where, f"{pattern!r} leaves the folders this manifest may read",
                         "move the data under the manifest's folder, or list its folder under `roots:`")


# --------------------------------------------------------------------------------------------- proxies


class BaseSpec(_Strict):
    """Continual pretraining: the checkpoint every run of a proxy starts from.

    The base is that proxy pretrained on `weights` for `tokens` tokens with the proxy's optimiser settings (its
    `lr` and `lr_schedule` may differ) and `seed`; it is trained once per (architecture, optimiser, base) and
    dataset, cached on disk, and shared by every run of that proxy, whatever the run's seed: the runs then
    differ only in the continued-pretraining mixture and data order, as in the D-CPT and CMR papers' setups.
    The continued run re-warms its learning rate (`warmup_frac`), and its `tokens` count continued-pretraining
    tokens only. With `eval_every`, the run's curve starts with the base's losses at 0 tokens: the pre-CPT
    reference the CMR law measures changes from.
    """

    weights: dict[str, float] = Field(description="pretraining mixture of the base, e.g. {general: 1}")
    tokens: int = Field(gt=0, description="pretraining tokens of the base")
    seed: int = Field(default=0, description="initialisation and data-order seed of the base")
    lr: float | None = Field(default=None, gt=0, description="peak learning rate of the base (default: the proxy's)")
    lr_schedule: Literal["cosine", "constant"] | None = Field(
        default=None, description="the base's schedule (default: the proxy's); cosine gives an annealed base, "
        "like a released pretrained model")
    cache_dir: str | None = Field(default=None, description="where base checkpoints are kept (default: "
                                  "$MIXOPT_CACHE/bases, else ~/.cache/mixopt/bases)")

    @model_validator(mode="after")
    def _weights(self) -> BaseSpec:
        if not self.weights or any(v < 0 for v in self.weights.values()) or sum(self.weights.values()) <= 0:
            raise ValueError("base.weights must give every domain a share ≥ 0 with a positive sum, "
                             "e.g. {general: 1}")
        return self


class ProxySpec(_Strict):
    """A proxy: a small decoder-only LM (dense or MoE) and its training budget, or a user's own trainer.

    `tokens` is the training budget per run and the usual fidelity knob. `kind: command` hands the run to an
    external trainer (Megatron-LM, torchtitan, …): see `command`.
    """

    name: str = "tiny"
    kind: Literal["dense", "moe", "command"] = "dense"
    n_layer: int = Field(default=2, ge=1)
    n_head: int = Field(default=4, ge=1)
    d_model: int = Field(default=64, ge=8)
    d_ff: int | None = Field(default=None, ge=8, description="SwiGLU hidden size (default ≈ 8/3·d_model)")
    seq_len: int = Field(default=128, ge=8)
    batch_size: int = Field(default=16, ge=1)
    tokens: int = Field(default=300_000, gt=0, description="training tokens per proxy run (the fidelity)")
    tokens_per_param: float | None = Field(
        default=None, gt=0, description="budget as tokens per (total) parameter instead of `tokens`: tokens = "
        "tokens_per_param × parameters at the dataset's vocabulary (`vocab_size` until the data is known)")
    vocab_size: int = Field(default=257, ge=2, description="vocabulary the parameter count of tokens_per_param "
                            "assumes; the driver sets it to the prepared dataset's")
    # --- mixture of experts (kind: moe)
    n_experts: int = Field(default=8, ge=2, description="routed experts per MoE layer")
    top_k: int = Field(default=2, ge=1, description="experts each token is routed to")
    n_shared_experts: int = Field(default=0, ge=0, description="always-on experts (DeepSeekMoE style)")
    expert_d_ff: int | None = Field(default=None, ge=8, description="hidden size of one expert (default d_ff)")
    capacity_factor: float | None = Field(default=None, gt=0,
                                          description="null = dropless; else tokens over capacity are dropped")
    aux_loss_coef: float = Field(default=0.01, ge=0, description="weight of the load-balancing loss")
    # --- optimisation
    lr: float = Field(default=3e-3, gt=0)
    lr_schedule: Literal["cosine", "constant"] = "cosine"
    min_lr_frac: float = Field(default=0.1, ge=0, le=1, description="cosine floor as a fraction of lr")
    warmup_frac: float = Field(default=0.1, ge=0, lt=1)
    weight_decay: float = Field(default=0.1, ge=0)
    grad_clip: float = Field(default=1.0, gt=0)
    eval_windows: int = Field(default=32, ge=1, description="validation windows of seq_len per domain")
    sampling: Literal["stratified", "iid"] = Field(
        default="stratified", description="stratified: exact domain shares per batch and one data stream per "
        "domain and seed, shared by every mixture (paired comparisons carry less noise); iid: independent draws")
    eval_every: int | None = Field(default=None, ge=1, description="also evaluate every N steps (a curve)")
    # --- execution
    device: Literal["auto", "cpu", "cuda"] = "auto"
    precision: Literal["auto", "float32", "bfloat16"] = Field(
        default="auto", description="auto = bf16 autocast on GPU, float32 on CPU")
    compile: bool = Field(default=False, description="torch.compile the model (GPU; little gain on CPU)")
    chunk_tokens: int | None = Field(default=None, ge=1, description="tokens per forward/backward pass of a "
                                     "batched step (default: 16384 on CPU, the whole batch on GPU)")
    proxies_per_task: int = Field(default=1, ge=1,
                                  description="mixtures trained together as one batched model per Ray task")
    num_cpus: float = Field(default=1, gt=0, description="Ray CPUs per proxy task; also torch threads")
    num_gpus: float = Field(default=0, ge=0, description="Ray GPUs per proxy task (fractions share a GPU)")
    # --- external trainer (kind: command)
    command: list[str] | None = Field(
        default=None, description="argument list; placeholders {mixture_json} {metrics_json} {run_dir} {seed} "
        "{tokens} are filled in (never run through a shell)")
    timeout_s: float | None = Field(default=None, gt=0, description="wall-clock limit of one run")
    # --- continual pretraining
    base: BaseSpec | None = Field(default=None, description="start every run from this pretrained checkpoint "
                                  "(continual pretraining); null = from scratch")

    @model_validator(mode="after")
    def _consistent(self) -> ProxySpec:
        if self.tokens_per_param is not None:
            if self.kind == "command":
                raise ValueError("tokens_per_param needs mixopt's own proxy (its size is unknown for kind: command); "
                                 "give `tokens`")
            tokens = max(1, round(self.tokens_per_param * self.param_count(self.vocab_size)))
            if "tokens" in self.model_fields_set and self.tokens != tokens:  # a saved spec carries both, equal
                raise ValueError(f"give `tokens` or `tokens_per_param`, not both (tokens_per_param "
                                 f"{self.tokens_per_param:g} means {tokens:,} tokens for this model)")
            object.__setattr__(self, "tokens", tokens)  # frozen model: the derived budget is set once, here
        if self.kind == "command":
            if self.base is not None:
                raise ValueError("`base` (continual pretraining) is for mixopt's own proxies; an external "
                                 "trainer loads its own checkpoint")
            if not self.command:
                raise ValueError("kind: command needs `command`, an argument list such as "
                                 "[python, train.py, --mixture, '{mixture_json}', --out, '{metrics_json}']")
            return self
        if self.command:
            raise ValueError(f"`command` is only used with kind: command (this proxy is kind: {self.kind})")
        if self.d_model % self.n_head or (self.d_model // self.n_head) % 2:
            raise ValueError(f"d_model ({self.d_model}) must be a multiple of n_head ({self.n_head}) with an even "
                             "head size (rotary positions rotate pairs)")
        if self.kind == "moe" and self.top_k > self.n_experts:
            raise ValueError(f"top_k ({self.top_k}) cannot exceed n_experts ({self.n_experts})")
        if self.steps < 1:
            raise ValueError("tokens must cover at least one batch (batch_size × seq_len)")
        return self

    @property
    def steps(self) -> int:
        return self.tokens // (self.batch_size * self.seq_len)

    def param_count(self, vocab_size: int) -> int:
        """Total parameters (embedding tied with the output head), from the architecture alone."""
        d, L = self.d_model, self.n_layer
        if self.kind == "moe":
            layer = 4 * d * d + 2 * d + d * self.n_experts + (self.n_experts + self.n_shared_experts) * 3 * d * \
                self.expert_hidden
        else:
            layer = 4 * d * d + 2 * d + 3 * d * self.ffn_hidden
        return vocab_size * d + L * layer + d

    def for_vocab(self, vocab_size: int) -> ProxySpec:
        """This proxy for a dataset's vocabulary: a `tokens_per_param` budget is recomputed at that size."""
        if self.tokens_per_param is None or vocab_size == self.vocab_size:
            return self
        return ProxySpec.model_validate({**self.model_dump(exclude={"tokens"}), "vocab_size": vocab_size})

    @property
    def ffn_hidden(self) -> int:
        return self.d_ff or int(8 * self.d_model / 3 + 7) // 8 * 8

    @property
    def expert_hidden(self) -> int:
        return self.expert_d_ff or self.ffn_hidden


# --------------------------------------------------------------------------------------------- objective


class ObjectiveSpec(_Strict):
    """What to minimise: one metric column, the mean of several, or a weighted sum of several.

    `metrics: null` means the mean of every `loss_<domain>` column, the usual "average validation loss";
    `weights` (one per metric) make it the weighted sum Σ weight·metric (e.g. token shares of validation sets).
    """

    metrics: list[str] | None = None
    weights: list[float] | None = None

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, v: Any) -> Any:
        """`objective: loss_prose` and `objective: {metrics: loss_prose}` both mean one metric."""
        if isinstance(v, str):
            return {"metrics": [v]}
        if isinstance(v, dict) and isinstance(v.get("metrics"), str):
            return {**v, "metrics": [v["metrics"]]}
        return v

    @model_validator(mode="after")
    def _weights_match(self) -> ObjectiveSpec:
        if self.weights is not None:
            if self.metrics is None or len(self.weights) != len(self.metrics):
                raise ValueError("objective.weights needs one weight per entry of objective.metrics")
            if any(w < 0 for w in self.weights) or sum(self.weights) <= 0:
                raise ValueError("objective.weights must be non-negative with a positive sum")
        for m in self.metrics or []:
            if not m.startswith("loss_"):
                raise ValueError(f"objective metric {m!r} must be a loss_<domain> column (lower is better)")
        return self

    def describe(self) -> str:
        if self.metrics is None:
            return "mean(loss_*)"
        if len(self.metrics) == 1:
            return self.metrics[0]
        if self.weights is None:
            return f"mean({', '.join(self.metrics)})"
        return " + ".join(f"{w:g}·{m}" for w, m in zip(self.weights, self.metrics, strict=True))


class LeverageSpec(_Strict):
    """Parameters of the MoE efficiency-leverage law EL(A, G, C) = Â^(α + γ·(ln G)² + β·ln G), α = a + d·ln C.

    The paper (docs/methods.md §8d) does not publish all its constants or the exact saturating transform, so these
    are settings. Â is the saturated sparsity 1/A: r = 1/A, r̂ = 1 + 1/(1/(r − 1) + 1/(r_max − 1)), so a dense
    model (A = 1) has EL = 1 and EL stays bounded as A → 0. The defaults put the granularity optimum at
    `g_opt` = 10 (the paper's 8–12) and reproduce its one public point: 0.85B active parameters on 1T tokens
    match a 6.1B dense model (EL ≈ 7.2), assuming a Ling-2.0-like activation ratio 9/257 at `g_opt`.
    """

    a: float = Field(default=-0.6721, description="intercept of the exponent α = a + d·ln C (C in FLOPs)")
    d: float = Field(default=0.02, ge=0, description="growth of the exponent with ln compute (the paper: d > 0)")
    gamma: float = Field(default=-0.05, lt=0, description="curvature in ln granularity (< 0: an optimum)")
    g_opt: float = Field(default=10.0, gt=0, description="granularity with the highest leverage; β = −2γ·ln g_opt")
    r_max: float = Field(default=1000.0, gt=1, description="saturation of the sparsity 1/A (Clark et al. style)")
    transfer: Literal["same_tokens", "chinchilla"] = Field(
        default="same_tokens", description="same_tokens: N_eq = EL·N_active, the dense model that spends C_eq = "
        "EL·6·N_active·D on the same D tokens (the paper's comparison); chinchilla: N_eq from the compute-optimal "
        "split of C_eq (docs/methods.md §8d; overstates N_eq for runs trained past compute-optimal)")

    @property
    def beta(self) -> float:
        return -2.0 * self.gamma * math.log(self.g_opt)


MOE_FIELDS = ("active_params", "n_experts", "top_k", "granularity")


class TargetSpec(_Strict):
    """The full-scale run the recommendation is for: its size, its tokens, and how often data may repeat.

    Dense: `params`. MoE: `params` (total), `active_params`, `n_experts`, `top_k`, `shared_experts`,
    `granularity` (optional; d_model-to-expert-width ratio, assumed at the leverage optimum when absent) and the
    `leverage` law that turns it into a dense-equivalent size.
    """

    name: str | None = None
    kind: Literal["dense", "moe"] = "dense"
    params: float | None = Field(default=None, gt=0, description="parameters (MoE: total parameters)")
    tokens: float | None = Field(default=None, gt=0, description="training tokens D of the target run")
    seq_len: int | None = Field(default=None, gt=0, description="context length of the target run")
    max_epochs: float = Field(default=4.0, gt=0, description="a domain may repeat at most this often (the "
                              "data-constrained heuristic; RegMix allowed 15)")
    max_epochs_per_domain: dict[str, float] = Field(default_factory=dict, description="overrides of max_epochs")
    active_params: float | None = Field(default=None, gt=0, description="MoE: parameters active per token")
    n_experts: int | None = Field(default=None, ge=1, description="MoE: routed experts per layer")
    top_k: int | None = Field(default=None, ge=1, description="MoE: routed experts active per token")
    shared_experts: int = Field(default=0, ge=0, description="MoE: always-active shared experts")
    granularity: float | None = Field(default=None, gt=0, description="MoE: expert granularity G")
    leverage: LeverageSpec = LeverageSpec()

    @model_validator(mode="after")
    def _fields_match_kind(self) -> TargetSpec:
        for d, e in self.max_epochs_per_domain.items():
            if not (e > 0 and math.isfinite(e)):
                raise ValueError(f"max_epochs_per_domain.{d} must be a positive number, not {e}")
        if self.kind == "dense":
            given = [f for f in MOE_FIELDS if getattr(self, f) is not None] + (
                ["shared_experts"] if self.shared_experts else [])
            if given:
                raise ValueError(f"{', '.join(given)} apply to moe targets only; set kind: moe or remove them")
            return self
        missing = [f for f in ("params", "active_params", "n_experts", "top_k") if getattr(self, f) is None]
        if missing:
            raise ValueError(f"a moe target needs {', '.join(missing)}")
        assert self.params is not None and self.active_params is not None
        assert self.n_experts is not None and self.top_k is not None
        if self.active_params > self.params:
            raise ValueError(f"active_params ({self.active_params:.3g}) cannot exceed params ({self.params:.3g}), "
                             "the total")
        if self.top_k > self.n_experts:
            raise ValueError(f"top_k ({self.top_k}) cannot exceed n_experts ({self.n_experts})")
        return self

    @property
    def activation_ratio(self) -> float | None:
        """Active over total experts, shared ones counted on both sides (Ling-2.0: 9/257 = 3.5%)."""
        if self.kind != "moe" or self.n_experts is None or self.top_k is None:
            return None
        return (self.top_k + self.shared_experts) / (self.n_experts + self.shared_experts)

    def domain_max_epochs(self, domain: str) -> float:
        return float(self.max_epochs_per_domain.get(domain, self.max_epochs))

    @classmethod
    def from_yaml(cls, path: str | Path) -> TargetSpec:
        """A target file holds the target's keys, or a search spec's `target:` block."""
        path = Path(path)
        raw = _read_yaml(path)
        if set(raw) == {"target"} and isinstance(raw["target"], dict):
            return _validate(cls, raw["target"], path, prefix="target")
        return _validate(cls, raw, path)


# --------------------------------------------------------------------------------------------- search


class OptimizerSpec(BaseModel):
    """`name` picks the optimizer; every other key is one of that optimizer's settings.

    The spec layer knows no optimizer: the search layer (`mixopt.search.checks`) checks the name against the
    registry and the settings against that optimizer's `Settings` model when a search is loaded to run, so
    reading a finished job's folder never imports optimizer code (nor torch with it).
    """

    model_config = ConfigDict(extra="allow", frozen=True)
    name: str = Field(min_length=1)

    @property
    def settings(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class LadderSpec(_Strict):
    """The verification ladder: before committing, check the top candidates against the baselines at a larger scale.

    When the search's runs are spent, the optimizer's top `candidates` mixtures (kept at least `min_distance`
    apart in L1), the natural and uniform mixtures and every `include_mixtures` entry are trained at the ladder's
    fidelity with `seeds` seeds, every mixture of a seed with the same initialisation and data order (common
    random numbers). The best candidate is recommended only if it beats the better baseline by more than a
    one-sided Student t test allows by chance (`test`, `alpha`); otherwise that baseline is, and the
    recommendation says why.
    """

    enabled: bool | Literal["auto"] = Field(
        default="auto", description="auto: on for optimizers that recommend a static mixture, when the ladder "
        "trains no more runs than the search itself (else skipped with a note); true: always (an error when it "
        "is larger than the budget); false: off")
    candidates: int = Field(default=3, ge=1, description="top candidates verified (m)")
    seeds: int = Field(default=2, ge=2, description="seeds per mixture (paired across mixtures)")
    level: int | None = Field(default=None, ge=0, description="fidelity level to verify at (0 = proxy, then "
                              "fidelities); default: the next level up when `fidelities` exist, else the proxy")
    tokens_scale: float | None = Field(default=None, gt=0, description="multiply that level's tokens by this; "
                                       "default 4 when the ladder verifies at the proxy itself, else 1")
    min_distance: float = Field(default=0.1, ge=0, le=2, description="L1 distance candidates keep from each "
                                "other and from the baselines")
    baselines: list[Literal["natural", "uniform"]] = Field(default=["natural", "uniform"],
                                                           description="baseline mixtures the candidates must beat")
    test: Literal["pooled-t", "2se"] = Field(
        default="pooled-t", description="pooled-t: the gap must exceed the Student t critical value at `alpha` "
        "(split over the candidates) times the standard error of a paired difference, with the seed-to-seed "
        "noise pooled over every mixture on the ladder; 2se: the gap must exceed 2 of the candidate's own "
        "standard errors (falsely accepts a no-better candidate in about one ladder in six with 3 candidates × 3 "
        "seeds, one in four with 2 seeds)")
    alpha: float = Field(default=0.025, gt=0, lt=0.5, description="pooled-t: the chance of recommending a "
                         "candidate no better than the baseline (one-sided, for the ladder as a whole)")
    baseline_tie: Literal["objective", "ladder-mean"] = Field(
        default="objective", description="when the ladder cannot tell the baselines apart, the baseline "
        "candidates must beat: objective: the one nearest the objective's weights on the domains (uniform for "
        "the mean over domains); ladder-mean: the lower ladder mean")


class BudgetSpec(_Strict):
    runs: int = Field(default=16, ge=1, description="proxy runs in total (successful or failed)")


class SearchSpec(_Strict):
    """A whole search job. `dataset` and `proxy` may be paths (relative to this file) or inline specs."""

    name: str = Field(default="search", pattern=r"^[A-Za-z0-9_.-]+$")
    dataset: DatasetSpec
    proxy: ProxySpec = ProxySpec()
    fidelities: list[ProxySpec] = Field(
        default_factory=list, description="other proxies (sizes/budgets) a multi-fidelity optimizer may pick")
    base: BaseSpec | None = Field(default=None, description="continual pretraining: every proxy without its own "
                                  "`base` starts from a checkpoint pretrained on this mixture")
    optimizer: OptimizerSpec = Field(default_factory=lambda: OptimizerSpec(name="random"))
    objective: ObjectiveSpec = ObjectiveSpec()
    target: TargetSpec | None = None
    budget: BudgetSpec = BudgetSpec()
    ladder: LadderSpec = Field(default_factory=LadderSpec, description="verify candidates at a larger fidelity "
                               "before recommending (on by default; `ladder: false` turns it off)")
    include_mixtures: list[dict[str, float]] = Field(
        default_factory=list, description="mixtures to train first (e.g. your current default mixture)")
    seed: int = 0
    proxy_seeds: Literal["common", "per_run"] = Field(
        default="common", description="common: every proxy run of the search uses one initialisation and data "
        "seed (common random numbers: runs differ by their mixture, not their luck, so the surrogate and the "
        "best measured run see the mixture's effect); per_run: a seed of its own per run")
    parallelism: int = Field(default=2, ge=1, description="proxy runs in flight at once")
    scheduling: Literal["async", "rounds"] = Field(
        default="async", description="async: a new proposal as soon as a proxy finishes (every worker stays "
        "busy); rounds: propose `parallelism` mixtures, wait for all, repeat (proposals depend only on the seed "
        "and the history, never on which proxy finished first)")
    max_retries: int = Field(default=2, ge=0, description="re-runs of a proxy task whose worker or node died "
                             "(a system failure); a run that fails by itself (diverged, NaN, an error, a timeout) "
                             "is recorded as failed and never retried")
    workdir: str | None = None
    tracking_uri: str | None = None
    ray_address: str | None = None

    @field_validator("ladder", mode="before")
    @classmethod
    def _ladder_shorthand(cls, v: Any) -> Any:
        return {"enabled": v} if isinstance(v, bool) else v

    @model_validator(mode="after")
    def _check_mixtures(self) -> SearchSpec:
        domains = list(self.dataset.domains)
        for i, mix in enumerate(self.include_mixtures):
            check_mixture(mix, domains, where=f"include_mixtures[{i}]")
        names = [p.name for p in self.proxies]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"proxy names must be unique across proxy and fidelities; repeated: {dup}")
        for m in self.objective.metrics or []:
            if m.removeprefix("loss_") not in domains:
                raise ValueError(f"objective metric {m!r} names no domain of the dataset; domains: {domains}")
        for p in self.proxies:
            if p.base is not None:
                check_mixture(p.base.weights, domains, where=f"{p.name}: base.weights")
        if self.ladder.level is not None and self.ladder.level >= len(self.proxies):
            raise ValueError(f"ladder.level {self.ladder.level} does not exist: this search has "
                             f"{len(self.proxies)} proxy level(s) (0 = proxy, then fidelities); list the larger "
                             "proxy under `fidelities:` or lower ladder.level")
        if self.ladder.enabled is True and self.ladder_runs() > self.budget.runs:
            raise ValueError(f"the ladder ({self.ladder_runs()} runs) is larger than the budget "
                             f"({self.budget.runs} runs): lower ladder.candidates or ladder.seeds, raise "
                             "budget.runs, or set ladder: auto")
        return self

    def ladder_runs(self) -> int:
        """Runs the verification ladder trains when on: (candidates + baselines + include_mixtures) × seeds."""
        lad = self.ladder
        return (lad.candidates + len(lad.baselines) + len(self.include_mixtures)) * lad.seeds

    @property
    def proxies(self) -> list[ProxySpec]:
        """Every proxy this search may train: the default `proxy` first, then the `fidelities`."""
        proxies = [self.proxy, *self.fidelities]
        if self.base is None:
            return proxies
        return [p if p.base is not None or p.kind == "command" else p.model_copy(update={"base": self.base})
                for p in proxies]

    @classmethod
    def from_yaml(cls, path: str | Path) -> SearchSpec:
        path = Path(path)
        raw = _read_yaml(path)
        base = path.parent
        for key, loader in (("dataset", _load_dataset), ("proxy", _load_proxy)):
            if isinstance(raw.get(key), str):
                ref = (base / raw[key]).resolve()
                raw[key] = loader(ref)
            elif key == "dataset" and isinstance(raw.get(key), dict):
                raw[key] = _validate(DatasetSpec, raw[key], path, prefix="dataset").resolved(base, f"{path}: dataset")
        if isinstance(raw.get("fidelities"), list):
            raw["fidelities"] = [_load_proxy((base / f).resolve()) if isinstance(f, str) else f
                                 for f in raw["fidelities"]]
        return _validate(cls, raw, path)

    def to_yaml(self) -> str:
        # Nulls are kept: an explicit `max_epochs: null` must not come back as the default when a job reopens.
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)


def check_mixture(mix: dict[str, float], domains: list[str], where: str) -> None:
    """Refuse a user-written mixture that is off the simplex or names unknown domains."""
    unknown = sorted(set(mix) - set(domains))
    if unknown:
        raise ValueError(f"{where}: unknown domain(s) {unknown}; the dataset has {domains}")
    vals = list(mix.values())
    if any((not math.isfinite(v)) or v < 0 for v in vals):
        raise ValueError(f"{where}: weights must be finite and non-negative")
    total = sum(vals)
    if abs(total - 1.0) > WEIGHT_TOLERANCE:
        raise ValueError(f"{where}: weights sum to {total:.6g}, not 1; rescale them so they sum to 1")


# --------------------------------------------------------------------------------------------- loading


def _read_yaml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise InputError(str(path), "file not found", "check the path (relative paths start from the current "
                         "directory, or from the spec file for references inside a spec)")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = f" (line {mark.line + 1})" if mark is not None else ""
        raise InputError(str(path), f"not valid YAML{line}: {getattr(e, 'problem', e)}",
                         "fix the YAML syntax") from None
    if not isinstance(data, dict):
        raise InputError(str(path), "expected a mapping of keys at the top level", "see search/demo.yaml")
    return data


def _load_dataset(path: Path) -> DatasetSpec:
    return _validate(DatasetSpec, _read_yaml(path), path).resolved(path.parent, str(path))


def _load_proxy(path: Path) -> ProxySpec:
    return _validate(ProxySpec, _read_yaml(path), path)


def load_dataset(path: str | Path) -> DatasetSpec:
    return _load_dataset(Path(path))


def _validate(model: type[BaseModel], data: dict[str, Any], path: Path, prefix: str = "") -> Any:
    try:
        return model.model_validate(data)
    except ValidationError as e:
        raise validation_to_input_error(e, str(path), model, prefix) from None


def validation_to_input_error(e: ValidationError, where: str, model: type[BaseModel] | None = None,
                              prefix: str = "") -> InputError:
    """Turn pydantic's report into one line: the first problem, its dotted field path and a fix.

    An unknown key comes first whatever pydantic's order (a typo'd key is also why a required one is "missing"),
    with the nearest allowed key; values are described in the house style — what the field got, what it takes."""
    errors = sorted(e.errors(), key=lambda x: x["type"] != "extra_forbidden")
    err = errors[0]
    loc = [str(p) for p in err["loc"]]
    field = ".".join(([prefix] if prefix else []) + loc) or "(top level)"
    kind = err["type"]
    msg = str(err["msg"]).removeprefix("Value error, ")
    fix: str | None
    if kind == "extra_forbidden":
        allowed = _allowed_keys(model, loc[:-1]) if model else None
        msg = "unknown key"
        near = difflib.get_close_matches(loc[-1], allowed or [], n=1, cutoff=0.6)
        fix = (f"did you mean `{near[0]}`? rename it" if near else "remove it or correct its spelling") + (
            f" (allowed here: {', '.join(allowed)})" if allowed else "")
    elif kind == "missing":
        msg = "required key is missing"
        fix = "add it"
    elif "has no setting" in msg:
        fix = "remove it or correct its spelling"
    elif "optimizer" in msg and "unknown" in msg:
        fix = "use `mixopt optimizers` to list them"
    else:
        msg, fix = _house_style(err, msg)
    more = len(errors) - 1
    if more:
        msg += f" (and {more} more problem{'s' if more > 1 else ''})"
    return InputError(f"{where}: {field}", msg, fix)


#: pydantic's bound checks, as a relation to the bound.
_BOUNDS = {"greater_than": ("gt", ">"), "greater_than_equal": ("ge", "≥"), "less_than": ("lt", "<"),
           "less_than_equal": ("le", "≤")}
_TYPES = {"int_parsing": "a whole number", "int_from_float": "a whole number", "int_type": "a whole number",
          "float_parsing": "a number", "float_type": "a number", "bool_parsing": "true or false",
          "bool_type": "true or false", "string_type": "a string", "list_type": "a list", "dict_type": "a mapping",
          "model_type": "a mapping of keys", "model_attributes_type": "a mapping of keys"}


def _house_style(err: dict[str, Any], msg: str) -> tuple[str, str]:
    """(problem, fix) for a value pydantic refused: what was given and what the field takes."""
    kind, ctx = err["type"], err.get("ctx") or {}
    got = err.get("input")
    shown = repr(got) if isinstance(got, str) else str(got)
    if len(shown) > 60:
        shown = shown[:57] + "..."
    if kind in _BOUNDS:
        key, rel = _BOUNDS[kind]
        return f"got {shown}, must be {rel} {ctx.get(key)}", f"use a value {rel} {ctx.get(key)}"
    if kind in _TYPES:
        return f"got {shown}, must be {_TYPES[kind]}", f"give {_TYPES[kind]}"
    if kind == "literal_error":
        return f"got {shown}, must be one of {ctx.get('expected')}", "use one of those"
    return msg, "correct the value"


def _allowed_keys(model: type[BaseModel], loc: list[str]) -> list[str] | None:
    """Walk the model along `loc` to list the keys allowed where an unknown key was found."""
    current: Any = model
    for part in loc:
        if not (isinstance(current, type) and issubclass(current, BaseModel)):
            return None
        if part in current.model_fields:
            ann = current.model_fields[part].annotation
            current = _model_in(ann)
        elif part.isdigit() or current is None:
            continue
        else:  # a dict key (domain name): descend into the dict's value type
            continue
    if isinstance(current, type) and issubclass(current, BaseModel):
        return sorted(current.model_fields)
    return None


def _model_in(ann: Any) -> Any:
    import typing

    if isinstance(ann, type) and issubclass(ann, BaseModel):
        return ann
    for arg in typing.get_args(ann):
        found = _model_in(arg)
        if found is not None:
            return found
    return None

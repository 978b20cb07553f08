"""A second corpus, prose-heavy and unlike the demo one: Debian's documentation packages, as plain text.

    python benchmarks/debian_corpus.py --out DIR          # download, convert, write DIR/debian-docs.yaml, prepare
    python benchmarks/debian_corpus.py --out DIR --json   # also print one JSON object at the end
    python benchmarks/e2e_demo.py --dataset DIR/debian-docs.yaml
    mixopt data prepare DIR/debian-docs.yaml

The demo corpus (datasets/demo.yaml) is mostly code harvested from the Python installation; a method that only
works there proves little. This one is documentation written by different communities in different registers,
taken from Debian packages that are architecture-independent (they unpack on any machine with `dpkg-deb`):

- `man_commands`: section 1 and 8 manual pages (manpages: the C library's tools; git-man: git's commands) - terse
  option lists and synopses.
- `man_syscalls_libc`: sections 2 and 3 (manpages-dev): system calls and the C library - prototypes, errno
  lists, C snippets.
- `man_formats_conventions`: sections 4, 5 and 7 (manpages): devices, file formats, overviews and conventions -
  the longest prose of the manual.
- `debian_reference`: the Debian Reference handbook (debian-reference-en) - a user's tutorial with shell
  sessions and package tables.
- `python_docs`: Python's own HTML documentation (python3-doc): library reference, tutorial, HOWTOs, language
  reference, FAQ.
- `debian_policy`: Debian Policy and its sub-policies (debian-policy) and the Developer's Reference
  (developers-reference) - normative, "must/should" prose about packaging.

Manual pages are rendered with groff (left-adjusted, no hyphenation, no overstrikes) and fall back to a plain
roff-macro stripper when groff is missing or fails on a page; HTML is reduced to text with Python's html.parser,
dropping scripts, styles and navigation. Each domain is capped (files kept in a hash order of their package path,
so a cap keeps a spread, and the same packages give the same files); the corpus is about 20 MB.

Needs `apt-get` (for `apt-get download`, no root install) and `dpkg-deb`; .deb files already in DIR/debs are
reused, so a folder copied from a machine with network works offline.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import re
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

MANIFEST = "debian-docs.yaml"
MB = 1_000_000


@dataclass(frozen=True)
class Package:
    """A Debian package to fetch. `meta`: the documents are in its `*-doc` dependencies (python3-doc pulls the
    versioned python3.X-doc, whose name changes with every Debian release, so it is not written here)."""

    name: str
    optional: bool = False
    meta: bool = False


@dataclass(frozen=True)
class Source:
    """Files of one unpacked package: globs relative to `base` (inside the package), converted as `kind`."""

    package: str
    base: str
    globs: tuple[str, ...]
    kind: str  # "man" or "html"
    exclude: tuple[str, ...] = ()  # globs relative to `base`
    strip: str = ""  # a regex taken off the front of document names (a version number in a folder name)


@dataclass(frozen=True)
class Domain:
    name: str
    description: str
    sources: tuple[Source, ...]
    max_bytes: int


PACKAGES = (
    Package("manpages"),
    Package("manpages-dev"),
    Package("debian-reference-en"),
    Package("python3-doc", meta=True),
    Package("git-man", optional=True),
    Package("debian-policy", optional=True),
    Package("developers-reference", optional=True),
)

MAN = "usr/share/man"
POLICY = "usr/share/doc/debian-policy"
DOMAINS = (
    Domain("man_commands", "manual pages of sections 1 and 8: commands of the C library's tools and of git",
           (Source("manpages", MAN, ("man1/*", "man8/*"), "man"),
            Source("git-man", MAN, ("man1/*",), "man")), 4 * MB),
    Domain("man_syscalls_libc", "manual pages of sections 2 and 3: Linux system calls and C library functions",
           (Source("manpages-dev", MAN, ("man2/*", "man3/*"), "man"),), 4 * MB),
    Domain("man_formats_conventions", "manual pages of sections 4, 5 and 7: devices, file formats, overviews "
           "and conventions", (Source("manpages", MAN, ("man4/*", "man5/*", "man7/*"), "man"),), 4 * MB),
    Domain("debian_reference", "the Debian Reference handbook, one chapter per document",
           (Source("debian-reference-en", "usr/share/debian-reference", ("*.en.html",), "html",
                   exclude=("index.en.html",)),), 4 * MB),
    Domain("python_docs", "Python's HTML documentation: library reference, tutorial, HOWTOs, language reference, "
           "FAQ", (Source("python3-doc", "usr/share/doc", tuple(f"python3.*/html/{d}/*.html" for d in (
               "library", "tutorial", "howto", "reference", "faq")), "html", exclude=("python3.*/html/*/index.html",),
               strip=r"python3\.\d+_html_"),), 5 * MB),
    Domain("debian_policy", "Debian Policy, its sub-policies and the Developer's Reference: normative prose on "
           "packaging", (Source("debian-policy", POLICY, (
               "policy.html/*.html", "perl-policy.html/*.html", "menu-policy.html/*.html", "fhs/*.html",
               "debconf_specification.html", "copyright-format-1.0.html", "autopkgtest.html"), "html",
               exclude=("*/genindex.html", "*/search.html", "*/index.html")),
               Source("developers-reference", "usr/share/developers-reference", ("*.html",), "html",
                      exclude=("index.html", "search.html", "developers-reference.html"))), 4 * MB),
)


class CorpusError(Exception):
    """One line for the user: what failed and how to fix it."""


# --------------------------------------------------------------------------------------------- text conversion

_NAMED = {"-": "-", "em": "—", "en": "–", "aq": "'", "dq": '"', "lq": "“", "rq": "”", "oq": "‘", "cq": "’",
          "bu": "•", "co": "©", "rg": "®", "tm": "™", "mu": "×", "<=": "≤", ">=": "≥", "!=": "≠", "+-": "±",
          "->": "→", "<-": "←", "hy": "-", "ti": "~", "ha": "^", "rs": "\\", "sl": "/", "ga": "`", "dg": "†",
          "de": "°", "ua": "↑", "da": "↓", "pl": "+", "eq": "=", "Fo": "«", "Fc": "»", "R": "®", "lB": "[",
          "rB": "]", "lC": "{", "rC": "}", "ba": "|", "or": "|", "ct": "¢", "Po": "£", "Eu": "€"}
_ESCAPE = re.compile(r"""\\(?:
    f(?:\[[^\]]*\]|\(..|.)        # font change
  | \*(?:\[(?P<s1>[^\]]*)\]|\((?P<s2>..)|(?P<s3>.))  # predefined string
  | \((?P<c2>..) | \[(?P<cb>[^\]]*)\]                  # special character
  | s[-+]?\d+ | [hvwlLkoxXbDNZ]'[^']*'                # size, motions and other escapes with an argument
  | n(?:\[[^\]]*\]|\(..|.)                             # number register
  | (?P<one>.)
)""", re.VERBOSE)
_ONE = {"-": "-", "e": "\\", "\\": "\\", " ": " ", "~": " ", "0": " ", "'": "'", "`": "`", ".": ".",
        "&": "", "|": "", "^": "", "/": "", ",": "", "%": "", "c": "", ":": "", "}": "", "{": "", "t": "\t"}
_STRINGS = {"lq": "“", "rq": "”", "R": "®", "Tm": "™", "aq": "'", "dq": '"'}


def _unescape_roff(line: str) -> str:
    def sub(m: re.Match[str]) -> str:
        name = m.group("s1") or m.group("s2") or m.group("s3")
        if name is not None:
            return _STRINGS.get(name, "")
        name = m.group("c2") or m.group("cb")
        if name is not None:
            return _NAMED.get(name, "")
        one = m.group("one")
        return _ONE.get(one, "") if one is not None else ""
    return _ESCAPE.sub(sub, line)


def _roff_args(rest: str) -> list[str]:
    try:
        return shlex.split(rest, posix=True, comments=False)
    except ValueError:  # an unbalanced quote: roff takes the rest of the line literally
        return rest.split()


def strip_roff(roff: str) -> str:
    """Plain text from man(7) source without groff: the fallback for a page groff cannot render (or no groff).

    Macro lines keep their text arguments (headings, bold/italic words) and drop the rest; comments, macro
    definitions and table layout lines go; escapes become the characters they stand for."""
    out: list[str] = []
    in_def = in_table_format = in_table = False
    cell_sep = "\t"
    for raw in roff.splitlines():
        line = raw.rstrip()
        if in_def:
            in_def = line != ".."
            continue
        if in_table_format:  # tbl(1): options and format lines end with the line that ends in '.'
            sep = re.search(r"tab\s*\((.)\)", line)
            cell_sep = sep.group(1) if sep else cell_sep
            in_table_format = not line.endswith(".")
            continue
        if line.startswith((".", "'")):
            body = line[1:].lstrip()
            if body.startswith('\\"') or not body:
                continue
            name, _, rest = body.partition(" ")
            args = [_unescape_roff(a) for a in _roff_args(rest)]
            if name in ("de", "de1", "am", "ig"):
                in_def = True
            elif name == "TS":
                in_table_format = in_table = True
                cell_sep = "\t"
            elif name == "TE":
                in_table = False
            elif name == "TH" and args:
                out.append(f"{args[0]}({args[1]})" if len(args) > 1 else args[0])
            elif name in ("SH", "SS"):
                out.extend(["", " ".join(args)])
            elif name in ("B", "I", "SM", "SB", "UR", "MT"):
                out.append(" ".join(args))
            elif name in ("BR", "RB", "IR", "RI", "BI", "IB"):
                out.append("".join(args))
            elif name in ("PP", "P", "LP", "sp", "TP", "HP", "RS", "RE", "EX", "EE", "nf", "fi", "br"):
                if out and out[-1] != "" and name not in ("br", "RS", "RE", "nf", "fi"):
                    out.append("")
            elif name == "IP" and args:
                out.extend(["", args[0]])
            continue
        if in_table:
            line = line.replace("T{", "").replace("T}", "").replace(cell_sep, "\t")
            if not line.strip():
                continue
        out.append(_unescape_roff(line).replace("\t", "  "))
    return tidy_text("\n".join(out))


def tidy_text(text: str) -> str:
    """The same normal form for every converter: no trailing blanks, at most one blank line in a row, one
    newline at the end, no overstrike or control bytes (they would be learnt as part of the domain)."""
    text = re.sub(r".\x08", "", text)
    text = re.sub(r"[\x00-\x08\x0b-\x1f\x7f]", "", text)
    lines = [ln.rstrip() for ln in text.splitlines()]
    text = re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip("\n")
    return text + "\n" if text else ""


def render_man(roff: str, width: int = 78, timeout: float = 30.0) -> str:
    """A man page as the `man` command would show it, without its pager: groff, left-adjusted, no hyphens.

    Justification and hyphenation are switched off because the padding spaces and broken words they add are
    artefacts of the terminal, not of the text. Falls back to `strip_roff` when groff fails or is missing."""
    lines = roff.splitlines()
    for i, ln in enumerate(lines):
        if ln.startswith(".TH"):
            lines[i + 1:i + 1] = [".ad l", ".nh"]
            break
    source = "\n".join(lines) + "\n"
    try:
        p = subprocess.run(["groff", "-k", "-t", "-man", "-Tutf8", "-P-cbou", f"-rLL={width}n"],
                           input=source.encode("utf-8"), capture_output=True, timeout=timeout)
        text = p.stdout.decode("utf-8", errors="replace") if p.returncode == 0 else ""
    except (OSError, subprocess.TimeoutExpired):
        text = ""
    return tidy_text(text) if text.strip() else strip_roff(roff)


_SKIP_TAGS = {"script", "style", "nav", "head", "noscript", "template", "svg", "button", "form"}
_SKIP_CLASSES = {"sphinxsidebar", "related", "footer", "navheader", "navfooter", "headerlink", "toc",
                 "mobile-nav", "menu-wrapper", "breadcrumbs", "searchbox", "sphinxsidebarwrapper"}
_VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}
_BLOCK = {"p", "div", "section", "article", "h1", "h2", "h3", "h4", "h5", "h6", "ul", "ol", "dl", "dt", "dd",
          "table", "tr", "blockquote", "pre", "br", "hr", "li", "caption", "figure", "main", "body", "title"}


class _TextOf(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.skip: list[str] = []  # open tags of the element being dropped
        self.pre = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if self.skip:
            if tag not in _VOID:
                self.skip.append(tag)
            return
        classes = set((dict(attrs).get("class") or "").split())
        if tag in _SKIP_TAGS or classes & _SKIP_CLASSES or dict(attrs).get("role") == "navigation":
            if tag not in _VOID:
                self.skip.append(tag)
            return
        if tag == "pre":
            self.pre += 1
        if tag in _BLOCK:
            self._break(tag)
        if tag == "li":
            self.parts.append("- ")
        elif tag in ("td", "th"):
            self.parts.append(" ")

    def handle_endtag(self, tag: str) -> None:
        if self.skip:
            if tag in self.skip:  # close up to the matching tag: tolerates unclosed <p> and <li> inside
                while self.skip.pop() != tag:
                    pass
            return
        if tag == "pre":
            self.pre = max(0, self.pre - 1)
        if tag in _BLOCK:
            self._break(tag)

    def _break(self, tag: str) -> None:
        if self.parts and self.parts[-1] == "- ":  # a list item's first paragraph stays on the item's line
            return
        self.parts.append("\n\n" if tag in ("p", "pre", "h1", "h2", "h3", "h4", "dl", "table") else "\n")

    def handle_data(self, data: str) -> None:
        if self.skip:
            return
        if not self.pre:
            data = re.sub(r"\s+", " ", data)
            if data == " " and (not self.parts or self.parts[-1].endswith(("\n", "- "))):
                return  # the layout whitespace between tags
        self.parts.append(data)


def html_to_text(markup: str) -> str:
    """The readable text of an HTML page: what a reader sees in the page body, without navigation bars, tables
    of contents, scripts or styles (repeated on every page, they would make documents look alike)."""
    parser = _TextOf()
    parser.feed(markup)
    parser.close()
    text = "".join(parser.parts)
    text = "\n".join(ln.strip(" ") if not ln.startswith("  ") else ln.rstrip() for ln in text.split("\n"))
    return tidy_text(text)


# --------------------------------------------------------------------------------------------- packages


def _run(cmd: list[str], cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=600)
    except FileNotFoundError:
        raise CorpusError(f"{cmd[0]} not found; fix: run this on Debian or Ubuntu (apt and dpkg), or copy a "
                          "DIR/debs folder with the .deb files from such a machine") from None
    except subprocess.TimeoutExpired:
        raise CorpusError(f"{' '.join(cmd)} took over 10 minutes; fix: check the network, then run again") from None


def _deb_of(debs: Path, name: str) -> Path | None:
    found = sorted(debs.glob(f"{name}_*.deb"))
    return found[-1] if found else None


def fetch(name: str, debs: Path) -> Path:
    """`debs/NAME_*.deb`, downloaded with `apt-get download` unless already there (so reruns work offline)."""
    have = _deb_of(debs, name)
    if have is not None:
        return have
    p = _run(["apt-get", "download", name], cwd=debs)
    got = _deb_of(debs, name)
    if p.returncode != 0 or got is None:
        why = next((ln for ln in reversed(p.stderr.splitlines()) if ln.startswith("E:")), p.stderr.strip()[-200:])
        raise CorpusError(f"apt-get download {name} failed ({why or 'no .deb written'}); fix: check network "
                          f"access to the Debian archive and run `apt-get update`, or put {name}_*.deb into {debs}")
    return got


def _doc_dependencies(deb: Path) -> list[str]:
    p = _run(["dpkg-deb", "-f", str(deb), "Depends"])
    names = [alt.split("(")[0].strip() for dep in p.stdout.split(",") for alt in dep.split("|")[:1]]
    return [n for n in names if n.endswith("-doc")]


def unpack(pkg: Package, debs: Path, unpacked: Path) -> Path:
    """Unpack the package (and, for a metapackage, its -doc dependencies) into one folder; skipped when the
    same .deb files were unpacked there before."""
    files = [fetch(pkg.name, debs)]
    if pkg.meta:
        files += [fetch(dep, debs) for dep in _doc_dependencies(files[0])]
    dest = unpacked / pkg.name
    stamp = dest / ".unpacked-from"
    names = "\n".join(f.name for f in files)
    if stamp.is_file() and stamp.read_text() == names:
        return dest
    shutil.rmtree(dest, ignore_errors=True)
    dest.mkdir(parents=True)
    for f in files:
        p = _run(["dpkg-deb", "-x", str(f), str(dest)])
        if p.returncode != 0:
            raise CorpusError(f"dpkg-deb -x {f.name} failed ({p.stderr.strip()[-200:]}); fix: delete {f} and run "
                              "again to download it afresh")
    stamp.write_text(names)
    return dest


# --------------------------------------------------------------------------------------------- corpus


def _candidates(src: Source, root: Path) -> list[tuple[str, Path]]:
    """(document name, file) of one source, in a hash order of the package and document name (the file's path
    inside `base`): a cap then keeps a spread of the source (not the alphabet's first letters), and the order
    does not depend on the package version or on this machine."""
    base = (root / src.base).resolve()
    excluded = {f.resolve() for e in src.exclude for f in base.glob(e)}
    # resolved, so a file reached through a symlinked folder (python3.X-doc/html -> python3.X/html) counts once
    files = {f.resolve() for g in src.globs for f in base.glob(g) if f.is_file() and not f.is_symlink()}
    named = []
    for f in files - excluded:
        if not f.is_relative_to(base):
            continue
        rel = f.relative_to(base).as_posix()
        stem = re.sub(r"\.(gz|html?)$", "", rel)
        name = re.sub(r"[^A-Za-z0-9_.+-]", "_", stem.replace("/", "_"))
        named.append(((re.sub(f"^(?:{src.strip})", "", name) if src.strip else name) + ".txt", f))
    return sorted(named, key=lambda nf: hashlib.sha1(f"{src.package}/{nf[0]}".encode()).digest())


def convert(path: Path, kind: str) -> str:
    """One document's plain text ("" for pages that only point to another, like man `.so` links)."""
    raw = path.read_bytes()
    if path.suffix == ".gz":
        raw = gzip.decompress(raw)
    text = raw.decode("utf-8", errors="replace")
    if kind == "man":
        if re.match(r"\s*\.so\s", "\n".join(ln for ln in text.splitlines() if not ln.startswith('.\\"'))):
            return ""
        return render_man(text)
    return html_to_text(text)


def build_domain(dom: Domain, roots: dict[str, Path], out: Path, jobs: int = 2) -> dict[str, int]:
    """Write `out/<domain>/*.txt` (one document a file) up to the domain's cap; files left from an earlier run
    that are no longer chosen are removed, unchanged files are not rewritten (so `prepare` can reuse its work)."""
    cands = [(src, name, f) for src in dom.sources if src.package in roots
             for name, f in _candidates(src, roots[src.package])]
    folder = out / dom.name
    folder.mkdir(parents=True, exist_ok=True)
    kept: dict[str, bytes] = {}
    total = 0
    done = False
    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        for i in range(0, len(cands), 8 * jobs):
            batch = cands[i:i + 8 * jobs]
            for (_src, name, f), text in zip(batch, pool.map(lambda c: convert(c[2], c[0].kind), batch),
                                            strict=True):
                data = text.encode("utf-8")
                if len(data) < 200:  # a stub, a redirect or a page with no text
                    continue
                if total + len(data) > dom.max_bytes:
                    done = True
                    break
                if name in kept:
                    raise CorpusError(f"two documents of domain {dom.name} are both named {name} ({f}); fix: give "
                                      "their sources different `base` folders in DOMAINS")
                kept[name] = data
                total += len(data)
            if done:
                break
    for old in folder.glob("*.txt"):
        if old.name not in kept:
            old.unlink()
    for name, data in kept.items():
        p = folder / name
        if not p.is_file() or p.read_bytes() != data:
            p.write_bytes(data)
    return {"files": len(kept), "bytes": total}


def write_manifest(out: Path, domains: Iterable[Domain]) -> Path:
    """The mixopt dataset manifest of the corpus in `out`: one glob per domain, relative to the manifest, so
    the folder can be moved or copied and still work."""
    import yaml

    doms = {d.name: {"description": d.description, "sources": [{"glob": f"{d.name}/*.txt"}],
                     "max_bytes": d.max_bytes} for d in domains}
    body = {"name": "debian-docs", "tokenizer": "byte", "val_fraction": 0.05, "min_val_tokens": 16384,
            "domains": doms}
    path = Path(out) / MANIFEST
    path.write_text("# Debian documentation packages as plain text, one document a file: written by\n"
                    "# benchmarks/debian_corpus.py (run it again to rebuild the folders this reads).\n"
                    + yaml.safe_dump(body, sort_keys=False, allow_unicode=True, width=120))
    return path


def build(out: Path, jobs: int = 2, log: bool = True) -> dict[str, object]:
    """Fetch, unpack, convert, write the manifest; returns per-domain files and bytes and the domains skipped."""
    debs, unpacked = out / "debs", out / "unpacked"
    debs.mkdir(parents=True, exist_ok=True)
    roots: dict[str, Path] = {}
    missing: list[str] = []
    for pkg in PACKAGES:
        try:
            roots[pkg.name] = unpack(pkg, debs, unpacked)
        except CorpusError as e:
            if not pkg.optional:
                raise
            missing.append(pkg.name)
            print(f"warning: skipping optional package {pkg.name}: {e}", file=sys.stderr)
    domains = [d for d in DOMAINS if any(s.package in roots for s in d.sources)]
    if len(domains) < 5:
        raise CorpusError(f"only {len(domains)} domains without {', '.join(missing)}; fix: make those packages "
                          "downloadable (network, `apt-get update`) or put their .deb files into " + str(debs))
    stats: dict[str, dict[str, int]] = {}
    for d in domains:
        t = time.perf_counter()
        stats[d.name] = build_domain(d, roots, out, jobs)
        if log:
            print(f"  {d.name}: {stats[d.name]['files']} files, {stats[d.name]['bytes'] / MB:.2f} MB "
                  f"({time.perf_counter() - t:.1f} s)", file=sys.stderr)
    for stale in {d.name for d in DOMAINS} - {d.name for d in domains}:
        shutil.rmtree(out / stale, ignore_errors=True)
    manifest = write_manifest(out, domains)
    return {"manifest": str(manifest), "domains": stats, "skipped_packages": missing}


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=Path("mixopt-work/debian-corpus"), help="corpus folder")
    ap.add_argument("--json", action="store_true", help="print one JSON object at the end")
    ap.add_argument("--jobs", type=int, default=2, help="groff/HTML conversions in parallel")
    ap.add_argument("--no-prepare", action="store_true", help="skip the check that mixopt prepares the corpus")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    out = args.out.resolve()
    try:
        result = build(out, args.jobs)
    except CorpusError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    built_s = time.perf_counter() - t0
    result["build_seconds"] = round(built_s, 1)
    stats = result["domains"]
    assert isinstance(stats, dict)
    if not args.no_prepare:
        from mixopt.data import prepare
        from mixopt.errors import InputError
        from mixopt.spec import load_dataset

        t = time.perf_counter()
        try:
            data = prepare(load_dataset(result["manifest"]), out / "prepared")
        except InputError as e:
            print(f"error: the corpus does not prepare: {e}", file=sys.stderr)
            return 2
        result["prepare_seconds"] = round(time.perf_counter() - t, 1)
        result["prepared"] = str(data.path)
        for name, v in data.index["domains"].items():
            stats[name]["train_tokens"] = int(v["train_tokens"])
            stats[name]["val_tokens"] = int(v["val_tokens"])
    def count(s: dict[str, int], key: str) -> str:
        return f"{s[key]:,}" if key in s else "-"

    print("| domain | files | MB of text | train tokens | val tokens |\n|---|---|---|---|---|")
    for name, s in stats.items():
        print(f"| {name} | {s['files']} | {s['bytes'] / MB:.2f} | {count(s, 'train_tokens')} | "
              f"{count(s, 'val_tokens')} |")
    total = sum(s["bytes"] for s in stats.values())
    print(f"| total | {sum(s['files'] for s in stats.values())} | {total / MB:.2f} | | |")
    print(f"manifest: {result['manifest']}  (built in {built_s:.1f} s"
          + (f", prepared in {result['prepare_seconds']} s" if "prepare_seconds" in result else "") + ")")
    if args.json:
        print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

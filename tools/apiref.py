#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""apiref.py - the API reference in docs/api/, generated from the header.

    tools/apiref.py [--check] [HEADER [OUTDIR]]

HEADER is include/hetmm.h, OUTDIR docs/api.  The header's sections (each
opened by a "/* ----" divider comment whose first line is its title) become
one Markdown page each; the declarations before the first section make
"basics.md"; README.md lists the pages and every call with a link.  In a
section, each declaration with the comment above it (its contract) is one
entry: a heading with the names it declares, the comment as text (its
indented lines, code and tables, as preformatted blocks) and the
declaration as C.  A comment standing alone is text between entries.

--check generates into a temporary directory and compares: exit 1, with
the difference, when OUTDIR is not what the header gives (the test
"apiref" in `make test`).  --selftest checks that --check fails on a
header with a call added and on one with a contract changed (test
"apiref_detects_change").  Without either, OUTDIR is rewritten.
"""
import difflib
import os
import re
import sys
import tempfile

DIVIDER = re.compile(r"^/\* -{20,}$")
FUNC = re.compile(r"^(?:static inline )?[A-Za-z_][\w \*]*?\b(hetmm_\w+)\(",
                  re.M)
TYPE = re.compile(r"^(struct|enum) (hetmm_\w+) \{", re.M)
TYPEDEF = re.compile(r"^\} (hetmm_\w+);", re.M)
OPAQUE = re.compile(r"^struct (hetmm_\w+);", re.M)
MACRO = re.compile(r"^#define (HETMM_\w+)", re.M)


def destar(lines):
    """The text of a /* ... */ comment, without its frame."""
    out = []
    for ln in lines:
        ln = ln.rstrip()
        if ln.startswith("/*"):
            ln = ln[2:]
        if ln.endswith("*/"):
            ln = ln[:-2].rstrip()
        s = ln.lstrip(" ")
        if s.startswith("*"):
            s = s[1:]
            if s.startswith(" "):
                s = s[1:]
        elif ln.startswith(" "):
            s = ln.lstrip(" ")
        out.append(s.rstrip())
    while out and not out[0].strip():
        out.pop(0)
    while out and not out[-1].strip():
        out.pop()
    return out


def prose(lines):
    """Comment text as Markdown: indented runs preformatted."""
    out, block = [], []

    def flush():
        if block:
            if out and out[-1] != "":
                out.append("")
            out.append("```text")
            out.extend(b.replace("\t", "        ") for b in block)
            out.append("```")
            out.append("")
            block.clear()

    for ln in lines:
        if ln.startswith(("\t", "  ")):
            block.append(ln)
            continue
        flush()
        out.append(ln)
    flush()
    while out and out[-1] == "":
        out.pop()
    return out


def chunks(lines):
    """Split a section's lines into chunks at blank lines outside comments
    and braces."""
    cur, in_comment, depth = [], False, 0
    for ln in lines:
        if not ln.strip() and not in_comment and depth == 0:
            if cur:
                yield cur
            cur = []
            continue
        cur.append(ln)
        code = re.sub(r"/\*.*?\*/", "", ln)
        if in_comment:
            if "*/" in ln:
                in_comment = False
                code = ln.split("*/", 1)[1]
            else:
                continue
        if "/*" in code:
            in_comment = "*/" not in code.split("/*", 1)[1]
            code = code.split("/*", 1)[0]
        depth += code.count("{") - code.count("}")
    if cur:
        yield cur


def split_comment(chunk):
    """(leading comment lines, code lines) of a chunk."""
    i = 0
    while i < len(chunk) and chunk[i].lstrip().startswith("/*"):
        while not chunk[i].rstrip().endswith("*/"):
            i += 1
        i += 1
    return chunk[:i], chunk[i:]


def names_of(code):
    text = "\n".join(code)
    funcs = FUNC.findall(text)
    if funcs:
        return funcs, "function"
    types = [f"{k} {n}" for k, n in TYPE.findall(text)]
    types += TYPEDEF.findall(text)
    types += [f"struct {n}" for n in OPAQUE.findall(text)]
    if types:
        return types, "type"
    macros = MACRO.findall(text)
    if len(macros) > 3:
        prefix = os.path.commonprefix(macros)
        return [prefix + "*"], "macro"
    return macros, "macro"


def slug(title):
    t = re.split(r"[(:]", title)[0].strip().lower()
    return re.sub(r"[^a-z0-9]+", "-", t).strip("-")


def anchor(name):
    return re.sub(r"[^a-z0-9_ -]", "", name.lower()).replace(" ", "-")


def render_section(title, intro, body):
    out = [f"# {title}", "",
           "<!-- Generated from include/hetmm.h by tools/apiref.py;"
           " edit the header, then run it. -->", ""]
    if intro:
        out += prose(intro) + [""]
    calls = []
    for ch in chunks(body):
        comment, code = split_comment(ch)
        text = prose(destar(comment)) if comment else []
        if not code:
            out += text + [""]
            continue
        names, kind = names_of(code)
        if kind == "function":
            calls += names
        head = ", ".join(f"`{n}`" for n in names) if names else "`...`"
        if kind == "function":
            out += [f'<a id="{anchor(n)}"></a>' for n in names]
        out += [f"## {head}", ""]
        if text:
            out += text + [""]
        out += ["```c"] + [ln.rstrip() for ln in code] + ["```", ""]
    while out and out[-1] == "":
        out.pop()
    return "\n".join(out) + "\n", calls


def parse(header):
    lines = open(header).read().split("\n")
    # The file's own comment: the overview.
    end = next(i for i, ln in enumerate(lines) if ln.rstrip() == " */")
    overview = destar(lines[1:end + 1])
    start = next(i for i, ln in enumerate(lines)
                 if ln.startswith('extern "C"')) + 2
    stop = max(i for i, ln in enumerate(lines)
               if ln.startswith("#ifdef __cplusplus"))
    body = lines[start:stop]
    sections = [["Basics: version, page size, object types", [], []]]
    i = 0
    while i < len(body):
        if DIVIDER.match(body[i]):
            j = i + 1
            while not body[j].rstrip().endswith("*/"):
                j += 1
            text = destar(body[i + 1:j + 1])
            sections.append([text[0].strip(), text[1:], []])
            i = j + 1
            continue
        sections[-1][2].append(body[i])
        i += 1
    return overview, sections


def tidy(text):
    """One blank line at most between blocks, one newline at the end."""
    return re.sub(r"\n{3,}", "\n\n", text).rstrip("\n") + "\n"


def generate(header, outdir):
    overview, sections = parse(header)
    files = {}
    index = ["# hetmm API reference", "",
             "<!-- Generated from include/hetmm.h by tools/apiref.py;"
             " edit the header, then run it. -->", "",
             "One page per section of `include/hetmm.h`, each call with its "
             "contract as the header gives it.", ""]
    index += prose(overview) + ["", "## Sections", ""]
    for title, intro, body in sections:
        name = "basics.md" if title.startswith("Basics") else \
            slug(title) + ".md"
        page, calls = render_section(title, intro, body)
        files[name] = page
        index.append(f"- [{title}]({name})")
        if calls:
            index.append("  " + ", ".join(
                f"[`{c}`]({name}#{anchor(c)})" for c in calls))
    files["README.md"] = "\n".join(index) + "\n"
    os.makedirs(outdir, exist_ok=True)
    for name, text in files.items():
        with open(os.path.join(outdir, name), "w") as f:
            f.write(tidy(text))
    return sorted(files)


def check_dir(header, outdir, quiet=False):
    """0 if outdir is what header gives, else 1 (with the difference)."""
    with tempfile.TemporaryDirectory() as tmp:
        names = generate(header, tmp)
        have = sorted(n for n in os.listdir(outdir) if n.endswith(".md")) \
            if os.path.isdir(outdir) else []
        bad = 0
        for name in sorted(set(names) | set(have)):
            want_p, have_p = os.path.join(tmp, name), \
                os.path.join(outdir, name)
            want = open(want_p).read().split("\n") \
                if os.path.exists(want_p) else []
            got = open(have_p).read().split("\n") \
                if os.path.exists(have_p) else []
            if want != got:
                bad += 1
                if not quiet:
                    sys.stdout.writelines(
                        ln + "\n" for ln in difflib.unified_diff(
                            got, want, f"{outdir}/{name}",
                            f"from {header}", lineterm=""))
        if bad:
            if not quiet:
                print(f"apiref: {bad} page(s) of {outdir} differ from what "
                      f"{header} gives (diff above); run tools/apiref.py "
                      "and commit docs/api/")
            return 1
        if not quiet:
            print(f"apiref: {outdir} matches {header} ({len(names)} pages)")
        return 0


def selftest(header, outdir):
    """The check must notice a call added to the header, and a contract
    changed: 0 if it does both."""
    text = open(header).read()
    cut = text.rindex("#ifdef __cplusplus")
    added = text[:cut] + ("/* A call the reference lacks. */\n"
                          "int hetmm_not_documented(void);\n\n") + text[cut:]
    changed = text.replace("Probe what the running kernel offers",
                           "Probe what the running kernel lacks", 1)
    if changed == text:
        print("apiref: selftest: the contract it changes is gone")
        return 1
    with tempfile.TemporaryDirectory() as tmp:
        for what, t in (("an added call", added),
                        ("a changed contract", changed)):
            h = os.path.join(tmp, "hetmm.h")
            with open(h, "w") as f:
                f.write(t)
            if check_dir(h, outdir, quiet=True) != 1:
                print(f"apiref: selftest: --check missed {what}")
                return 1
    print("apiref: selftest: --check fails on an added call and on a "
          "changed contract")
    return 0


def main(argv):
    mode = next((a for a in argv if a in ("--check", "--selftest")), None)
    args = [a for a in argv if a != mode]
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    header = args[0] if args else os.path.join(root, "include", "hetmm.h")
    outdir = args[1] if len(args) > 1 else os.path.join(root, "docs", "api")
    if mode == "--check":
        return check_dir(header, outdir)
    if mode == "--selftest":
        return selftest(header, outdir)
    for name in os.listdir(outdir) if os.path.isdir(outdir) else []:
        if name.endswith(".md"):
            os.unlink(os.path.join(outdir, name))
    names = generate(header, outdir)
    print(f"apiref: {len(names)} pages in {outdir}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

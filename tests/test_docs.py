"""The README and docs/ as a new user reads them: every ```python block runs, against tiny run folders built here
(so a snippet cannot rot), and the pages hold together: the README stays a short front door, no link leaves the
repository or points at nothing, every docs page is reachable and shows at least one command or snippet, and the
scripts, config files, make targets and script flags the pages name exist.

Snippets name run folders as a user's would be, `runs/<dataset>/<run>` (`runs/toy/<run>`, `runs/digits/<run>`,
`runs/tinted_digits/<run>`); the snippet test replaces each by a tiny run of that data set, built once per session
and only when a page needs it. Blocks that are not meant to run use ```bash, ```text or ```yaml."""
from __future__ import annotations

import ast
import re
import sys
import types
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = ROOT / "docs"
PAGES = [README, *sorted(DOCS.rglob("*.md"))]
FENCE = re.compile(r"^```([\w-]*)[^\n]*\n(.*?)^```[ \t]*$", re.M | re.S)
LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
PLACEHOLDER = re.compile(r"runs/(toy|digits|tinted_digits)/<run>")

QUIET = ["--trainer.logger=false", "--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false",
         "--trainer.max_steps=12", "--trainer.limit_val_batches=0"]
SEARCH = ["--model.num_samples=20", "--model.batch_size=20",
          "--model.samplers={none: {}, langevin: {steps_per_level: 2}, pc: null, ode: null}"]
FIT, CLASSIFIER, SEARCH_PHASE = [("reconstruction", "fit"), ("adversarial", "fit")], ("latent_classifier", "fit"), \
    ("search", "predict")
# dataset -> (overrides, phases). toy: the whole guided pipeline, as `make demo ARGS=--classifier` writes it. digits
# and tinted digits: the fit phases only (their search would train the classifier-FID net, ~15 s, for no snippet).
TINY_RUNS = {
    "toy": (QUIET + ["--data.train_size=512"] + SEARCH, FIT + [CLASSIFIER, SEARCH_PHASE]),
    "digits": (QUIET, FIT + [CLASSIFIER]),
    "tinted_digits": (QUIET, FIT),
}


def rel(page: Path) -> str:
    return str(page.relative_to(ROOT))


def code_blocks(page: Path, langs: tuple[str, ...] | None = None) -> list[tuple[str, str, int]]:
    """(language, code, line number of the opening fence) of each fenced block, in page order."""
    text = page.read_text()
    out = []
    for m in FENCE.finditer(text):
        if langs is None or m.group(1) in langs:
            out.append((m.group(1), m.group(2), text.count("\n", 0, m.start()) + 1))
    return out


def prose(page: Path) -> str:
    """The page without its fenced blocks (a link inside a code block is not a link)."""
    return FENCE.sub("", page.read_text())


def links(page: Path) -> list[str]:
    return LINK.findall(prose(page))


def local_target(page: Path, target: str) -> Path | None:
    """The file a relative link points at (anchor dropped), or None for a web link or an anchor on the same page."""
    if re.match(r"^[a-z][a-z0-9+.-]*:", target) or target.startswith("#"):
        return None
    return (page.parent / target.split("#")[0]).resolve()


# -- the snippets run -----------------------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def tiny_runs(tmp_path_factory):
    """dataset -> a tiny run folder of it, built by the pipeline on first use (12 steps a phase)."""
    from dsls.pipeline import run_pipeline

    root, built = tmp_path_factory.mktemp("docs-runs"), {}

    def get(dataset: str) -> Path:
        if dataset not in built:
            overrides, phases = TINY_RUNS[dataset]
            run = root / dataset
            run_pipeline(f"configs/{dataset}", list(overrides), run_dir=str(run), phases=phases)
            built[dataset] = run
        return built[dataset]

    return get


PYTHON_PAGES = [p for p in PAGES if code_blocks(p, ("python",))]


def test_the_readme_has_a_python_snippet():
    assert README in PYTHON_PAGES


@pytest.mark.parametrize("page", PYTHON_PAGES, ids=rel)
def test_python_snippets_run(page, tiny_runs, monkeypatch):
    """A page's ```python blocks, in order, in one fresh namespace, from the repository root, with its run-folder
    placeholders replaced by tiny runs. Snippets read runs and write nothing."""
    from dsls.samplers.base import SAMPLERS

    monkeypatch.chdir(ROOT)
    page_module = types.ModuleType("__docs__")  # a real module, as a script's __main__ is (dataclasses look it up)
    monkeypatch.setitem(sys.modules, "__docs__", page_module)
    registered = dict(SAMPLERS)
    try:
        for _, code, line in code_blocks(page, ("python",)):
            code = PLACEHOLDER.sub(lambda m: str(tiny_runs(m.group(1))), code)
            # dont_inherit: not this file's `from __future__ import annotations`
            exec(compile(code, f"{rel(page)}:{line}", "exec", dont_inherit=True), page_module.__dict__)  # noqa: S102
    finally:  # a page may register a sampler of its own: the rest of the suite sees the registry as it was
        SAMPLERS.clear()
        SAMPLERS.update(registered)


def test_python_snippets_import_dsls_before_torch():
    """OpenMP's wait policy is read once, when torch loads: a snippet a user copies must import dsls first."""
    for page in PYTHON_PAGES:
        for _, code, line in code_blocks(page, ("python",)):
            imports = [n for n in ast.walk(ast.parse(code)) if isinstance(n, (ast.Import, ast.ImportFrom))]
            names = [(n.lineno, (n.module if isinstance(n, ast.ImportFrom) else n.names[0].name).split(".")[0])
                     for n in imports]
            first = {name: ln for ln, name in sorted(names, reverse=True)}
            if "torch" in first:
                assert "dsls" in first and first["dsls"] < first["torch"], f"{rel(page)}:{line}: import dsls first"


# -- the README is a front door -------------------------------------------------------------------------------------
def test_readme_is_short():
    n = len(README.read_text().splitlines())
    assert n <= 220, f"README.md has {n} lines: move detail to docs/"


def test_readme_names_its_two_set_up_commands_and_the_citation_and_license():
    text = README.read_text()
    setup = "\n".join(code for _, code, _ in code_blocks(README, ("bash",)))
    assert re.search(r"^make demo\b", setup, re.M) and re.search(r"^make test\b", setup, re.M)
    assert "```bibtex" in text and "MIT" in text
    assert "import dsls" in text and "before" in text


# -- links ----------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("page", PAGES, ids=rel)
def test_links_stay_in_the_repository_and_point_at_files(page):
    assert not [t for t in links(README) if t.startswith("../")], "a README link leaves the repository"
    for target in links(page):
        path = local_target(page, target)
        if path is None:
            continue
        assert path.is_relative_to(ROOT), f"{rel(page)}: {target} leaves the repository"
        assert path.exists(), f"{rel(page)}: {target} does not exist"
        if "#" in target and path.suffix == ".md":
            anchor = target.split("#", 1)[1]
            assert anchor in anchors(path), f"{rel(page)}: {target}: no such heading in {rel(path)}"
    for target in links(page):
        if target.startswith("#"):
            assert target[1:] in anchors(page), f"{rel(page)}: {target}: no such heading"


def anchors(page: Path) -> set[str]:
    """GitHub's anchors of a page's headings: lower case, punctuation dropped, spaces as hyphens."""
    headings = re.findall(r"^#{1,6}\s+(.+?)\s*$", prose(page), re.M)
    return {re.sub(r"[^\w\- ]", "", h.lower()).replace(" ", "-") for h in headings}


def test_every_docs_page_is_linked_from_the_readme_or_another_page():
    linked = set()
    for page in PAGES:
        linked |= {local_target(page, t) for t in links(page) if local_target(page, t) != page.resolve()}
    orphans = [rel(p) for p in PAGES[1:] if p.resolve() not in linked]
    assert not orphans, f"no page links to {orphans}"


@pytest.mark.parametrize("page", PAGES[1:], ids=rel)
def test_each_docs_page_shows_a_command_or_a_snippet(page):
    assert code_blocks(page), f"{rel(page)} has no code block"


# -- results are reproducible and neutral ---------------------------------------------------------------------------
RESULT_PAGES = [p for p in PAGES if p.is_relative_to(DOCS / "results") or p == DOCS / "results.md"]


@pytest.mark.parametrize("page", [p for p in RESULT_PAGES if "|" in prose(p)], ids=rel)
def test_results_name_the_version_and_a_command(page):
    text = page.read_text()
    assert re.search(r"dsls \d+\.\d+\.\d+", text), f"{rel(page)} does not say which dsls version measured it"
    assert code_blocks(page, ("bash",)), f"{rel(page)} gives no command that reproduces it"


@pytest.mark.parametrize("page", PAGES, ids=rel)
def test_no_commit_hashes_or_local_paths(page):
    text = page.read_text()
    hashes = [h for h in re.findall(r"`([0-9a-f]{7,40})`", text) if re.search(r"\d", h) and re.search(r"[a-f]", h)]
    assert not hashes, f"{rel(page)} names commits {hashes}: say the dsls version instead"
    assert "/work/" not in text and "shared/DESIGN" not in text


# -- what the pages name exists -------------------------------------------------------------------------------------
def commands(page: Path) -> str:
    """The page's shell commands: bash/text blocks and inline code."""
    blocks = "\n".join(code for lang, code, _ in code_blocks(page) if lang in ("bash", "sh", "text", ""))
    return blocks + "\n" + "\n".join(re.findall(r"`([^`\n]+)`", prose(page)))


def make_targets() -> set[str]:
    return set(re.findall(r"^([a-zA-Z_-]+):", (ROOT / "Makefile").read_text(), re.M))


def script_flags(script: Path) -> set[str]:
    """The --flags an experiments/ script's argparse defines (read from its source, nothing imported)."""
    return set(re.findall(r"""["'](--[a-z][a-z0-9-]*)["']""", script.read_text())) | {"--help"}


@pytest.mark.parametrize("page", PAGES, ids=rel)
def test_named_scripts_configs_and_make_targets_exist(page):
    text = commands(page)
    for script in set(re.findall(r"experiments/[\w-]+\.py", text)):
        assert (ROOT / script).is_file(), f"{rel(page)}: {script} does not exist"
    for path in set(re.findall(r"configs/[\w/.-]+\.yaml", text)):
        assert (ROOT / path).is_file(), f"{rel(page)}: {path} does not exist"
    for folder in set(re.findall(r"--config-dir[ =](configs/[\w-]+)", text)):
        assert (ROOT / folder).is_dir(), f"{rel(page)}: {folder} does not exist"
    targets = make_targets()
    for target in set(re.findall(r"(?:^|[\s`(])make ([a-z][a-z-]*)", text)):
        assert target in targets, f"{rel(page)}: make {target} is no Makefile target"


@pytest.mark.parametrize("page", PAGES, ids=rel)
def test_flags_of_experiment_scripts_exist(page):
    """`python experiments/X.py --flag`: --flag is one of X's own (dotted flags are overrides routed to the phases)."""
    text = re.sub(r"\\\n\s*", " ", commands(page))  # continued lines are one command
    for line in text.splitlines():
        for script, rest in re.findall(r"(experiments/[\w-]+\.py)((?:\s+[^|;&#]*)?)", line):
            if not (ROOT / script).is_file():
                continue
            flags = {f for f in re.findall(r"(?<![\w.-])(--[a-z][a-z0-9-]*)(?![\w.-]*\.)", rest)}
            unknown = flags - script_flags(ROOT / script)
            assert not unknown, f"{rel(page)}: {script} has no {sorted(unknown)}"


def test_layers_named_in_the_import_test_are_documented():
    """tests/test_layers.py's LAYERS and docs/development.md list the same modules (its failures point there)."""
    source = (ROOT / "tests" / "test_layers.py")
    if not source.is_file():
        pytest.skip("no tests/test_layers.py")
    tree = ast.parse(source.read_text())
    layers = next((ast.literal_eval(n.value) for n in tree.body if isinstance(n, ast.Assign)
                   and any(getattr(t, "id", None) == "LAYERS" for t in n.targets)), [])
    page = (DOCS / "development.md").read_text()
    missing = [m for layer in layers for m in layer if m != "dsls" and m.removeprefix("dsls.").replace(".", "/")
               not in page and m not in page]
    assert not missing, f"docs/development.md does not name {missing}"


def test_tiny_run_placeholders_are_the_only_run_folders_snippets_read():
    """A snippet that reads a run folder reads a placeholder the test can replace, not a path a reader lacks."""
    for page in PYTHON_PAGES:
        for _, code, line in code_blocks(page, ("python",)):
            other = [p for p in re.findall(r"""["'](runs/[^"']+)["']""", code) if not PLACEHOLDER.match(p)]
            assert not other, f"{rel(page)}:{line}: {other}: use runs/<dataset>/<run>"


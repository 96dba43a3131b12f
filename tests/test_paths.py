"""dvc.yaml agrees with prunelab.paths and the code: outs, deps, params, stage commands."""

from __future__ import annotations

import ast
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from prunelab import paths
from prunelab.studies.archs import study as archs
from prunelab.studies.atinit import study as atinit
from prunelab.studies.during import study as during
from prunelab.studies.l0 import study as l0
from prunelab.studies.registry import STUDIES, load_params
from prunelab.studies.registry import stages as declared_stages

ROOT = Path(__file__).resolve().parents[1]
ROOT_YAML = yaml.safe_load((ROOT / "dvc.yaml").read_text(encoding="utf-8"))
RETRAIN_YAML = yaml.safe_load((ROOT / paths.RETRAIN_PIPELINE).read_text(encoding="utf-8"))
DECLARED = declared_stages()  # every stage, as the studies declare it
RETRAIN_STAGES = {s.name for study in STUDIES if study.pipeline == paths.RETRAIN_PIPELINE
                  for s in study.stages}
# Both pipeline files as one: the retraining stages run from the root (wdir), so their paths
# read as the study's do. A per-seed (foreach) stage is checked through its template (`do:`),
# whose paths name the seed as ${item}, as the studies' declarations do.
DVC_YAML = {**ROOT_YAML, "stages": {
    name: stage["do"] if "foreach" in stage else stage
    for name, stage in {**ROOT_YAML["stages"], **RETRAIN_YAML["stages"]}.items()}}
CORE_STAGES = ("validate", "download", "train", "prune_weight", "prune_unit", "plot")
STAGES = tuple(DVC_YAML["stages"])  # every stage, including any added after the core ones
# Not stage outputs: inputs, folders, and what `python -m prunelab compare` draws from several
# runs (outside the pipeline).
NOT_OUTS = {paths.PARAMS, paths.MODELS_DIR, paths.METRICS_DIR, paths.PLOTS_DIR,
            paths.ARCH_FIGURE, paths.RETRAIN_PIPELINE, paths.REPORTS_DIR, paths.SEED_MODELS,
            paths.SEED_METRICS, paths.SEED_CURVES, paths.REPORT_SECTIONS}
OUT_KINDS = ("outs", "metrics", "plots")  # a stage's outputs, whichever way DVC is told


@pytest.fixture(scope="module")
def dvc() -> dict[str, Any]:
    """dvc.yaml, parsed (anchors resolved)."""
    return DVC_YAML


def entries(items: list[Any]) -> list[str]:
    """Paths of a deps/outs list whose items are strings or one-key mappings."""
    out = []
    for item in items:
        if isinstance(item, str):
            out.append(item)
        else:
            assert isinstance(item, dict) and len(item) == 1, item
            out.extend(item)
    return out


def same_net(path: str | Path) -> Path:
    """A path with the first seed's folder written as any seed's: the single-net stages read
    models/seeds/${train.seeds[0]}/..., which train@<seed> writes as models/seeds/${item}/..."""
    return Path(str(path).replace(paths.FIRST_SEED, paths.ITEM))


def producer(produced: dict[Path, str], dep: Path) -> str | None:
    """The stage whose outputs ``dep`` is, or holds (a folder of several seeds' outputs)."""
    dep = same_net(dep)
    if dep in produced:
        return produced[dep]
    inside = {stage for out, stage in produced.items() if dep in out.parents}
    assert len(inside) <= 1 or dep.parts[-1] == "seeds", (dep, inside)
    return min(inside) if inside else None


def outs(dvc: dict[str, Any], stage: str) -> set[Path]:
    """Every output of one stage (outs, metrics and plots) as Paths."""
    return {Path(p) for kind in OUT_KINDS for p in entries(dvc["stages"][stage].get(kind, []))}


def declared(dvc: dict[str, Any], stage: str, kind: str) -> dict[Path, dict[str, Any]]:
    """One kind of output of a stage, with its options (cache, persist)."""
    found: dict[Path, dict[str, Any]] = {}
    for item in dvc["stages"][stage].get(kind, []):
        if isinstance(item, str):
            found[Path(item)] = {}
        else:
            (path, options), = item.items()
            found[Path(path)] = options or {}
    return found


def script(dvc: dict[str, Any], stage: str) -> str:
    """The stage's Python script, from its cmd (python stages/X.py ...)."""
    argv = shlex.split(dvc["stages"][stage]["cmd"])
    assert argv[0] == "python" and argv[1].startswith("stages/"), argv
    return argv[1]


def prunelab_imports(path: Path, seen: set[str] | None = None) -> set[str]:
    """Every prunelab module a file imports, directly or through other prunelab modules."""
    seen = set() if seen is None else seen
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module == "prunelab":
            names = [f"prunelab.{a.name}" for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module]
        for name in names:
            if name.startswith("prunelab.") and name not in seen:
                seen.add(name)
                module = ROOT / "src" / (name.replace(".", "/") + ".py")
                if module.is_file():
                    prunelab_imports(module, seen)
    return seen


def test_pipeline_has_the_core_stages(dvc: dict[str, Any]) -> None:
    """dvc.yaml defines the core stages, and exactly the stages the studies declare."""
    assert set(CORE_STAGES) <= set(dvc["stages"])
    assert list(dvc["stages"]) == list(DECLARED)


@pytest.mark.parametrize("stage", STAGES)
def test_stage_outs_are_the_paths_module(dvc: dict[str, Any], stage: str) -> None:
    """Each stage's outputs are exactly what its study says it writes."""
    assert outs(dvc, stage) == set(DECLARED[stage].writes)


@pytest.mark.parametrize("stage", STAGES)
def test_stage_data_deps_are_the_paths_module(dvc: dict[str, Any], stage: str) -> None:
    """Each stage's non-code deps are exactly what its study says it reads."""
    deps = {Path(d) for d in entries(dvc["stages"][stage]["deps"])}
    data = {d for d in deps if d.parts[0] not in ("src", "stages")}
    assert data == set(DECLARED[stage].reads)


def test_retraining_is_a_second_pipeline_run_from_the_root() -> None:
    """The retraining stages live in their own file (the default `dvc repro` stays fast), run
    from the repository root, and its plots draw outputs of its stages."""
    assert set(RETRAIN_YAML["stages"]) == RETRAIN_STAGES
    assert not set(RETRAIN_YAML["stages"]) & set(ROOT_YAML["stages"])
    assert all(stage.get("do", stage)["wdir"] == "../.."
               for stage in RETRAIN_YAML["stages"].values())
    assert all("wdir" not in stage for stage in ROOT_YAML["stages"].values())
    produced = {out for s in RETRAIN_STAGES for out in outs(DVC_YAML, s)}
    for plot in RETRAIN_YAML["plots"]:
        (_, spec), = plot.items()
        for source in spec["y"]:
            assert Path(source).parts[:2] == ("..", "..")
            assert Path(*Path(source).parts[2:]) in produced, source


def test_the_per_seed_stages_run_once_per_seed() -> None:
    """train and both prune stages are DVC foreach stages over train.seeds (atinit over its own
    atinit.seeds); the seed reaches the script through its command (so adding a seed adds
    stages and reruns none), never through `params:`; every other stage reads the first
    seed's net or all seeds' folders."""
    both = {**ROOT_YAML["stages"], **RETRAIN_YAML["stages"]}
    per_seed = {n for n, s in both.items() if "foreach" in s}
    assert per_seed == {name for name, s in DECLARED.items() if s.per_seed}
    for name in per_seed:
        stage = both[name]
        key = DECLARED[name].seeds
        assert stage["foreach"] == f"${{{key}}}" and key in ("train.seeds", "atinit.seeds")
        assert stage["do"]["cmd"].endswith(" ${item}")
        assert not {"train.seed", "train.seeds", key} & set(stage["do"].get("params", []))
    for name, stage in DVC_YAML["stages"].items():
        if name not in per_seed:
            assert "train.seed" not in stage.get("params", []), name
            assert paths.ITEM not in str(stage), name


def test_imp_rounds_are_a_persistent_output() -> None:
    """models/imp survives a rerun (DVC would otherwise delete it first), which is what lets an
    interrupted IMP run resume."""
    assert declared(DVC_YAML, "imp", "outs")[paths.IMP_DIR] == {"cache": False, "persist": True}


def test_validate_runs_first_and_its_output_survives_a_failure(dvc: dict[str, Any]) -> None:
    """Every other stage is downstream of `validate`, which tracks the whole params.yaml, and
    whose output DVC never deletes (persist) and keeps in git (cache: false)."""
    produced = {out: s for s in STAGES for out in outs(dvc, s)}
    graph = {s: {p for d in entries(dvc["stages"][s]["deps"])
                 if (p := producer(produced, Path(d))) is not None} for s in STAGES}

    def upstream(stage: str) -> set[str]:
        found = set(graph[stage])
        for parent in graph[stage]:
            found |= upstream(parent)
        return found

    assert all("validate" in upstream(s) for s in STAGES if s != "validate")
    assert dvc["stages"]["validate"]["params"] == [{"params.yaml": None}]
    assert declared(dvc, "validate", "outs") == {
        paths.PARAMS_CHECKED: {"cache": False, "persist": True}}


@pytest.mark.parametrize("stage", STAGES)
def test_every_stage_can_be_restored_from_the_run_cache(dvc: dict[str, Any], stage: str) -> None:
    """DVC saves a stage in its run-cache only if every output that is not a metric or plot
    is cached: uncached files must be declared as `metrics:` or `plots:` (the per-k detail
    JSON is cached like the curves). The retraining pipeline is the exception: nothing of it is
    cached (see test_fresh_clone)."""
    if stage in RETRAIN_YAML["stages"]:
        return
    if stage in ("validate", "report"):  # cheap to rerun; the report is kept in git (any
        return  # git host renders it), and a markdown file is neither a metric nor a plot
    for path, options in declared(dvc, stage, "outs").items():
        assert options.get("cache", True), f"{stage}: {path} is an uncached plain out"


def test_every_path_is_an_out_of_exactly_one_stage(dvc: dict[str, Any]) -> None:
    """Every artefact path in prunelab.paths is an out of exactly one stage, and vice versa."""
    owners: dict[Path, list[str]] = {}
    for stage in STAGES:
        for out in outs(dvc, stage):
            owners.setdefault(out, []).append(stage)
    constants = {v for v in vars(paths).values() if isinstance(v, Path)} - NOT_OUTS
    named = {paths.DATA_DIR, paths.FIGURE, paths.PARAMS_CHECKED, paths.AGGREGATE_METRICS,
             paths.REPORT}
    assert named <= constants
    per_seed = {f(paths.ITEM) for f in (paths.model, paths.init_model, paths.train_run,
                                        paths.train_metrics, paths.train_timing,
                                        paths.train_loss)}
    all_paths = constants | per_seed | {
        f(m) for f in (paths.aggregate_curve, paths.finetune_metrics, paths.finetune_curve,
                       paths.finetune_timing, paths.finetune_headline)
        for m in ("weight", "unit")} | {
        f(m, paths.ITEM) for f in (paths.prune_metrics, paths.prune_curve)
        for m in ("weight", "unit")}
    all_paths |= {p for study in (atinit.STUDY, during.STUDY, l0.STUDY, archs.STUDY)
                  for s in study.stages
                  for p in s.writes}  # the studies' own paths
    assert set(owners) == all_paths
    assert all(len(stages) == 1 for stages in owners.values()), owners


def test_metrics_are_the_headline_files(dvc: dict[str, Any]) -> None:
    """The stages' `metrics:` (the `dvc exp show` columns) are the few headline files, in git;
    the per-seed, per-k and per-round numbers are plain outputs under metrics/ (cached in the
    main pipeline, in git in the retraining one); no top-level list adds more."""
    metrics = {p for s in STAGES for p in declared(dvc, s, "metrics")}
    assert metrics == {paths.HEADLINE, paths.IMP_HEADLINE, atinit.HEADLINE, during.HEADLINE,
                       *(paths.finetune_headline(m) for m in ("weight", "unit"))}
    assert all(options == {"cache": False} for s in STAGES
               for options in declared(dvc, s, "metrics").values())
    details = {paths.train_metrics(paths.ITEM), paths.train_timing(paths.ITEM),
               paths.AGGREGATE_METRICS, paths.SENSITIVITY_METRICS, paths.SPEED_METRICS,
               *(paths.prune_metrics(m, paths.ITEM) for m in ("weight", "unit"))}
    cached = {p for s in STAGES for p, o in declared(dvc, s, "outs").items()
              if o.get("cache", True)}
    assert details <= cached
    assert "metrics" not in dvc


@pytest.mark.parametrize("stage", STAGES)
def test_deps_exist_or_come_from_an_upstream_stage(dvc: dict[str, Any], stage: str) -> None:
    """Every code dep exists in the repo; every data dep is an out of another stage."""
    produced = {out: s for s in STAGES for out in outs(dvc, s)}
    deps = [Path(d) for d in entries(dvc["stages"][stage]["deps"])]
    assert len(deps) == len(set(deps)), "duplicate dep"
    for dep in deps:
        if (made_by := producer(produced, dep)) is not None:
            assert made_by != stage
        else:
            code_dir = dep.parts[0] == "src" and (ROOT / dep).is_dir()  # a sub-package
            assert (ROOT / dep).is_file() or code_dir, f"{stage}: dep {dep} does not exist"


@pytest.mark.parametrize("stage", STAGES)
def test_deps_cover_every_imported_module(dvc: dict[str, Any], stage: str) -> None:
    """The stage script and every prunelab module it (transitively) imports are deps."""
    deps = set(entries(dvc["stages"][stage]["deps"]))
    code = script(dvc, stage)
    assert code in deps
    modules = prunelab_imports(ROOT / code)
    assert "prunelab.paths" in modules
    for module in modules:
        file = Path("src/" + module.replace(".", "/") + ".py")
        if not (ROOT / file).is_file():
            continue  # a package name (its __init__ is covered by its folder)
        covered = str(file) in deps or any(str(parent) in deps for parent in file.parents)
        assert covered, f"{stage}: {module}"


@pytest.mark.parametrize("stage", STAGES)
def test_stage_params_are_known_keys(dvc: dict[str, Any], stage: str) -> None:
    """Every params key a stage lists exists in params.yaml."""
    known = set(load_params(ROOT / "params.yaml").flat())
    for key in dvc["stages"][stage].get("params", []):
        if key == {"params.yaml": None}:  # the whole file (validate)
            continue
        assert key in known, f"{stage}: unknown params key {key}"


@pytest.fixture(scope="module")
def help_runs() -> dict[str, subprocess.CompletedProcess[str]]:
    """`python stages/X.py --help` for every stage script, run concurrently."""
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    scripts = {Path(script(DVC_YAML, stage)).stem for stage in STAGES}
    procs = {
        name: subprocess.Popen([sys.executable, f"stages/{name}.py", "--help"], cwd=ROOT,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        for name in sorted(scripts)
    }
    results = {}
    for name, proc in procs.items():
        out, err = proc.communicate(timeout=120)
        results[name] = subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
    return results


@pytest.mark.parametrize("stage", STAGES)
def test_stage_help_works(dvc: dict[str, Any], help_runs: dict[str, Any], stage: str) -> None:
    """Each stage's script answers --help with exit status 0 and a usage line."""
    done = help_runs[Path(script(dvc, stage)).stem]
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("Usage: ")
    if stage.startswith("prune_"):
        assert "METHOD" in done.stdout and "weight" in done.stdout


@pytest.mark.parametrize("stage", STAGES)
def test_stage_help_names_what_it_reads_and_writes(dvc: dict[str, Any], help_runs: dict[str, Any],
                                                   stage: str) -> None:
    """--help lists every input and output of the stage and the environment variables."""
    text = " ".join(help_runs[Path(script(dvc, stage)).stem].stdout.split())
    for path in (*DECLARED[stage].reads, *DECLARED[stage].writes):
        assert str(path) in text, f"{stage} --help does not name {path}"
    for name in ("PRUNELAB_TRACKING", "MLFLOW_TRACKING_URI"):
        assert name in text


def test_prunelab_entry_point_lists_every_stage() -> None:
    """`python -m prunelab --help` lists its tools; `stages` lists every DVC stage."""
    run = [sys.executable, "-m", "prunelab"]
    top = subprocess.run([*run, "--help"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert top.returncode == 0 and all(c in top.stdout for c in ("stages", "check", "report"))
    listed = subprocess.run([*run, "stages"], cwd=ROOT, capture_output=True, text=True,
                            timeout=60)
    assert listed.returncode == 0
    names = {line.split()[0].removesuffix("@<seed>") for line in listed.stdout.splitlines()
             if line.startswith("  ") and line[2:3].isalpha()}
    assert set(STAGES) <= names
    studies = {line.split(":")[0] for line in listed.stdout.splitlines() if line[:1].isalpha()}
    assert {study.name for study in STUDIES} <= studies


def test_stages_run_the_code_of_their_own_checkout(tmp_path: Path) -> None:
    """`dvc exp run --temp` and `dvc queue` run stages in copies of the repository; each stage
    imports stages/_repo.py first, so prunelab comes from the copy's src/ (the code DVC hashed
    for it), not from the checkout the package was installed from."""
    for stage in STAGES:
        source = (ROOT / script(DVC_YAML, stage)).read_text(encoding="utf-8")
        assert source.index("import _repo") < source.index("from prunelab"), stage
    (tmp_path / "stages").mkdir()
    for name in ("_repo.py", "_launch.py"):
        shutil.copy(ROOT / "stages" / name, tmp_path / "stages" / name)
    (tmp_path / "stages" / "probe.py").write_text("import _repo\nimport prunelab\n"
                                                  "print(prunelab.__file__)\n")
    (tmp_path / "src" / "prunelab").mkdir(parents=True)
    (tmp_path / "src" / "prunelab" / "__init__.py").write_text("")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run([sys.executable, "stages/probe.py"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert Path(done.stdout.strip()).resolve() == (tmp_path / "src/prunelab/__init__.py").resolve()

"""tctseg.files.layout: the run-folder and predictions-folder names, and a check that no other module spells them."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from tctseg.files import layout
from tctseg.files.layout import CompareLayout, ExperimentLayout, MetricsLayout, PredictionsLayout, RunLayout

SRC = Path(__file__).resolve().parents[1] / "src" / "tctseg"

# names with a suffix: flagged wherever a string holds them (code or message)
FILE_NAMES = (
    layout.CONFIG_YAML, layout.CHECKPOINT_LAST, layout.CHECKPOINT_BEST, layout.LOG_CSV, layout.PROGRESS_PNG,
    layout.PIPELINE_JSON, layout.PREDICTIONS_INDEX, layout.RESULTS_JSON, layout.RESULT_JSON,
    layout.REPORT_HTML, layout.REPORT_MD, f"{layout.METRICS_STEM}.json", f"{layout.METRICS_STEM}.csv",
    f"{layout.METRICS_STEM}.md", layout.PROBABILITIES_SUFFIX, layout.TASK_MASKS_SUFFIX, layout.PREVIEW_SUFFIX,
    layout.DICOM_SEG_SUFFIX, layout.STATISTICS_JSON, layout.STATISTICS_CSV, layout.QC_JSON,
)
# folder names are also plain words ("predictions" in a lock message, "stage1" a pipeline.json
# key): flagged where they build or test a path
FOLDER_NAMES = (
    layout.TENSORBOARD_DIR, layout.STAGE1_DIR, layout.STAGE2_DIR, layout.STAGE3_DIR, layout.PREDICTIONS_DIR,
    layout.METRICS_DIR, layout.GROUND_TRUTH_DIR, layout.REPORT_FILES_DIR, layout.TABLES_DIR,
)


def test_run_layout_paths_keep_the_names_runs_were_written_with():
    run = RunLayout("runs/demo/tct")
    root = Path("runs/demo/tct")
    assert run.root == root
    assert run.config_yaml == root / "config.yaml"
    assert run.checkpoint_last == root / "checkpoint_last.pt"
    assert run.checkpoint_best == root / "checkpoint_best.pt"
    assert run.log_csv == root / "log.csv"
    assert run.progress_png == root / "progress.png"
    assert run.tensorboard == root / "tensorboard"
    assert run.pipeline_json == root / "pipeline.json"
    assert run.stage1 == root / "stage1"
    assert run.stage1_network("liver") == RunLayout(root / "stage1" / "liver")
    assert run.stage2 == root / "stage2"
    assert run.stage3 == RunLayout(root / "stage3")
    assert run.stage3.checkpoint_best == root / "stage3" / "checkpoint_best.pt"
    assert run.stage_folders == (root / "stage1", root / "stage2", root / "stage3")
    assert run.predictions == root / "predictions"
    assert run.predictions_for("chaos") == root / "predictions" / "chaos"
    assert run.predictions_index == root / "predictions" / "index.json"
    assert run.metrics == MetricsLayout(root / "metrics")
    assert run.metrics_json == root / "metrics" / "metrics.json"
    assert (run.metrics.csv, run.metrics.md) == (root / "metrics" / "metrics.csv", root / "metrics" / "metrics.md")
    assert [p.name for p in run.markers] == ["checkpoint_last.pt", "log.csv", "pipeline.json", "config.yaml"]
    assert [str(p.relative_to(root)) for p in run.written_by_training] == [
        "checkpoint_last.pt", "checkpoint_best.pt", "log.csv", "progress.png", "config.yaml", "tensorboard",
        "pipeline.json", "stage1", "stage2", "stage3"]
    assert [p.name for p in run.outputs] == [
        "checkpoint_last.pt", "checkpoint_best.pt", "log.csv", "progress.png", "config.yaml", "tensorboard"]
    assert [str(p.relative_to(root)) for p in run.signs] == [
        "config.yaml", "log.csv", "metrics/metrics.json", "predictions", "checkpoint_last.pt"]


def test_predictions_layout_paths_keep_the_names_predict_wrote():
    out = PredictionsLayout("out")
    root = Path("out")
    assert out.index == root / "index.json"
    assert out.label_map("case_1") == root / "case_1.nii.gz"
    assert out.probabilities("case_1") == root / "case_1_probabilities.nii.gz"
    assert out.task_masks("case_1") == root / "case_1_tasks.nii.gz"
    assert out.preview("case_1") == root / "case_1_preview.png"
    assert out.dicom_seg("case_1") == root / "case_1_seg.dcm"
    assert (out.statistics_json, out.statistics_csv, out.qc_json) == (
        root / "statistics.json", root / "statistics.csv", root / "qc.json")
    assert out.REPORT_SUFFIXES == ("_preview.png", "_seg.dcm")
    assert out.GATHERING_FILES == ("statistics.json", "statistics.csv", "qc.json")
    assert RunLayout("runs/x/tct").predictions_index == PredictionsLayout("runs/x/tct/predictions").index


def test_run_layout_is_frozen_and_equal_by_root():
    run = RunLayout("a")
    assert run == RunLayout(Path("a")) and hash(run) == hash(RunLayout(Path("a")))
    with pytest.raises(AttributeError):
        run.root = Path("b")  # type: ignore[misc]


def test_the_run_of_a_predictions_folder():
    assert RunLayout.of_predictions("runs/x/tct/predictions") == RunLayout("runs/x/tct")
    assert RunLayout.of_predictions("runs/x/tct/predictions/chaos") == RunLayout("runs/x/tct")
    assert RunLayout.of_predictions("elsewhere/labels") is None


def test_experiment_and_compare_layout_paths():
    run = ExperimentLayout("runs/demo")
    root = Path("runs/demo")
    assert run.method("tal") == RunLayout(root / "tal")
    assert run.ground_truth("chaos") == root / "ground_truth" / "chaos"
    assert run.ground_truth_of("chaos", "case_1") == root / "ground_truth" / "chaos" / "case_1.nii.gz"
    assert run.results_json == root / "results.json"
    assert run.result_json == root / "result.json"
    assert run.report_html == root / "report.html"
    assert run.report_md == root / "report.md"
    assert run.report_files == root / "report_files"
    assert run.tables == root / "tables"
    compare = CompareLayout("runs/compare")
    assert compare.run("main", "full", 2) == ExperimentLayout(Path("runs/compare/main/full/seed2"))
    assert compare.run("main", "full", 2).method("tct").log_csv == Path("runs/compare/main/full/seed2/tct/log.csv")
    assert compare.table("transfer").ground_truth("btcv") == Path("runs/compare/transfer/ground_truth/btcv")
    assert compare.tables == Path("runs/compare/tables")
    assert compare.results_json == Path("runs/compare/results.json")


def test_layout_imports_nothing_heavy_and_nothing_of_tctseg():
    code = ("import sys, tctseg.files.layout; "
            "print(sorted(m for m in sys.modules if m.startswith('tctseg') or m in ('torch', 'numpy')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={"PYTHONPATH": str(SRC.parent)}).stdout
    assert out.strip() == "['tctseg', 'tctseg.files', 'tctseg.files.layout']"


def test_a_run_folder_is_read_without_the_trainer():
    """The report and compare read a run's final folder and epoch times through tctseg.files.run_records
    (torch-free), not through the trainer or PFL's pipeline (issue 29, item 3)."""
    code = ("import sys, tctseg.files.run_records; print('torch' in sys.modules); "
            "import tctseg.report.report, tctseg.compare.runs; "
            "print(sorted(m for m in sys.modules if m.startswith('tctseg.training')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={"PYTHONPATH": str(SRC.parent)}).stdout
    assert out.split() == ["False", "[]"]


def _docstrings(tree: ast.AST) -> set[int]:
    ids = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                ids.add(id(first.value))
    return ids


def _builds_a_path(node: ast.Constant, parent: ast.AST | None) -> bool:
    if isinstance(parent, ast.BinOp) and isinstance(parent.op, ast.Div):  # folder / "name"
        return True
    if isinstance(parent, (ast.Compare, ast.Tuple, ast.List, ast.Set, ast.Assign, ast.AnnAssign)):
        return True
    if isinstance(parent, ast.Call):  # Path("name"), folder.joinpath("name")
        func = parent.func
        name = func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else ""
        return name in ("Path", "joinpath", "with_name")
    return False


def literal_copies(path: Path, root: Path = SRC.parent) -> list[str]:
    """``line: text`` of each string in ``path`` (docstrings aside) that spells a run-folder name."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    parents = {id(child): node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
    docstrings = _docstrings(tree)
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Constant) or not isinstance(node.value, str) or id(node) in docstrings:
            continue
        text = node.value
        parent = parents.get(id(node))
        if isinstance(parent, ast.JoinedStr):  # an f-string's text: judged as a path by the f-string's place
            parent = parents.get(id(parent))
        parts = text.split("/")
        if any(name in text for name in FILE_NAMES) or (
            any(name in parts for name in FOLDER_NAMES) and _builds_a_path(node, parent)
        ):
            found.append(f"{path.relative_to(root)}:{node.lineno}: {text!r}")
    return sorted(found, key=lambda hit: int(hit.split(":")[1]))


def test_no_module_but_layout_spells_a_run_folder_name():
    copies = [hit for module in sorted(SRC.rglob("*.py")) if module.name != "layout.py"
              for hit in literal_copies(module)]
    assert copies == [], "use tctseg.files.layout instead of these names:\n" + "\n".join(copies)


def test_the_literal_check_finds_a_copy(tmp_path):
    # the check above must be able to fail: the shapes a copy takes are found, words are not
    module = tmp_path / "probe.py"
    module.write_text(
        '"""log.csv in a docstring is fine."""\nimport pathlib\n'
        'BEST = "checkpoint_best.pt"\n'
        'def f(run):\n    return run / "metrics" / "x", pathlib.Path("tensorboard"), f"{run}/report.html"\n'
        'def g(record, lock):\n    lock(record, "predictions")\n    return record["stage1"], record.get("stage2")\n',
        encoding="utf-8",
    )
    hits = literal_copies(module, tmp_path)
    assert hits[0] == "probe.py:3: 'checkpoint_best.pt'"
    assert sorted(h.split(": ", 1)[1] for h in hits) == sorted(["'checkpoint_best.pt'", "'metrics'", "'tensorboard'", "'/report.html'"])

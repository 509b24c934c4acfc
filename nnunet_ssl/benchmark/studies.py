"""The evidence as data: docs/studies/<id>/ holds what nnUNetv2_ssl_benchmark wrote (benchmark.csv) and notes;
docs/studies/index.json lists the studies. ``render`` recomputes every study's report from its CSV with the
benchmark's own report code and writes the results page, the summary figure, the README's results block and the
evidence file the demo reads (nnunet_ssl/benchmark/evidence.json: the multi-fold result per arm, the demo's
recorded runs).

    nnUNetv2_ssl_render [--root REPO]        (or: python -m nnunet_ssl.cli.render)
"""
import json
import os
import re
import tempfile

import numpy as np

from nnunet_ssl.errors import SSLUserError

STUDIES = os.path.join("docs", "studies")
DEMO_RECORDS = os.path.join("docs", "records", "demo")
RESULTS_PAGE = os.path.join("docs", "results.md")
SUMMARY_FIGURE = os.path.join("docs", "results_summary.png")
README = "README.md"
EVIDENCE = os.path.join("nnunet_ssl", "benchmark", "evidence.json")
RESULTS_BLOCK = ("<!-- results -->", "<!-- /results -->")
RENDER_COMMAND = "nnUNetv2_ssl_render"
# what SSLScratchTrainer / SSLInitTrainer train now: stock nnU-Net's schedule since 2026-12-04 (before: a matched
# schedule with warm-up); a recorded demo run is of today's setting only if it trained this one
SCHEDULE_NOW = "stock"


def load_index(root: str) -> dict:
    with open(os.path.join(root, STUDIES, "index.json")) as f:
        return json.load(f)


def study_reports(root: str, index: dict) -> dict[str, dict]:
    """{study id: benchmark_report(...) of its benchmark.csv}: the tables and statistics the benchmark itself
    writes, recomputed (its files go to a temporary folder; only the returned values are kept)."""
    from nnunet_ssl.benchmark.report import benchmark_report
    from nnunet_ssl.benchmark.run import read_case_csv
    from tqdm import tqdm
    reports = {}
    with tempfile.TemporaryDirectory() as tmp:
        for study in tqdm(index["studies"], desc="recomputing studies", unit="study"):
            # CSVs written before 2026-12-03 have no iterations column: their rows are of length 0 ('—')
            rows = read_case_csv(os.path.join(root, STUDIES, study["id"], "benchmark.csv"), f"study {study['id']}",
                                 missing_iterations=0)
            if study["dataset"] not in index["datasets"]:
                raise SSLUserError(f"study {study['id']} names dataset {study['dataset']}, which index.json's "
                                   "\"datasets\" does not describe.",
                                   "add it there with its source and class names ({\"1\": \"name\", ...})")
            classes = index["datasets"][study["dataset"]]["classes"]
            reports[study["id"]] = benchmark_report(rows, os.path.join(tmp, study["id"]), classes)
    return reports


def summary_arms(index: dict, reports: dict[str, dict]) -> list[dict]:
    """Every arm a study names in ``summary_arms``, with its statistics against scratch, in index order. A study
    written before the noise floor existed gets the band measured at its label budget and length in another study,
    and its verdict weighed against it the way the benchmark weighs it today (report.weigh_against_noise_floor's
    rule, statistics.against_noise_floor)."""
    from nnunet_ssl.benchmark.arms import SCRATCH_RERUN
    from nnunet_ssl.benchmark.statistics import against_noise_floor
    arms = []
    for study in index["studies"]:
        for key, label in study.get("summary_arms", {}).items():
            arm, labeled, iterations = key.split("|")
            stats = dict(reports[study["id"]]["statistics"][(arm, int(labeled), int(iterations))])
            arms.append({"study": study["id"], "arm": arm, "labeled": int(labeled), "iterations": int(iterations),
                         "configuration": study["configuration"], "label": label, **stats})
    bands = {(a["labeled"], a["iterations"]): a["noise_band"] for a in arms if "noise_band" in a}
    for a in arms:
        band = bands.get((a["labeled"], a["iterations"]))
        if "noise_band" not in a and band is not None and a["arm"] != SCRATCH_RERUN:
            a["noise_band"] = band
            a["verdict"] = against_noise_floor(a["verdict"], a["mean"], band)
    return arms


def figure_statistics(arms: list[dict]) -> dict[tuple[str, int, int], dict]:
    """The summary arms keyed as plots.plot_differences draws them: (label, labeled, iterations)."""
    return {(a["label"], a["labeled"], a["iterations"]): a for a in arms}


def demo_runs(root: str) -> list[dict]:
    """Every recorded demo run (docs/records/demo/index.json) with its setting and the pretrained arm's paired
    difference to scratch on the run's evaluation cases (statistics.compare over cases, as the demo computes it);
    a run reported without its per-case file keeps its printed numbers."""
    from nnunet_ssl.benchmark.statistics import compare
    with open(os.path.join(root, DEMO_RECORDS, "index.json")) as f:
        runs = json.load(f)["runs"]
    result = []
    for run in runs:
        arm = next(label for label in run["trainers"] if label != "scratch")
        entry = {k: run[k] for k in ("date", "command", "pretraining_recipe", "trainers", "schedule")}
        entry["arm"] = arm
        if run.get("file"):
            with open(os.path.join(root, DEMO_RECORDS, run["file"])) as f:
                per_case = json.load(f)["per_case"]
            cases = sorted(set(per_case["scratch"]) & set(per_case[arm]))
            differences = np.array([per_case[arm][c]["foreground"] - per_case["scratch"][c]["foreground"]
                                    for c in cases])
            stats = compare([differences])
            entry.update({k: stats[k] for k in ("mean", "ci_low", "ci_high", "cases_better", "cases")},
                         record=os.path.join(DEMO_RECORDS, os.path.dirname(run["file"])).replace(os.sep, "/"))
        else:
            entry.update(run["reported"], record=None, source=run["source"])
        result.append(entry)
    return result


def _interval(a: dict) -> str:
    return f"{a['mean']:+.3f} [{a['ci_low']:+.3f}, {a['ci_high']:+.3f}]"


def _band(a: dict) -> str:
    return f"±{a['noise_band']:.3f}" if "noise_band" in a else "not measured"


def _notes_link(study: str, base: str = "") -> str:
    return f"{base}docs/studies/{study}/notes.md"


def results_page(index: dict, reports: dict[str, dict], arms: list[dict], runs: list[dict]) -> str:
    """docs/results.md: the summary figure and its arms, the demo's recorded runs, then every study (title,
    date, machine, command, commit, summary, notes, and its benchmark table recomputed from its CSV)."""
    from nnunet_ssl.benchmark.report import verdict_text
    lines = ["# Results", "",
             f"<!-- rendered by `{RENDER_COMMAND}` from docs/studies/ (index.json and each study's benchmark.csv) "
             "and docs/records/demo/; edit those, not this page -->", "",
             f"{len(index['studies'])} studies on "
             + ", ".join(sorted({s['dataset'] for s in index['studies']}))
             + ". Every number below is recomputed from the studies' per-case CSVs by the benchmark's own report code "
             "(what `nnUNetv2_ssl_benchmark` prints). How to read a study and add one: "
             "[studies/README.md](studies/README.md).", "",
             "## Every arm measured on 3 folds, against matched scratch", "",
             "![every 3-fold arm against matched scratch](results_summary.png)", "",
             "Each arm as its per-case difference to matched scratch (2d arms: to 2d scratch) with a 95% interval "
             "over folds and cases; grey: the noise floor, what retraining scratch alone moves a mean over 3 folds at "
             "that label budget and length; colour: the interval excludes 0 and the mean lies beyond the floor.", "",
             "| arm | configuration | labeled | iterations | Δ foreground vs scratch [95% CI] | noise floor | verdict "
             "| study |", "|" + "---|" * 8]
    for a in sorted(arms, key=lambda a: (a["labeled"], a["iterations"])):
        lines.append(f"| {a['label']} | {a['configuration']} | {a['labeled']} | {a['iterations']} | {_interval(a)} | "
                     f"{_band(a)} | {verdict_text(a['verdict'])} | [{a['study']}](studies/{a['study']}/notes.md) |")
    lines += ["", "## The demo's recorded runs (one fold, one run per arm)", "",
              "`nnUNetv2_ssl_demo`: 5 labeled cases, 1000 iterations per arm, 30 evaluation cases. The interval is "
              "over this run's cases only; from run to run the difference moved far beyond it, which is why the "
              "demo shows no verdict.", "",
              "| date | pretraining recipe | pretrained arm's trainer | schedule | Δ foreground vs scratch "
              "[95% CI over cases] | cases above scratch | record |", "|" + "---|" * 7]
    for r in runs:
        lines.append(f"| {r['date']} | {r['pretraining_recipe']} | `{r['trainers'][r['arm']]}` | {r['schedule']} | "
                     f"{_interval(r)} | {r['cases_better']}/{r['cases']} | "
                     + (f"[{r['record']}]({os.path.relpath(r['record'], 'docs')})" if r["record"] else r["source"])
                     + " |")
    lines += ["", "## Studies", ""]
    for study in sorted(index["studies"], key=lambda s: s["date"], reverse=True):
        table = reports[study["id"]]["markdown"].split("\n\nEach fold's validation cases")[0]
        lines += [f"### {study['title']}", "",
                  f"`{study['id']}`, {study['date']}, {study['configuration']}, {study['dataset']}; machine: "
                  f"{study['machine']}; CSV added in {study['commit']}. "
                  f"Notes: [studies/{study['id']}/notes.md](studies/{study['id']}/notes.md).", ""]
        if study["summary"]:
            lines += [study["summary"], ""]
        if study["command"]:
            lines += ["```bash", study["command"], "```", ""]
        lines += [table, ""]
    return "\n".join(lines).rstrip() + "\n"


def readme_block(arms: list[dict], other_datasets: list[str] = ()) -> str:
    """The README's results block: the summary figure and, in words, which arms clear both 0 and the noise floor;
    ``other_datasets``: those with studies but no arm in the figure yet."""
    from nnunet_ssl.benchmark.report import verdict_text
    cleared = [a for a in arms if a["verdict"].finding != "none"]
    within = [a for a in arms if a["verdict"].finding == "none"]
    said = "; ".join(f"{a['label']} at M = {a['labeled']}: {_interval(a)}, {verdict_text(a['verdict'])}"
                     for a in cleared)
    return "\n".join([
        RESULTS_BLOCK[0],
        "![every 3-fold arm on hippocampus against matched scratch](docs/results_summary.png)", "",
        f"On MSD Hippocampus, {len(arms)} arms measured on 3 folds at the plateau length, each as its per-case "
        "difference to matched scratch with a 95% interval; grey: what retraining scratch alone moves a mean. "
        f"{len(within)} arms end level with scratch or within that noise floor. "
        + (f"Beyond both 0 and the floor: {said}." if cleared else "None is beyond both 0 and the floor.")
        + (f" {' and '.join(other_datasets)}: no arm compared yet (first reference runs only)." if other_datasets
           else " Other datasets are not measured.")
        + " Every study, its command and notes: [docs/results.md](docs/results.md).",
        RESULTS_BLOCK[1]])


def other_datasets(index: dict, arms: list[dict]) -> list[str]:
    """Datasets with studies but no arm in the summary figure, by name without nnU-Net's id ("ACDC")."""
    drawn = {s["dataset"] for s in index["studies"] if s["id"] in {a["study"] for a in arms}}
    return sorted({s["dataset"].split("_", 1)[-1] for s in index["studies"] if s["dataset"] not in drawn})


def replace_block(text: str, block: str) -> str:
    begin, end = RESULTS_BLOCK
    pattern = re.compile(re.escape(begin) + ".*?" + re.escape(end), re.S)
    if not pattern.search(text):
        raise ValueError(f"README.md has no {begin} ... {end} block")
    return pattern.sub(lambda _: block, text, count=1)


def evidence(arms: list[dict], runs: list[dict]) -> dict:
    """What the demo reads at run time (it is installed without docs/): the multi-fold result of each summary arm
    and the recorded demo runs."""
    keep = ("study", "arm", "label", "labeled", "iterations", "configuration", "mean", "ci_low", "ci_high",
            "noise_band", "folds", "cases")
    return {"rendered_by": RENDER_COMMAND,
            "arms": [{**{k: a[k] for k in keep if k in a}, "notes": _notes_link(a["study"])} for a in arms],
            "demo_runs": runs}


def render(root: str, out: str | None = None) -> list[str]:
    """Recompute every study under ``root`` and write the results page, the summary figure, the README's results
    block and the demo's evidence file under ``out`` (default: ``root``; the README is read from ``root``)."""
    from nnunet_ssl.benchmark.plots import plot_differences
    out = out or root
    index = load_index(root)
    reports = study_reports(root, index)
    arms = summary_arms(index, reports)
    runs = demo_runs(root)
    written = []
    for relative, text in ((RESULTS_PAGE, results_page(index, reports, arms, runs)),
                           (EVIDENCE, json.dumps(evidence(arms, runs), indent=1) + "\n")):
        written.append(_write(out, relative, text))
    with open(os.path.join(root, README)) as f:
        written.append(_write(out, README, replace_block(f.read(), readme_block(arms, other_datasets(index, arms)))))
    os.makedirs(os.path.dirname(os.path.join(out, SUMMARY_FIGURE)), exist_ok=True)
    plot_differences(figure_statistics(arms), os.path.join(out, SUMMARY_FIGURE))
    written.append(os.path.join(out, SUMMARY_FIGURE))
    return written


def _write(out: str, relative: str, text: str) -> str:
    path = os.path.join(out, relative)
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(path, "w") as f:
        f.write(text)
    return path


# --- what the demo says about its one run -----------------------------------------------------------------------

def load_evidence() -> dict:
    """The rendered evidence file, installed with the package (the demo runs without a checkout)."""
    from importlib import resources
    return json.loads((resources.files("nnunet_ssl.benchmark") / "evidence.json").read_text())


def same_setting_runs(runs: list[dict], protocol: dict) -> list[dict]:
    """The recorded demo runs of the protocol's setting: its pretraining recipe, its trainers, today's schedule."""
    return [r for r in runs if r["pretraining_recipe"] == protocol["pretraining_recipe"]
            and r["trainers"] == protocol["trainers"] and r["schedule"] == SCHEDULE_NOW]


def difference_range(runs: list[dict]) -> str:
    """'N recorded runs, Δ from LOW to HIGH' (one run: its Δ alone), saying how many were reported without their
    per-case file, or 'none recorded'."""
    if not runs:
        return "none recorded"
    means = [r["mean"] for r in runs]
    reported = sum(r.get("record") is None for r in runs)
    kept = f" ({reported} of them reported without per-case numbers)" if reported else ""
    if len(runs) == 1:
        return f"1 recorded run, Δ {means[0]:+.3f}{kept}"
    return f"{len(runs)} recorded runs, Δ from {min(means):+.3f} to {max(means):+.3f}{kept}"


def trainer_arm(trainer: str) -> tuple[str | None, str | None]:
    """(method, benchmark arm) of one of our trainer names: ``SSLInitTrainer_mae_freshFirstStage_cpuDemo`` ->
    ("mae", "mae+freshFirstStage"), the arm name nnUNetv2_ssl_benchmark gives that method and recipe."""
    from nnunet_ssl.integration.trainers.registry import parse_name
    parsed = parse_name(trainer)
    if parsed is None or parsed[1] is None:
        return None, None
    _, method, recipe, _ = parsed
    return method, method if recipe == "default" else f"{method}+{recipe}"


def multi_fold_result(arms: list[dict], trainer: str, labeled: int, configuration: str) -> dict | None:
    """The summary arm measured for this trainer's method and recipe (else the method with the default recipe) on
    the demo's configuration, at its label budget if measured there, else at the nearest one."""
    method, arm = trainer_arm(trainer)
    for name in (arm, method):
        found = [a for a in arms if a["arm"] == name and a["configuration"] == configuration]
        if found:
            return min(found, key=lambda a: (abs(a["labeled"] - labeled), a["labeled"]))
    return None


def demo_closing_lines(evidence_data: dict, protocol: dict) -> list[str]:
    """What the demo prints after its table: the run-to-run spread recorded for this setting and for the command, why
    one run cannot settle whether pretraining helps, and the multi-fold result for the arm it ran (a number and where
    it is written). Values only: the demo shows no verdict."""
    runs = evidence_data["demo_runs"]
    same = same_setting_runs(runs, protocol)
    lines = [f"Run to run: this setting (pretraining recipe {protocol['pretraining_recipe']}, "
             + ", ".join(protocol["trainers"].values()) + f"): {difference_range(same)}; every recorded run of the "
             f"demo command, earlier pretrained arms and schedules included: {difference_range(runs)}. The interval "
             "above covers this run's cases, not its training: from one run to the next the difference moved far "
             "beyond it, so one run cannot show whether pretraining helps."]
    for label, trainer in protocol["trainers"].items():
        if label == "scratch":
            continue
        result = multi_fold_result(evidence_data["arms"], trainer, protocol["labeled_cases"], protocol["configuration"])
        if result is None:
            lines.append(f"{label}: no multi-fold result recorded yet; every result: {RESULTS_PAGE}.")
            continue
        band = f", noise floor ±{result['noise_band']:.3f}" if "noise_band" in result else ""
        lines.append(f"Multi-fold evidence for {label} ({result['label']}; M = {result['labeled']}, "
                     f"{result['iterations']} iterations, {result['folds']} folds, {result['cases']} cases): "
                     f"{_interval(result)} against scratch{band}. Read it in the nnunet-ssl repository: "
                     f"{result['notes']}; every result: {RESULTS_PAGE}.")
    return lines

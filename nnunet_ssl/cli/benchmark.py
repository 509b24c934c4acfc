"""nnUNetv2_ssl_benchmark: pretraining methods x label budgets x folds, with docs-ready results.

1. adds the label-budget folds (nnUNetv2_ssl_splits), 2. pretrains every method that has no
finished pretraining yet (nnUNetv2_ssl_pretrain), 3. fine-tunes every cell with the stock
nnUNetv2_train (scratch: SSLScratchTrainer; a method: SSLInitTrainer_<method>, the same schedule),
skipping finished cells, 4. evaluates nnU-Net's validation predictions and writes a CSV, a JSON of
every per-case number, a markdown table and a Dice-vs-labels plot.

Pretraining uses every case's image (no labels), including the validation cases of the folds,
as PCL does [code: train_contrast.py reads all volumes]; say so when you report.
"""
import argparse

from nnunet_ssl.benchmark.pipeline import BenchmarkSpec, run_benchmark
from nnunet_ssl.cli import run_cli
from nnunet_ssl.integration.device import DEVICES


def benchmark_entry() -> None:
    parser = argparse.ArgumentParser(prog="nnUNetv2_ssl_benchmark", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-d", dest="dataset", required=True)
    parser.add_argument("-c", dest="configuration", default="3d_fullres")
    parser.add_argument("-p", dest="plans", default="nnUNetPlans")
    parser.add_argument("--methods", nargs="+", default=["scratch", "pcl"],
                        help="pretraining methods and reference arms: scratch (SSLScratchTrainer, the matched "
                             "control), scratch_rerun (the same in its own folder: the noise floor), nnunet (stock "
                             "nnUNetTrainer at the same length); METHOD+RECIPE (e.g. mae+fullNetwork) runs that "
                             "method with that recipe only, instead of each --finetune recipe")
    parser.add_argument("--labeled", type=int, nargs="+", required=True, metavar="N", help="label budgets, e.g. 2 5 10")
    parser.add_argument("--base-folds", type=int, nargs="+", default=[0, 1, 2], metavar="F")
    parser.add_argument("--length", nargs="+", default=[""], metavar="LENGTH",
                        help="trainer length variant(s), e.g. cpu2000it (default: nnU-Net's 1000 epochs); several "
                             "lengths train every cell at each (separate runs, since poly decays to 0 at each "
                             "run's end) and plot a learning curve")
    parser.add_argument("--finetune", nargs="+", default=["default"], metavar="RECIPE",
                        help="fine-tuning recipes for each pretrained method: default (SSLInitTrainer), lowEncoderLR, "
                             "decoderFirst, fullNetwork, freshFirstStage, linearWarmup (nnssl's warm-up; scratch then "
                             "also runs as scratch+linearWarmup), meanTeacher (SSLInitMeanTeacherTrainer: consistency "
                             "on the fold's unlabeled cases; scratch then also runs as scratch+meanTeacher), uniMatch "
                             "and fixMatch (SSLInitUniMatchTrainer: weak-to-strong pseudo-labels), bcp "
                             "(SSLInitBCPTrainer: bidirectional copy-paste), each with its scratch arm too; scratch "
                             "runs once otherwise (default: default)")
    parser.add_argument("--earlier", nargs="+", default=[], metavar="CSV",
                        help="benchmark.csv of earlier runs (another session or machine, same folds): the cells "
                             "found there are not retrained and their per-case rows join this report, so a "
                             "matrix can grow one session at a time (a cell in two files counts once if both hold "
                             "the same Dice)")
    parser.add_argument("--rerun", nargs="+", default=[], metavar="CSV",
                        help="benchmark.csv of another run of this matrix's scratch cells (e.g. on another "
                             "machine): reported as the scratch_rerun arm, the run-to-run noise floor, without "
                             "training scratch again")
    parser.add_argument("--seed", type=int, default=0, help="seed of the label-budget draw")
    grouping = parser.add_mutually_exclusive_group()
    grouping.add_argument("--groups", metavar="FILE.json",
                          help="JSON {case id: patient id}: grouped folds, --labeled counts patients "
                               "(as nnUNetv2_ssl_splits --groups)")
    grouping.add_argument("--group-pattern", metavar="REGEX", help="patient id = first group of REGEX in the case id")
    parser.add_argument("-device", default="cuda", choices=DEVICES)
    parser.add_argument("--pretrain-recipe", help="recipe for methods that still need pretraining")
    parser.add_argument("-o", dest="output", help="folder for the results (default: <results>/DatasetX/ssl_benchmark)")
    parser.add_argument("--report-only", action="store_true",
                        help="train nothing: evaluate the cells and write results (every cell must be finished)")
    parser.add_argument("--partial", action="store_true",
                        help="with --report-only: report the finished cells and list the missing ones in the table")
    args = parser.parse_args()
    spec = BenchmarkSpec(args.dataset, tuple(args.methods), tuple(args.labeled), tuple(args.base_folds),
                         tuple(args.length), args.configuration, args.plans, args.seed, args.device,
                         args.pretrain_recipe, args.output, args.report_only, tuple(args.finetune), args.groups,
                         args.group_pattern, args.partial, tuple(args.earlier), tuple(args.rerun))
    run_cli(lambda: run_benchmark(spec))

"""nnUNetv2_ssl_render: the results page, the summary figure, the README's results block and the demo's evidence
file, recomputed from the studies in docs/studies/ (see docs/studies/README.md)."""
import argparse
import os

from nnunet_ssl.benchmark.studies import render
from nnunet_ssl.cli import run_cli


def render_entry() -> None:
    parser = argparse.ArgumentParser(prog="nnUNetv2_ssl_render", description=__doc__)
    parser.add_argument("--root", default=".", help="the repository checkout (holds docs/studies/ and README.md)")
    args = parser.parse_args()
    run_cli(lambda: [print(f"wrote {path}") for path in render(os.path.abspath(args.root))])


if __name__ == "__main__":
    render_entry()

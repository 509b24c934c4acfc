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

    def main():
        from nnunet_ssl.benchmark.studies import STUDIES
        from nnunet_ssl.errors import SSLUserError
        root = os.path.abspath(args.root)
        index = os.path.join(root, STUDIES, "index.json")
        if not os.path.isfile(index):  # before anything is rendered or written
            raise SSLUserError(f"--root {root} is not a checkout of this repository (no {index}).",
                               "run it in the repository's root, or pass --root with that folder")
        for path in render(root):
            print(f"wrote {path}")

    run_cli(main)


if __name__ == "__main__":
    render_entry()

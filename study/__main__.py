"""Command line: ``python -m study <command> ...`` (``--help`` lists the commands)."""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m study", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    nb = commands.add_parser("notebook", help="execute a notebook with papermill, parameters from params.yaml")
    nb.add_argument("notebook", help="path of the notebook, e.g. notebooks/00_data.ipynb")
    nb.add_argument("--section", help="section of the params file holding the notebook's parameters (dotted for nesting)")
    nb.add_argument("--params", default="params.yaml", help="params file (default: params.yaml)")
    nb.add_argument("-p", "--parameter", nargs=2, action="append", metavar=("NAME", "VALUE"), help="set one parameter (value read as YAML)")
    nb.add_argument("--out", help="executed notebook path (default: results/notebooks/<name>)")

    args = parser.parse_args(argv)
    if args.command == "notebook":
        from study.notebooks import parse_overrides, run_notebook, section_parameters

        parameters = section_parameters(args.params, args.section) | parse_overrides(args.parameter)
        print(run_notebook(args.notebook, parameters, args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())

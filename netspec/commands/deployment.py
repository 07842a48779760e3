"""After training: `netspec export`, `import`, `evaluate` and `predict`."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Optional

from netspec.protocol.backend import Backend, backend_names
from netspec.errors import require
from netspec.commands.options import PROG, _backends, _Parser, _threads_option


def cmd_export(argv: list[str]) -> int:
    p = _Parser(prog=f"{PROG} export", description="Write a run's best weights as a model file "
                                "(either backend's run; needs netspec[export]).")
    p.add_argument("run_dir", help="a run folder (OUT/<name>/<backend>/<run-id>)")
    p.add_argument("--format", choices=["onnx"], default="onnx", help="the model format (default: onnx)")
    p.add_argument("-o", "--out", help="the file to write (default: RUN_DIR/model.onnx)")
    p.add_argument("--backend", help="the backend whose logits the file is checked against (default: the run's own)")
    args = p.parse_args(argv)
    require("onnx", "export", "ONNX export", "the onnx package")  # the words netspec.deploy.export's own check uses
    from netspec.deploy.export import check_export, export_run
    from netspec.deploy.inference import load_run

    path = export_run(args.run_dir, args.out)
    print(f"wrote {path}")
    saved = load_run(args.run_dir, log=lambda line: None)
    check = check_export(path, saved.experiment.network, saved.weights, _run_backend(args.run_dir, args.backend, None))
    if check is None:
        print("not checked against the backend: onnxruntime is not installed (pip install 'netspec[export]')")
        return 0
    print(check.line())
    return 0 if check.ok else 1


def cmd_import(argv: list[str]) -> int:
    p = _Parser(prog=f"{PROG} import", description="Read an ONNX model into a spec and canonical weights "
                                "(DIR/<name>.json, DIR/weights.npz), verified on every backend against onnxruntime "
                                "(needs netspec[export]).")
    p.add_argument("model", help="an .onnx file (untrusted: bounded, external data refused)")
    p.add_argument("-o", "--out", required=True, metavar="DIR", help="the folder to write the spec and weights into")
    p.add_argument("--name", help="the spec's name (default: the experiment's in the file, else the file's stem)")
    p.add_argument("--backend", help="the backends that verify it (default: every installed one, e.g. torch,jax)")
    args = p.parse_args(argv)
    require("onnx", "export", "ONNX import", "the onnx package")
    require("onnxruntime", "export", "the import's verification", "the onnxruntime package")
    from netspec.deploy.import_check import cross_layer_note, import_and_verify
    from netspec.protocol.backend import installed_backends

    path, check = import_and_verify(args.model, args.out, _backends(args.backend or ",".join(installed_backends()), None),
                                    args.name)
    for line in check.lines():
        print(line)
    print(cross_layer_note(check))
    if not check.ok:
        print(f"nothing written to {args.out}: the import failed its verification", file=sys.stderr)
        return 1
    print(f"wrote {path} and {path.with_name('weights.npz')}")
    return 0


def _run_backend(run_dir: str, name: Optional[str], threads: Optional[int]) -> Backend:
    """The backend asked for, else the one the run was trained on (env.json), else the reference."""
    if not name:
        from netspec.deploy.inference import trained_backend
        trained_on = trained_backend(Path(run_dir))
        name = trained_on if trained_on in backend_names() else backend_names()[0]
    return _backends(name, threads)[0]


def _inference_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_dir", help="a run folder (OUT/<name>/<backend>/<run-id>) of either backend")
    p.add_argument("--backend", help="the backend that computes (default: the run's own)")
    p.add_argument("--device", help="cpu or gpu[:N] (default: a GPU when there is one)")
    _threads_option(p)


def cmd_evaluate(argv: list[str]) -> int:
    p = _Parser(prog=f"{PROG} evaluate", description="Loss, accuracy, per-class accuracy and a "
                                "confusion-matrix figure of a run's best weights.")
    _inference_options(p)
    p.add_argument("--data-dir", help="another local copy (image-folder tree, cifar-10-batches-py or a .tar.gz); "
                   "default: the run's own data")
    p.add_argument("--split", default="test", help="train, val or test (default: test)")
    p.add_argument("--out", help="output folder (default: RUN_DIR/evaluation)")
    args = p.parse_args(argv)
    from netspec.deploy.inference import evaluate_run
    evaluation, folder = evaluate_run(args.run_dir, _run_backend(args.run_dir, args.backend, args.threads), data_dir=args.data_dir,
                                      split=args.split, out_dir=args.out, device=args.device)
    print(evaluation.summary())
    print(f"wrote {folder}")
    return 0


def cmd_predict(argv: list[str]) -> int:
    p = _Parser(prog=f"{PROG} predict", description="The top classes of image files (32x32 PNG or JPEG; "
                "grayscale and RGBA are converted to RGB, and each line says so).")
    _inference_options(p)
    p.add_argument("images", nargs="+", help="image files")
    p.add_argument("--top", type=int, default=3, help="classes shown per image (default: 3)")
    p.add_argument("--resize", action="store_true", help="scale images of another size to 32x32 (the whole image, "
                   "bilinear; the aspect ratio is not kept); without it they are refused")
    args = p.parse_args(argv)
    from netspec.deploy.inference import predict
    for prediction in predict(args.run_dir, _run_backend(args.run_dir, args.backend, args.threads), args.images, top=args.top,
                              device=args.device, resize=args.resize):
        print(prediction.line())
    return 0

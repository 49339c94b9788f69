#!/usr/bin/env bash
# Parity suite: for each model and precision, export -> build (plugin) -> validate against PyTorch
# -> bench, plus a plugin-free engine (--no-plugin) as a control; a final table and a JSON report.
# Exits 1 when any parity check (or any step) fails, 2 on bad arguments or a torch too old to export.
#
#   docker/parity.sh [--backend auto|tensorrt|onnxruntime] [--models a,b] [--precisions fp32,fp16]
#                    [--input-shape 1x3x224x224] [--plugin PATH] [--iterations N] [--warmup N]
#                    [--out DIR] [--quick] [--export-only | --onnx-dir DIR] [--int8]
#
# --int8 adds the INT8 path on the reference models (elfatt_vit_micro, elfatt_cswin_micro, trained
# checkpoints): FP16 export -> quantize (explicit Q/DQ, $INT8_CALIB_IMAGES synthetic calibration images,
# default 256) -> build strongly typed with the plugin -> validate on $INT8_HELD_OUT_IMAGES held-out
# images (default 500): top-1 agreement with PyTorch fp32, accuracy of each.
# With --export-only it exports and quantizes (OUT/<model>-int8.onnx); --onnx-dir reads those.
# Without TensorRT (or with --backend onnxruntime): export -> validate -> bench in ONNX Runtime.
# Exporting needs torch >= 2.6. Where torch is older (JetPack 6's NVIDIA wheel is 2.5), export on
# another machine with --export-only (writes OUT/<model>-<precision>.onnx, with each export's log and
# the step report beside them), copy that
# directory over and run with --onnx-dir DIR: the export step is skipped, engines are built here.
# With TensorRT, each engine is also loaded with `trtexec --loadEngine ... --staticPlugins ...` (the
# plan is a standard TensorRT plan), where trtexec is found: $TRTEXEC, PATH, $TENSORRT_ROOT/bin, or
# the files of the libnvinfer-bin or tensorrt package (JetPack and NGC images install it outside PATH).
# Environment: PYTHON (default python3); ELFATT_DEPLOY_CMD (default "$PYTHON -m elfatt_deploy"); TRTEXEC.
set -euo pipefail

usage() { sed -n '2,21p' "$0" | sed 's/^# \{0,1\}//'; }

PYTHON="${PYTHON:-python3}"
read -r -a DEPLOY <<< "${ELFATT_DEPLOY_CMD:-$PYTHON -m elfatt_deploy}"
backend=auto
models="elfatt_vit_tiny,elfatt_vit_small,elfatt_cswin_tiny"
precisions="fp32,fp16"
input_shape="1x3x224x224"
plugin=""
iterations=100
warmup=10
out="parity-out"
quick=0
export_only=0
onnx_dir=""
int8=0
# the oldest torch whose ONNX exporter takes a custom translation table (elfatt_deploy/export/exporter.py,
# MIN_TORCH_FOR_EXPORT)
min_torch="2.6"

# the value of option $1 (exit 2, as for every usage error, when it is missing)
# no_trailing_slash DIR: DIR without trailing slashes ("onnx//" -> "onnx", "/" stays), for the paths it prints
no_trailing_slash() {
  local p="$1"
  while [[ "$p" == */ && "$p" != / ]]; do p="${p%/}"; done
  printf '%s' "$p"
}
need_value() {
  if [[ $# -lt 2 || -z "$2" || "$2" == --* ]]; then
    echo "parity.sh: error: $1 needs a value (see --help)" >&2; exit 2
  fi
}
given_shape=0; given_iterations=0; given_warmup=0; given_precisions=0
while [[ $# -gt 0 ]]; do
  case "$1" in
    --backend) need_value "$@"; backend="$2"; shift 2 ;;
    --models) need_value "$@"; models="$2"; shift 2 ;;
    --precisions) need_value "$@"; precisions="$2"; given_precisions=1; shift 2 ;;
    --input-shape) need_value "$@"; input_shape="$2"; given_shape=1; shift 2 ;;
    --plugin) need_value "$@"; plugin="$2"; shift 2 ;;
    --iterations) need_value "$@"; iterations="$2"; given_iterations=1; shift 2 ;;
    --warmup) need_value "$@"; warmup="$2"; given_warmup=1; shift 2 ;;
    --out) need_value "$@"; out="$(no_trailing_slash "$2")"; shift 2 ;;
    --quick) quick=1; shift ;;
    --export-only) export_only=1; shift ;;
    --onnx-dir) need_value "$@"; onnx_dir="$(no_trailing_slash "$2")"; shift 2 ;;
    --int8) int8=1; shift ;;
    -h|--help) usage; exit 0 ;;
    *) echo "parity.sh: error: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
done

if [[ $quick -eq 1 ]]; then
  # one small shape, few iterations, fp32 only: the defaults of --quick; flags given explicitly win
  [[ $given_shape -eq 1 ]] || input_shape="1x3x64x64"
  [[ $given_iterations -eq 1 ]] || iterations=5
  [[ $given_warmup -eq 1 ]] || warmup=1
  [[ $given_precisions -eq 1 ]] || precisions="fp32"
fi
case "$backend" in
  auto|tensorrt|onnxruntime) ;;
  *) echo "parity.sh: error: --backend '$backend' must be auto, tensorrt or onnxruntime" >&2; exit 2 ;;
esac
[[ "$iterations" =~ ^[0-9]+$ && "$iterations" -ge 1 ]] || {
  echo "parity.sh: error: --iterations '$iterations' must be a positive integer" >&2; exit 2; }
[[ "$warmup" =~ ^[0-9]+$ ]] || { echo "parity.sh: error: --warmup '$warmup' must be a non-negative integer" >&2; exit 2; }
if [[ $export_only -eq 1 && -n "$onnx_dir" ]]; then
  echo "parity.sh: error: --export-only writes ONNX files and --onnx-dir reads them: give one of them" >&2; exit 2
fi
if [[ -n "$onnx_dir" && ! -d "$onnx_dir" ]]; then
  echo "parity.sh: error: --onnx-dir $onnx_dir is not a directory (make it with \`docker/parity.sh --export-only --out DIR\`" \
    "on a machine with torch >= $min_torch, then copy it here)" >&2
  exit 2
fi
if [[ -z "$onnx_dir" ]]; then
  # this machine exports: refuse early, with the way out, when its torch cannot
  if ! torch_msg=$("$PYTHON" - "$min_torch" 2>&1 <<'PY'
import sys
need = tuple(int(p) for p in sys.argv[1].split("."))
try:
    import torch
except Exception as exc:
    sys.exit(f"torch is not importable ({type(exc).__name__}: {exc})")
version = torch.__version__
try:
    found = tuple(int(p) for p in version.split("+")[0].split(".")[:2])
except ValueError:
    sys.exit(0)  # an unusual local build: let the exporter speak for itself
if found < need:
    sys.exit(f"this is torch {version}")
PY
  ); then
    echo "parity.sh: error: exporting ONNX needs torch >= $min_torch: ${torch_msg:-$PYTHON failed}. Export on another machine" \
      "(\`docker/parity.sh --export-only --out onnx/\`), copy onnx/ here and run with --onnx-dir onnx/" >&2
    exit 2
  fi
fi
if [[ $export_only -eq 1 ]]; then
  backend=export-only
elif [[ "$backend" == auto ]]; then
  if "$PYTHON" -c "import tensorrt" >/dev/null 2>&1; then backend=tensorrt; else backend=onnxruntime; fi
  echo "parity.sh: backend auto -> $backend"
fi

# find_trtexec: prints trtexec's path, or nothing (the same order as elfatt_deploy/engine/tools.py)
find_trtexec() {
  if [[ -n "${TRTEXEC:-}" ]]; then [[ -x "$TRTEXEC" ]] && echo "$TRTEXEC"; return 0; fi
  if command -v trtexec >/dev/null 2>&1; then command -v trtexec; return 0; fi
  if [[ -n "${TENSORRT_ROOT:-}" && -x "$TENSORRT_ROOT/bin/trtexec" ]]; then echo "$TENSORRT_ROOT/bin/trtexec"; return 0; fi
  if command -v dpkg-query >/dev/null 2>&1; then
    local f pkg
    for pkg in libnvinfer-bin tensorrt; do  # tools.py's TRTEXEC_PACKAGES
      for f in $(dpkg-query -L "$pkg" 2>/dev/null); do
        [[ "$f" == */trtexec && -x "$f" ]] && { echo "$f"; return 0; }
      done
    done
  fi
  return 0
}

mkdir -p "$out"
steps="$out/steps.jsonl"
: > "$steps"
failures=0
plugin_args=()
[[ -n "$plugin" ]] && plugin_args=(--plugin "$plugin")
trtexec=""
static_plugin=""
if [[ "$backend" == tensorrt ]]; then
  trtexec=$(find_trtexec)
  if [[ -n "$trtexec" ]]; then
    # trtexec --staticPlugins dlopens the library: the static-registration build (docs/plugin.md)
    # (a --plugin directory or the getCreators file resolves to it)
    static_plugin=$("$PYTHON" -c 'import sys; from elfatt_deploy.engine.plugin import static_plugin_library as f; print(f(sys.argv[1] or None))' "$plugin" 2>/dev/null) \
      || static_plugin="$plugin"  # not resolvable: as given (trtexec then says what is wrong with it)
    echo "parity.sh: trtexec $trtexec loads each engine (plugin: ${static_plugin:-not found})"
  else
    echo "parity.sh: trtexec not found (\$TRTEXEC, PATH, \$TENSORRT_ROOT/bin, libnvinfer-bin): the trtexec load check is skipped"
  fi
fi

# record MODEL PRECISION VARIANT STEP RC [JSON_FILE]
record() {
  printf '{"model": "%s", "precision": "%s", "variant": "%s", "step": "%s", "rc": %d, "file": "%s"}\n' \
    "$1" "$2" "$3" "$4" "$5" "${6:-}" >> "$steps"
}

# step MODEL PRECISION VARIANT STEP JSON_FILE -- COMMAND...: runs, logs, records; never aborts the suite
step() {
  local model="$1" precision="$2" variant="$3" name="$4" file="$5"
  shift 6
  local log="$out/$model.$precision.$variant.$name.log" rc=0
  echo "== $model $precision $variant: $name"
  "$@" > "$log" 2>&1 || rc=$?
  tail -n 5 "$log" | sed 's/^/   /'
  record "$model" "$precision" "$variant" "$name" "$rc" "$file"
  if [[ $rc -ne 0 ]]; then
    echo "   FAILED (exit $rc): $*  (log: $log)"
    failures=$((failures + 1))
  fi
  return "$rc"
}

IFS=',' read -r -a model_list <<< "$models"
IFS=',' read -r -a precision_list <<< "$precisions"
for model in "${model_list[@]}"; do
  for precision in "${precision_list[@]}"; do
    base="$out/$model.$precision"
    if [[ -n "$onnx_dir" ]]; then
      # exported elsewhere (--export-only); a missing file fails this model/precision, not the suite
      onnx="$onnx_dir/$model-$precision.onnx"
      step "$model" "$precision" onnx onnx-file "" -- \
        test -f "$onnx" || { echo "   missing $onnx: export it with \`docker/parity.sh --export-only\`"; continue; }
    else
      onnx="$out/$model-$precision.onnx"
      step "$model" "$precision" onnx export "" -- \
        "${DEPLOY[@]}" export --model "$model" --input-shape "$input_shape" --precision "$precision" -o "$onnx" || continue
    fi
    [[ "$backend" == export-only ]] && continue
    if [[ "$backend" == onnxruntime ]]; then
      step "$model" "$precision" onnxruntime validate "$base.onnxruntime.validate.json" -- \
        "${DEPLOY[@]}" validate "$onnx" --model "$model" --backend onnxruntime --shapes "$input_shape" \
        --report "$base.onnxruntime.validate.json" || true
      step "$model" "$precision" onnxruntime bench "$base.onnxruntime.bench.json" -- \
        "${DEPLOY[@]}" bench --backend onnxruntime --onnx "$onnx" --model "$model" --input-shape "$input_shape" \
        --iterations "$iterations" --warmup "$warmup" --json "$base.onnxruntime.bench.json" --no-progress || true
      continue
    fi
    for variant in plugin no-plugin; do
      engine="$base.$variant.engine"
      build_args=("${plugin_args[@]}")
      [[ "$variant" == no-plugin ]] && build_args=(--no-plugin)
      step "$model" "$precision" "$variant" build "" -- \
        "${DEPLOY[@]}" build "$onnx" -o "$engine" --shapes "$input_shape" --no-progress "${build_args[@]}" || continue
      if [[ -n "$trtexec" ]]; then
        trtexec_args=(--loadEngine="$engine" --iterations=2 --warmUp=0 --duration=0)
        [[ "$variant" == plugin && -n "$static_plugin" ]] && trtexec_args+=(--staticPlugins="$static_plugin")
        step "$model" "$precision" "$variant" trtexec "" -- "$trtexec" "${trtexec_args[@]}" || true
      fi
      step "$model" "$precision" "$variant" validate "$base.$variant.validate.json" -- \
        "${DEPLOY[@]}" validate "$onnx" --model "$model" --backend tensorrt --engine "$engine" "${plugin_args[@]}" \
        --shapes "$input_shape" --report "$base.$variant.validate.json" || true
      step "$model" "$precision" "$variant" bench "$base.$variant.bench.json" -- \
        "${DEPLOY[@]}" bench --backend tensorrt --engine "$engine" "${plugin_args[@]}" --model "$model" \
        --input-shape "$input_shape" --iterations "$iterations" --warmup "$warmup" \
        --json "$base.$variant.bench.json" --no-progress || true
    done
  done
done

if [[ $int8 -eq 1 ]]; then
  # INT8 (docs/quantization.md): the reference models, calibrated and validated on synthetic images
  images="$out/int8-images"
  calib_images="${INT8_CALIB_IMAGES:-256}"
  held_out_images="${INT8_HELD_OUT_IMAGES:-500}"
  step images int8-qdq synthetic render "" -- "$PYTHON" -c "import sys
from elfatt_deploy.data.image_folder import write_image_folder
write_image_folder(sys.argv[1] + '/calib', int(sys.argv[2]), seed=2, size=112)
write_image_folder(sys.argv[1] + '/held_out', int(sys.argv[3]), seed=1, size=112)" \
    "$images" "$calib_images" "$held_out_images" || true
  for model in elfatt_vit_micro elfatt_cswin_micro; do
    base="$out/$model.int8-qdq"
    ckpt=$("$PYTHON" -c "import sys; from elfatt_deploy.reference_models import checkpoint_path as c; print(c(sys.argv[1]))" \
      "$model") || { echo "   $model: no reference checkpoint"; failures=$((failures + 1)); continue; }
    if [[ -n "$onnx_dir" ]]; then
      qdq="$onnx_dir/$model-int8.onnx"
      step "$model" int8-qdq onnx onnx-file "" -- test -f "$qdq" || continue
    else
      qdq="$out/$model-int8.onnx"
      step "$model" int8-qdq onnx export "" -- "${DEPLOY[@]}" export --model "$model" --checkpoint "$ckpt" \
        --input-shape 1x3x112x112 --precision fp16 -o "$out/$model-fp16-reference.onnx" || continue
      step "$model" int8-qdq onnx quantize "" -- "${DEPLOY[@]}" quantize "$out/$model-fp16-reference.onnx" -o "$qdq" \
        --calib "$images/calib" --calib-samples "$calib_images" --no-progress || continue
    fi
    [[ "$backend" == export-only ]] && continue
    if [[ "$backend" == onnxruntime ]]; then
      step "$model" int8-qdq onnxruntime validate "$base.onnxruntime.validate.json" -- \
        "${DEPLOY[@]}" validate "$qdq" --checkpoint "$ckpt" --images "$images/held_out" \
        --report "$base.onnxruntime.validate.json" || true
      continue
    fi
    engine="$base.plugin.engine"
    step "$model" int8-qdq plugin build "" -- \
      "${DEPLOY[@]}" build "$qdq" -o "$engine" --shapes 1x3x112x112 --no-progress "${plugin_args[@]}" || continue
    step "$model" int8-qdq plugin validate "$base.plugin.validate.json" -- \
      "${DEPLOY[@]}" validate "$qdq" --checkpoint "$ckpt" --backend tensorrt --engine "$engine" "${plugin_args[@]}" \
      --images "$images/held_out" --input-shape 1x3x112x112 --report "$base.plugin.validate.json" || true
    step "$model" int8-qdq plugin bench "$base.plugin.bench.json" -- \
      "${DEPLOY[@]}" bench --backend tensorrt --engine "$engine" "${plugin_args[@]}" --model "$model" \
      --input-shape 1x3x112x112 --iterations "$iterations" --warmup "$warmup" \
      --json "$base.plugin.bench.json" --no-progress || true
  done
fi

# Final table + JSON report (written atomically), from the recorded steps and the bench JSON files.
"$PYTHON" - "$steps" "$out/parity-report.json" "$backend" "$input_shape" <<'PY'
import json, os, sys, tempfile
steps_path, report_path, backend, shape = sys.argv[1:5]
steps = [json.loads(line) for line in open(steps_path) if line.strip()]
rows = {}
for s in steps:
    key = (s["model"], s["precision"], s["variant"])
    row = rows.setdefault(key, {"model": key[0], "precision": key[1], "variant": key[2], "steps": {}, "p50_ms": None,
                                "throughput_per_s": None})
    row["steps"][s["step"]] = s["rc"]
    if s["step"] == "bench" and s["rc"] == 0 and s["file"] and os.path.isfile(s["file"]):
        lat = json.load(open(s["file"]))["latency"]
        row["p50_ms"], row["throughput_per_s"] = lat["p50_ms"], lat["throughput_per_s"]
for (model, precision, variant), row in rows.items():
    row["parity"] = {0: "pass", None: "-"}.get(row["steps"].get("validate"), "FAIL")
    row["ok"] = all(rc == 0 for rc in row["steps"].values())
    if variant == "plugin":
        control = rows.get((model, precision, "no-plugin"), {})
        if row["p50_ms"] and control.get("p50_ms"):
            row["speedup_vs_no_plugin"] = control["p50_ms"] / row["p50_ms"]
table = [("model", "precision", "variant", "parity", "p50 ms", "img/s", "vs no-plugin", "steps")]
for row in rows.values():
    table.append((row["model"], row["precision"], row["variant"], row["parity"],
                  f"{row['p50_ms']:.3f}" if row["p50_ms"] is not None else "-",
                  f"{row['throughput_per_s']:.1f}" if row["throughput_per_s"] is not None else "-",
                  f"{row['speedup_vs_no_plugin']:.2f}x" if row.get("speedup_vs_no_plugin") else "-",
                  " ".join(f"{k}:{'ok' if v == 0 else 'rc=' + str(v)}" for k, v in row["steps"].items())))
widths = [max(len(str(r[i])) for r in table) for i in range(len(table[0]))]
print()
for i, r in enumerate(table):
    print("  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip())
    if i == 0:
        print("  ".join("-" * w for w in widths))
report = {"backend": backend, "input_shape": shape, "ok": all(r["ok"] for r in rows.values()) and bool(rows),
          "rows": list(rows.values())}
fd, tmp = tempfile.mkstemp(dir=os.path.dirname(os.path.abspath(report_path)), suffix=".tmp")
with os.fdopen(fd, "w") as f:
    json.dump(report, f, indent=2)
    f.flush()
    os.fsync(f.fileno())
umask = os.umask(0)
os.umask(umask)
os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; the report is an ordinary file
os.replace(tmp, report_path)
print(f"\nreport: {report_path}")
PY

if [[ "$backend" == export-only && $failures -eq 0 ]]; then
  echo "parity.sh: exported to $out/ (<model>-<precision>.onnx); copy that directory to the target and run" \
    "docker/parity.sh --onnx-dir DIR there (engines are built on the device)"
fi
if [[ $failures -ne 0 ]]; then
  echo "parity.sh: $failures step(s) failed (parity or tooling); see the table and $out/*.log" >&2
  exit 1
fi
echo "parity.sh: all steps passed ($backend)"

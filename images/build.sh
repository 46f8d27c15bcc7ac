#!/usr/bin/env bash
# Build (and optionally push) the aprflow container images, and point the pipelines at them.
set -euo pipefail

usage() {
  cat <<'USAGE'
Usage: images/build.sh [options] [IMAGE...]

Builds the aprflow images from the repository root build context:
  cpu     images/cpu/Dockerfile     -> $REGISTRY/aprflow-cpu:$TAG     (components, CPU training)
  gpu     images/gpu/Dockerfile     -> $REGISTRY/aprflow-gpu:$TAG     (CUDA 13 + DeepSpeed)
  mlflow  images/mlflow/Dockerfile  -> $REGISTRY/aprflow-mlflow:$TAG  (MLflow server of the chart)
  upload  images/upload/Dockerfile  -> $REGISTRY/aprflow-upload:$TAG  (the chart's upload Job)
With no IMAGE, builds all four.

Before building, writes $REGISTRY/aprflow-{cpu,gpu}:$TAG into components/common/images.json
and recompiles pipelines/compiled/ (the components' base images). With --push, after pushing
cpu and gpu it writes their digests (REF:TAG@sha256:...) into images.json and recompiles again,
then builds the upload image, whose compiled pipelines therefore name the pushed digests.
Commit components/common/images.json and pipelines/compiled/ afterwards.

Options:
  --registry REG      registry/namespace (default: $APRFLOW_REGISTRY, else ghcr.io/aprflow)
  --tag TAG           image tag (default: the package version from pyproject.toml; with
                      --git-tag, `git describe --tags --always --dirty`)
  --git-tag           tag with `git describe` instead of the package version
  --push              push the images after building; digests go into images.json
  --dry-run           rewrite images.json and recompile as a real build would, and print the
                      build and push commands instead of running them
  --torch-index URL   extra pip index for torch (build arg TORCH_INDEX_URL; default: the
                      PyTorch CPU index for cpu, PyPI for gpu)
  --platform P        target platform (default linux/amd64)
  --builder CMD       container build command (default: $CONTAINER_BUILDER, else docker;
                      podman works too)
  -h, --help          show this help

Environment: PYTHON (default .venv/bin/python, else python3) runs the recompile.
USAGE
}

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
registry="${APRFLOW_REGISTRY:-ghcr.io/aprflow}"
builder="${CONTAINER_BUILDER:-docker}"
platform="linux/amd64"
torch_index=""
tag=""
git_tag=0
push=0
dry_run=0
images=()

while [[ $# -gt 0 ]]; do
  case "$1" in
    -h|--help) usage; exit 0 ;;
    --push) push=1 ;;
    --tag) tag="${2:?--tag needs a value}"; shift ;;
    --git-tag) git_tag=1 ;;
    --registry) registry="${2:?--registry needs a value}"; shift ;;
    --torch-index) torch_index="${2:?--torch-index needs a value}"; shift ;;
    --platform) platform="${2:?--platform needs a value}"; shift ;;
    --builder) builder="${2:?--builder needs a value}"; shift ;;
    --dry-run) dry_run=1 ;;
    cpu|gpu|mlflow|upload) images+=("$1") ;;
    *) echo "error: build.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
  shift
done
[[ ${#images[@]} -gt 0 ]] || images=(cpu gpu mlflow upload)

python="${PYTHON:-}"
if [[ -z "$python" ]]; then
  if [[ -x "$repo_root/.venv/bin/python" ]]; then
    python="$repo_root/.venv/bin/python"
  else
    python="python3"
  fi
fi

package_version() {
  sed -n 's/^version *= *"\(.*\)"/\1/p' "$repo_root/pyproject.toml" | head -n 1
}

if [[ -z "$tag" ]]; then
  if [[ "$git_tag" -eq 1 ]]; then
    tag="$(git -C "$repo_root" describe --tags --always --dirty)"
  else
    tag="$(package_version)"
  fi
fi
[[ -n "$tag" ]] || { echo "error: build.sh: could not determine the image tag" >&2; exit 2; }
registry="${registry%/}"

wanted() {
  local image
  for image in "${images[@]}"; do [[ "$image" == "$1" ]] && return 0; done
  return 1
}

ref_of() { echo "${registry}/aprflow-$1:${tag}"; }

# Runs a container-engine command, or only prints it with --dry-run.
run() {
  echo "+ $*"
  if [[ "$dry_run" -eq 0 ]]; then
    "$@"
  fi
}

# Writes the cpu/gpu references into images.json and recompiles the pipelines (always, also
# with --dry-run: that is what the build would bake in).
point_pipelines_at() {
  (cd "$repo_root" && PYTHONPATH="$repo_root" "$python" -m components.common.images set \
    --cpu "$1" --gpu "$2")
  (cd "$repo_root" && PYTHONPATH="$repo_root" "$python" -m pipelines compile)
}

build() {
  local image="$1" index="$torch_index"
  if [[ -z "$index" ]]; then
    if [[ "$image" == "cpu" ]]; then
      index="https://download.pytorch.org/whl/cpu"
    else
      index="https://pypi.org/simple"
    fi
  fi
  run "$builder" build \
    --platform "$platform" \
    --file "$repo_root/images/${image}/Dockerfile" \
    --build-arg "TORCH_INDEX_URL=${index}" \
    --label "org.opencontainers.image.version=${tag}" \
    --label "org.opencontainers.image.source=https://github.com/aprflow/aprflow" \
    --tag "$(ref_of "$image")" \
    "$repo_root"
}

# Prints REF@sha256:... of a pushed image (REF keeps its tag, for people reading images.json).
pushed_reference() {
  local ref="$1" digest
  if [[ "$dry_run" -eq 1 ]]; then
    echo "+ $builder inspect --format '{{index .RepoDigests 0}}' $ref" >&2
    echo "$ref"
    return
  fi
  digest="$("$builder" inspect --format '{{index .RepoDigests 0}}' "$ref")"
  [[ "$digest" == *@sha256:* ]] || {
    echo "error: build.sh: no digest for $ref after push (got '$digest')" >&2
    exit 1
  }
  echo "${ref}@${digest#*@}"
}

cpu_ref="$(ref_of cpu)"
gpu_ref="$(ref_of gpu)"
point_pipelines_at "$cpu_ref" "$gpu_ref"

for image in cpu gpu mlflow; do
  wanted "$image" || continue
  build "$image"
  if [[ "$push" -eq 1 ]]; then
    run "$builder" push "$(ref_of "$image")"
  fi
done

if [[ "$push" -eq 1 ]] && { wanted cpu || wanted gpu; }; then
  wanted cpu && cpu_ref="$(pushed_reference "$cpu_ref")"
  wanted gpu && gpu_ref="$(pushed_reference "$gpu_ref")"
  point_pipelines_at "$cpu_ref" "$gpu_ref"
fi

if wanted upload; then
  build upload
  if [[ "$push" -eq 1 ]]; then
    run "$builder" push "$(ref_of upload)"
  fi
fi

echo "images.json: $(cat "$repo_root/components/common/images.json")"
echo "commit components/common/images.json and pipelines/compiled/; install the chart with" \
  "--set mlflow.image.repository=$registry/aprflow-mlflow,mlflow.image.tag=$tag" \
  "--set pipelineUpload.image.repository=$registry/aprflow-upload,pipelineUpload.image.tag=$tag" \
  "--set trainer.image.repository=$registry/aprflow-gpu,trainer.image.tag=$tag"

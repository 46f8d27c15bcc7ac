#!/usr/bin/env bash
# Build (and optionally push) the aprflow container images.
set -euo pipefail

usage() {
  cat <<'USAGE'
Usage: images/build.sh [options] [IMAGE...]

Builds the aprflow images from the repository root build context:
  cpu     images/cpu/Dockerfile     -> $REGISTRY/aprflow-cpu:$TAG     (tests, analysis, CPU training)
  gpu     images/gpu/Dockerfile     -> $REGISTRY/aprflow-gpu:$TAG     (CUDA 13 + DeepSpeed)
  mlflow  images/mlflow/Dockerfile  -> $REGISTRY/aprflow-mlflow:$TAG  (MLflow server of the chart)
With no IMAGE, builds all three.

Options:
  --push              push the images after building
  --tag TAG           image tag (default: the package version from pyproject.toml; with
                      --git-tag, `git describe --tags --always --dirty`)
  --git-tag           tag with `git describe` instead of the package version
  --registry REG      registry/namespace (default: $APRFLOW_REGISTRY, else ghcr.io/aprflow)
  --torch-index URL   extra pip index for torch (build arg TORCH_INDEX_URL; default PyPI;
                      e.g. https://download.pytorch.org/whl/cpu for a CPU-only cpu image)
  --platform P        target platform (default linux/amd64)
  --builder CMD       container build command (default: $CONTAINER_BUILDER, else docker;
                      podman works too)
  --dry-run           print the commands instead of running them
  -h, --help          show this help

The default image names (what the KFP components use as base_image) are in components/common/images.json.
USAGE
}

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
registry="${APRFLOW_REGISTRY:-ghcr.io/aprflow}"
builder="${CONTAINER_BUILDER:-docker}"
platform="linux/amd64"
torch_index="https://pypi.org/simple"
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
    cpu|gpu|mlflow) images+=("$1") ;;
    *) echo "build.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
  shift
done
[[ ${#images[@]} -gt 0 ]] || images=(cpu gpu mlflow)

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
[[ -n "$tag" ]] || { echo "build.sh: could not determine the image tag" >&2; exit 1; }
registry="${registry%/}"

run() {
  echo "+ $*"
  if [[ "$dry_run" -eq 0 ]]; then
    "$@"
  fi
}

for image in "${images[@]}"; do
  ref="${registry}/aprflow-${image}:${tag}"
  run "$builder" build \
    --platform "$platform" \
    --file "$repo_root/images/${image}/Dockerfile" \
    --build-arg "TORCH_INDEX_URL=${torch_index}" \
    --label "org.opencontainers.image.version=${tag}" \
    --label "org.opencontainers.image.source=https://github.com/aprflow/aprflow" \
    --tag "$ref" \
    "$repo_root"
  if [[ "$push" -eq 1 ]]; then
    run "$builder" push "$ref"
  fi
done
